"""ibe.py: known answers, round trips, and every rejection path."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import pytest
from conftest import NOW, DetRng
from hypothesis import given
from hypothesis import strategies as st

from cloudlet import formats
from cloudlet.crypto import curve, ibe
from cloudlet.crypto.identity import device_identity
from cloudlet.errors import (
    CryptoError,
    DecryptionError,
    ExpiredIdentityError,
    IdentityError,
)

KAT_PARAMS = "c4df2bace57c75ffe40f0144f3811556655c41da50b62b0c72a590bbd7940376"
KAT_MASTER = "2c4273076a7c8cc39256f39dae39919c13d8ff3a40db420ff9f28ff9f4b2a23c"
KAT_KEY = "3fc53902be52e16561250319650fdd7ec47e963810443b0ee850a957a08ebeb5"
KAT_CT = "388391ae508194a50cb3a06968077f1a03ffbd118d20850a535af07e8029529a"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_known_answers_with_injected_rng():
    master = ibe.setup("cl-alpha", DetRng(b"kat-pkg"))
    ident = device_identity("cl-alpha", "tablet-07", "2026-11")
    key = ibe.extract(master, ident)
    ct = ibe.encrypt(
        master.params, ident, b"attack at dawn", b"aad", rng=DetRng(b"kat-enc"), now=NOW
    )
    assert master.params.digest.hex() == KAT_PARAMS
    assert _sha(formats.encode_master_key(master)) == KAT_MASTER
    assert _sha(formats.encode_device_key(key)) == KAT_KEY
    assert _sha(formats.encode_ciphertext(ct)) == KAT_CT
    assert ibe.decrypt(key, ct, b"aad") == b"attack at dawn"


def test_extract_is_deterministic_and_checks_out(master_a, dev_id, dev_key):
    assert ibe.extract(master_a, dev_id) == dev_key
    ibe.check_device_key(master_a.params, dev_key)


def test_secrets_are_not_in_repr(master_a, dev_key):
    assert "secret" in repr(master_a) and "s_enc" not in repr(master_a)
    assert "secret" in repr(dev_key)


@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_round_trip(master_a, dev_key, dev_id, plaintext, aad):
    ct = ibe.encrypt(master_a.params, dev_id, plaintext, aad, now=NOW)
    again = formats.decode_ciphertext(formats.encode_ciphertext(ct))
    assert ibe.decrypt(dev_key, again, aad) == plaintext


def test_encryption_is_randomised(master_a, dev_id):
    a = ibe.encrypt(master_a.params, dev_id, b"x", now=NOW)
    b = ibe.encrypt(master_a.params, dev_id, b"x", now=NOW)
    assert a.u != b.u and a.body != b.body


@pytest.fixture
def ct(master_a, dev_id):
    return ibe.encrypt(master_a.params, dev_id, b"secret bundle", b"ctx", rng=DetRng(b"c"), now=NOW)


@pytest.mark.parametrize("field", ["body", "v"])
def test_tampered_bytes_rejected(dev_key, ct, field):
    value = bytearray(getattr(ct, field))
    value[len(value) // 2] ^= 0x01
    with pytest.raises(DecryptionError):
        ibe.decrypt(dev_key, dataclasses.replace(ct, **{field: bytes(value)}), b"ctx")


def test_substituted_u_rejected_by_fo_check(dev_key, ct):
    other = curve.g2_generator() * curve.scalar_from_int(12345)
    with pytest.raises(DecryptionError, match="re-encryption"):
        ibe.decrypt(dev_key, dataclasses.replace(ct, u=other), b"ctx")


def test_tampered_encoding_rejected(dev_key, ct):
    data = bytearray(formats.encode_ciphertext(ct))
    data[-5] ^= 0x80
    with pytest.raises(DecryptionError):
        ibe.decrypt(dev_key, formats.decode_ciphertext(bytes(data)), b"ctx")


def test_wrong_aad_rejected(dev_key, ct):
    with pytest.raises(DecryptionError):
        ibe.decrypt(dev_key, ct, b"other context")


def test_wrong_identity_key_rejected(master_a, ct):
    other = ibe.extract(master_a, device_identity("cl-alpha", "tablet-08", "2026-11"))
    with pytest.raises(IdentityError, match="tablet-07"):
        ibe.decrypt(other, ct, b"ctx")


def test_key_for_another_period_rejected(master_a, ct):
    """Same device, next month's key: a different identity, so it cannot open this."""
    next_month = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07", "2026-12"))
    with pytest.raises(IdentityError, match="2026-11"):
        ibe.decrypt(next_month, ct, b"ctx")
    # Relabelling does not help either: the FO check binds the identity.
    with pytest.raises(DecryptionError):
        ibe.decrypt(next_month, dataclasses.replace(ct, identity=next_month.identity), b"ctx")


def test_relabelled_ciphertext_rejected(master_a, ct):
    """Changing the identity on the ciphertext to match another key does not help."""
    other_id = device_identity("cl-alpha", "tablet-08", "2026-11")
    other = ibe.extract(master_a, other_id)
    with pytest.raises(DecryptionError):
        ibe.decrypt(other, dataclasses.replace(ct, identity=other_id), b"ctx")


def test_key_from_other_pkg_rejected(master_a, dev_id, ct):
    rogue = ibe.setup("cl-alpha", DetRng(b"rogue"))
    with pytest.raises(DecryptionError, match="parameters"):
        ibe.decrypt(ibe.extract(rogue, dev_id), ct, b"ctx")
    with pytest.raises(CryptoError):
        ibe.check_device_key(master_a.params, ibe.extract(rogue, dev_id))


def test_forged_device_key_rejected(master_a, dev_key):
    forged = dataclasses.replace(dev_key, d_sig=dev_key.d_enc)
    with pytest.raises(CryptoError, match="does not match"):
        ibe.check_device_key(master_a.params, forged)


def test_expired_and_future_periods_refused(master_a):
    ident = device_identity("cl-alpha", "tablet-07", "2026-10")
    with pytest.raises(ExpiredIdentityError, match="expired"):
        ibe.encrypt(master_a.params, ident, b"x", now=NOW)
    with pytest.raises(ExpiredIdentityError, match="not valid before"):
        ibe.encrypt(master_a.params, ident, b"x", now=NOW - timedelta(days=60))
    # Explicitly allowed (e.g. pre-issuing for next month):
    ibe.encrypt(master_a.params, ident, b"x", now=NOW, check_period=False)


def test_extract_and_encrypt_refuse_foreign_cloudlet(master_a, master_b):
    foreign = device_identity("cl-bravo", "tablet-07", "2026-11")
    with pytest.raises(IdentityError, match="cl-bravo"):
        ibe.extract(master_a, foreign)
    with pytest.raises(IdentityError):
        ibe.encrypt(master_a.params, foreign, b"x", now=NOW)


def test_type_checks(master_a, dev_id, dev_key, ct):
    with pytest.raises(TypeError):
        ibe.encrypt(master_a.params, str(dev_id), b"x", now=NOW)
    with pytest.raises(TypeError):
        ibe.encrypt(master_a.params, dev_id, "text", now=NOW)
    with pytest.raises(TypeError):
        ibe.decrypt(master_a, ct)
    with pytest.raises(TypeError):
        ibe.extract(master_a.params, dev_id)
