"""The fast paths of email and phone validation (procedures/contact_fields.py) answer exactly as
the libraries they stand in for: the same normalised value, or a refusal where they refuse."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from procedures.contact_fields import _email, _phone

_LOCAL = st.text(alphabet="abcXYZ019.+-_'", min_size=1, max_size=20)
_DOMAIN = st.sampled_from([
    "example.co.uk", "Example.COM", "sub.agency.uk", "localhost", "test", "x.invalid", "a-b.io",
    "xn--bcher-kva.example", "bad_domain.com", "-dash.com", "gmail.com",
])


def library_email(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def ours(check, value: str) -> str | None:  # type: ignore[no-untyped-def]
    try:
        return str(check(value))
    except ValueError:
        return None


@settings(max_examples=400, deadline=None)
@given(_LOCAL, _DOMAIN)
@example("a..b", "example.co.uk")
@example(".a", "example.co.uk")
def test_email_fast_path_matches_the_validator(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    expected = library_email(value)
    if expected is not None and len(expected) > 320:
        expected = None
    assert ours(_email, value) == expected


_DIGITS = st.text(alphabet="0123456789", min_size=8, max_size=12)
_PREFIX = st.sampled_from(["", "0", "07", "01", "02", "+44", "+44 7", "0044 ", "+44 (0)", "(0", "+1 "])
_SPACING = st.sampled_from(["", " ", "-", "  "])


def library_phone(value: str) -> str | None:
    # What the module did before its fast path: phonenumbers' parse and E.164, with its own
    # shape rules for +44 (not tested here: only that the fast path never disagrees).
    try:
        number = phonenumbers.parse(value, "GB")
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@settings(max_examples=600, deadline=None)
@given(_PREFIX, _DIGITS, _SPACING)
@example("07700", "900123", " ")
def test_phone_fast_path_agrees_with_phonenumbers(prefix: str, digits: str, spacing: str) -> None:
    value = prefix + spacing.join([digits[:4], digits[4:]])
    mine = ours(_phone, value)
    if mine is not None:
        assert mine == library_phone(value)
