"""Issue 4: the erasure suppression key: from the environment, or made once beside embedded data."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from server.keys import KEY_ENV, KeyConfigError, ensure_key_file, parse_key, prepare_for_serve
from server.settings import Settings


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    key, path, created = ensure_key_file(tmp_path / "data")
    assert created and len(key) == 32 and path == tmp_path / "data" / "suppression.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, _, created_again = ensure_key_file(tmp_path / "data")
    assert again == key and not created_again


@pytest.mark.parametrize("encoded", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_unusable_keys_are_refused_without_echoing_them(encoded: str) -> None:
    with pytest.raises(KeyConfigError) as refused:
        parse_key(encoded)
    assert KEY_ENV in str(refused.value) and (not encoded or encoded not in str(refused.value))


def test_settings_read_the_key_and_never_show_it(monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.urandom(32)
    monkeypatch.setenv(KEY_ENV, base64.b64encode(key).decode())
    settings = Settings.from_env("postgresql://localhost/x")
    assert settings.suppression_key == key
    assert base64.b64encode(key).decode() not in repr(settings) and str(key) not in repr(settings)
    monkeypatch.setenv(KEY_ENV, "dG9vIHNob3J0")
    with pytest.raises(SystemExit) as refused:
        Settings.from_env("postgresql://localhost/x")
    assert "dG9vIHNob3J0" not in str(refused.value)
    monkeypatch.delenv(KEY_ENV)
    assert Settings.from_env("postgresql://localhost/x").suppression_key is None


def test_serve_with_embedded_data_makes_the_key_and_hands_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    message = prepare_for_serve(tmp_path)
    assert "created a new erasure suppression key" in message and str(tmp_path) in message
    handed_on = parse_key(os.environ[KEY_ENV])
    assert handed_on == parse_key((tmp_path / "suppression.key").read_text())
    monkeypatch.delenv(KEY_ENV)
    assert "using the erasure suppression key" in prepare_for_serve(tmp_path)
    assert parse_key(os.environ[KEY_ENV]) == handed_on


def test_serve_with_database_url_and_no_key_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    message = prepare_for_serve(None)
    assert "warning" in message and "contacts.delete" in message and KEY_ENV in message
    assert KEY_ENV not in os.environ
