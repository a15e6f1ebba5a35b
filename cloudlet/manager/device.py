"""Device API (/device/...): every request proves the device's identity key.

No client certificate and no per-device secret on the cloudlet: the proof
(see ``protocol``) is verified against this cloudlet's public IBE params,
bound to this request, inside the time window, once. The device must be
paired here, not revoked, and its key's period must lie inside the validity
it was paired with. Messages are only ever marked read by an explicit ack.

The checks run cheapest first: a source that keeps failing is refused
before anything else (429), and a proof that is malformed, for another
cloudlet or key, out of its period or time window, or replayed is refused
before its body (at most ``device_max_body_bytes``) is read and before any
pairing. Whether a device is paired or revoked is said only to a proof with
a valid signature.
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
)
from cloudlet.manager import protocol, schema, views
from cloudlet.manager.store import DeviceRecord
from cloudlet.manager.web import Route, State, b64, params, read_body, reply, state

__all__ = ["ROUTES", "authenticate"]

_EMPTY = {"type": "object", "properties": {}, "additionalProperties": False}


async def authenticate(request: web.Request) -> tuple[DeviceRecord, Identity, bytes]:
    """Check the request's device proof; returns the device, its identity and the body.

    A source address that keeps failing is refused (429) before anything else.
    """
    st = state(request)
    source = request.remote or ""
    st.failures.check(source)
    try:
        return await _authenticate(request, st)
    except (AuthenticationError, DeviceForbidden):
        st.failures.failed(source)
        raise


async def _authenticate(request: web.Request, st: State) -> tuple[DeviceRecord, Identity, bytes]:
    proof = protocol.parse_authorization(request.headers.get("Authorization"))
    now = st.clock()
    try:
        st.verifier.precheck(proof, now)
    except IdentityError as exc:  # expired or not-yet-valid key
        raise AuthenticationError(exc.message, exc.hint) from None
    cfg = st.config
    body = await read_body(request, cfg.device_max_body_bytes, cfg.body_timeout)
    binding = protocol.request_binding(request.method, request.raw_path, body)
    st.verifier.check(proof, binding, now)
    # Only a proof with a valid signature learns whether its device is paired
    # here: answering "unknown" or "revoked" before the pairing would let
    # anyone on the network enumerate devices (the seed's threats 2 and 3).
    # The failure limiter, not this order, is what bounds forged proofs.
    ident = proof.identity
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
    message_id = params(request)["message_id"]
    changed = state(request).store.ack_message(device.device_id, message_id)
    return reply({"message_id": message_id, "acked": True, "changed": changed})


async def locate_svm(request: web.Request) -> web.Response:
    await authenticate(request)
    service_id = params(request)["service_id"]
    svm = state(request).store.get_svm(service_id)
    if svm is None or svm.state != "active":
        raise NotFoundError(f"No service VM {service_id!r} on this cloudlet.")
    return reply({"service_id": svm.service_id, "fqdn": svm.fqdn, "ports": list(svm.ports)})


_MESSAGE = views.obj(
    message_id=schema.MESSAGE_ID,
    kind=views.STRING,
    issuer=schema.ID,
    issuer_params=views.nullable(views.BASE64),  # null: the issuer is no longer paired
    created_at=views.INTEGER,
    body=views.BASE64,
)

ROUTES = [
    Route(
        "GET",
        "/device/messages",
        list_messages,
        "This device's unacknowledged messages (e.g. credentials from another cloudlet).",
        "device-proof",
        response=views.obj(device_id=schema.DEVICE_NAME, messages=views.array(_MESSAGE)),
        tag="device",
    ),
    Route(
        "POST",
        "/device/messages/{message_id}/ack",
        ack_message,
        "Acknowledge a message; only then is its ciphertext dropped.",
        "device-proof",
        body=_EMPTY,
        response=views.obj(
            message_id=schema.MESSAGE_ID, acked={"const": True}, changed=views.BOOLEAN
        ),
        params={"message_id": schema.MESSAGE_ID},
        errors=(404,),
        tag="device",
    ),
    Route(
        "GET",
        "/device/svms/{service_id}",
        locate_svm,
        "Where a service VM is reachable: its stable FQDN and ports.",
        "device-proof",
        response=views.obj(service_id=schema.ID, fqdn=schema.HOST, ports=views.array(schema.PORT)),
        params={"service_id": schema.ID},
        errors=(404,),
        tag="device",
    ),
]
