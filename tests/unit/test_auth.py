"""auth.py: device proofs, the time window and the replay cache."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import pytest
from conftest import NOW, DetRng

from cloudlet import formats
from cloudlet.crypto import auth, curve, ibe
from cloudlet.crypto.identity import cloudlet_identity, device_identity
from cloudlet.errors import (
    AuthenticationError,
    ExpiredIdentityError,
    FormatError,
    ReplayError,
)

KAT_PROOF = "c2c16a37bca453567f43057918df2615927161421cb1d9d4a73a88a60ff28f71"


@pytest.fixture
def verifier(master_a):
    return auth.DeviceVerifier(master_a.params)


def _proof(key, request=b"GET /credentials", now=NOW, audience="cl-alpha"):
    return auth.make_proof(key, audience, request, now=now)


def test_known_answer():
    master = ibe.setup("cl-alpha", DetRng(b"kat-pkg"))
    key = ibe.extract(master, device_identity("cl-alpha", "tablet-07", "2026-11"))
    proof = auth.make_proof(key, "cl-alpha", b"GET /x", now=NOW, rng=DetRng(b"kat-auth"))
    assert hashlib.sha256(formats.encode_auth_proof(proof)).hexdigest() == KAT_PROOF
    assert auth.DeviceVerifier(master.params).verify(proof, b"GET /x", NOW) == key.identity


def test_valid_proof_accepted_after_encoding(verifier, dev_key):
    data = formats.encode_auth_proof(_proof(dev_key))
    proof = formats.decode_auth_proof(data)
    assert verifier.verify(proof, b"GET /credentials", NOW) == dev_key.identity


def test_replay_rejected(verifier, dev_key):
    proof = _proof(dev_key)
    verifier.verify(proof, b"GET /credentials", NOW)
    with pytest.raises(ReplayError, match="Replayed"):
        verifier.verify(proof, b"GET /credentials", NOW + timedelta(seconds=5))


def test_old_and_future_proofs_rejected(verifier, dev_key):
    proof = _proof(dev_key)
    with pytest.raises(ReplayError, match="old"):
        verifier.verify(proof, b"GET /credentials", NOW + timedelta(seconds=121))
    with pytest.raises(ReplayError):
        verifier.verify(proof, b"GET /credentials", NOW - timedelta(seconds=121))


def test_proof_bound_to_request(verifier, dev_key):
    with pytest.raises(AuthenticationError, match="signature"):
        verifier.verify(_proof(dev_key), b"GET /other-device", NOW)


def test_proof_bound_to_audience(master_b, dev_key, verifier):
    with pytest.raises(AuthenticationError, match="addressed"):
        verifier.verify(_proof(dev_key, audience="cl-bravo"), b"GET /credentials", NOW)


def test_forged_signatures_rejected(verifier, dev_key, dev_id, master_a):
    proof = _proof(dev_key)
    bad_v = dataclasses.replace(proof, v=proof.v + curve.g1_generator())
    with pytest.raises(AuthenticationError):
        verifier.verify(bad_v, b"GET /credentials", NOW)
    # Claiming another device's identity with our key:
    other = dataclasses.replace(proof, identity=device_identity("cl-alpha", "tablet-08", "2026-11"))
    with pytest.raises(AuthenticationError):
        verifier.verify(other, b"GET /credentials", NOW)
    # The decryption key cannot stand in for the signing key:
    wrong_half = dataclasses.replace(dev_key, d_sig=dev_key.d_enc)
    with pytest.raises(AuthenticationError):
        verifier.verify(_proof(wrong_half), b"GET /credentials", NOW)


def test_key_from_rogue_pkg_rejected(verifier, dev_id):
    rogue = ibe.setup("cl-alpha", DetRng(b"rogue"))
    with pytest.raises(AuthenticationError, match="not issued"):
        verifier.verify(_proof(ibe.extract(rogue, dev_id)), b"GET /credentials", NOW)


def test_expired_identity_rejected(master_a):
    old = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07", "2026-10"))
    with pytest.raises(ExpiredIdentityError):
        auth.DeviceVerifier(master_a.params).verify(_proof(old), b"GET /credentials", NOW)


def test_cloudlet_identity_is_not_a_device(master_a, verifier):
    key = ibe.extract(master_a, cloudlet_identity("cl-alpha", "2026-11"))
    with pytest.raises(AuthenticationError, match="not a device"):
        verifier.verify(_proof(key), b"GET /credentials", NOW)


def test_replay_cache_expiry_and_capacity():
    cache = auth.ReplayCache(max_entries=2)
    cache.add("dev", b"1", expires_at=100, now=0)
    with pytest.raises(ReplayError):
        cache.add("dev", b"1", expires_at=100, now=50)
    cache.add("dev", b"2", expires_at=100, now=50)
    with pytest.raises(AuthenticationError, match="Too many"):
        cache.add("dev", b"3", expires_at=200, now=60)
    cache.add("dev", b"3", expires_at=200, now=101)  # old entries purged
    assert len(cache) == 1


def test_truncated_proof_rejected(dev_key):
    data = formats.encode_auth_proof(_proof(dev_key))
    with pytest.raises(FormatError):
        formats.decode_auth_proof(data[:-1])
