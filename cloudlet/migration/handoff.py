"""Steps 4 and 5: the target's credentials for our devices, and who has taken theirs.

Once the SVM runs on the target, we ask it, in one batch, for credentials for
every device of ours that uses the SVM and is not revoked. The target seals
each bundle to the device's identity under *our* IBE params, so what comes
back is ciphertext only a device can open; it goes into our message
repository (``cloudlet_credential_push``, mode messages), where each device
fetches it with its identity proof.

A device with a credentials message from the target still waiting is left
out. So is, when the SVM had already moved (a second run of the ceremony),
one that has taken its message: a second run asks for nothing twice, yet
completes a handoff that a first run did not reach.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from cloudlet.admin_client import AdminClient
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.device.messages import CREDENTIALS
from cloudlet.migration.peer import PeerClient

__all__ = ["delivery", "request_credentials"]


def _devices(admin: AdminClient, service: str, now: datetime) -> list[dict]:
    listed = admin.get(f"/admin/devices?service_id={quote(service)}")["devices"]
    stamp = int(now.timestamp())
    return [d for d in listed if not d["revoked"] and d["not_before"] <= stamp < d["not_after"]]


def _messages_from(admin: AdminClient, issuer: str) -> dict[str, list[dict]]:
    """The credentials messages from ``issuer``, by device (one listing for them all)."""
    out: dict[str, list[dict]] = {}
    for m in admin.get("/admin/messages")["messages"]:
        if m["issuer"] == issuer and m["kind"] == CREDENTIALS:
            out.setdefault(m["device_id"], []).append(m)
    return out


def request_credentials(admin: AdminClient, client: PeerClient, own_id: str, service: str,
                        moved_now: bool, now: datetime | None = None
                        ) -> tuple[list[dict], list[str]]:
    """(messages to queue, devices that already have theirs)."""
    now = now or datetime.now(UTC)
    target = client.link.cloudlet_id
    wanted, already = [], []
    queued = _messages_from(admin, target)
    for dev in _devices(admin, service, now):
        if dev["home"] == target:
            # A visitor going home: the target keeps no credential to send it (and will
            # not issue one through a peer); see the README's Limits.
            already.append(dev)
            continue
        msgs = queued.get(dev["device_id"], [])
        have = any(m["acked_at"] is None for m in msgs) or (msgs and not moved_now)
        (already if have else wanted).append(dev)
    if not wanted:
        return [], [d["device_id"] for d in already]
    period = Period.containing(now)
    names = {}
    request = []
    for dev in wanted:
        base = dev["device_id"].partition("@")[0]
        names[base] = dev["device_id"]
        ident = device_identity(own_id, base, period, home=dev["home"])
        request.append({"device_id": base, "identity": str(ident)})
    answer = client.request("POST", "/peer/device-credentials",
                            {"service_id": service, "devices": request})
    messages = [
        {"device_id": names[c["device_id"]], "kind": CREDENTIALS, "issuer": target,
         "body": c["bundle"]}
        for c in answer["credentials"]
    ]
    return messages, [d["device_id"] for d in already]


def delivery(admin: AdminClient, service: str, issuer: str,
             now: datetime | None = None) -> dict[str, list[str]]:
    """Which devices of ``service`` have taken the target's credential, and which have not."""
    out: dict[str, list[str]] = {"taken": [], "waiting": []}
    queued = _messages_from(admin, issuer)
    for dev in _devices(admin, service, now or datetime.now(UTC)):
        msgs = queued.get(dev["device_id"], [])
        taken = bool(msgs) and all(m["acked_at"] is not None for m in msgs)
        out["taken" if taken else "waiting"].append(dev["device_id"])
    return out
