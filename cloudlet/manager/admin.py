"""Admin API (/admin/...): local only, on a unix socket (mode 0600, root).

This is what the Ansible modules call (``ansible.builtin.uri`` speaks HTTP
over a unix socket with ``unix_socket:``). File permissions are the
authentication: the socket is never bound to a network address, so there is
no token to leak into a log. Writes are idempotent PUT/DELETE and answer
``changed`` so modules can report it truthfully.
"""

from __future__ import annotations

import json

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloudlet import formats, pki
from cloudlet.crypto.identity import Period
from cloudlet.errors import CloudletError, NotFoundError, RequestError
from cloudlet.manager import schema, views
from cloudlet.manager.peer import SVM_SCHEMA, svm_record
from cloudlet.manager.store import CloudletRecord
from cloudlet.manager.web import Route, b64, json_body, params, reply, state, unb64

__all__ = ["ROUTES"]

DEVICE_SCHEMA = {
    "type": "object",
    "required": ["valid_from"],
    "additionalProperties": False,
    "properties": {
        "valid_from": schema.PERIOD,
        "valid_until": schema.PERIOD,
        "revoked": {"type": "boolean"},
        "services": {"type": "array", "items": schema.ID, "maxItems": 64, "uniqueItems": True},
    },
}

CLOUDLET_SCHEMA = {
    "type": "object",
    "required": ["ca_pem", "params", "api_host", "api_port"],
    "additionalProperties": False,
    "properties": {
        "ca_pem": {"type": "string", "pattern": "^[\t\n\r -~]*$", "maxLength": 8192},  # ASCII
        "params": schema.BASE64,
        "api_host": schema.HOST,
        "api_port": schema.PORT,
        # Set by the pairing exchange: trusted for POST /peer/hello only, until confirmed.
        "pending": {"type": "boolean"},
        # The password of EAP identity peer:<cloudlet_id> on our field network, which
        # we issue to the peer ...
        "eap_password": {"type": "string", "minLength": 16, "maxLength": 128,
                         "pattern": "^[!#-~]+$"},
        # ... and the credential the peer issued us for its network.
        "network": {
            "type": "object",
            "required": ["ssid", "identity", "password", "method"],
            "additionalProperties": False,
            "properties": {
                "ssid": {"type": "string", "minLength": 1, "maxLength": 32,
                         "pattern": "^[ !#-~]+$"},
                "identity": {"type": "string", "minLength": 1, "maxLength": 128,
                             "pattern": "^[ !#-~]+$"},
                "password": {"type": "string", "minLength": 16, "maxLength": 128,
                             "pattern": "^[ !#-~]+$"},
                "method": {"type": "string", "pattern": "^(?:pwd|tls)$"},
            },
        },
    },
}

MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["device_id", "kind", "issuer", "body"],
    "additionalProperties": False,
    "properties": {
        "device_id": schema.DEVICE_NAME,
        "kind": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$", "maxLength": 32},
        "issuer": schema.ID,
        "body": schema.BASE64,
    },
}


MESSAGE_BATCH_SCHEMA = {
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    # A migration's credentials for every device of an SVM (the peer API issues at
    # most 1,000 per request).
    "properties": {"messages": {"type": "array", "items": MESSAGE_SCHEMA, "maxItems": 1000}},
}


def _period(label: str) -> Period:
    try:
        return Period(label)
    except CloudletError as exc:
        raise RequestError(exc.message, exc.hint) from None


# --- devices ---------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    service = params(request).get("service_id")
    devices = state(request).store.devices(service)
    return reply({"devices": [d.public() for d in devices]})


async def get_device(request: web.Request) -> web.Response:
    device_id = params(request)["device_id"]
    rec = state(request).store.get_device(device_id)
    if rec is None:
        raise NotFoundError(f"Device {device_id!r} is not paired with this cloudlet.")
    return reply(rec.public())


async def put_device(request: web.Request) -> web.Response:
    device_id = params(request)["device_id"]
    data = await json_body(request, DEVICE_SCHEMA)
    start = _period(data["valid_from"])
    end = _period(data.get("valid_until", data["valid_from"]))
    if end.not_after <= start.not_before:
        raise RequestError("valid_until is before valid_from.")
    store = state(request).store
    changed = store.put_device(
        device_id,
        int(start.not_before.timestamp()),
        int(end.not_after.timestamp()),
        data.get("revoked", False),
        tuple(data.get("services", ())),
    )
    if changed:
        state(request).users_changed()
    return reply({"changed": changed, "device": store.get_device(device_id).public()})


async def delete_device(request: web.Request) -> web.Response:
    device_id = params(request)["device_id"]
    changed = state(request).store.remove_device(device_id)
    if changed:
        state(request).users_changed()
    return reply({"changed": changed})


async def eap_users(request: web.Request) -> web.Response:
    """For the network role: the 802.1X credential of every paired device."""
    store = state(request).store
    users = [{"identity": d.device_id, "password": d.eap_password, "revoked": d.revoked}
             for d in store.devices()]
    # A paired cloudlet joins our network to reach the Manager and migrate (seed step 2).
    users += [{"identity": c.eap_identity, "password": c.eap_password, "revoked": False}
              for c in store.cloudlets() if c.eap_password]
    return reply({"users": users})


# --- paired cloudlets --------------------------------------------------------


def _cloudlet_record(cloudlet_id: str, data: dict, own_fingerprint: str) -> CloudletRecord:
    try:
        ca = pki.load_certificate(data["ca_pem"])
        params = formats.decode_params(unb64(data["params"], "params"))
    except CloudletError as exc:
        raise RequestError(exc.message) from None
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise RequestError("ca_pem is not a CA certificate.")
    if params.cloudlet_id != cloudlet_id:
        raise RequestError(f"The IBE params belong to {params.cloudlet_id!r}, not {cloudlet_id!r}.")
    fingerprint = pki.fingerprint(ca)
    if fingerprint == own_fingerprint:
        raise RequestError("That is this cloudlet's own CA; a cloudlet cannot pair with itself.")
    pem = ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return CloudletRecord(
        cloudlet_id,
        pem,
        fingerprint,
        formats.encode_params(params),
        data["api_host"],
        data["api_port"],
        data.get("pending", False),
        data.get("eap_password", ""),
        json.dumps(data["network"], sort_keys=True) if "network" in data else "",
    )


def _cloudlet_view(rec: CloudletRecord) -> dict:
    return {
        "cloudlet_id": rec.cloudlet_id,
        "ca_fingerprint": rec.ca_fingerprint,
        "params": b64(rec.params),
        "api_host": rec.api_host,
        "api_port": rec.api_port,
        "pending": rec.pending,
        # Names only, never a password: whether the peer may join our network
        # (as eap_identity), and which of its networks we may join.
        "eap_identity": rec.eap_identity if rec.eap_password else None,
        "network": _network_names(rec.network),
    }


def _network_names(network: str) -> dict | None:
    if not network:
        return None
    data = json.loads(network)
    return {"ssid": data["ssid"], "identity": data["identity"], "method": data["method"]}


async def list_cloudlets(request: web.Request) -> web.Response:
    return reply({"cloudlets": [_cloudlet_view(c) for c in state(request).store.cloudlets()]})


async def put_cloudlet(request: web.Request) -> web.Response:
    cloudlet_id = params(request)["cloudlet_id"]
    st = state(request)
    data = await json_body(request, CLOUDLET_SCHEMA)
    rec = _cloudlet_record(cloudlet_id, data, st.ca_fingerprint)
    changed = st.store.put_cloudlet(rec)
    if changed:
        st.peers_changed()
    return reply({"changed": changed, "cloudlet": _cloudlet_view(rec)})


async def confirm_cloudlet(request: web.Request) -> web.Response:
    """After our POST /peer/hello to it succeeded: the peer kept the pairing too."""
    cloudlet_id = params(request)["cloudlet_id"]
    st = state(request)
    if st.store.get_cloudlet(cloudlet_id) is None:
        raise NotFoundError(f"Cloudlet {cloudlet_id!r} is not paired with this cloudlet.")
    return reply({"changed": st.store.confirm_cloudlet(cloudlet_id)})


async def cloudlet_link(request: web.Request) -> web.Response:
    """What the migration ceremony needs to reach a peer: its CA, its API, and the
    credential it issued us for its network (with the password: this socket is root's)."""
    cloudlet_id = params(request)["cloudlet_id"]
    rec = state(request).store.get_cloudlet(cloudlet_id)
    if rec is None:
        raise NotFoundError(
            f"Cloudlet {cloudlet_id!r} is not paired with this cloudlet.",
            "Pair the two cloudlets first (pair_cloudlets.yml).",
        )
    return reply({
        "cloudlet_id": rec.cloudlet_id,
        "ca_pem": rec.ca_pem,
        "ca_fingerprint": rec.ca_fingerprint,
        "api_host": rec.api_host,
        "api_port": rec.api_port,
        "pending": rec.pending,
        "network": json.loads(rec.network) if rec.network else None,
    })


async def delete_cloudlet(request: web.Request) -> web.Response:
    cloudlet_id = params(request)["cloudlet_id"]
    st = state(request)
    changed = st.store.remove_cloudlet(cloudlet_id)
    if changed:
        st.peers_changed()
    return reply({"changed": changed})


# --- service VMs and messages -----------------------------------------------


async def list_svms(request: web.Request) -> web.Response:
    return reply({"svms": [s.public() for s in state(request).store.svms()]})


async def put_svm(request: web.Request) -> web.Response:
    service_id = params(request)["service_id"]
    data = await json_body(request, SVM_SCHEMA)
    if data["service_id"] != service_id:
        raise RequestError("The body's service_id differs from the one in the path.")
    rec = svm_record(data, "local")
    return reply({"changed": state(request).store.put_svm(rec), "svm": rec.public()})


async def delete_svm(request: web.Request) -> web.Response:
    service_id = params(request)["service_id"]
    return reply({"changed": state(request).store.remove_svm(service_id)})


async def put_message(request: web.Request) -> web.Response:
    data = await json_body(request, MESSAGE_SCHEMA)
    body = unb64(data["body"], "message body")
    message_id = state(request).store.put_message(
        data["device_id"], data["kind"], data["issuer"], body
    )
    return reply({"changed": True, "message_id": message_id}, status=201)


async def put_messages(request: web.Request) -> web.Response:
    data = await json_body(request, MESSAGE_BATCH_SCHEMA)
    batch = [
        (m["device_id"], m["kind"], m["issuer"], unb64(m["body"], f"body of message {i}"))
        for i, m in enumerate(data["messages"])
    ]
    ids = state(request).store.put_messages(batch)
    return reply({"changed": bool(ids), "message_ids": ids}, status=201)


async def list_messages(request: web.Request) -> web.Response:
    device = params(request).get("device_id")
    msgs = state(request).store.all_messages(device)
    return reply(
        {
            "messages": [
                {
                    "message_id": m.message_id,
                    "device_id": m.device_id,
                    "kind": m.kind,
                    "issuer": m.issuer,
                    "created_at": m.created_at,
                    "acked_at": m.acked_at,
                }
                for m in msgs
            ]
        }
    )


async def admin_info(request: web.Request) -> web.Response:
    st = state(request)
    return reply(
        {
            "cloudlet_id": st.master.cloudlet_id,
            "ca_fingerprint": st.ca_fingerprint,
            "params": b64(formats.encode_params(st.master.params)),
            "schema_version": st.store.schema_version(),
            "api_port": st.api_port,
        }
    )


def _r(method: str, path: str, handler, summary: str, **kw) -> Route:
    return Route(method, path, handler, summary, "admin-socket", tag="admin", **kw)


_DEVICE = {"device_id": schema.DEVICE_NAME}
_CLOUDLET = {"cloudlet_id": schema.ID}
_SVM = {"service_id": schema.ID}

ROUTES = [
    _r(
        "GET",
        "/admin/info",
        admin_info,
        "This cloudlet's id, CA fingerprint and IBE params.",
        response=views.obj(
            cloudlet_id=schema.ID,
            ca_fingerprint=schema.SHA256,
            params=views.BASE64,
            schema_version=views.INTEGER,
            api_port=views.INTEGER,
        ),
    ),
    _r(
        "GET",
        "/admin/devices",
        list_devices,
        "Paired devices and visitors (only those of one service, if given).",
        response=views.obj(devices=views.array(views.DEVICE)),
        params={"service_id": schema.ID},
    ),
    _r(
        "GET",
        "/admin/devices/{device_id}",
        get_device,
        "One paired device or visitor.",
        response=views.DEVICE,
        params=_DEVICE,
        errors=(404,),
    ),
    _r(
        "PUT",
        "/admin/devices/{device_id}",
        put_device,
        "Pair, update or revoke a device; update or revoke a visitor (idempotent).",
        body=DEVICE_SCHEMA,
        response=views.obj(changed=views.BOOLEAN, device=views.DEVICE),
        params=_DEVICE,
        errors=(404,),
    ),
    _r(
        "DELETE",
        "/admin/devices/{device_id}",
        delete_device,
        "Forget a device or visitor (id@home) and its messages.",
        response=views.CHANGED,
        params=_DEVICE,
    ),
    _r(
        "GET",
        "/admin/eap-users",
        eap_users,
        "802.1X credentials for the network role.",
        response=views.obj(
            users=views.array(
                views.obj(identity=schema.DEVICE_NAME, password=views.STRING, revoked=views.BOOLEAN)
            )
        ),
    ),
    _r(
        "GET",
        "/admin/cloudlets",
        list_cloudlets,
        "Paired cloudlets.",
        response=views.obj(cloudlets=views.array(views.CLOUDLET)),
    ),
    _r(
        "PUT",
        "/admin/cloudlets/{cloudlet_id}",
        put_cloudlet,
        "Pair or update a cloudlet: its CA, IBE params and API endpoint.",
        body=CLOUDLET_SCHEMA,
        response=views.obj(changed=views.BOOLEAN, cloudlet=views.CLOUDLET),
        params=_CLOUDLET,
        errors=(409,),
    ),
    _r(
        "POST",
        "/admin/cloudlets/{cloudlet_id}/confirm",
        confirm_cloudlet,
        "Confirm a pending pairing once the peer has answered our POST /peer/hello.",
        response=views.CHANGED,
        params=_CLOUDLET,
        errors=(404,),
    ),
    _r(
        "GET",
        "/admin/cloudlets/{cloudlet_id}/link",
        cloudlet_link,
        "How to reach a paired cloudlet: its CA, API endpoint and the network credential "
        "it issued us (password included; the migration ceremony joins its network).",
        response=views.obj(
            cloudlet_id=schema.ID,
            ca_pem=views.STRING,
            ca_fingerprint=schema.SHA256,
            api_host=schema.HOST,
            api_port=schema.PORT,
            pending=views.BOOLEAN,
            network=views.nullable(views.obj(ssid=views.STRING, identity=views.STRING,
                                             password=views.STRING, method=views.STRING)),
        ),
        params=_CLOUDLET,
        errors=(404,),
    ),
    _r(
        "DELETE",
        "/admin/cloudlets/{cloudlet_id}",
        delete_cloudlet,
        "Unpair a cloudlet; its CA is no longer trusted for new connections.",
        response=views.CHANGED,
        params=_CLOUDLET,
    ),
    _r(
        "GET",
        "/admin/svms",
        list_svms,
        "The service VM repository.",
        response=views.obj(svms=views.array(views.SVM)),
    ),
    _r(
        "PUT",
        "/admin/svms/{service_id}",
        put_svm,
        "Import service VM metadata (idempotent).",
        body=SVM_SCHEMA,
        response=views.obj(changed=views.BOOLEAN, svm=views.SVM),
        params=_SVM,
    ),
    _r(
        "DELETE",
        "/admin/svms/{service_id}",
        delete_svm,
        "Remove service VM metadata.",
        response=views.CHANGED,
        params=_SVM,
    ),
    _r(
        "POST",
        "/admin/messages",
        put_message,
        "Queue a message (ciphertext) for a device.",
        body=MESSAGE_SCHEMA,
        response=views.obj(changed={"const": True}, message_id=schema.MESSAGE_ID),
        errors=(404,),
        status=201,
    ),
    _r(
        "POST",
        "/admin/messages/batch",
        put_messages,
        "Queue many messages in one transaction: all of them, or none if one is refused.",
        body=MESSAGE_BATCH_SCHEMA,
        response=views.obj(changed=views.BOOLEAN, message_ids=views.array(schema.MESSAGE_ID)),
        errors=(404,),
        status=201,
    ),
    _r(
        "GET",
        "/admin/messages",
        list_messages,
        "Messages and their acknowledgement state (bodies omitted).",
        response=views.obj(
            messages=views.array(
                views.obj(
                    message_id=schema.MESSAGE_ID,
                    device_id=schema.DEVICE_NAME,
                    kind=views.STRING,
                    issuer=schema.ID,
                    created_at=views.INTEGER,
                    acked_at=views.nullable(views.INTEGER),
                )
            )
        ),
        params={"device_id": schema.DEVICE_NAME},
    ),
]
