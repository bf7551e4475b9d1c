"""The app router: every namespace's procedures under their dotted wire names."""

from __future__ import annotations

from procedures import auth, contacts, crm
from server.procedure import Router

__all__ = ["app_router"]

app_router = Router.merge(
    {
        "auth": auth.router,
        "contacts": contacts.router,
        "crm": crm.router,
    }
)
