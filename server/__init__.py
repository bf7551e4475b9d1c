"""NurtureHub procedure framework: the ASGI app, JSON-RPC envelope, auth, errors, database access, CLI."""
