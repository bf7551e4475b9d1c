"""The `nurturehub` command as a script uses it: JSON on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import Rpc, query

BIN = Path(sys.executable).parent


def nurturehub(database_url: str, *args: str, module: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    command = [sys.executable, "-m", module, *args] if module else [str(BIN / "nurturehub"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_org_create_prints_ids_and_a_working_token(database_url: str, rpc: Rpc) -> None:
    done = nurturehub(
        database_url, "org", "create", "Harbour Lettings", "--owner-email", "Boss@Harbour.co.uk"
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert set(created) == {"organisationId", "userId", "tokenId", "token"}
    me = rpc.call("auth.whoami", {}, token=created["token"])
    assert me["organisation"] == {"id": created["organisationId"], "name": "Harbour Lettings"}
    assert me["user"] == {"id": created["userId"], "email": "boss@harbour.co.uk"}
    assert me["role"] == "owner"


def test_org_list_and_token_list_show_ids_and_never_a_token(database_url: str, rpc: Rpc) -> None:
    """Issue 20, point 3: token ids printed everywhere; token list --org, org list."""
    name = f"Listing Lettings {uuid.uuid4().hex[:6]}"
    created = json.loads(
        nurturehub(database_url, "org", "create", name, "--owner-email", "o@listing.co.uk").stdout
    )
    org_id = created["organisationId"]
    issued = json.loads(
        nurturehub(database_url, "token", "create", "--org", org_id, "--email", "m@listing.co.uk",
                   "--role", "member", "--name", "phone").stdout
    )
    organisations = json.loads(nurturehub(database_url, "org", "list").stdout)["organisations"]
    mine = [o for o in organisations if o["id"] == org_id]
    assert mine and mine[0]["name"] == name and mine[0]["activeTokens"] == 2 and mine[0]["members"] == 2

    nurturehub(database_url, "token", "revoke", issued["tokenId"])
    listed = nurturehub(database_url, "token", "list", "--org", org_id)
    assert listed.returncode == 0, listed.stderr
    tokens = json.loads(listed.stdout)["tokens"]
    owner = (created["tokenId"], "owner", "o@listing.co.uk")
    assert [(t["id"], t["role"], t["email"]) for t in tokens] == [owner]
    everything = json.loads(
        nurturehub(database_url, "token", "list", "--org", org_id, "--include-revoked").stdout
    )["tokens"]
    assert {t["id"] for t in everything} == {created["tokenId"], issued["tokenId"]}
    assert [t["name"] for t in everything if t["revokedAt"]] == ["phone"]
    assert created["token"] not in listed.stdout and issued["token"] not in str(everything)


def test_org_create_refuses_a_name_already_taken_unless_asked(database_url: str) -> None:
    """Issue 20: an organisation created twice with the same name is refused unless asked for."""
    name = f"Quayside Homes {uuid.uuid4().hex[:6]}"
    first = nurturehub(database_url, "org", "create", name, "--owner-email", "a@quayside.co.uk")
    assert first.returncode == 0, first.stderr
    first_id = json.loads(first.stdout)["organisationId"]

    shouted = f" {name.upper()} "
    again = nurturehub(database_url, "org", "create", shouted, "--owner-email", "b@quayside.co.uk")
    assert again.returncode == 1 and again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nurturehub: error:"), again.stderr
    assert first_id in lines[0] and "--allow-duplicate-name" in lines[0]
    same_name = "SELECT count(*) FROM organisations WHERE lower(name) = lower(%s)"
    assert query(database_url, same_name, (name,)) == [(1,)]

    asked = nurturehub(
        database_url, "org", "create", name, "--owner-email", "b@quayside.co.uk", "--allow-duplicate-name"
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["organisationId"] != first_id


def test_token_create_adds_the_member_and_revoke_takes_effect(database_url: str, rpc: Rpc, world) -> None:
    org = world.org()
    done = nurturehub(
        database_url,
        "token",
        "create",
        "--org",
        org.id,
        "--email",
        "new.agent@agency.co.uk",
        "--role",
        "member",
        "--name",
        "laptop",
    )
    assert done.returncode == 0, done.stderr
    issued = json.loads(done.stdout)
    assert set(issued) == {"userId", "tokenId", "expiresAt", "token"} and issued["expiresAt"] is None
    assert rpc.call("auth.whoami", {}, token=issued["token"])["role"] == "member"

    revoked = nurturehub(database_url, "token", "revoke", issued["tokenId"])
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {"tokenId": issued["tokenId"], "revoked": True}
    assert rpc.error("auth.whoami", {}, token=issued["token"])["data"]["code"] == "UNAUTHORIZED"
    # The token itself is never stored, only its hash.
    assert query(
        database_url,
        "SELECT count(*) FROM api_tokens WHERE name = 'laptop' AND encode(token_hash, 'escape') LIKE %s",
        (f"%{issued['token']}%",),
    ) == [(0,)]


def test_token_create_with_an_expiry_lists_it(database_url: str, world) -> None:
    org = world.org()
    issued = json.loads(nurturehub(
        database_url, "token", "create", "--org", org.id, "--email", "temp@agency.co.uk", "--role", "member",
        "--expires", "30d",
    ).stdout)
    days = (datetime.fromisoformat(issued["expiresAt"]) - datetime.now(UTC)).total_seconds() / 86400
    assert 29.9 < days <= 30
    tokens = json.loads(nurturehub(database_url, "token", "list", "--org", org.id).stdout)["tokens"]
    [listed] = [t for t in tokens if t["id"] == issued["tokenId"]]
    assert datetime.fromisoformat(listed["expiresAt"]) == datetime.fromisoformat(issued["expiresAt"])


def test_token_create_can_promote_an_existing_member(database_url: str, rpc: Rpc, world) -> None:
    org = world.org()
    member_email = rpc.call("auth.whoami", {}, token=org.member_token)["user"]["email"]
    done = nurturehub(
        database_url, "token", "create", "--org", org.id, "--email", member_email, "--role", "admin"
    )
    assert done.returncode == 0, done.stderr
    assert rpc.call("auth.whoami", {}, token=org.member_token)["role"] == "admin"


@pytest.mark.parametrize(
    "args, exit_code, fragment",
    [
        (
            ["token", "create", "--org", "not-a-uuid", "--email", "a@b.co.uk", "--role", "member"],
            2,
            "not a UUID",
        ),
        (
            ["token", "create", "--org", str(uuid.uuid4()), "--email", "a@b.co.uk", "--role", "god"],
            2,
            "invalid choice",
        ),
        (
            ["token", "create", "--org", str(uuid.uuid4()), "--email", "a@b.co.uk", "--role", "member"],
            1,
            "no organisation has that id",
        ),
        (
            ["token", "create", "--org", str(uuid.uuid4()), "--email", "a@b.co.uk", "--role", "member",
             "--expires", "2030-01-01"],
            2,
            "a time with its zone",
        ),
        (
            ["token", "create", "--org", str(uuid.uuid4()), "--email", "a@b.co.uk", "--role", "member",
             "--expires", "2020-01-01T00:00:00Z"],
            1,
            "in the future",
        ),
        (["token", "revoke", str(uuid.uuid4())], 1, "no active token"),
        (["org", "create", "X", "--owner-email", "not-an-email"], 1, "email address is not valid"),
        (["org", "create", ""], 2, "--owner-email"),
        (["serve", "--port", "99999"], 2, "not a port number"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_arguments_get_one_line_and_a_non_zero_exit(
    database_url: str, args: list[str], exit_code: int, fragment: str
) -> None:
    done = nurturehub(database_url, *args)
    assert done.returncode == exit_code
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("nurturehub: error:") and fragment in lines[0]
    assert "Traceback" not in done.stderr


def test_db_init_and_seed_are_idempotent_from_the_command_line(postgres) -> None:
    url = postgres.create_database()
    first = nurturehub(url, "db", "init")
    assert first.returncode == 0 and json.loads(first.stdout) == {"schema": "created"}
    again = nurturehub(url, "db", "init")
    assert json.loads(again.stdout) == {"schema": "unchanged"}
    seeded = nurturehub(url, module="seeds.crm_providers")
    assert seeded.returncode == 0, seeded.stderr
    assert json.loads(seeded.stdout)["seeds"]["seeds.crm_providers:seed"]["inserted"] == 5
    reseeded = nurturehub(url, "seed")
    assert json.loads(reseeded.stdout)["seeds"]["seeds.crm_providers:seed"] == {
        "inserted": 0,
        "updated": 0,
        "unchanged": 5,
    }
    assert query(url, "SELECT count(*) FROM crm_providers") == [(5,)]


def test_db_init_on_a_mismatched_database_exits_with_advice(postgres) -> None:
    url = postgres.create_database()
    nurturehub(url, "db", "init")
    query(url, "UPDATE schema_version SET version = 42")
    done = nurturehub(url, "db", "init")
    assert done.returncode == 1
    assert "schema version 42" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
