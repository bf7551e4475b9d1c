"""The client generator (`nurturehub client generate`); the client itself is clients/python."""
