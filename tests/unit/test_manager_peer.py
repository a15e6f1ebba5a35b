"""Peer API over real mutual TLS on 127.0.0.1, and the migration credential step."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from datetime import UTC, datetime

import pytest
from conftest import DetRng
from test_manager_support import (
    Running,
    admin,
    call,
    client_ctx,
    device_call,
    https,
    make_config,
    pair,
    send,
    snapshot,
    stock,
)

from cloudlet import bundles, pki
from cloudlet.crypto import ibe
from cloudlet.crypto.identity import Period, device_identity

SVM = {
    "service_id": "face-rec",
    "fqdn": "face-rec.svc.alpha.cloudlet",
    "memory_mib": 512,
    "ports": [8080, 9000],
    "images": [{"name": "base", "sha256": "ab" * 32}, {"name": "kernel", "sha256": "cd" * 32}],
}
IMAGES = {i["name"]: i["sha256"] for i in SVM["images"]}


@pytest.fixture(scope="module")
def master_c():
    return ibe.setup("cl-charlie", DetRng(b"pkg-c"))


@pytest.fixture
def paired(bravo, pkis, master_a):
    status, body = pair(bravo, pkis["cl-alpha"], master_a)
    assert status == 200 and body["changed"] is True
    for service in ("face-rec", "map-tiles", "chat"):
        stock(bravo.cfg, service, IMAGES)
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


def test_a_pending_peer_may_only_say_hello_which_confirms_it(bravo, pkis, master_a):
    """What a pairing exchange stores is pending until the first authenticated call."""
    assert pair(bravo, pkis["cl-alpha"], master_a, pending=True)[0] == 200
    (view,) = admin(bravo, "GET", "/admin/cloudlets")[1]["cloudlets"]
    assert view["pending"] is True
    before = snapshot(bravo.cfg.db)
    for method, path, body in (("GET", "/peer/info", None), ("POST", "/peer/svms", SVM)):
        status, reply = call(bravo, _peer_ctx(pkis), method, path, body)
        assert status == 403 and "not confirmed yet" in reply["error"]["message"]
    assert snapshot(bravo.cfg.db) == before
    status, reply = call(bravo, _peer_ctx(pkis), "POST", "/peer/hello")
    assert (status, reply) == (200, {"cloudlet_id": "cl-bravo", "caller": "cl-alpha",
                                     "changed": True})
    assert call(bravo, _peer_ctx(pkis), "GET", "/peer/info")[0] == 200
    assert call(bravo, _peer_ctx(pkis), "POST", "/peer/hello")[1]["changed"] is False
    assert admin(bravo, "GET", "/admin/cloudlets")[1]["cloudlets"][0]["pending"] is False


def test_the_admin_confirms_a_pending_peer_after_its_hello_was_answered(bravo, pkis, master_a):
    pair(bravo, pkis["cl-alpha"], master_a, pending=True)
    assert admin(bravo, "POST", "/admin/cloudlets/cl-alpha/confirm") == (200, {"changed": True})
    assert admin(bravo, "POST", "/admin/cloudlets/cl-alpha/confirm") == (200, {"changed": False})
    assert call(bravo, _peer_ctx(pkis), "GET", "/peer/info")[0] == 200
    assert admin(bravo, "POST", "/admin/cloudlets/cl-nobody/confirm")[0] == 404


def test_pairing_again_replaces_a_confirmed_peer_with_a_pending_one(paired, pkis, master_a):
    assert pair(paired, pkis["cl-alpha"], master_a, pending=True)[1]["changed"] is True
    assert call(paired, _peer_ctx(pkis), "GET", "/peer/info")[0] == 403


def test_the_network_credentials_of_a_pairing_are_kept_and_never_shown(bravo, pkis, master_a):
    theirs = {"ssid": "cloudlet-cl-alpha", "identity": "peer:cl-bravo",
              "password": "their-secret-for-us-0001", "method": "pwd"}
    status, body = pair(bravo, pkis["cl-alpha"], master_a, pending=True,
                        eap_password="our-secret-for-them-01", network=theirs)
    assert status == 200
    view = body["cloudlet"]
    assert view["eap_identity"] == "peer:cl-alpha"
    assert view["network"] == {"ssid": "cloudlet-cl-alpha", "identity": "peer:cl-bravo",
                               "method": "pwd"}
    listed = json.dumps(admin(bravo, "GET", "/admin/cloudlets")[1])
    assert "secret" not in listed
    users = admin(bravo, "GET", "/admin/eap-users")[1]["users"]
    assert {"identity": "peer:cl-alpha", "password": "our-secret-for-them-01",
            "revoked": False} in users
    assert bravo.state.store.get_cloudlet("cl-alpha").network == json.dumps(theirs, sort_keys=True)
    assert "secret" not in repr(bravo.state.store.get_cloudlet("cl-alpha"))
    admin(bravo, "DELETE", "/admin/cloudlets/cl-alpha")
    assert admin(bravo, "GET", "/admin/eap-users")[1]["users"] == []


def test_a_weak_or_malformed_network_credential_is_refused(bravo, pkis, master_a):
    for extra in ({"eap_password": "short"},
                  {"network": {"ssid": "x", "identity": "y", "password": "z" * 16,
                               "method": "psk"}},
                  {"eap_password": 'quote"in-password-0001'}):
        assert pair(bravo, pkis["cl-alpha"], master_a, **extra)[0] == 400
    assert admin(bravo, "GET", "/admin/cloudlets")[1]["cloudlets"] == []


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


def _svm_state(run) -> dict:
    return {
        s["service_id"]: (s["origin"], s["state"])
        for s in admin(run, "GET", "/admin/svms")[1]["svms"]
    }


def test_peer_svm_metadata_lands_in_the_repository_as_pending(paired, pkis):
    status, body = call(paired, _peer_ctx(pkis), "POST", "/peer/svms", SVM)
    assert (status, body) == (200, {"service_id": "face-rec", "state": "pending", "changed": True})
    assert call(paired, _peer_ctx(pkis), "POST", "/peer/svms", SVM)[1]["changed"] is False
    _s, listing = admin(paired, "GET", "/admin/svms")
    (svm,) = listing["svms"]
    assert svm["origin"] == "cl-alpha" and svm["ports"] == [8080, 9000]
    assert svm["state"] == "pending"
    assert {i["sha256"] for i in svm["images"]} == set(IMAGES.values())
    # Not offered to peers (or devices) while its migration runs.
    assert call(paired, _peer_ctx(pkis), "GET", "/peer/info")[1]["services"] == []


def test_svm_without_our_images_is_refused_before_anything_moves(paired, pkis):
    """B takes only an SVM whose kernel, initrd and base image it already holds."""
    ctx = _peer_ctx(pkis)
    status, body = call(paired, ctx, "POST", "/peer/svms", {**SVM, "service_id": "unknown"})
    assert status == 409 and "does not hold the images" in body["error"]["message"]
    other = {**SVM, "images": [{"name": "base", "sha256": "ef" * 32}]}
    status, body = call(paired, ctx, "POST", "/peer/svms", other)
    assert status == 409 and "other base image(s)" in body["error"]["message"]
    status, body = call(paired, ctx, "POST", "/peer/svms", {**SVM, "memory_mib": 1048576})
    assert status == 409 and "memory free" in body["error"]["message"]
    no_base = {**SVM, "images": [{"name": "kernel", "sha256": "cd" * 32}]}
    assert call(paired, ctx, "POST", "/peer/svms", no_base)[0] == 400
    assert _svm_state(paired) == {}


def test_commit_makes_a_pending_svm_active_and_abort_drops_it(paired, pkis):
    ctx = _peer_ctx(pkis)
    call(paired, ctx, "POST", "/peer/svms", SVM)
    commit = "/peer/svms/face-rec/commit"
    assert call(paired, ctx, "POST", commit)[1] == {
        "service_id": "face-rec",
        "state": "active",
        "changed": True,
    }
    assert call(paired, ctx, "POST", commit)[1]["changed"] is False  # a retry changes nothing
    assert _svm_state(paired) == {"face-rec": ("cl-alpha", "active")}
    (info,) = call(paired, ctx, "GET", "/peer/info")[1]["services"]
    assert info["service_id"] == "face-rec"
    # Once it runs here, the peer it came from can neither re-register nor drop it.
    status, body = call(paired, ctx, "POST", "/peer/svms", {**SVM, "fqdn": "evil.example"})
    assert status == 409 and "already running here" in body["error"]["message"]
    assert call(paired, ctx, "DELETE", "/peer/svms/face-rec")[0] == 409
    assert _svm_state(paired) == {"face-rec": ("cl-alpha", "active")}
    # A failed migration: the pending record goes, and a repeated abort is a no-op.
    other = {**SVM, "service_id": "map-tiles", "fqdn": "map-tiles.svc"}
    call(paired, ctx, "POST", "/peer/svms", other)
    assert call(paired, ctx, "DELETE", "/peer/svms/map-tiles")[1]["changed"] is True
    assert call(paired, ctx, "DELETE", "/peer/svms/map-tiles")[1]["changed"] is False
    assert call(paired, ctx, "POST", "/peer/svms/map-tiles/commit")[0] == 404
    assert _svm_state(paired) == {"face-rec": ("cl-alpha", "active")}


def test_peer_cannot_overwrite_local_or_another_peers_svm(paired, pkis, master_c):
    """Issue 8, item 2: POST /peer/svms was an unconditional upsert."""
    pair(paired, pkis["cl-charlie"], master_c)
    local = {**SVM, "service_id": "chat", "fqdn": "chat.svc.bravo.cloudlet"}
    assert admin(paired, "PUT", "/admin/svms/chat", local)[0] == 200
    call(paired, _peer_ctx(pkis), "POST", "/peer/svms", SVM)  # pending, from cl-alpha
    before = snapshot(paired.cfg.db)
    hijack = {**local, "fqdn": "attacker.example", "ports": [1]}
    for who, body, path in [
        ("cl-alpha", hijack, "/peer/svms"),
        ("cl-charlie", {**SVM, "fqdn": "attacker.example"}, "/peer/svms"),
        ("cl-charlie", None, "/peer/svms/face-rec/commit"),
        ("cl-alpha", None, "/peer/svms/chat/commit"),
    ]:
        status, out = call(paired, _peer_ctx(pkis, who), "POST", path, body)
        assert status == 409, (who, path, out)
        assert "cannot change it" in out["error"]["message"]
    for who, sid in [("cl-charlie", "face-rec"), ("cl-alpha", "chat")]:
        assert call(paired, _peer_ctx(pkis, who), "DELETE", f"/peer/svms/{sid}")[0] == 409
    assert snapshot(paired.cfg.db) == before
    assert _svm_state(paired) == {"chat": ("local", "active"), "face-rec": ("cl-alpha", "pending")}


def test_a_pending_svm_is_not_shown_to_devices(paired, pkis, master_b):
    period = str(Period.containing(datetime.now(UTC)))
    admin(paired, "PUT", "/admin/devices/tablet-01", {"valid_from": period})
    key = ibe.extract(master_b, device_identity("cl-bravo", "tablet-01"))
    call(paired, _peer_ctx(pkis), "POST", "/peer/svms", SVM)
    ctx = client_ctx(pkis["cl-bravo"])
    (status, _), _ = device_call(paired, ctx, key, "GET", "/device/svms/face-rec")
    assert status == 404
    call(paired, _peer_ctx(pkis), "POST", "/peer/svms/face-rec/commit")
    (status, out), _ = device_call(paired, ctx, key, "GET", "/device/svms/face-rec")
    assert status == 200 and out["fqdn"] == SVM["fqdn"]


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
    # A visitor's key on B names its home, so it can never be a local device's key.
    assert new_key.identity == device_identity("cl-bravo", "tablet-07", home="cl-alpha")
    assert str(new_key.identity) == f"cloudlet-id-v1/cl-bravo/tablet-07@cl-alpha/{body['period']}"
    assert bundle.tls_ca_pem == pkis["cl-bravo"].ca_pem.decode()
    assert bundle.api_port == paired.port and bundle.network.ssid == "net-cl-bravo"
    with pytest.raises(Exception):  # noqa: B017 - tablet-08's bundle is not for tablet-07
        bundles.open_device_bundle(old_key, creds["tablet-08"], master_b.params)
    # B now knows the device, with the EAP password that was sealed into the bundle.
    _s, users = admin(paired, "GET", "/admin/eap-users")
    pw = {u["identity"]: u["password"] for u in users["users"]}
    assert bundle.network.identity == "tablet-07@cl-alpha"
    assert pw["tablet-07@cl-alpha"] == bundle.network.password
    _s, devs = admin(paired, "GET", "/admin/devices?service_id=face-rec")
    assert [(d["device_id"], d["home"], d["via"]) for d in devs["devices"]] == [
        ("tablet-07@cl-alpha", "cl-alpha", "cl-alpha"),
        ("tablet-08@cl-alpha", "cl-alpha", "cl-alpha"),
    ]
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


def _credentials(run, pkis, who, devices: list[tuple[str, str | None]]):
    """Ask B, as peer ``who``, for (device id, home) identities of ``who``."""
    req = {
        "devices": [
            {"device_id": d, "identity": str(device_identity(who, d, home=home))}
            for d, home in devices
        ]
    }
    return call(run, _peer_ctx(pkis, who), "POST", "/peer/device-credentials", req)


def test_peer_never_gets_a_local_devices_key_or_password(paired, pkis, master_a, master_b):
    """Issue 8, item 1: a peer naming a device id paired here got its key and EAP password."""
    period = str(Period.containing(datetime.now(UTC)))
    admin(paired, "PUT", "/admin/devices/tablet-07", {"valid_from": period, "services": ["chat"]})
    local_pw = {
        u["identity"]: u["password"] for u in admin(paired, "GET", "/admin/eap-users")[1]["users"]
    }
    local_row = admin(paired, "GET", "/admin/devices/tablet-07")[1]
    status, body = _credentials(paired, pkis, "cl-alpha", [("tablet-07", None)])
    assert status == 200, body
    (cred,) = body["credentials"]
    assert cred["name"] == "tablet-07@cl-alpha"
    old_key = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07"))
    bundle = bundles.open_device_bundle(old_key, base64.b64decode(cred["bundle"]), master_b.params)
    local_key = ibe.extract(master_b, device_identity("cl-bravo", "tablet-07"))
    assert bundle.device_key.identity != local_key.identity
    assert bundle.device_key.d_sig != local_key.d_sig and bundle.device_key.d_enc != local_key.d_enc
    assert bundle.network.password != local_pw["tablet-07"]
    assert admin(paired, "GET", "/admin/devices/tablet-07")[1] == local_row
    # With its new key the visitor sees its own messages, never the local device's.
    admin(
        paired,
        "POST",
        "/admin/messages",
        {"device_id": "tablet-07", "kind": "note", "issuer": "cl-bravo", "body": "aGk="},
    )
    ctx = client_ctx(pkis["cl-bravo"])
    (status, out), _ = device_call(paired, ctx, bundle.device_key, "GET", "/device/messages")
    assert status == 200 and out == {"device_id": "tablet-07@cl-alpha", "messages": []}
    (status, out), _ = device_call(paired, ctx, local_key, "GET", "/device/messages")
    assert status == 200 and len(out["messages"]) == 1


def test_peer_cannot_take_another_peers_visitor_or_our_own_device(paired, pkis, master_c):
    pair(paired, pkis["cl-charlie"], master_c)
    assert _credentials(paired, pkis, "cl-alpha", [("tablet-07", None)])[0] == 200
    users = admin(paired, "GET", "/admin/eap-users")[1]
    before = snapshot(paired.cfg.db)
    # cl-charlie presents its own identity for the visitor cl-alpha brought.
    status, body = _credentials(paired, pkis, "cl-charlie", [("tablet-07", "cl-alpha")])
    assert status == 409 and "brought by cl-alpha" in body["error"]["message"]
    # A device whose home is this cloudlet is never re-issued to a peer.
    status, body = _credentials(paired, pkis, "cl-alpha", [("tablet-01", "cl-bravo")])
    assert status == 409 and "this cloudlet's own device" in body["error"]["message"]
    assert snapshot(paired.cfg.db) == before
    # The peer that brought it may ask again: same name, same password (a retry).
    status, body = _credentials(paired, pkis, "cl-alpha", [("tablet-07", None)])
    assert status == 200 and admin(paired, "GET", "/admin/eap-users")[1] == users


def test_revoked_visitor_gets_no_credentials_and_nothing_changes(paired, pkis):
    period = str(Period.containing(datetime.now(UTC)))
    assert _credentials(paired, pkis, "cl-alpha", [("tablet-09", None)])[0] == 200
    status, _ = admin(
        paired, "PUT", "/admin/devices/tablet-09@cl-alpha", {"valid_from": period, "revoked": True}
    )
    assert status == 200
    assert admin(paired, "GET", "/admin/devices/tablet-09@cl-alpha")[1]["via"] == "cl-alpha"
    # A visitor cannot be created by hand: it only arrives with a migration.
    assert (
        admin(paired, "PUT", "/admin/devices/tablet-10@cl-alpha", {"valid_from": period})[0] == 404
    )
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


def test_admin_link_gives_the_migration_what_it_needs_to_reach_a_peer(alpha, pkis, master_b):
    """The peer's CA, API and the network credential it issued us, on the root socket."""
    network = {"ssid": "cloudlet-cl-bravo", "identity": "peer:cl-alpha",
               "password": "p" * 24, "method": "pwd"}
    assert admin(alpha, "GET", "/admin/cloudlets/cl-bravo/link")[0] == 404
    pair(alpha, pkis["cl-bravo"], master_b, network=network)
    status, link = admin(alpha, "GET", "/admin/cloudlets/cl-bravo/link")
    assert status == 200
    assert link["ca_pem"] == pkis["cl-bravo"].ca_pem.decode()
    assert (link["api_host"], link["api_port"], link["network"]) == ("127.0.0.1", 9443, network)
    # The listing still shows names only.
    _s, listing = admin(alpha, "GET", "/admin/cloudlets")
    assert "p" * 24 not in json.dumps(listing)


def test_health_tries_only_the_callers_svm_on_our_svm_network(paired, pkis, master_c):
    """After a move, A asks B whether the SVM takes connections (a listener stands in)."""
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        up, down = listener.getsockname()[1], closed.getsockname()[1]
        assert pair(paired, pkis["cl-charlie"], master_c)[0] == 200
        ctx = _peer_ctx(pkis)
        path = "/peer/svms/face-rec/health"
        body = {"address": "127.0.0.1", "ports": [down, up]}
        assert call(paired, ctx, "POST", path, body)[0] == 404  # nothing migrated yet
        call(paired, ctx, "POST", "/peer/svms", {**SVM, "ports": [up, down, 9000]})
        status, answer = call(paired, ctx, "POST", path, body)  # pending: the move's end
        assert status == 200, answer
        assert answer == {"service_id": "face-rec", "address": "127.0.0.1",
                          "answering": [up], "silent": [down]}
        call(paired, ctx, "POST", "/peer/svms/face-rec/commit")
        assert call(paired, ctx, "POST", path, body)[1]["answering"] == [up]
        # Never another peer's SVM, an address off our SVM network, or a port off the record.
        assert call(paired, _peer_ctx(pkis, "cl-charlie"), "POST", path, body)[0] == 404
        for address in ("127.0.1.1", "10.200.0.10", "127.0.0.0", "127.0.0.255"):
            status, err = call(paired, ctx, "POST", path, {**body, "address": address})
            assert status == 409 and "SVM network" in err["error"]["message"], address
        status, err = call(paired, ctx, "POST", path, {**body, "ports": [22]})
        assert status == 400 and "no port(s) [22]" in err["error"]["message"]
        assert call(paired, ctx, "POST", path, {**body, "address": "::1"})[0] == 400


def test_health_needs_an_svm_network(tmp_path, pkis, master_a, master_b):
    run = Running(make_config(tmp_path, pkis["cl-bravo"], master_b, svm_network=None))
    try:
        pair(run, pkis["cl-alpha"], master_a)
        stock(run.cfg, "face-rec", IMAGES)
        ctx = _peer_ctx(pkis)
        call(run, ctx, "POST", "/peer/svms", SVM)
        status, err = call(run, ctx, "POST", "/peer/svms/face-rec/health",
                           {"address": "127.0.0.1", "ports": [8080]})
        assert status == 409 and "none configured" in err["error"]["message"]
    finally:
        run.stop()
