"""The app router: every namespace's procedures under their dotted wire names."""

from __future__ import annotations

from procedures import audit, auth, contacts, crm
from server.procedure import Router

__all__ = ["app_router"]

app_router = Router.merge(
    {
        "audit": audit.router,
        "auth": auth.router,
        "contacts": contacts.router,
        "crm": crm.router,
    }
)
