"""bundles.py: device and pairing bundles, sealed and opened."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import NOW, PEM, DetRng
from hypothesis import given
from hypothesis import strategies as st

from cloudlet import bundles, formats
from cloudlet.crypto import auth, codes, curve, ibe, pake
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.errors import (
    CloudletError,
    CryptoError,
    DecryptionError,
    FormatError,
    IdentityError,
)

NET = bundles.NetworkCredential("cloudlet-bravo", "tablet-07", "eap-pwd-secret")
PERIOD = Period("2026-11")


@pytest.fixture(scope="module")
def signer_b(master_b):
    return bundles.issuer_key(master_b, PERIOD)


def _device_bundle(master_b, did="tablet-07"):
    new_id = device_identity("cl-bravo", did, "2026-11")
    return bundles.DeviceBundle(
        ibe.extract(master_b, new_id), master_b.params, PEM, NET, "10.20.0.1", 8443
    )


def test_device_bundle_sealed_to_old_identity(master_a, master_b, dev_id, dev_key):
    """Migration: B issues, sealed under A's params to the device's A identity."""
    sealed = bundles.issue_device_bundle(
        master_b,
        device_identity("cl-bravo", "tablet-07", "2026-11"),
        master_a.params,
        dev_id,
        PEM,
        NET,
        "10.20.0.1",
        8443,
        now=NOW,
    )
    bundle = bundles.open_device_bundle(dev_key, sealed, master_b.params)
    assert bundle.device_key.identity == device_identity("cl-bravo", "tablet-07", "2026-11")
    assert bundle.params == master_b.params and bundle.api_port == 8443
    assert bundle.network.password == "eap-pwd-secret"
    assert "eap-pwd-secret" not in repr(bundle) + repr(bundle.network)


@given(
    st.text(min_size=1, max_size=32).filter(lambda s: len(s.encode()) <= 32),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.integers(1, 65535),
)
def test_device_bundle_round_trip(
    master_a, master_b, signer_b, dev_id, dev_key, ssid, ident, pw, port
):
    net = bundles.NetworkCredential(ssid, ident, pw)
    bundle = bundles.DeviceBundle(
        ibe.extract(master_b, device_identity("cl-bravo", "t1", "2026-11")),
        master_b.params,
        PEM,
        net,
        "cl-bravo.local",
        port,
    )
    assert bundles.decode_device_bundle(bundles.encode_device_bundle(bundle)).network == net
    sealed = bundles.seal_device_bundle(master_a.params, dev_id, bundle, signer_b, now=NOW)
    opened = bundles.open_device_bundle(dev_key, sealed, master_b.params, verify_key=False)
    assert opened.device_key == bundle.device_key and opened.api_port == port


def test_other_device_cannot_open(master_a, master_b, signer_b, dev_id):
    sealed = bundles.seal_device_bundle(
        master_a.params, dev_id, _device_bundle(master_b), signer_b, now=NOW
    )
    other = ibe.extract(master_a, device_identity("cl-alpha", "tablet-08", "2026-11"))
    with pytest.raises(IdentityError):
        bundles.open_device_bundle(other, sealed, master_b.params)


def test_tampered_device_bundle(master_a, master_b, signer_b, dev_id, dev_key):
    sealed = bytearray(
        bundles.seal_device_bundle(
            master_a.params, dev_id, _device_bundle(master_b), signer_b, now=NOW
        )
    )
    sealed[-20] ^= 0x04
    with pytest.raises(DecryptionError):
        bundles.open_device_bundle(dev_key, bytes(sealed), master_b.params)
    with pytest.raises(FormatError):
        bundles.open_device_bundle(dev_key, bytes(sealed[:-1]), master_b.params)  # truncated


def _seal_raw(master_a, recipient, body, u, v):
    """What an attacker can do: anyone may IBE-encrypt to a device identity."""
    signed = formats.pack(
        formats.Kind.SIGNED_DEVICE_BUNDLE, [body, curve.g1_to_bytes(u), curve.g1_to_bytes(v)]
    )
    ct = ibe.encrypt(master_a.params, recipient, signed, bundles._AAD_DEVICE, now=NOW)
    return formats.encode_ciphertext(ct)


def test_bundle_from_untrusted_issuer_rejected(master_a, master_b, dev_id, dev_key):
    """A rogue PKG calling itself cl-bravo issues a valid-looking bundle."""
    rogue = ibe.setup("cl-bravo", DetRng(b"rogue-b"))
    sealed = bundles.issue_device_bundle(
        rogue,
        device_identity("cl-bravo", "tablet-07", "2026-11"),
        master_a.params,
        dev_id,
        PEM,
        NET,
        "10.66.0.1",
        8443,
        now=NOW,
    )
    assert bundles.open_device_bundle(dev_key, sealed, rogue.params)  # self-consistent ...
    with pytest.raises(CryptoError, match="does not trust"):
        bundles.open_device_bundle(dev_key, sealed, master_b.params)  # ... but not trusted


def test_bundle_signed_by_a_device_rejected(master_a, master_b, dev_id, dev_key):
    """Another device of cl-bravo re-packs its own genuine key with a rogue CA."""
    evil = _device_bundle(master_b, "tablet-66")
    evil = bundles.DeviceBundle(
        evil.device_key, evil.params, PEM.replace("fake", "evil"), NET, "10.66.0.1", 8443
    )
    body = bundles.encode_device_bundle(evil)
    u, v = auth.sign(evil.device_key, bundles._signed_message(dev_id, body))
    with pytest.raises(CryptoError, match="signature"):
        bundles.open_device_bundle(
            dev_key, _seal_raw(master_a, dev_id, body, u, v), master_b.params
        )


def test_bundle_for_another_recipient_cannot_be_redirected(
    master_a, master_b, signer_b, dev_id, dev_key
):
    """A genuine bundle signed for tablet-08, re-encrypted to tablet-07."""
    body = bundles.encode_device_bundle(_device_bundle(master_b, "tablet-08"))
    other = device_identity("cl-alpha", "tablet-08", "2026-11")
    u, v = auth.sign(signer_b, bundles._signed_message(other, body))
    with pytest.raises(CryptoError, match="signature"):
        bundles.open_device_bundle(
            dev_key, _seal_raw(master_a, dev_id, body, u, v), master_b.params
        )
    # The same bytes signed for the right recipient are accepted, so the
    # rejection above is the recipient binding and nothing else.
    u, v = auth.sign(signer_b, bundles._signed_message(dev_id, body))
    opened = bundles.open_device_bundle(
        dev_key, _seal_raw(master_a, dev_id, body, u, v), master_b.params
    )
    assert opened.device_key.identity.device_id == "tablet-08"


def test_seal_refuses_the_wrong_signer(master_a, master_b, dev_id, dev_key):
    with pytest.raises(IdentityError, match="signed with the key of"):
        bundles.seal_device_bundle(
            master_a.params, dev_id, _device_bundle(master_b), dev_key, now=NOW
        )


def test_bundle_validation():
    with pytest.raises(FormatError, match="offline guessing"):
        bundles.NetworkCredential("ssid", "id", "pw", eap_method="mschapv2")
    with pytest.raises(FormatError):
        bundles.NetworkCredential("x" * 33, "id", "pw")
    with pytest.raises(FormatError):
        bundles.NetworkCredential("ssid", "id", "")


@pytest.mark.parametrize(
    ("field", "value"),
    [("api_port", 0), ("api_port", 70000), ("api_host", "bad host"), ("tls_ca_pem", "nope")],
)
def test_device_bundle_fields_checked(master_b, field, value):
    kwargs = dict(
        device_key=ibe.extract(master_b, device_identity("cl-bravo", "t1", "2026-11")),
        params=master_b.params,
        tls_ca_pem=PEM,
        network=NET,
        api_host="h",
        api_port=1,
    )
    kwargs[field] = value
    with pytest.raises(FormatError):
        bundles.DeviceBundle(**kwargs)


def test_batch_issue_in_parallel(master_a, master_b, dev_key):
    jobs = [
        (
            device_identity("cl-bravo", f"d{i}", "2026-11"),
            device_identity("cl-alpha", f"d{i}", "2026-11"),
            bundles.NetworkCredential("cl-bravo-net", f"d{i}", f"eap-secret-{i}"),
        )
        for i in range(13)
    ]
    jobs[7] = (device_identity("cl-bravo", "tablet-07", "2026-11"), dev_key.identity,
               bundles.NetworkCredential("cl-bravo-net", "tablet-07", "eap-secret-7"))
    with bundles.BundleIssuer(master_b, workers=2) as issuer:
        sealed = issuer.issue(master_a.params, jobs, PEM, "10.20.0.1", 8443, now=NOW)
        assert len(issuer.pids) == 2
        # A worker killed (out of memory, say): the next batch gets a fresh pool.
        os.kill(issuer.pids[0], signal.SIGKILL)
        time.sleep(0.5)
        again = issuer.issue(master_a.params, jobs[:3], PEM, "10.20.0.1", 8443, now=NOW)
        assert len(again) == 3 and len(issuer.pids) == 2
    assert len(sealed) == 13
    opened = bundles.open_device_bundle(dev_key, sealed[7], master_b.params)
    assert opened.device_key.identity.device_id == "tablet-07"
    assert opened.network.password == "eap-secret-7"  # each job's own credential, in order


# --- pairing bundles ----------------------------------------------------------


def _paired():
    code = codes.generate_code(rng=DetRng(b"pb"))
    a = pake.Pairing("cl-alpha", "cl-bravo", code, pake.AttemptCounter(), rng=DetRng(b"pa"))
    b = pake.Pairing("cl-bravo", "cl-alpha", code, pake.AttemptCounter(), rng=DetRng(b"pb"))
    ea, eb = a.start(), b.start()
    ca, cb = a.receive(eb), b.receive(ea)
    a.receive(cb)
    b.receive(ca)
    return a.result, b.result


def _pairing_bundle(master, cid):
    net = bundles.NetworkCredential(f"{cid}-net", "peer-cl", "peer-secret")
    return bundles.PairingBundle(cid, PEM, master.params, net, f"{cid}.cloudlet.lan", 8443)


def test_pairing_bundles_both_directions(master_a, master_b):
    ra, rb = _paired()
    from_a = bundles.seal_pairing_bundle(ra, _pairing_bundle(master_a, "cl-alpha"))
    from_b = bundles.seal_pairing_bundle(rb, _pairing_bundle(master_b, "cl-bravo"))
    got_b = bundles.open_pairing_bundle(rb, from_a)
    got_a = bundles.open_pairing_bundle(ra, from_b)
    assert got_b.params == master_a.params and got_b.fqdn == "cl-alpha.cloudlet.lan"
    assert got_a.params == master_b.params and got_a.network.password == "peer-secret"


def test_pairing_bundle_reflection_and_tampering(master_a):
    ra, rb = _paired()
    from_a = bundles.seal_pairing_bundle(ra, _pairing_bundle(master_a, "cl-alpha"))
    with pytest.raises(DecryptionError, match="does not belong"):
        bundles.open_pairing_bundle(ra, from_a)  # our own bundle reflected back
    tampered = bytearray(from_a)
    tampered[-3] ^= 0x10
    with pytest.raises(DecryptionError, match="altered"):
        bundles.open_pairing_bundle(rb, bytes(tampered))


def test_pairing_bundle_from_other_session_rejected(master_a):
    ra, rb = _paired()
    code = codes.generate_code(rng=DetRng(b"second"))
    a2 = pake.Pairing("cl-alpha", "cl-bravo", code, pake.AttemptCounter())
    b2 = pake.Pairing("cl-bravo", "cl-alpha", code, pake.AttemptCounter())
    ea, eb = a2.start(), b2.start()
    ca, cb = a2.receive(eb), b2.receive(ea)
    a2.receive(cb)
    b2.receive(ca)
    old = bundles.seal_pairing_bundle(ra, _pairing_bundle(master_a, "cl-alpha"))
    with pytest.raises(CloudletError):
        bundles.open_pairing_bundle(b2.result, old)


def test_cannot_seal_someone_elses_bundle(master_b):
    ra, _ = _paired()
    with pytest.raises(IdentityError):
        bundles.seal_pairing_bundle(ra, _pairing_bundle(master_b, "cl-bravo"))
