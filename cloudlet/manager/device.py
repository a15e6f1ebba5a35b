"""Device API (/device/...): every request proves the device's identity key.

No client certificate and no per-device secret on the cloudlet: the proof
(see ``protocol``) is verified against this cloudlet's public IBE params,
bound to this request, inside the time window, once. Then the device must be
paired here, not revoked, and its key's period must lie inside the validity
it was paired with. Messages are only ever marked read by an explicit ack.
"""

from __future__ import annotations

from aiohttp import web

from cloudlet import formats
from cloudlet.crypto.identity import Identity
from cloudlet.errors import (
    AuthenticationError,
    DeviceForbidden,
    IdentityError,
    NotFoundError,
    RequestError,
)
from cloudlet.manager import protocol, schema
from cloudlet.manager.store import DeviceRecord
from cloudlet.manager.web import Route, b64, reply, state

__all__ = ["ROUTES", "authenticate"]

_EMPTY = {"type": "object", "properties": {}, "additionalProperties": False}


async def authenticate(request: web.Request) -> tuple[DeviceRecord, Identity, bytes]:
    """Check the request's device proof; returns the device, its identity and the body."""
    st = state(request)
    body = await request.read()
    proof = protocol.parse_authorization(request.headers.get("Authorization"))
    binding = protocol.request_binding(request.method, request.raw_path, body)
    try:
        ident = st.verifier.verify(proof, binding, now=st.clock())
    except IdentityError as exc:  # expired or not-yet-valid key
        raise AuthenticationError(exc.message, exc.hint) from None
    device = st.store.get_device(ident.device_name or "")
    if device is None:
        raise DeviceForbidden(f"Device {ident.device_id!r} is not paired with this cloudlet.")
    if device.revoked:
        raise DeviceForbidden(
            f"Device {ident.device_id!r} has been revoked on this cloudlet.",
            "If this is wrong, the cloudlet admin can re-pair it (pair_device.yml).",
        )
    period = ident.period
    if not (
        device.not_before <= period.not_before.timestamp()
        and period.not_after.timestamp() <= device.not_after
    ):
        raise DeviceForbidden(
            f"The key for {ident} is outside the validity the device was paired with.",
        )
    return device, ident, body


async def list_messages(request: web.Request) -> web.Response:
    device, _ident, _body = await authenticate(request)
    st = state(request)
    out = []
    for msg in st.store.pending_messages(device.device_id):
        issuer = st.store.get_cloudlet(msg.issuer)
        if msg.issuer == st.master.cloudlet_id:
            issuer_params = formats.encode_params(st.master.params)
        else:
            issuer_params = issuer.params if issuer else None
        out.append(
            {
                "message_id": msg.message_id,
                "kind": msg.kind,
                "issuer": msg.issuer,
                "issuer_params": b64(issuer_params) if issuer_params else None,
                "created_at": msg.created_at,
                "body": b64(msg.body or b""),
            }
        )
    return reply({"device_id": device.device_id, "messages": out})


async def ack_message(request: web.Request) -> web.Response:
    device, _ident, body = await authenticate(request)
    if body.strip():
        schema.validate(_EMPTY, schema.parse_json(body))
    message_id = request.match_info["message_id"]
    if not (len(message_id) == 32 and all(c in "0123456789abcdef" for c in message_id)):
        raise RequestError(f"{message_id!r} is not a message id.")
    changed = state(request).store.ack_message(device.device_id, message_id)
    return reply({"message_id": message_id, "acked": True, "changed": changed})


async def locate_svm(request: web.Request) -> web.Response:
    await authenticate(request)
    service_id = request.match_info["service_id"]
    svm = state(request).store.get_svm(service_id)
    if svm is None or svm.state != "active":
        raise NotFoundError(f"No service VM {service_id!r} on this cloudlet.")
    return reply({"service_id": svm.service_id, "fqdn": svm.fqdn, "ports": list(svm.ports)})


_MESSAGE = {
    "type": "object",
    "properties": {
        "message_id": {"type": "string"},
        "kind": {"type": "string"},
        "issuer": {"type": "string"},
        "issuer_params": {"type": "string"},
        "created_at": {"type": "integer"},
        "body": {"type": "string"},
    },
}

ROUTES = [
    Route(
        "GET",
        "/device/messages",
        list_messages,
        "This device's unacknowledged messages (e.g. credentials from another cloudlet).",
        "device-proof",
        response={
            "type": "object",
            "properties": {
                "device_id": {"type": "string"},
                "messages": {"type": "array", "items": _MESSAGE},
            },
        },
        tag="device",
    ),
    Route(
        "POST",
        "/device/messages/{message_id}/ack",
        ack_message,
        "Acknowledge a message; only then is its ciphertext dropped.",
        "device-proof",
        body=_EMPTY,
        tag="device",
    ),
    Route(
        "GET",
        "/device/svms/{service_id}",
        locate_svm,
        "Where a service VM is reachable: its stable FQDN and ports.",
        "device-proof",
        tag="device",
    ),
]
