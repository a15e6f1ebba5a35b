"""The cloudlet's side of device pairing: record the device, issue, seal, hand over.

Runs on the cloudlet (as root, beside the Manager) for the
``cloudlet_credential_push`` module. It reads before it writes: the
Manager's record of the device (admin API), and what the device says it
holds (``cloudlet-device status --json``, or the sidecar of an exported
file). A bundle is issued only when the device lacks a current one from
this cloudlet, the CA changed, the Manager record is new or was revoked,
or the admin asks (``renew``). Check mode computes the same answer and
writes nothing.

The bundle leaves only sealed: to the device's pairing request
(``cloudlet.transport``) when the device is an Ansible host, or with a
generated passphrase (``cloudlet.device.sealed``) for a file.

``store_messages`` is the migration ceremony's half: it queues ciphertexts
a peer sealed to devices in this cloudlet's message repository.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cloudlet import bundles, formats, transport
from cloudlet.admin_client import AdminClient
from cloudlet.bundles import NetworkCredential
from cloudlet.crypto import curve
from cloudlet.crypto.identity import Period, device_identity, normalise_id
from cloudlet.device import sealed
from cloudlet.errors import CloudletError, FormatError, ManagerError, NotFoundError

__all__ = [
    "Delivery",
    "PushResult",
    "issue_reasons",
    "pair_device",
    "revoke_device",
    "store_messages",
]


class Delivery:
    TRANSPORT = "transport"
    PASSPHRASE = "passphrase"


@dataclass
class PushResult:
    changed: bool
    issued: bool
    record_changed: bool
    reasons: list[str]
    cloudlet_id: str
    device_id: str
    identity: str
    valid_from: str
    valid_until: str
    ca_fingerprint: str
    envelope: bytes | None = None
    passphrase: str | None = field(default=None, repr=False)


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise FormatError(f"The {what} is not base64.") from None


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def issue_reasons(
    status: dict | None,
    cloudlet_id: str,
    identity: str,
    ca_fingerprint: str,
) -> list[str]:
    """Why the device needs a bundle, from what it says it holds ([] = it has it).

    ``status`` is ``cloudlet-device status --json``'s object (or None when
    the device said nothing).
    """
    if not status or not status.get("current"):
        return ["the device holds no credential"]
    current = status["current"]
    if current.get("cloudlet") != cloudlet_id:
        return [f"the device's credential is from {current.get('cloudlet')!r}"]
    if current.get("identity") != identity:
        return [f"the device holds {current.get('identity')}, not {identity}"]
    if current.get("expired"):
        return ["the device's credential has expired"]
    if status.get("ca_fingerprint") != ca_fingerprint:
        return ["the device trusts another TLS CA for this cloudlet"]
    return []


def _record_body(current: Period, issue: Period, services: list[str]) -> dict:
    first, last = sorted((current, issue), key=lambda p: p.not_before)
    return {"valid_from": first.label, "valid_until": last.label, "revoked": False,
            "services": sorted(set(services))}


def _record_matches(old: dict | None, body: dict) -> bool:
    if old is None:
        return False
    return (
        old["not_before"] == int(Period(body["valid_from"]).not_before.timestamp())
        and old["not_after"] == int(Period(body["valid_until"]).not_after.timestamp())
        and not old["revoked"]
        and sorted(old["services"]) == body["services"]
    )


def _get_device(admin: AdminClient, device_id: str) -> dict | None:
    try:
        return admin.get(f"/admin/devices/{device_id}")
    except NotFoundError:
        return None


def _eap_password(admin: AdminClient, device_id: str) -> str:
    for user in admin.get("/admin/eap-users")["users"]:
        if user["identity"] == device_id:
            return user["password"]
    raise ManagerError(f"The Manager has no EAP credential for {device_id!r} after pairing it.")


def pair_device(
    admin: AdminClient,
    device_id: str,
    *,
    master_key: str | Path,
    ca_cert: str | Path,
    ssid: str,
    api_host: str,
    delivery: str,
    public_key: str | None = None,
    device_status: dict | None = None,
    services: list[str] | None = None,
    period: str | None = None,
    renew: bool = False,
    eap_method: str = "pwd",
    check_mode: bool = False,
    now: datetime | None = None,
    rng: curve.Rng | None = None,
) -> PushResult:
    """Pair ``device_id`` with this cloudlet and seal its first bundle if it needs one."""
    now = now or datetime.now(UTC)
    device_id = normalise_id(device_id, "device id")
    if delivery not in (Delivery.TRANSPORT, Delivery.PASSPHRASE):
        raise ValueError("delivery must be 'transport' or 'passphrase'")
    recipient = None
    if public_key:
        recipient = transport.decode_public_key(_b64(public_key, "pairing request's public key"))
    info = admin.get("/admin/info")
    cloudlet_id = info["cloudlet_id"]
    current = Period.containing(now)
    issue_period = Period(period) if period else current
    if not issue_period.not_after > now:
        raise FormatError(f"The period {issue_period} is over; a bundle for it is of no use.")
    identity = device_identity(cloudlet_id, device_id, issue_period)
    body = _record_body(current, issue_period, services or [])
    old = _get_device(admin, device_id)
    record_changed = not _record_matches(old, body)
    reasons = issue_reasons(device_status, cloudlet_id, str(identity), info["ca_fingerprint"])
    if old is None:
        reasons.append("the device is new to the Manager (new EAP password)")
    elif old["revoked"]:
        reasons.append("the device was revoked here")
    if renew:
        reasons.append("renewal was asked for")
    result = PushResult(
        record_changed or bool(reasons), bool(reasons), record_changed, reasons, cloudlet_id,
        device_id, str(identity), _when(Period(body["valid_from"]).not_before),
        _when(Period(body["valid_until"]).not_after), info["ca_fingerprint"],
    )
    if check_mode:
        return result
    if reasons and delivery == Delivery.TRANSPORT and recipient is None:
        raise FormatError(
            f"{device_id} needs a bundle ({'; '.join(reasons)}), which is sealed to its "
            "pairing request, and no public key was given. Nothing was changed.",
            "Run `cloudlet-device pairing-request --json` on the device and pass its "
            "public_key (pair_device.yml does).",
        )
    if record_changed:
        admin.put(f"/admin/devices/{device_id}", body)
    if not reasons:
        return result
    network = NetworkCredential(ssid, device_id, _eap_password(admin, device_id), eap_method)
    master = formats.decode_master_key(Path(master_key).read_bytes())
    if master.cloudlet_id != cloudlet_id:
        raise FormatError(
            f"The IBE master key {master_key} is {master.cloudlet_id!r}'s, but the Manager "
            f"is {cloudlet_id!r}."
        )
    ca_pem = Path(ca_cert).read_text(encoding="ascii")
    signed = bundles.issue_first_device_bundle(
        master, identity, ca_pem, network, api_host, int(info["api_port"]), rng
    )
    if recipient is not None:
        result.envelope = transport.seal_transport(signed, recipient, device_id, cloudlet_id, rng)
    else:
        result.passphrase = sealed.generate_passphrase(rng=rng)
        result.envelope = sealed.seal(signed, result.passphrase, rng=rng)
    return result


def revoke_device(admin: AdminClient, device_id: str, check_mode: bool = False) -> dict:
    """Mark a paired device revoked: the device API refuses its next call (403)."""
    device_id = normalise_id(device_id, "device id")
    old = _get_device(admin, device_id)
    if old is None:
        cloudlet_id = admin.get("/admin/info")["cloudlet_id"]
        raise NotFoundError(
            f"Device {device_id!r} is not paired with cloudlet {cloudlet_id!r}.",
            "Check the device name; the Manager lists its devices at GET /admin/devices.",
        )
    if old["revoked"]:
        return {"changed": False, "device": old}
    if check_mode:
        return {"changed": True, "device": {**old, "revoked": True}}
    start = datetime.fromtimestamp(old["not_before"], UTC)
    stop = datetime.fromtimestamp(old["not_after"], UTC)
    end = datetime.fromtimestamp(old["not_after"] - 1, UTC)
    granularity = "month" if start.day == 1 and stop.day == 1 else "day"
    body = {"valid_from": Period.containing(start, granularity).label,
            "valid_until": Period.containing(end, granularity).label,
            "revoked": True, "services": old["services"]}
    answer = admin.put(f"/admin/devices/{device_id}", body)
    return {"changed": answer["changed"], "device": answer["device"]}


def store_messages(
    admin: AdminClient, messages: list[dict], check_mode: bool = False
) -> tuple[list[dict], list[dict]]:
    """Queue sealed credential messages for devices; (stored, skipped).

    Each message is ``{device_id, kind, issuer, body}`` with ``body`` the
    base64 of an IBE ciphertext (type 4) a peer sealed to the device. One
    is skipped when an unacknowledged message of the same device, kind and
    issuer is already queued, so re-running the ceremony queues nothing
    twice. Every message is checked first, and the rest are stored in one
    transaction: all of them or, if the Manager refuses one, none.
    """
    key = ("device_id", "kind", "issuer")
    checked, first = [], {}
    for i, msg in enumerate(messages):
        try:
            normalise_id(msg["device_id"].partition("@")[0], "device id")
            raw = _b64(msg["body"], f"body of message {i}")
            if formats.peek_kind(raw) != formats.Kind.IBE_CIPHERTEXT:
                raise FormatError(f"Message {i} is not a sealed credential (IBE ciphertext).")
            formats.decode_ciphertext(raw)
        except KeyError as exc:
            raise FormatError(f"Message {i} has no {exc.args[0]!r}.") from None
        except CloudletError as exc:
            raise FormatError(f"Message {i} for {msg.get('device_id')!r}: {exc.message}") from None
        j = first.setdefault(tuple(msg[k] for k in key), i)
        if j != i:
            raise FormatError(f"Messages {j} and {i} have the same device, kind and issuer.")
        checked.append(msg)
    waiting = {}
    for m in admin.get("/admin/messages")["messages"]:
        if m["acked_at"] is None:
            waiting.setdefault(tuple(m[k] for k in key), m["message_id"])
    stored, skipped, new = [], [], []
    for msg in checked:
        view = {k: msg[k] for k in key}
        found = waiting.get(tuple(view.values()))
        if found:
            skipped.append({**view, "message_id": found})
        else:
            stored.append(view)
            new.append({**view, "body": msg["body"]})
    if new and not check_mode:
        ids = admin.post("/admin/messages/batch", {"messages": new})["message_ids"]
        for view, message_id in zip(stored, ids, strict=True):
            view["message_id"] = message_id
    return stored, skipped
