"""The client generator (`nurturehub client generate`) and the runtime it copies into clients/python."""
