"""Peer API over real mutual TLS on 127.0.0.1, and the migration credential step."""

from __future__ import annotations

import base64
import ssl
from datetime import UTC, datetime

import pytest
from test_manager_support import (
    Running,
    admin,
    call,
    client_ctx,
    device_call,
    https,
    make_config,
    make_pki,
    pair,
    send,
    snapshot,
)

from cloudlet import bundles, pki
from cloudlet.crypto import ibe
from cloudlet.crypto.identity import Period, device_identity

SVM = {
    "service_id": "face-rec",
    "fqdn": "face-rec.svc.alpha.cloudlet",
    "memory_mib": 512,
    "ports": [8080, 9000],
    "images": [{"name": "base", "sha256": "ab" * 32}, {"name": "overlay", "sha256": "cd" * 32}],
}


@pytest.fixture(scope="module")
def pkis(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    return {cid: make_pki(root, cid) for cid in ("cl-alpha", "cl-bravo", "cl-rogue")}


@pytest.fixture
def bravo(tmp_path, pkis, master_b):
    """Cloudlet B (the migration target), paired with A."""
    run = Running(make_config(tmp_path, pkis["cl-bravo"], master_b))
    yield run
    run.stop()


@pytest.fixture
def paired(bravo, pkis, master_a):
    status, body = pair(bravo, pkis["cl-alpha"], master_a)
    assert status == 200 and body["changed"] is True
    return bravo


def _peer_ctx(pkis, me="cl-alpha"):
    return client_ctx(pkis["cl-bravo"], pkis[me] if me else None)


def test_paired_peer_is_accepted_and_identified(paired, pkis):
    status, body = call(paired, _peer_ctx(pkis), "GET", "/peer/info")
    assert status == 200
    assert body["caller"] == "cl-alpha"  # from the client certificate, seen by the handler
    assert body["cloudlet_id"] == "cl-bravo"
    assert body["ca_fingerprint"] == pki.fingerprint(pkis["cl-bravo"].ca_pem)


def test_certificate_from_another_ca_is_refused_at_tls(paired, pkis):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(paired, _peer_ctx(pkis, "cl-rogue"), "GET", "/peer/info")


def test_no_client_certificate_gets_403(paired, pkis):
    status, body = call(paired, _peer_ctx(pkis, None), "GET", "/peer/info")
    assert status == 403
    assert (
        body["error"]["type"] == "PeerAuthError"
        and "client certificate" in body["error"]["message"]
    )


def test_unpaired_before_pairing_then_trusted_after(bravo, pkis, master_a):
    """The trust store follows the DB: refused before pairing, accepted right after."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(bravo, _peer_ctx(pkis), "GET", "/peer/info")
    pair(bravo, pkis["cl-alpha"], master_a)
    assert call(bravo, _peer_ctx(pkis), "GET", "/peer/info")[0] == 200


def test_unpairing_refuses_new_and_kept_alive_connections(paired, pkis):
    conn = https(paired, _peer_ctx(pkis))
    try:
        assert send(conn, "GET", "/peer/info")[0] == 200
        assert admin(paired, "DELETE", "/admin/cloudlets/cl-alpha") == (200, {"changed": True})
        status, body = send(conn, "GET", "/peer/info")  # same TLS connection
        assert status == 403 and "not issued by any paired cloudlet" in body["error"]["message"]
    finally:
        conn.close()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(paired, _peer_ctx(pkis), "GET", "/peer/info")


def test_server_certificate_is_checked_by_the_peer(paired, pkis):
    """A client trusting only the rogue CA refuses B's server certificate."""
    ctx = client_ctx(pkis["cl-rogue"], pkis["cl-alpha"])
    with pytest.raises(ssl.SSLCertVerificationError):
        call(paired, ctx, "GET", "/peer/info")


def test_peer_svm_metadata_lands_in_the_repository(paired, pkis):
    status, body = call(paired, _peer_ctx(pkis), "POST", "/peer/svms", SVM)
    assert (status, body) == (200, {"service_id": "face-rec", "changed": True})
    assert call(paired, _peer_ctx(pkis), "POST", "/peer/svms", SVM)[1]["changed"] is False
    _s, listing = admin(paired, "GET", "/admin/svms")
    (svm,) = listing["svms"]
    assert svm["origin"] == "cl-alpha" and svm["ports"] == [8080, 9000]
    assert {i["sha256"] for i in svm["images"]} == {"ab" * 32, "cd" * 32}


def _cred_request(devices, **extra):
    return {
        "devices": [
            {"device_id": d, "identity": str(device_identity("cl-alpha", d))} for d in devices
        ],
        **extra,
    }


def test_device_credentials_migration_end_to_end(paired, pkis, master_a, master_b):
    """Step 4-6: B issues for A's devices; only the device opens it; it then works on B."""
    status, body = call(
        paired,
        _peer_ctx(pkis),
        "POST",
        "/peer/device-credentials",
        _cred_request(["tablet-07", "tablet-08"], service_id="face-rec"),
    )
    assert status == 200, body
    assert body["issuer"] == "cl-bravo" and body["period"] == str(Period.containing())
    creds = {c["device_id"]: base64.b64decode(c["bundle"]) for c in body["credentials"]}
    old_key = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07"))
    bundle = bundles.open_device_bundle(old_key, creds["tablet-07"], master_b.params)
    new_key = bundle.device_key
    assert new_key.identity == device_identity("cl-bravo", "tablet-07")
    assert bundle.tls_ca_pem == pkis["cl-bravo"].ca_pem.decode()
    assert bundle.api_port == paired.port and bundle.network.ssid == "net-cl-bravo"
    with pytest.raises(Exception):  # noqa: B017 - tablet-08's bundle is not for tablet-07
        bundles.open_device_bundle(old_key, creds["tablet-08"], master_b.params)
    # B now knows the device, with the EAP password that was sealed into the bundle.
    _s, users = admin(paired, "GET", "/admin/eap-users")
    pw = {u["identity"]: u["password"] for u in users["users"]}
    assert pw["tablet-07"] == bundle.network.password
    _s, devs = admin(paired, "GET", "/admin/devices?service_id=face-rec")
    assert [d["device_id"] for d in devs["devices"]] == ["tablet-07", "tablet-08"]
    # ... and the device authenticates to B with its new key.
    device_ctx = client_ctx(pkis["cl-bravo"])
    (status, msgs), _ = device_call(paired, device_ctx, new_key, "GET", "/device/messages")
    assert status == 200 and msgs["messages"] == []


def test_credentials_only_for_the_callers_own_devices(paired, pkis, tmp_path):
    before = snapshot(paired.cfg.db)
    req = {
        "devices": [
            {"device_id": "tablet-07", "identity": str(device_identity("cl-rogue", "tablet-07"))}
        ]
    }
    status, body = call(paired, _peer_ctx(pkis), "POST", "/peer/device-credentials", req)
    assert status == 400 and "calling cloudlet" in body["error"]["message"]
    mismatched = {
        "devices": [
            {"device_id": "tablet-08", "identity": str(device_identity("cl-alpha", "tablet-07"))}
        ]
    }
    assert call(paired, _peer_ctx(pkis), "POST", "/peer/device-credentials", mismatched)[0] == 400
    assert snapshot(paired.cfg.db) == before


def test_revoked_device_gets_no_credentials_and_nothing_changes(paired, pkis):
    period = str(Period.containing(datetime.now(UTC)))
    admin(paired, "PUT", "/admin/devices/tablet-09", {"valid_from": period, "revoked": True})
    before = snapshot(paired.cfg.db)
    status, body = call(
        paired,
        _peer_ctx(pkis),
        "POST",
        "/peer/device-credentials",
        _cred_request(["tablet-07", "tablet-09"]),
    )
    assert status == 409 and "revoked" in body["error"]["message"]
    assert snapshot(paired.cfg.db) == before


def test_past_period_is_refused(paired, pkis):
    status, body = call(
        paired,
        _peer_ctx(pkis),
        "POST",
        "/peer/device-credentials",
        _cred_request(["tablet-07"], period="2020-01"),
    )
    assert status == 400 and "2020-01" in body["error"]["message"]
