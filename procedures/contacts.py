"""contacts.*: contacts, their category history, GDPR erasure, and the CRM provider registry."""

from __future__ import annotations

from typing import Literal

from server.context import Context
from server.db import sql
from server.models import WireModel
from server.procedure import AUTHED, Router, query

# Models ------------------------------------------------------------------------------------------


class ListCrmProvidersParams(WireModel):
    pass


class CrmProvider(WireModel):
    id: str
    name: str
    auth_type: Literal["api_key", "oauth2"]
    webhook_path: str


# SQL ---------------------------------------------------------------------------------------------

SELECT_CRM_PROVIDERS = sql(
    "SELECT id, name, auth_type, webhook_path FROM crm_providers ORDER BY lower(name), id"
)

# Handlers ----------------------------------------------------------------------------------------


@query(guard=AUTHED)
async def list_crm_providers(ctx: Context, params: ListCrmProvidersParams) -> list[CrmProvider]:
    """The CRMs an organisation can connect, for the connection UI."""
    rows = await ctx.db.all(SELECT_CRM_PROVIDERS)
    return [CrmProvider.model_validate(dict(row)) for row in rows]


router = Router(
    {
        "listCrmProviders": list_crm_providers,
    }
)
