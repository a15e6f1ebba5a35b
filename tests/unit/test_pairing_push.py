"""The pairing push end to end, without Ansible and without root.

A real Manager on 127.0.0.1 (test_manager_support), the package's push
logic and the device client on a temporary state directory: the device
makes its pairing request, the cloudlet records it and seals its first
bundle to it, the device imports it and is answered by the device API;
nothing is issued again while the device holds it; revocation makes the
next call fail. Bad input of every kind is refused with a clear error and
leaves the device store and the Manager as they were.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from cloudlet import bundles, pairing_push, transport
from cloudlet.admin_client import AdminClient
from cloudlet.bundles import NetworkCredential
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.device import pairing
from cloudlet.device.cli import main
from cloudlet.device.client import DeviceClient
from cloudlet.errors import (
    BundleRefused,
    CloudletRefused,
    DecryptionError,
    FormatError,
    IdentityError,
    ManagerError,
    NotFoundError,
)

NOW = datetime.now(UTC)


def push(run, pkis, device="tablet-07", **kw):
    kw.setdefault("delivery", "transport")
    return pairing_push.pair_device(
        AdminClient(str(run.cfg.admin_socket)), device, master_key=run.cfg.master_key,
        ca_cert=pkis["cl-alpha"].ca, ssid="net-cl-alpha", api_host="127.0.0.1", **kw)


def device_status(client: DeviceClient, capsys) -> dict:
    assert main(["--state-dir", str(client.store.root), "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_push_to_a_pairing_request_then_nothing_to_do(alpha, pkis, tmp_path, capsys):
    client = DeviceClient(tmp_path / "dev", api_override=f"127.0.0.1:{alpha.port}")
    assert device_status(client, capsys)["current"] is None
    req = client.pairing_request()
    assert (tmp_path / "dev" / "pairing.key").stat().st_mode & 0o777 == 0o600
    assert client.pairing_request().public_key == req.public_key  # pending: same key

    planned = push(alpha, pkis, public_key=req.public_key_b64, check_mode=True)
    assert planned.changed and planned.issued and planned.envelope is None
    assert AdminClient(str(alpha.cfg.admin_socket)).get("/admin/devices")["devices"] == []

    out = push(alpha, pkis, public_key=req.public_key_b64, services=["counter"])
    assert out.issued and out.record_changed
    assert out.identity == str(device_identity("cl-alpha", "tablet-07", Period.containing(NOW)))
    assert out.envelope[4] == 11 and b"BEGIN CERTIFICATE" not in out.envelope
    imported = client.import_bundle(out.envelope)
    assert imported.changed and imported.bundle.network.identity == "tablet-07"
    assert not (tmp_path / "dev" / "pairing.key").exists()
    client.fetch_messages()  # the device API answers it

    status = device_status(client, capsys)
    assert status["current"]["identity"] == out.identity
    assert status["ca_fingerprint"] == out.ca_fingerprint
    for check in (True, False):
        again = push(alpha, pkis, device_status=status, services=["counter"], check_mode=check)
        assert not again.changed and not again.issued and again.envelope is None

    renewed = push(alpha, pkis, device_status=status, services=["counter"], renew=True,
                   public_key=client.pairing_request().public_key_b64)
    assert renewed.issued and not renewed.record_changed

    revoked = pairing_push.revoke_device(AdminClient(str(alpha.cfg.admin_socket)), "tablet-07")
    assert revoked["changed"] and revoked["device"]["revoked"]
    assert not pairing_push.revoke_device(AdminClient(str(alpha.cfg.admin_socket)),
                                          "tablet-07")["changed"]
    with pytest.raises(CloudletRefused, match="revoked"):
        client.fetch_messages()
    # Pairing again after a revocation issues anew.
    back = push(alpha, pkis, device_status=status, services=["counter"],
                public_key=client.pairing_request().public_key_b64)
    assert back.issued and "revoked" in " ".join(back.reasons)


def test_passphrase_export_opens_with_the_returned_passphrase(alpha, pkis, tmp_path, monkeypatch):
    from cloudlet.device import sealed
    monkeypatch.setattr(sealed, "DEFAULT_KDF", sealed.KdfParams(log2_n=14))
    monkeypatch.setattr(sealed.seal, "__defaults__", (sealed.KdfParams(log2_n=14), None))
    out = push(alpha, pkis, device="radio-7", delivery="passphrase")
    assert out.passphrase and sealed.is_sealed(out.envelope)
    client = DeviceClient(tmp_path / "dev")
    assert client.import_bundle(out.envelope, lambda: out.passphrase).changed


def test_bad_input_is_refused_and_changes_nothing(alpha, pkis, tmp_path):
    socket = AdminClient(str(alpha.cfg.admin_socket))
    with pytest.raises(FormatError, match="no public key"):
        push(alpha, pkis)
    with pytest.raises(FormatError, match="32 bytes"):
        push(alpha, pkis, public_key=base64.b64encode(b"short").decode())
    with pytest.raises(FormatError, match="not base64"):
        push(alpha, pkis, public_key="not base64!")
    with pytest.raises(IdentityError):
        push(alpha, pkis, device="Bad Name!", public_key=base64.b64encode(bytes(32)).decode())
    with pytest.raises(NotFoundError, match="not paired"):
        pairing_push.revoke_device(socket, "nobody")
    assert socket.get("/admin/devices")["devices"] == []
    with pytest.raises(ManagerError, match="not running"):
        pairing_push.revoke_device(AdminClient(str(tmp_path / "none.sock")), "tablet-07")


def _sealed_for(client: DeviceClient, alpha, pkis) -> bytes:
    return push(alpha, pkis, public_key=client.pairing_request().public_key_b64).envelope


@pytest.mark.parametrize("damage", ["wrong-recipient", "tampered", "truncated", "no-request"])
def test_damaged_or_misdirected_envelopes_store_nothing(alpha, pkis, tmp_path, damage):
    client = DeviceClient(tmp_path / "dev")
    data = _sealed_for(client, alpha, pkis)
    if damage == "wrong-recipient":
        client.pairing_request(new=True)
        error, text = DecryptionError, "another pairing request"
    elif damage == "tampered":
        data = data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
        error, text = DecryptionError, "altered or truncated"
    elif damage == "truncated":
        data = data[:-40]
        error, text = FormatError, "truncated"
    else:
        pairing.discard(client.store)
        error, text = BundleRefused, "no"
    with pytest.raises(error, match=text):
        client.import_bundle(data)
    assert not client.store.has_current()
    assert sorted(p.name for p in client.store.root.iterdir()) == (
        [] if damage == "no-request" else ["pairing.key"])


def test_an_envelope_whose_header_lies_about_the_device_is_refused(master_a, pkis, tmp_path):
    client = DeviceClient(tmp_path / "dev")
    req = client.pairing_request()
    ident = device_identity("cl-alpha", "tablet-07", Period.containing(NOW))
    signed = bundles.issue_first_device_bundle(
        master_a, ident, pkis["cl-alpha"].ca.read_text(),
        NetworkCredential("net", "tablet-07", "pw"), "127.0.0.1", 8443)
    data = transport.seal_transport(signed, req.public_key, "tablet-08", "cl-alpha")
    with pytest.raises(IdentityError, match="addressed to 'tablet-08'"):
        client.import_bundle(data)
    assert not client.store.has_current()


def test_store_messages_queues_once_and_checks_every_body(alpha, pkis, master_a, master_b):
    admin = AdminClient(str(alpha.cfg.admin_socket))
    admin.put("/admin/devices/tablet-07", {"valid_from": str(Period.containing(NOW))})
    ident = device_identity("cl-alpha", "tablet-07", Period.containing(NOW))
    new = device_identity("cl-bravo", "tablet-07", Period.containing(NOW), home="cl-alpha")
    pem = pkis["cl-bravo"].ca.read_text()
    sealed_bundle = bundles.issue_device_bundle(
        master_b, new, master_a.params, ident, pem,
        NetworkCredential("net-cl-bravo", "tablet-07@cl-alpha", "pw"), "127.0.0.1", 8443)
    msg = {"device_id": "tablet-07", "kind": "credential", "issuer": "cl-bravo",
           "body": base64.b64encode(sealed_bundle).decode()}
    planned, _ = pairing_push.store_messages(admin, [msg], check_mode=True)
    assert len(planned) == 1 and admin.get("/admin/messages")["messages"] == []
    stored, skipped = pairing_push.store_messages(admin, [msg])
    assert len(stored) == 1 and not skipped
    stored, skipped = pairing_push.store_messages(admin, [msg])
    assert not stored and skipped[0]["message_id"]
    bad = {**msg, "body": base64.b64encode(b"CLDT nonsense").decode()}
    with pytest.raises(FormatError, match="Message 1"):
        pairing_push.store_messages(admin, [{**msg, "kind": "other"}, bad])
    with pytest.raises(FormatError, match="Messages 0 and 2"):
        pairing_push.store_messages(admin, [{**msg, "kind": "a"}, msg, {**msg, "kind": "a"}])
    # The Manager refuses one message of the batch (a device it does not know): none is queued.
    with pytest.raises(ManagerError, match="'tablet-99' is not paired"):
        pairing_push.store_messages(admin, [{**msg, "kind": "other"},
                                            {**msg, "device_id": "tablet-99"}])
    assert len(admin.get("/admin/messages")["messages"]) == 1  # nothing of the batches stored


def test_issue_reasons_read_what_the_device_says():
    ident = "cloudlet-id-v1/cl-alpha/tablet-07/2026-11"
    held = {"current": {"identity": ident, "cloudlet": "cl-alpha", "expired": False},
            "ca_fingerprint": "ab"}
    assert pairing_push.issue_reasons(held, "cl-alpha", ident, "ab") == []
    assert pairing_push.issue_reasons(None, "cl-alpha", ident, "ab")
    assert pairing_push.issue_reasons(held, "cl-bravo", ident, "ab")
    assert pairing_push.issue_reasons(held, "cl-alpha", ident, "cd")
    assert pairing_push.issue_reasons({**held, "current": {**held["current"], "expired": True}},
                                      "cl-alpha", ident, "ab")
