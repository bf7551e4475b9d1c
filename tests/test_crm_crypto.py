"""Credentials at rest (issue 6): AES-256-GCM envelopes, row binding, key files, rotation."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from procedures import app_router
from procedures.crm_credentials import open_credentials, seal_credentials
from server.crypto import (
    DecryptionFailed,
    Keyring,
    KeyringError,
    NoEncryptionKey,
    associated_data,
    ensure_key_file,
    new_key_entry,
)
from server.db import Database
from tests.crm_support import (
    KEYRING,
    connect,
    connection_status,
    enqueue,
    entry,
    make_contact,
    until,
    worker,
)
from tests.fake_crm import FakeCrm
from tests.support import LoopThread, Org, Rpc, ServerThread, World, query

AAD = associated_data("org-1", "crm_connections", "encrypted_credentials", "conn-1")


def test_envelope_round_trips_with_a_fresh_nonce_and_names_its_key() -> None:
    keyring = Keyring.parse(new_key_entry())
    one, two = keyring.encrypt(b"secret", AAD), keyring.encrypt(b"secret", AAD)
    assert one != two  # a fresh nonce each time
    assert keyring.decrypt(one, AAD) == b"secret"
    assert Keyring.key_id_of(one) == keyring.primary_id
    assert len(one) == 2 + len(keyring.primary_id or "") + 12 + len(b"secret") + 16


@pytest.mark.parametrize(
    "other",
    [
        associated_data("org-2", "crm_connections", "encrypted_credentials", "conn-1"),
        associated_data("org-1", "crm_connections", "encrypted_credentials", "conn-2"),
        associated_data("org-1", "crm_connections", "settings", "conn-1"),
        associated_data("org-1", "contacts", "encrypted_credentials", "conn-1"),
    ],
)
def test_a_ciphertext_does_not_decrypt_bound_to_anything_else(other: bytes) -> None:
    sealed = KEYRING.encrypt(b"secret", AAD)
    with pytest.raises(DecryptionFailed) as raised:
        KEYRING.decrypt(sealed, other)
    assert str(raised.value) == (
        "the secret does not decrypt: wrong key, altered data, or stored for another record"
    )


def test_a_missing_or_wrong_key_is_a_clear_error_that_reveals_nothing() -> None:
    entry_a, entry_b = new_key_entry(), new_key_entry()
    a, b = Keyring.parse(entry_a), Keyring.parse(entry_b)
    sealed = a.encrypt(b"secret-plaintext", AAD)
    with pytest.raises(DecryptionFailed) as missing:
        b.decrypt(sealed, AAD)
    assert (
        str(missing.value) == f"the secret was encrypted with key {a.primary_id!r}, which is not configured"
    )
    # The same id with different material: the tag check fails.
    impostor = Keyring.parse(f"{a.primary_id}:{entry_b.split(':')[1]}")
    with pytest.raises(DecryptionFailed) as wrong:
        impostor.decrypt(sealed, AAD)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        a.decrypt(bytes(tampered), AAD)
    with pytest.raises(DecryptionFailed):
        a.decrypt(b"\x02garbage", AAD)
    for error in (missing.value, wrong.value):
        text = str(error)
        assert "secret-plaintext" not in text
        assert entry_a.split(":")[1] not in text and entry_b.split(":")[1] not in text
    assert entry_a.split(":")[1] not in repr(a) and entry_a.split(":")[1] not in repr(a.keys[0][0])
    with pytest.raises(NoEncryptionKey):
        Keyring().encrypt(b"x", AAD)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nokey", "must be 'id:base64key'"),
        ("k1:not-base64!", "not valid base64"),
        ("k1:" + "QUJD", "must decode to 32 bytes, not 3"),
        ("bad id:" + "A" * 44, "must be 'id:base64key'"),
    ],
)
def test_malformed_keyrings_are_refused(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(spec)
    one = new_key_entry()
    with pytest.raises(KeyringError, match="listed twice"):
        Keyring.parse(f"{one},{one}")


def test_first_key_encrypts_and_every_key_decrypts() -> None:
    old, new = new_key_entry(), new_key_entry()
    sealed_old = Keyring.parse(old).encrypt(b"x", AAD)
    both = Keyring.parse(f"{new}, {old}")
    assert both.decrypt(sealed_old, AAD) == b"x"
    assert Keyring.key_id_of(both.encrypt(b"x", AAD)) == new.split(":")[0]


def test_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "encryption.keys"
    spec, created = ensure_key_file(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_key_file(path)
    assert again == spec and not created_again
    assert Keyring.parse(spec).primary_id
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        ensure_key_file(path)


def test_serve_makes_the_key_file_in_the_data_folder_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from server import cli

    for name in ("DATABASE_URL", "NURTUREHUB_ENCRYPTION_KEYS", "NURTUREHUB_ENCRYPTION_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NURTUREHUB_DATA_DIR", str(tmp_path))
    cli._announce_encryption_keys()
    first = capsys.readouterr().out
    key_file = tmp_path / "encryption.keys"
    assert f"from a new key file, {key_file}" in first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert os.environ["NURTUREHUB_ENCRYPTION_KEYS_FILE"] == str(key_file)  # for uvicorn workers
    key_id = key_file.read_text().split(":")[0]
    assert f"key {key_id!r}" in first and key_file.read_text().split(":")[1].strip() not in first
    monkeypatch.delenv("NURTUREHUB_ENCRYPTION_KEYS_FILE")
    cli._announce_encryption_keys()
    assert f"from {key_file}" in capsys.readouterr().out  # reused, not replaced
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    monkeypatch.delenv("NURTUREHUB_ENCRYPTION_KEYS_FILE")
    cli._announce_encryption_keys()
    assert "crm.connect will refuse" in capsys.readouterr().out


def test_a_ciphertext_copied_to_another_connection_fails_to_decrypt(
    crm: Rpc, agency: Org, world: World, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    source = connect(crm, agency, "street", {"apiToken": "street-token-of-the-source-org"})
    other_org = world.org("Copy Target")
    target = connect(crm, other_org, "street", {"apiToken": "street-token-of-the-target-org"})
    query(
        database_url,
        "UPDATE crm_connections SET encrypted_credentials ="
        " (SELECT encrypted_credentials FROM crm_connections WHERE id = %s) WHERE id = %s",
        (source["id"], target["id"]),
    )
    contact = make_contact(crm, other_org, target["id"], "5f1c2d3e-aaaa-bbbb-cccc-000000000002")
    entry_id = enqueue(crm, other_org, contact)["entries"][0]["id"]
    try:
        with worker(loop, database_url, fake.config()):
            until(lambda: connection_status(database_url, target["id"])[0] == "error")
        assert fake.writes() == []  # the source's token was never used for the target
        assert connection_status(database_url, target["id"])[1] == (
            "credentials cannot be read: the secret does not decrypt: wrong key, altered data, "
            "or stored for another record"
        )
        assert entry(database_url, entry_id)["attempts"] == 0
        # Within one organisation too: the connection id is part of the binding.
        (sealed,) = query(
            database_url, "SELECT encrypted_credentials FROM crm_connections WHERE id = %s", (source["id"],)
        )[0]
        assert open_credentials(KEYRING, uuid.UUID(agency.id), uuid.UUID(source["id"]), bytes(sealed)) == {
            "apiToken": "street-token-of-the-source-org"
        }
        with pytest.raises(DecryptionFailed):
            open_credentials(KEYRING, uuid.UUID(agency.id), uuid.uuid4(), bytes(sealed))
    finally:
        query(database_url, "UPDATE crm_writeback_queue SET status = 'failed' WHERE id = %s", (entry_id,))


def _rotate(database_url: str, keys: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "NURTUREHUB_ENCRYPTION_KEYS": keys}
    env.pop("NURTUREHUB_ENCRYPTION_KEYS_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "rotate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rotation_then_removal_of_the_old_key(fresh_database: str, loop: LoopThread, fake: FakeCrm) -> None:
    old, new = new_key_entry(), new_key_entry()
    old_id, new_id = old.split(":")[0], new.split(":")[0]
    server = ServerThread(
        fresh_database, app_router, encryption_keys=Keyring.parse(old), suppression_key=b"s" * 32
    )
    try:
        rpc = World(loop, Database(fresh_database, pool_size=1))
        org = rpc.org("Rotating Agency")
        crm = Rpc(server.url)
        street = connect(crm, org, "street", {"apiToken": "street-token-rotate-me-1234"})
        connect(crm, org, "reapit")
        contact = make_contact(crm, org, street["id"], "5f1c2d3e-aaaa-bbbb-cccc-000000000003")
        entry_id = enqueue(crm, org, contact)["entries"][0]["id"]
    finally:
        server.stop()
        loop.run(rpc.db.close())

    def key_ids() -> set[str]:
        rows = query(fresh_database, "SELECT encrypted_credentials FROM crm_connections")
        return {Keyring.key_id_of(bytes(r[0])) for r in rows}

    assert key_ids() == {old_id}
    refused = _rotate(fresh_database, new)  # the old key is needed to read what is there
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"nurturehub: error: the secret was encrypted with key {old_id!r}, which is not configured"
    )
    assert key_ids() == {old_id}  # nothing changed

    done = _rotate(fresh_database, f"{new},{old}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"primaryKey": new_id, "reencrypted": 2, "unchanged": 0}
    assert key_ids() == {new_id}
    assert json.loads(_rotate(fresh_database, f"{new},{old}").stdout)["unchanged"] == 2

    # The old key removed: everything still decrypts, and the worker delivers with the new key alone.
    with worker(loop, fresh_database, fake.config(), keyring=Keyring.parse(new)):
        until(lambda: entry(fresh_database, entry_id)["status"] == "success")
    (write,) = fake.writes()
    assert write.headers["authorization"] == "Bearer street-token-rotate-me-1234"
    sealed = seal_credentials(Keyring.parse(new), uuid.uuid4(), uuid.uuid4(), {"a": 1})
    assert Keyring.key_id_of(sealed) == new_id
