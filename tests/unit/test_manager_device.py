"""Device API over HTTPS: identity-key proofs, replay, revocation, messages kept until ack."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from test_manager_support import (
    Running,
    admin,
    call,
    client_ctx,
    device_call,
    make_config,
    make_pki,
)

from cloudlet.crypto import ibe
from cloudlet.crypto.identity import Period, device_identity

NOW = datetime.now(UTC)
PERIOD = str(Period.containing(NOW))


@pytest.fixture(scope="module")
def alpha_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), "cl-alpha")


@pytest.fixture
def alpha(tmp_path, alpha_pki, master_a):
    run = Running(make_config(tmp_path, alpha_pki, master_a))
    for dev in ("tablet-07", "tablet-08"):
        assert admin(run, "PUT", f"/admin/devices/{dev}", {"valid_from": PERIOD})[0] == 200
    yield run
    run.stop()


@pytest.fixture
def ctx(alpha_pki):
    return client_ctx(alpha_pki)


@pytest.fixture(scope="module")
def key7(master_a):
    return ibe.extract(master_a, device_identity("cl-alpha", "tablet-07"))


def test_valid_proof_is_accepted(alpha, ctx, key7):
    (status, body), _ = device_call(alpha, ctx, key7, "GET", "/device/messages")
    assert status == 200 and body == {"device_id": "tablet-07", "messages": []}


def test_missing_or_garbled_proof_is_401(alpha, ctx):
    status, body = call(alpha, ctx, "GET", "/device/messages")
    assert status == 401 and "no device proof" in body["error"]["message"]
    status, _ = call(
        alpha, ctx, "GET", "/device/messages", headers={"Authorization": "CloudletProof !!"}
    )
    assert status == 401
    status, _ = call(alpha, ctx, "GET", "/device/messages", headers={"X-Device-ID": "tablet-07"})
    assert status == 401  # KD-Cloudlet's header alone proves nothing here


def test_replayed_proof_is_refused(alpha, ctx, key7):
    (status, _), auth = device_call(alpha, ctx, key7, "GET", "/device/messages")
    assert status == 200
    status, body = call(alpha, ctx, "GET", "/device/messages", headers={"Authorization": auth})
    assert status == 401 and "Replayed" in body["error"]["message"]


def test_proof_for_another_path_or_body_is_refused(alpha, ctx, key7):
    (status, _), _ = device_call(
        alpha, ctx, key7, "GET", "/device/svms/face-rec", sign_path="/device/messages"
    )
    assert status == 401
    msg_id = _put_message(alpha, "tablet-07")
    # Proof signed over an empty body, request sent with a body.
    from cloudlet.manager import protocol

    auth = protocol.authorization_header(
        key7, "cl-alpha", "POST", f"/device/messages/{msg_id}/ack", b""
    )
    status, _ = call(
        alpha, ctx, "POST", f"/device/messages/{msg_id}/ack", {}, {"Authorization": auth}
    )
    assert status == 401
    assert _pending(alpha, "tablet-07") == [msg_id]


def test_proof_for_another_cloudlet_is_refused(alpha, ctx, key7):
    (status, body), _ = device_call(
        alpha, ctx, key7, "GET", "/device/messages", audience="cl-bravo"
    )
    assert status == 401 and "cl-bravo" in body["error"]["message"]


def test_expired_identity_is_refused(alpha, ctx, master_a):
    old = Period.containing(NOW - timedelta(days=70))
    admin(alpha, "PUT", "/admin/devices/tablet-07", {"valid_from": str(old), "valid_until": PERIOD})
    key = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07", old))
    (status, body), _ = device_call(alpha, ctx, key, "GET", "/device/messages")
    assert status == 401 and "expired" in body["error"]["message"]


def test_key_outside_paired_validity_is_refused(alpha, ctx, master_a):
    nxt = Period.containing(NOW, "day")  # a day period inside this month, not paired as such
    admin(
        alpha, "PUT", "/admin/devices/tablet-08", {"valid_from": str(Period.containing(NOW).next())}
    )
    key = ibe.extract(master_a, device_identity("cl-alpha", "tablet-08", nxt))
    (status, body), _ = device_call(alpha, ctx, key, "GET", "/device/messages")
    assert status == 403 and "outside the validity" in body["error"]["message"]


def test_revoked_and_unknown_devices_are_refused(alpha, ctx, key7, master_a):
    admin(alpha, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD, "revoked": True})
    (status, body), _ = device_call(alpha, ctx, key7, "GET", "/device/messages")
    assert status == 403 and "revoked" in body["error"]["message"]
    stranger = ibe.extract(master_a, device_identity("cl-alpha", "tablet-99"))
    (status, body), _ = device_call(alpha, ctx, stranger, "GET", "/device/messages")
    assert status == 403 and "not paired" in body["error"]["message"]


def test_key_from_another_pkg_is_refused(alpha, ctx, master_b):
    fake = ibe.extract(ibe.setup("cl-alpha"), device_identity("cl-alpha", "tablet-07"))
    (status, _), _ = device_call(alpha, ctx, fake, "GET", "/device/messages")
    assert status == 401


def _put_message(run, device, body=b"sealed-bundle"):
    status, out = admin(
        run,
        "POST",
        "/admin/messages",
        {
            "device_id": device,
            "kind": "device-bundle",
            "issuer": "cl-alpha",
            "body": base64.b64encode(body).decode(),
        },
    )
    assert status == 201, out
    return out["message_id"]


def _pending(run, device):
    _s, out = admin(run, "GET", f"/admin/messages?device_id={device}")
    return [m["message_id"] for m in out["messages"] if m["acked_at"] is None]


def test_messages_are_kept_until_acknowledged(alpha, ctx, key7, master_a):
    msg_id = _put_message(alpha, "tablet-07", b"ciphertext-1")
    other = _put_message(alpha, "tablet-08")
    for _ in range(2):  # reading twice changes nothing
        (status, body), _ = device_call(alpha, ctx, key7, "GET", "/device/messages")
        assert status == 200
        assert [m["message_id"] for m in body["messages"]] == [msg_id]
        assert base64.b64decode(body["messages"][0]["body"]) == b"ciphertext-1"
        assert body["messages"][0]["issuer_params"]  # the device can check the issuer
    # Another device's message id looks exactly like an unknown one.
    (status, _), _ = device_call(alpha, ctx, key7, "POST", f"/device/messages/{other}/ack")
    assert status == 404
    (status, body), _ = device_call(alpha, ctx, key7, "POST", f"/device/messages/{msg_id}/ack")
    assert (status, body["changed"]) == (200, True)
    (status, body), _ = device_call(alpha, ctx, key7, "POST", f"/device/messages/{msg_id}/ack")
    assert (status, body["changed"]) == (200, False)
    (_s, body), _ = device_call(alpha, ctx, key7, "GET", "/device/messages")
    assert body["messages"] == []
    assert _pending(alpha, "tablet-08") == [other]


def test_where_is_my_svm(alpha, ctx, key7):
    svm = {
        "service_id": "face-rec",
        "fqdn": "face-rec.svc.alpha.cloudlet",
        "memory_mib": 512,
        "ports": [8080],
        "images": [],
    }
    assert admin(alpha, "PUT", "/admin/svms/face-rec", svm)[0] == 200
    (status, body), _ = device_call(alpha, ctx, key7, "GET", "/device/svms/face-rec")
    assert (status, body) == (200, {"service_id": "face-rec", "fqdn": svm["fqdn"], "ports": [8080]})
    (status, _), _ = device_call(alpha, ctx, key7, "GET", "/device/svms/nothing-here")
    assert status == 404
