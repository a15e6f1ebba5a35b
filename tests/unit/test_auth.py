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

KAT_PROOF = "afb1e87a9113101ee5c3d9e28f9b4156a48fc6382b5fde1f0d9e16352f73af0d"


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


def test_time_window_edges(verifier, dev_key):
    """Accepted at exactly +-120 s, refused one second further out."""
    with pytest.raises(ReplayError, match="old"):
        verifier.verify(_proof(dev_key), b"GET /credentials", NOW + timedelta(seconds=121))
    with pytest.raises(ReplayError):
        verifier.verify(_proof(dev_key), b"GET /credentials", NOW - timedelta(seconds=121))
    assert verifier.verify(_proof(dev_key), b"GET /credentials", NOW + timedelta(seconds=120))
    assert verifier.verify(_proof(dev_key), b"GET /credentials", NOW - timedelta(seconds=120))


def test_replay_refused_for_as_long_as_the_window_accepts(verifier, dev_key):
    """The cache must not forget a nonce while the proof is still inside the window."""
    proof = _proof(dev_key, now=NOW + timedelta(seconds=120))  # from the future edge
    verifier.verify(proof, b"GET /credentials", NOW)
    for later in (1, 120, 240):
        with pytest.raises(ReplayError, match="Replayed"):
            verifier.verify(proof, b"GET /credentials", NOW + timedelta(seconds=later))
    with pytest.raises(ReplayError, match="old"):  # and after that the window refuses it
        verifier.verify(proof, b"GET /credentials", NOW + timedelta(seconds=241))


def test_repeated_rng_does_not_repeat_the_signature_nonce(dev_key, master_a, dev_id):
    """Two messages signed with the same rng stream must not share k (that leaks d_sig)."""
    u1, v1 = auth.sign(dev_key, b"message one", DetRng(b"stuck"))
    u2, v2 = auth.sign(dev_key, b"message two", DetRng(b"stuck"))
    assert u1 != u2
    assert auth.verify_signature(master_a.params, dev_id, b"message one", u1, v1)
    assert auth.verify_signature(master_a.params, dev_id, b"message two", u2, v2)


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
        cache.add("dev", b"1", expires_at=100, now=99.5)
    cache.add("dev", b"2", expires_at=150, now=50)
    with pytest.raises(AuthenticationError, match="Too many"):
        cache.add("dev", b"3", expires_at=200, now=60)  # full of live entries: refuse
    cache.add("dev", b"1", expires_at=200, now=100)  # expired entries leave first
    assert len(cache) == 2
    cache.add("dev", b"3", expires_at=300, now=150)
    assert len(cache) == 2


def test_replay_cache_is_keyed_by_identity_and_nonce():
    cache = auth.ReplayCache()
    cache.add("dev-a", b"n", expires_at=100, now=0)
    cache.add("dev-b", b"n", expires_at=100, now=0)  # another device may pick the same nonce
    with pytest.raises(ReplayError):
        cache.add("dev-a", b"n", expires_at=100, now=1)


def test_replay_cache_stays_bounded_under_load():
    cache = auth.ReplayCache(max_entries=50)
    for t in range(10_000):
        cache.add("dev", t.to_bytes(4, "big"), expires_at=t + 10, now=t)
        assert len(cache) <= 11
    assert len(cache._expiry) == len(cache)


def test_truncated_proof_rejected(dev_key):
    data = formats.encode_auth_proof(_proof(dev_key))
    with pytest.raises(FormatError):
        formats.decode_auth_proof(data[:-1])
