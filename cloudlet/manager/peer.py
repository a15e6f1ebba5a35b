"""Peer API (/peer/...): called by paired cloudlets over mutual TLS.

The caller is whoever's paired CA issued the client certificate
(``tlsctx.identify_peer``); nothing in the request body can claim another
identity. In particular, device credentials are always sealed under the
*caller's* stored IBE params, so a peer can only obtain bundles that its
own devices can open.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime

from aiohttp import web

from cloudlet import bundles, formats
from cloudlet.crypto.identity import Identity, Period, device_identity
from cloudlet.errors import ConflictError, RequestError
from cloudlet.manager import schema
from cloudlet.manager.protocol import API_VERSION
from cloudlet.manager.store import CloudletRecord, SvmRecord
from cloudlet.manager.tlsctx import identify_peer, peer_certificate
from cloudlet.manager.web import Route, State, b64, json_body, reply, state

__all__ = ["ROUTES", "SVM_SCHEMA", "caller", "svm_record"]

SVM_SCHEMA = {
    "type": "object",
    "required": ["service_id", "fqdn", "memory_mib", "ports", "images"],
    "additionalProperties": False,
    "properties": {
        "service_id": schema.ID,
        "fqdn": schema.HOST,
        "memory_mib": {"type": "integer", "minimum": 1, "maximum": 1048576},
        "ports": {"type": "array", "items": schema.PORT, "maxItems": 64, "uniqueItems": True},
        "images": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "required": ["name", "sha256"],
                "additionalProperties": False,
                "properties": {"name": schema.ID, "sha256": schema.SHA256},
            },
        },
    },
}

CREDENTIALS_SCHEMA = {
    "type": "object",
    "required": ["devices"],
    "additionalProperties": False,
    "properties": {
        "service_id": schema.ID,
        "period": schema.PERIOD,
        "devices": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["device_id", "identity"],
                "additionalProperties": False,
                "properties": {
                    "device_id": schema.ID,
                    "identity": {"type": "string", "maxLength": 200},
                },
            },
        },
    },
}


def caller(request: web.Request) -> CloudletRecord:
    """The paired cloudlet on the other end of this mutual-TLS connection."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    return identify_peer(peer_certificate(ssl_object), state(request).store.cloudlets())


def svm_record(data: dict, origin: str) -> SvmRecord:
    names = [i["name"] for i in data["images"]]
    if len(set(names)) != len(names):
        raise RequestError("Two images of the service VM have the same name.")
    return SvmRecord(
        data["service_id"],
        data["fqdn"].lower(),
        data["memory_mib"],
        tuple(data["ports"]),
        tuple(sorted((i["name"], i["sha256"]) for i in data["images"])),
        origin,
    )


def _mem_available_mib() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


async def info(request: web.Request) -> web.Response:
    peer = caller(request)
    st = state(request)
    return reply(
        {
            "cloudlet_id": st.master.cloudlet_id,
            "api_version": API_VERSION,
            "caller": peer.cloudlet_id,
            "ca_fingerprint": st.ca_fingerprint,
            "params": b64(formats.encode_params(st.master.params)),
            "services": [s.public() for s in st.store.svms()],
            "mem_available_mib": _mem_available_mib(),
        }
    )


async def receive_svm(request: web.Request) -> web.Response:
    peer = caller(request)
    rec = svm_record(await json_body(request, SVM_SCHEMA), peer.cloudlet_id)
    changed = state(request).store.put_svm(rec)
    return reply({"service_id": rec.service_id, "changed": changed})


def _recipients(peer: CloudletRecord, devices: list[dict]) -> list[tuple[str, Identity]]:
    out, seen = [], set()
    for item in devices:
        try:
            ident = Identity.parse(item["identity"])
        except Exception as exc:  # IdentityError and friends: one clear 400
            raise RequestError(f"Bad identity {item['identity']!r}: {exc}") from None
        if ident.cloudlet_id != peer.cloudlet_id or ident.device_id != item["device_id"]:
            raise RequestError(
                f"{ident} is not device {item['device_id']!r} of the calling cloudlet "
                f"{peer.cloudlet_id!r}.",
                "Nothing was issued. A cloudlet may only ask for credentials for its own devices.",
            )
        if item["device_id"] in seen:
            raise RequestError(f"Device {item['device_id']!r} is listed twice.")
        seen.add(item["device_id"])
        out.append((item["device_id"], ident))
    return out


def _issue(
    st: State,
    peer: CloudletRecord,
    jobs: list[tuple[str, Identity, str]],
    period: Period,
    now: datetime,
) -> list[bytes]:
    """CPU-bound: runs in a worker thread so the event loop keeps serving."""
    params = formats.decode_params(peer.params)
    signer = bundles.issuer_key(st.master, period)
    cfg = st.config
    out = []
    for device_id, recipient, password in jobs:
        network = bundles.NetworkCredential(cfg.ssid, device_id, password, cfg.eap_method)
        out.append(
            bundles.issue_device_bundle(
                st.master,
                device_identity(st.master.cloudlet_id, device_id, period),
                params,
                recipient,
                st.ca_pem,
                network,
                cfg.api_host,
                st.api_port,
                now=now,
                signer=signer,
            )
        )
    return out


async def device_credentials(request: web.Request) -> web.Response:
    """Step 4: new credentials for the caller's migrating devices, sealed to each device."""
    peer = caller(request)
    st = state(request)
    data = await json_body(request, CREDENTIALS_SCHEMA)
    if len(data["devices"]) > st.config.max_devices_per_request:
        raise RequestError(
            f"At most {st.config.max_devices_per_request} devices per request.",
            "Nothing was issued. Split the list.",
        )
    now = st.clock()
    current = Period.containing(now)
    period = Period(data["period"]) if "period" in data else current
    if period not in (current, current.next()):
        raise RequestError(
            f"Credentials can be issued for {current} or {current.next()}, not {period}."
        )
    recipients = _recipients(peer, data["devices"])
    jobs = []
    for device_id, ident in recipients:
        known = st.store.get_device(device_id)
        if known is not None and known.revoked:
            raise ConflictError(
                f"Device {device_id!r} is revoked on this cloudlet.",
                "Nothing was issued. Leave it out, or pair it again here first.",
            )
        jobs.append((device_id, ident, known.eap_password if known else secrets.token_urlsafe(24)))
    loop = asyncio.get_running_loop()
    sealed = await loop.run_in_executor(None, _issue, st, peer, jobs, period, now)
    nb, na = int(period.not_before.timestamp()), int(period.not_after.timestamp())
    st.store.adopt_devices([(d, nb, na, pw) for d, _i, pw in jobs], data.get("service_id"))
    return reply(
        {
            "issuer": st.master.cloudlet_id,
            "recipient_cloudlet": peer.cloudlet_id,
            "period": str(period),
            "credentials": [
                {"device_id": d, "bundle": b64(blob)}
                for (d, _i, _p), blob in zip(jobs, sealed, strict=True)
            ],
        }
    )


ROUTES = [
    Route(
        "GET",
        "/peer/info",
        info,
        "Who we are, who the caller is, and what we hold (for target selection).",
        "peer-mtls",
        tag="peer",
    ),
    Route(
        "POST",
        "/peer/svms",
        receive_svm,
        "Receive a migrating service VM's metadata into our SVM repository.",
        "peer-mtls",
        body=SVM_SCHEMA,
        tag="peer",
    ),
    Route(
        "POST",
        "/peer/device-credentials",
        device_credentials,
        "Issue our credentials for the caller's migrating devices, sealed to each device "
        "under the caller's IBE params.",
        "peer-mtls",
        body=CREDENTIALS_SCHEMA,
        tag="peer",
    ),
]
