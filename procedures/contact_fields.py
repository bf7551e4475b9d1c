"""The contact's wire field types: validation and normalisation of names, email, phone, postcode.

Each type refuses bad input with a message that never repeats the value (it may be personal
data, and error messages reach logs), and normalises good input to the one form the database
stores, so uniqueness and search compare like with like.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

__all__ = [
    "CLOCK_SKEW",
    "Category",
    "ConsentStatus",
    "ConsentTime",
    "CrmPayload",
    "Email",
    "ExternalId",
    "Group",
    "ImportSource",
    "Name",
    "Phone",
    "Postcode",
    "Reason",
    "SearchText",
    "not_in_future",
    "search_tsquery",
]

Category = Literal[
    "seller", "buyer", "landlord", "tenant_applicant", "property_investor", "btl_investor",
    "active_seller", "active_buyer", "managed_landlord", "active_tenant",
    "active_property_investor", "active_btl_investor",
]  # fmt: skip
Group = Literal["prospect", "existing_client"]
ConsentStatus = Literal["granted", "denied", "unknown", "pending"]
ImportSource = Literal["crm_sync", "manual", "apify", "land_registry"]

_NUL = "must not contain NUL bytes"
# A client clock a little ahead of ours is not "a consent given in the future".
CLOCK_SKEW = timedelta(seconds=60)


def not_in_future(value: datetime) -> datetime:
    """A time of consent: not later than now (give or take a client's clock)."""
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(_NUL)
    return value


# The common address, ASCII dot-atom@domain, checked without the full validator, whose
# per-character IDNA checks of the domain cost about 200 us: each domain is checked by it once.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The domain as the validator normalises it, or None if it refuses it."""
    try:
        return validate_email("a@" + domain, check_deliverability=False).domain
    except EmailNotValidError:
        return None


def _email(value: str) -> str:
    _no_nul(value)
    local, at, domain = value.rpartition("@")
    if at and len(local) <= 64 and _DOT_ATOM.fullmatch(local):
        checked_domain = _domain(domain)
        if checked_domain is not None and len(local) + 1 + len(checked_domain) <= 254:
            return f"{local}@{checked_domain}".lower()
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        # The library's message can quote parts of the address, so it is not passed on.
        raise ValueError("is not a valid email address") from None
    normalised = checked.normalized.lower()
    if len(normalised) > 320:
        raise ValueError("is longer than 320 characters")
    return normalised


_UK = 44


# UK mobiles and geographic numbers as people write them, turned to E.164 without a parse
# (about 60 us); anything else goes through phonenumbers.
_COMMON_UK = re.compile(r"(?:\+44|0044|0)(7\d{9}|[12]\d{8,9})")
_LAYOUT = re.compile(r"[\s\-().]")


def _phone(value: str) -> str:
    _no_nul(value)
    common = _COMMON_UK.fullmatch(_LAYOUT.sub("", value))
    if common is not None:
        return "+44" + common.group(1)
    try:
        number = phonenumbers.parse(value, "GB")
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if number.country_code == _UK:
        if not _possible_uk(number):
            raise ValueError("is not a possible UK phone number (wrong length or prefix)")
    elif not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number (UK numbers may omit +44)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _possible_uk(number: phonenumbers.PhoneNumber) -> bool:
    """A UK number of a possible shape, allocated or not.

    phonenumbers' is_valid_number knows only the ranges allocated when the library was built,
    and refuses Ofcom's drama range (07700 900xxx) and newly allocated mobile blocks; agents'
    contacts have those. Its shape check is lenient (seven digits pass), so Ofcom's plan is
    added: after the trunk 0 come nine or ten digits (ten for 07), never starting with 0.
    """
    national = phonenumbers.national_significant_number(number)
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:  # too short, too long, or local only
        return False
    expected = (10,) if national.startswith("7") else (9, 10)
    return len(national) in expected and not national.startswith("0")


# Royal Mail's formats (A9 9AA, A99 9AA, A9A 9AA, AA9 9AA, AA99 9AA, AA9A 9AA) and GIR 0AA.
_POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?|GIR)([0-9][A-Z]{2})")


def _postcode(value: str) -> str:
    _no_nul(value)
    compact = re.sub(r"\s+", "", value).upper()
    match = _POSTCODE.fullmatch(compact)
    if match is None:
        raise ValueError("is not a UK postcode")
    return f"{match.group(1)} {match.group(2)}"


def _payload(value: dict[str, Any]) -> dict[str, Any]:
    # PostgreSQL's jsonb cannot hold \u0000, in keys or strings, at any depth.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _no_nul(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _no_nul(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _text(max_length: int) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(_no_nul),
    ]


Name = _text(200)
Reason = _text(500)
ExternalId = _text(200)
SearchText = _text(200)
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Phone = Annotated[str, Field(max_length=40), AfterValidator(_phone)]
Postcode = Annotated[str, Field(max_length=16), AfterValidator(_postcode)]
CrmPayload = Annotated[dict[str, Any], AfterValidator(_payload)]
ConsentTime = Annotated[AwareDatetime, AfterValidator(not_in_future)]

# Search terms keep what identifiers are made of; anything else separates terms.
_TERM_SPLIT = re.compile(r"[^\w@.+-]+")
_PHONE_LIKE = re.compile(r"[0-9+()\s-]+")


def search_tsquery(text: str) -> str | None:
    """`text` as a tsquery of prefix terms, all of which must match; None if nothing is left.

    A search that looks like a phone number is one term of its digits (so '07700 900123' finds
    +447700900123); otherwise each word is a term, matched against the lexemes that
    contacts.search_vector holds (see schema.sql). Terms are reduced to letters, digits and
    `@._+-`, so each is one safe quoted tsquery operand.
    """
    lowered = text.strip().lower()
    if _PHONE_LIKE.fullmatch(lowered) and sum(ch.isdigit() for ch in lowered) >= 3:
        terms = ["".join(ch for ch in lowered if ch.isdigit())]
    else:
        terms = [t.strip(".+-") for t in _TERM_SPLIT.split(lowered.replace("'", ""))]
    operands = [f"'{term}':*" for term in terms if term]
    return " & ".join(operands) if operands else None
