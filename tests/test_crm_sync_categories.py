"""Issue 17, point 1: a person's category from the statuses of their CRM roles, kept between runs
in crm_external_refs: Reapit applicant marketingMode, vendor's property selling status, accepted
offers until their property completes, tenancy status and agentRole (a managed landlord), with the
agency-specific values as connection settings (README, CRM sync: category rules). Part 3: the
properties stream, whose status change alone moves its vendors' and buyers' categories."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_reapit import FakeReapit
from tests.support import Org, Rpc, query
from tests.sync_support import Sync, person, post_hook
from tests.test_crm_sync import agency, contacts_of, inbox  # noqa: F401  (the fixture)

# Past the incremental run's lookback (lookbackSeconds, 300): a record last changed before this
# is not read again by the next poll unless something makes it.
QUIET = 600


def poll(sync: Sync, database_url: str, connection_id: str) -> None:
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)


def categories(hooks: Rpc, org: Org) -> dict[str, Any]:
    return {c["externalId"]: c["category"] for c in contacts_of(hooks, org)}


def property_of(selling: str | None = None, landlord: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if selling is not None:
        found["selling"] = {"status": selling}
    if landlord is not None:
        found["letting"] = {"landlordId": landlord}
    return {"property": found}


def test_reapit_role_statuses_give_the_category_as_the_rules_say(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    org, connection_id, _ = agency
    ann, ben, cat, dan, eve, fay = (reapit.put(**person())["id"] for _ in range(6))
    reapit.put_role("applicants", contacts=[ann], marketingMode="buying", active=True)
    reapit.put_role("applicants", contacts=[ben], marketingMode="renting", active=True)
    reapit.put_role("vendors", contacts=[cat], _embedded=property_of(selling="forSale"))
    reapit.put_role("vendors", contacts=[fay], _embedded=property_of(selling="valuation"))
    landlord = reapit.put_role("landlords", contacts=[dan], active=True)
    sync.drain(connection_id)
    assert categories(hooks, org) == {
        ann: "buyer", ben: "tenant_applicant", cat: "active_seller", fay: "seller", dan: "landlord",
        eve: None,
    }  # fmt: skip
    # A managed tenancy on the landlord's property: the tenant is active, the landlord managed
    # (the tenancy names only its tenants; the landlord is reached through the property).
    reapit.tick()
    tenancy = reapit.put_role(
        "tenancies", contacts=[eve], status="current", agentRole="managed",
        _embedded=property_of(landlord=landlord["id"]),
    )  # fmt: skip
    reapit.put_role("offers", contacts=[ann], status="accepted")
    poll(sync, database_url, connection_id)
    found = categories(hooks, org)
    assert (found[dan], found[eve], found[ann]) == ("managed_landlord", "active_tenant", "active_buyer")
    # Let only from now on: the landlord is a landlord again, though their own records did not move.
    reapit.tick()
    reapit.put_role(
        "tenancies", tenancy["id"], contacts=[eve], status="current", agentRole="letOnly",
        _embedded=property_of(landlord=landlord["id"]),
    )  # fmt: skip
    poll(sync, database_url, connection_id)
    assert categories(hooks, org)[dan] == "landlord"
    # The tenancy ends: the tenant has no role left that gives a category.
    reapit.tick()
    reapit.put_role("tenancies", tenancy["id"], contacts=[eve], status="finished", agentRole="letOnly")
    poll(sync, database_url, connection_id)
    [(crm_category,)] = query(
        database_url,
        "SELECT crm_category FROM contacts WHERE crm_connection_id = %s AND external_id = %s",
        (connection_id, eve),
    )
    assert crm_category is None


def test_the_agencys_own_values_are_connection_settings(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    org, connection_id, _ = agency
    hooks.call(
        "crm.updateConnection",
        {
            "connectionId": connection_id,
            "settings": {
                "investorBuyingReasonIds": ["INV"],
                "managedAgentRoles": ["managed", "rentCollection"],
            },
        },
        org.admin_token,
    )
    ivy, leo = reapit.put(**person())["id"], reapit.put(**person())["id"]
    landlord = reapit.put_role("landlords", contacts=[leo], active=True)
    reapit.put_role("applicants", contacts=[ivy], marketingMode="buying", buying={"reasonId": "INV"})
    reapit.tick()
    reapit.put_role(
        "tenancies", contacts=[], status="arranging", agentRole="rentCollection",
        _embedded=property_of(landlord=landlord["id"]),
    )  # fmt: skip
    sync.drain(connection_id)
    assert categories(hooks, org) == {ivy: "property_investor", leo: "managed_landlord"}
    reapit.tick()
    reapit.put_role("offers", contacts=[ivy], status="accepted")
    poll(sync, database_url, connection_id)
    assert categories(hooks, org)[ivy] == "active_property_investor"


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"managedAgentRoles": "managed"}, "managedAgentRoles"), ({"buyingModes": [1]}, "buyingModes")],
)
def test_a_bad_category_setting_is_refused_naming_its_field(
    hooks: Rpc, agency: tuple[Org, str, str], settings: dict[str, Any], field: str  # noqa: F811
) -> None:
    org, connection_id, _ = agency
    error = hooks.error(
        "crm.updateConnection", {"connectionId": connection_id, "settings": settings}, org.admin_token
    )
    assert error["code"] == -32602
    assert field in str(error["data"])


def test_role_records_are_kept_with_statuses_only_and_an_unchanged_one_is_not_rewritten(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    org, connection_id, _ = agency
    ann = reapit.put(**person(forename="Annabel"))
    reapit.put_role("applicants", "A1", contacts=[ann["id"]], marketingMode="buying", active=True)
    sync.drain(connection_id)
    rows = query(
        database_url,
        "SELECT record_type, external_id, contact_ids, roles, updated_at FROM crm_external_refs"
        " WHERE connection_id = %s",
        (connection_id,),
    )
    assert [r[:4] for r in rows] == [
        ("applicants", "A1", [ann["id"]], {"active": True, "marketingMode": "buying"})
    ]
    assert "Annabel" not in str(rows) and ann["email"] not in str(rows)
    poll(sync, database_url, connection_id)  # the lookback reads A1 again, unchanged
    again = query(
        database_url, "SELECT updated_at FROM crm_external_refs WHERE connection_id = %s", (connection_id,)
    )
    assert again == [(rows[0][4],)]


def test_an_offer_webhook_with_no_new_record_drops_the_role_it_gave(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    """Reapit sends `new: null` when a record is deleted or archived: the kept record is marked
    deleted and the person's category derived again without it, at once."""
    org, connection_id, customer = agency
    ann = reapit.put(**person())["id"]
    reapit.put_role("applicants", contacts=[ann], marketingMode="buying")
    offer = reapit.put_role("offers", contacts=[ann], status="accepted")
    sync.drain(connection_id)
    assert categories(hooks, org)[ann] == "active_buyer"
    body = reapit.event("offers.modified", None, customer=customer, old=offer)
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 202
    sync.drain(connection_id)
    assert categories(hooks, org)[ann] == "buyer"
    [(deleted,)] = query(
        database_url,
        "SELECT deleted_at IS NOT NULL FROM crm_external_refs"
        " WHERE connection_id = %s AND record_type = 'offers'",
        (connection_id,),
    )
    assert deleted


def reconciled_at(database_url: str, connection_id: str) -> dict[str, Any]:
    [(cursor,)] = query(
        database_url, "SELECT sync_cursor FROM crm_connections WHERE id = %s", (connection_id,)
    )
    return {name: state.get("reconciledAt") for name, state in cursor["streams"].items()}


def test_an_accepted_offer_gives_active_buyer_until_its_property_completes(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    """Issue 17, part 3: active_buyer lasts until the property completes (research crm-sync.md
    3.2); the property's status alone changes, and the next incremental poll (not a
    reconciliation) takes active_buyer away, and the active investor category built on it."""
    org, connection_id, _ = agency
    hooks.call(
        "crm.updateConnection",
        {"connectionId": connection_id, "settings": {"investorCategoryIds": ["INV"]}},
        org.admin_token,
    )
    ann, ben = reapit.put(**person(categoryIds=["INV"]))["id"], reapit.put(**person())["id"]
    reapit.put_role("applicants", contacts=[ann], marketingMode="buying", active=True)
    reapit.put_role("applicants", contacts=[ben], marketingMode="buying", active=True)
    reapit.put_role("properties", "P1", selling={"status": "underOffer"})
    reapit.put_role("properties", "P2", selling={"status": "underOffer"})
    offer = reapit.put_role("offers", contacts=[ann], status="accepted", propertyId="P1")
    reapit.put_role("offers", contacts=[ben], status="accepted", propertyId="P2")
    sync.drain(connection_id)
    assert categories(hooks, org) == {ann: "active_property_investor", ben: "active_buyer"}
    before = reconciled_at(database_url, connection_id)
    reapit.tick(QUIET)
    reapit.put_role("properties", "P1", selling={"status": "exchanged"})
    poll(sync, database_url, connection_id)
    assert categories(hooks, org) == {ann: "active_property_investor", ben: "active_buyer"}
    reapit.tick()
    reapit.put_role("properties", "P1", selling={"status": "completed"})
    poll(sync, database_url, connection_id)
    assert categories(hooks, org) == {ann: "property_investor", ben: "active_buyer"}
    assert reconciled_at(database_url, connection_id) == before  # incremental runs only
    assert reapit.roles["offers"][offer["id"]]["modified"] == offer["modified"]  # the offer did not move
    [(kept,)] = query(
        database_url,
        "SELECT roles FROM crm_external_refs WHERE connection_id = %s AND external_id = %s",
        (connection_id, offer["id"]),
    )
    assert kept == {"status": "accepted"}


def test_a_vendor_becomes_an_active_seller_when_their_property_alone_goes_on_the_market(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    """Issue 17, part 3: valuation -> forSale on the property, no vendor change: the next
    incremental poll, or a properties.modified webhook with no poll due, makes the vendor an
    active seller."""
    org, connection_id, customer = agency
    cat, dan = reapit.put(**person())["id"], reapit.put(**person())["id"]
    reapit.put_role("properties", "P1", selling={"status": "valuation"})
    reapit.put_role("properties", "P2", selling={"status": "valuation"})
    reapit.put_role("vendors", contacts=[cat], propertyId="P1")
    vendor = reapit.put_role("vendors", contacts=[dan], propertyId="P2")
    sync.drain(connection_id)
    assert categories(hooks, org) == {cat: "seller", dan: "seller"}
    reapit.tick(QUIET)
    reapit.put_role("properties", "P1", selling={"status": "forSale"})
    poll(sync, database_url, connection_id)
    assert categories(hooks, org) == {cat: "active_seller", dan: "seller"}
    reapit.tick()
    old = dict(reapit.roles["properties"]["P2"])
    new = reapit.put_role("properties", "P2", selling={"status": "forSale"})
    body = reapit.event("properties.modified", new, customer=customer, old=old)
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 202
    sync.drain(connection_id)  # the inbox only: the next poll is an hour away
    assert categories(hooks, org) == {cat: "active_seller", dan: "active_seller"}
    assert inbox(database_url, customer)[-1] == ("done", "roles", True)
    assert reapit.roles["vendors"][vendor["id"]]["modified"] == vendor["modified"]


def test_a_property_is_kept_with_its_statuses_only_and_its_vendors_and_offers_link_to_it(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    org, connection_id, _ = agency
    cat = reapit.put(**person())["id"]
    reapit.put_role(
        "properties", "P1", address={"line1": "12 Quayside Walk", "postcode": "CO15 1AE"},
        selling={"status": "forSale", "price": 437500},
        letting={"status": "toLet", "agentRole": "managed", "landlordId": "L9", "rent": 1875},
    )  # fmt: skip
    reapit.put_role("vendors", "V1", contacts=[cat], propertyId="P1")
    reapit.put_role("offers", "O1", contacts=[], status="pending", propertyId="P1")
    sync.drain(connection_id)
    rows = query(
        database_url,
        "SELECT record_type, external_id, contact_ids, links, roles FROM crm_external_refs"
        " WHERE connection_id = %s ORDER BY record_type",
        (connection_id,),
    )
    statuses = {"sellingStatus": "forSale", "lettingStatus": "toLet", "agentRole": "managed"}
    assert rows == [
        ("offers", "O1", [], ["properties/P1"], {"status": "pending"}),
        ("properties", "P1", [], [], statuses),
        ("vendors", "V1", [cat], ["properties/P1"], {"sellingStatus": "forSale"}),
    ]
    assert not any(text in str(rows) for text in ("Quayside", "CO15", "437500", "1875", "L9"))


def test_role_records_stamped_with_one_second_past_a_page_are_all_kept(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str  # noqa: F811
) -> None:
    """Found measuring the properties stream: a full page all of one second is read on by page
    number (the tie sweep), whose later pages' people were applied but whose records were not
    kept, so a bulk change in the CRM kept only the first page's records."""
    _, connection_id, _ = agency
    for number in range(130):
        reapit.put_role("properties", f"P{number}", selling={"status": "forSale"})
    sync.drain(connection_id)
    [(kept,)] = query(
        database_url,
        "SELECT count(*) FROM crm_external_refs WHERE connection_id = %s AND record_type = 'properties'",
        (connection_id,),
    )
    assert kept == 130


def test_sync_now_takes_the_offers_and_properties_streams_by_name(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync  # noqa: F811
) -> None:
    org, connection_id, _ = agency
    sync.drain(connection_id)
    for stream in ("offers", "properties"):
        hooks.call(
            "crm.syncNow", {"connectionId": connection_id, "stream": stream, "reset": True}, org.admin_token
        )
    sync.drain(connection_id)
    runs = hooks.call("crm.listSyncRuns", {"connectionId": connection_id}, org.member_token)
    assert {r["stream"] for r in runs if r["trigger"] == "reset"} == {"offers", "properties"}
