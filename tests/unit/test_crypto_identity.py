"""identity.py: canonical strings, strict parsing, validity periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import NOW
from hypothesis import given
from hypothesis import strategies as st

from cloudlet.crypto.identity import (
    Identity,
    Period,
    check_current,
    cloudlet_identity,
    device_identity,
    normalise_id,
)
from cloudlet.errors import ExpiredIdentityError, IdentityError


def test_canonical_form():
    ident = device_identity("cl-alpha", "tablet-07", "2026-11")
    assert str(ident) == "cloudlet-id-v1/cl-alpha/tablet-07/2026-11"
    assert ident.encode() == str(ident).encode("ascii")
    assert (
        str(cloudlet_identity("cl-alpha", "2026-11-26")) == "cloudlet-id-v1/cl-alpha/-/2026-11-26"
    )


def test_normalisation_nfc_and_case():
    assert normalise_id("  CL-Alpha ") == "cl-alpha"
    with pytest.raises(IdentityError):
        normalise_id("cafe\u0301")  # non-ASCII after NFC
    for bad in ["", "-x", "x-", "a/b", "a b", "x" * 64, "a_b"]:
        with pytest.raises(IdentityError):
            normalise_id(bad)


@pytest.mark.parametrize(
    "text",
    [
        "cloudlet-id-v1/cl-alpha/tablet-07",
        "cloudlet-id-v2/cl-alpha/tablet-07/2026-11",
        "cloudlet-id-v1/CL-alpha/tablet-07/2026-11",
        "cloudlet-id-v1/cl-alpha/tablet-07/2026-13",
        "cloudlet-id-v1/cl-alpha/tablet-07/2026-1",
        "cloudlet-id-v1/cl-alpha/tablet-07/2026-02-30",
        "cloudlet-id-v1/cl-alpha/tablet-07/2026-11/x",
        "cloudlet-id-v1/cl-alpha//2026-11",
        "cloudlet-id-v1/cl-alpha/--/2026-11",
        "cloudlet-id-v1/cl-alpha/tablet-07/2026-11 ",
        "cloudlet-id-v1/cl-alpha/tablet-07@cl-alpha/2026-11",  # its own device has no home
        "cloudlet-id-v1/cl-alpha/tablet-07@/2026-11",
        "cloudlet-id-v1/cl-alpha/@cl-bravo/2026-11",
        "cloudlet-id-v1/cl-alpha/tablet-07@cl-bravo@cl-c/2026-11",
        "cloudlet-id-v1/cl-alpha/-@cl-bravo/2026-11",
        "cloudlet-id-v1/cl-alpha/tablet-07@CL-bravo/2026-11",
    ],
)
def test_parse_is_strict(text):
    with pytest.raises(IdentityError):
        Identity.parse(text)


ids = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(ids, st.one_of(st.none(), ids), st.integers(2000, 2100), st.integers(1, 12))
def test_parse_round_trip(cid, did, year, month):
    ident = Identity(cid, did, Period(f"{year:04d}-{month:02d}"))
    assert Identity.parse(str(ident)) == ident
    assert Identity.parse(ident.encode()) == ident


@given(ids, ids, ids, st.integers(2000, 2100), st.integers(1, 12))
def test_visitor_round_trip(cid, did, home, year, month):
    ident = device_identity(cid, did, f"{year:04d}-{month:02d}", home=home)
    assert Identity.parse(str(ident)) == ident
    assert ident.home_cloudlet == home


def test_a_visitor_never_shares_an_identity_with_a_local_device():
    """A device id is unique only at its home; the home keeps the two apart."""
    local = device_identity("cl-bravo", "tablet-07", "2026-11")
    visitor = device_identity("cl-bravo", "tablet-07", "2026-11", home="cl-alpha")
    assert str(visitor) == "cloudlet-id-v1/cl-bravo/tablet-07@cl-alpha/2026-11"
    assert visitor != local and visitor.encode() != local.encode()
    assert (local.home, local.home_cloudlet, local.device_name) == (None, "cl-bravo", "tablet-07")
    assert visitor.device_name == "tablet-07@cl-alpha"
    # Naming the issuer as the home is the same identity as naming no home.
    assert device_identity("cl-bravo", "tablet-07", "2026-11", home="CL-Bravo") == local
    with pytest.raises(IdentityError):
        Identity("cl-bravo", None, Period("2026-11"), home="cl-alpha")


def test_period_bounds():
    month = Period("2026-12")
    assert month.not_before == datetime(2026, 12, 1, tzinfo=UTC)
    assert month.not_after == datetime(2027, 1, 1, tzinfo=UTC)
    assert month.next() == Period("2027-01")
    day = Period("2026-11-30")
    assert day.next() == Period("2026-12-01")
    assert Period.containing(NOW) == Period("2026-11")
    assert Period.containing(NOW, "day") == Period("2026-11-15")


def test_check_current():
    ident = device_identity("cl-alpha", "tablet-07", "2026-11")
    check_current(ident, NOW)
    edge = datetime(2026, 12, 1, tzinfo=UTC)
    check_current(ident, edge + timedelta(minutes=4))  # clock skew allowed
    with pytest.raises(ExpiredIdentityError, match="expired"):
        check_current(ident, edge + timedelta(minutes=6))
    with pytest.raises(ExpiredIdentityError, match="not valid before"):
        check_current(ident, datetime(2026, 10, 31, 23, 50, tzinfo=UTC))
    with pytest.raises(ValueError):
        check_current(ident, datetime(2026, 11, 2))  # naive time


@pytest.mark.parametrize(
    "label",
    ["\u0662\u0660\u0662\u0666-\u0661\u0661", "\uff12\uff10\uff12\uff16-\uff11\uff11", "1999-12"],
)
def test_period_digits_are_ascii_only(label):
    """\\d would accept Arabic-Indic or full-width digits: a second spelling of a period."""
    with pytest.raises(IdentityError):
        Period(label)
    with pytest.raises(IdentityError):
        device_identity("cl-alpha", "tablet-07", label)
