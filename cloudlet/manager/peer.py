"""Peer API (/peer/...): called by paired cloudlets over mutual TLS.

The caller is whoever's paired CA issued the client certificate
(``tlsctx.identify_peer``); nothing in the request body can claim another
identity. A peer is trusted for its own things only:

* device credentials are only issued for the caller's identities, always
  for a fresh visitor name here (``<id>@<home>``) and sealed under the
  *caller's* stored IBE params, so a peer can only obtain bundles that its
  own devices can open, and never this cloudlet's own devices' keys or EAP
  passwords, nor those of a visitor another peer brought;
* a service VM record may only be registered by the peer it is migrating
  from; it stays pending until that peer commits it (the VM runs here) and
  is dropped if the peer aborts. Local records and other peers' are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from aiohttp import web

from cloudlet import bundles, formats
from cloudlet.crypto.identity import Identity, Period, device_identity
from cloudlet.errors import ConflictError, NotFoundError, PeerAuthError, RequestError
from cloudlet.manager import schema, views
from cloudlet.manager.protocol import API_VERSION
from cloudlet.manager.store import CloudletRecord, SvmRecord
from cloudlet.manager.tlsctx import identify_peer, peer_certificate
from cloudlet.manager.web import Route, State, b64, json_body, params, reply, state

__all__ = ["ROUTES", "SVM_SCHEMA", "caller", "svm_record"]

# What GET /peer/probe sends: long enough that a tactical link's rate, not its
# latency or a shaper's burst, sets the time (0.8 s at 20 Mbit/s).
PROBE_BYTES = 2 * 1024 * 1024

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


def caller(request: web.Request, pending_ok: bool = False) -> CloudletRecord:
    """The paired cloudlet on the other end of this mutual-TLS connection.

    A peer whose pairing is still pending may only say hello (``hello``).
    """
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    peer = identify_peer(peer_certificate(ssl_object), state(request).store.cloudlets())
    if peer.pending and not pending_ok:
        raise PeerAuthError(
            f"The pairing with cloudlet {peer.cloudlet_id!r} is not confirmed yet.",
            "Its first call must be POST /peer/hello; pair_cloudlets.yml makes it, and so "
            "does the migration ceremony before it uses a peer.",
        )
    return peer


def svm_record(data: dict, origin: str, svm_state: str = "active") -> SvmRecord:
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
        svm_state,
    )


def check_images(own_id: str, svm_dir: Path | None, rec: SvmRecord) -> None:
    """Refuse a migrating SVM unless our store holds the very images it runs on.

    Only the overlay (the SVM's own disk) crosses the link; kernel, initrd and
    base image must already be here, provisioned at setup and listed in the
    store's manifest, with the same sha256 as the sender's.
    """
    images = dict(rec.images)
    if "base" not in images:
        raise RequestError("The service VM's metadata names no base image.")
    consequence = "Nothing was moved."
    manifest_path = svm_dir / rec.service_id / "manifest.json" if svm_dir else None
    try:
        if manifest_path is None:
            raise FileNotFoundError
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        ours = {name: files[name]["sha256"] for name in images if name in files}
    except FileNotFoundError:
        raise ConflictError(
            f"Cloudlet {own_id!r} does not hold the images of service VM {rec.service_id!r}.",
            f"{consequence} Provision them here (setup.yml), or migrate to another cloudlet.",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConflictError(
            f"Cloudlet {own_id!r} cannot read its manifest of {rec.service_id!r} ({exc}).",
            f"{consequence} Its admin should run setup.yml again.",
        ) from None
    differ = sorted(name for name, digest in images.items() if ours.get(name) != digest)
    if differ:
        raise ConflictError(
            f"Cloudlet {own_id!r} holds other {', '.join(differ)} image(s) of service VM "
            f"{rec.service_id!r} than the one migrating.",
            f"{consequence} The two cloudlets were provisioned with different builds.",
        )
    available = _mem_available_mib()
    if available is not None and available < rec.memory_mib:
        raise ConflictError(
            f"Cloudlet {own_id!r} has {available} MiB of memory free; service VM "
            f"{rec.service_id!r} needs {rec.memory_mib} MiB.",
            f"{consequence} Free memory there, or migrate to another cloudlet.",
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
            "services": [s.public() for s in st.store.svms() if s.state == "active"],
            "mem_available_mib": _mem_available_mib(),
        }
    )


async def hello(request: web.Request) -> web.Response:
    """The first authenticated call after a pairing: it confirms the caller.

    The TLS handshake has shown that the caller holds our CA (it accepted our
    server certificate) and we hold its: both kept the pairing, so neither
    keeps trust the other lacks. The caller confirms its own record of us
    when this answer arrives.
    """
    peer = caller(request, pending_ok=True)
    st = state(request)
    changed = st.store.confirm_cloudlet(peer.cloudlet_id)
    return reply({"cloudlet_id": st.master.cloudlet_id, "caller": peer.cloudlet_id,
                  "changed": changed})


async def receive_svm(request: web.Request) -> web.Response:
    peer = caller(request)
    data = await json_body(request, SVM_SCHEMA)
    rec = svm_record(data, peer.cloudlet_id, "pending")
    st = state(request)
    check_images(st.master.cloudlet_id, st.config.svm_dir, rec)
    changed = st.store.receive_svm(rec)
    return reply({"service_id": rec.service_id, "state": rec.state, "changed": changed})


async def check_svm(request: web.Request) -> web.Response:
    """Whether we could take this migrating SVM (target selection): the checks of
    ``receive_svm``, nothing recorded."""
    peer = caller(request)
    data = await json_body(request, SVM_SCHEMA)
    rec = svm_record(data, peer.cloudlet_id, "pending")
    st = state(request)
    check_images(st.master.cloudlet_id, st.config.svm_dir, rec)
    return reply({"service_id": rec.service_id, "fits": True,
                  "mem_available_mib": _mem_available_mib()})


async def probe(request: web.Request) -> web.Response:
    """Bytes for the caller to time: the link's rate towards it (target selection)."""
    caller(request)
    return web.Response(body=secrets.token_bytes(PROBE_BYTES),
                        content_type="application/octet-stream")


async def commit_svm(request: web.Request) -> web.Response:
    peer = caller(request)
    service_id = params(request)["service_id"]
    changed = state(request).store.commit_svm(service_id, peer.cloudlet_id)
    return reply({"service_id": service_id, "state": "active", "changed": changed})


HEALTH_SCHEMA = {
    "type": "object",
    "required": ["address", "ports"],
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string", "pattern": "^[0-9.]{7,15}$", "maxLength": 15},
        # As many as an SVM's record may have; tried at once, HEALTH_TIMEOUT at most.
        "ports": {"type": "array", "items": schema.PORT, "minItems": 1, "maxItems": 64,
                  "uniqueItems": True},
    },
}
HEALTH_TIMEOUT = 2.0  # seconds per port: an SVM on the cloudlet's own bridge answers in ms


async def _answers(address: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port), HEALTH_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def svm_health(request: web.Request) -> web.Response:
    """After a move: whether the SVM the caller migrated here takes connections.

    The caller names the address (it set the SVM's network up) and ports, but
    only an SVM it migrated here, an address on our SVM network and ports of
    the SVM's record are tried: a peer reaches nothing a device could not.
    """
    peer = caller(request)
    st = state(request)
    service_id = params(request)["service_id"]
    data = await json_body(request, HEALTH_SCHEMA)
    rec = st.store.get_svm(service_id)
    if rec is None or rec.origin != peer.cloudlet_id:
        raise NotFoundError(
            f"Service VM {service_id!r} was not migrated here by {peer.cloudlet_id!r}."
        )
    try:
        address = ipaddress.IPv4Address(data["address"])
    except ValueError:
        raise RequestError(f"{data['address']!r} is not an IPv4 address.") from None
    network = st.config.svm_network
    if network is None or address not in network or address in (
        network.network_address, network.broadcast_address
    ):
        raise ConflictError(
            f"{address} is not on cloudlet {st.master.cloudlet_id!r}'s SVM network "
            f"({network or 'none configured'}).",
            "Nothing was tried."
            + (" Its admin sets svm_network (setup.yml) to the SVM bridge's subnet."
               if network is None else ""),
        )
    stray = sorted(set(data["ports"]) - set(rec.ports))
    if stray:
        raise RequestError(f"Service VM {service_id!r} has no port(s) {stray} in its record.")
    ports = sorted(data["ports"])
    up = await asyncio.gather(*(_answers(str(address), p) for p in ports))
    return reply({
        "service_id": service_id,
        "address": str(address),
        "answering": [p for p, ok in zip(ports, up, strict=True) if ok],
        "silent": [p for p, ok in zip(ports, up, strict=True) if not ok],
    })  # fmt: skip


async def abort_svm(request: web.Request) -> web.Response:
    peer = caller(request)
    service_id = params(request)["service_id"]
    changed = state(request).store.abort_svm(service_id, peer.cloudlet_id)
    return reply({"service_id": service_id, "changed": changed})


@dataclass(frozen=True)
class _Job:
    """One device's credentials: its identity at the caller, its name and identity here."""

    recipient: Identity
    name: str
    identity: Identity
    password: str = ""


def _jobs(own_id: str, peer: CloudletRecord, devices: list[dict], period: Period) -> list[_Job]:
    """Refuse identities that are not the caller's own devices; name each visitor here."""
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
        if ident.home_cloudlet == own_id:
            raise ConflictError(
                f"Device {ident.device_id!r} is this cloudlet's own device.",
                "Nothing was issued. It still holds its credentials here; leave it out.",
            )
        here = device_identity(own_id, ident.device_id, period, home=ident.home_cloudlet)
        if here.device_name in seen:
            raise RequestError(f"Device {here.device_name!r} is listed twice.")
        seen.add(here.device_name)
        out.append(_Job(ident, here.device_name, here))
    return out


def _issue(st: State, peer: CloudletRecord, jobs: list[_Job], now: datetime) -> list[bytes]:
    """CPU-bound: waits on the credential workers in a thread, so the event loop keeps
    serving."""
    cfg = st.config
    return st.credential_issuer.issue(
        formats.decode_params(peer.params),
        [(j.identity, j.recipient,
          bundles.NetworkCredential(cfg.ssid, j.name, j.password, cfg.eap_method)) for j in jobs],
        st.ca_pem,
        cfg.api_host,
        st.api_port,
        now=now,
    )  # fmt: skip


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
    jobs = _jobs(st.master.cloudlet_id, peer, data["devices"], period)
    known = st.store.check_adoptable([j.name for j in jobs], peer.cloudlet_id)
    # A visitor this peer brought before keeps the password issued for it then
    # (a retried request changes nothing); every other one gets a fresh one.
    jobs = [
        replace(j, password=k.eap_password if k else secrets.token_urlsafe(24))
        for j, k in zip(jobs, known, strict=True)
    ]
    loop = asyncio.get_running_loop()
    sealed = await loop.run_in_executor(None, _issue, st, peer, jobs, now)
    nb, na = int(period.not_before.timestamp()), int(period.not_after.timestamp())
    st.store.adopt_devices(
        [(j.name, nb, na, j.password) for j in jobs], data.get("service_id"), peer.cloudlet_id
    )
    st.users_changed()
    return reply(
        {
            "issuer": st.master.cloudlet_id,
            "recipient_cloudlet": peer.cloudlet_id,
            "period": str(period),
            "credentials": [
                {"device_id": j.recipient.device_id, "name": j.name, "bundle": b64(blob)}
                for j, blob in zip(jobs, sealed, strict=True)
            ],
        }
    )


ROUTES = [
    Route(
        "POST",
        "/peer/hello",
        hello,
        "Confirm a new pairing: the first call each side makes to the other; the only one "
        "a pending peer may make.",
        "peer-mtls",
        response=views.obj(cloudlet_id=schema.ID, caller=schema.ID, changed=views.BOOLEAN),
        tag="peer",
    ),
    Route(
        "GET",
        "/peer/info",
        info,
        "Who we are, who the caller is, and what we hold (for target selection).",
        "peer-mtls",
        response=views.obj(
            cloudlet_id=schema.ID,
            api_version=views.STRING,
            caller=schema.ID,
            ca_fingerprint=schema.SHA256,
            params=views.BASE64,
            services=views.array(views.SVM),
            mem_available_mib=views.nullable(views.INTEGER),
        ),
        tag="peer",
    ),
    Route(
        "POST",
        "/peer/svms",
        receive_svm,
        "Receive a migrating service VM's metadata into our SVM repository.",
        "peer-mtls",
        body=SVM_SCHEMA,
        response=views.obj(service_id=schema.ID, state={"const": "pending"}, changed=views.BOOLEAN),
        errors=(409,),
        tag="peer",
    ),
    Route(
        "POST",
        "/peer/svms/check",
        check_svm,
        "Whether we could take a migrating service VM (its images, the memory); nothing "
        "is recorded.",
        "peer-mtls",
        body=SVM_SCHEMA,
        response=views.obj(service_id=schema.ID, fits={"const": True},
                           mem_available_mib=views.nullable(views.INTEGER)),
        errors=(409,),
        tag="peer",
    ),
    Route(
        "GET",
        "/peer/probe",
        probe,
        f"{PROBE_BYTES // 1024} KiB of random bytes, for the caller to time the link.",
        "peer-mtls",
        response={"type": "string", "format": "binary"},
        media="application/octet-stream",
        tag="peer",
    ),
    Route(
        "POST",
        "/peer/svms/{service_id}/commit",
        commit_svm,
        "The caller's migration of this service VM has completed: make its record active.",
        "peer-mtls",
        response=views.obj(service_id=schema.ID, state={"const": "active"}, changed=views.BOOLEAN),
        params={"service_id": schema.ID},
        errors=(404, 409),
        tag="peer",
    ),
    Route(
        "POST",
        "/peer/svms/{service_id}/health",
        svm_health,
        "Whether the service VM the caller migrated here takes TCP connections on its "
        "ports, at an address on our SVM network.",
        "peer-mtls",
        body=HEALTH_SCHEMA,
        response=views.obj(service_id=schema.ID, address=views.STRING,
                           answering=views.array(schema.PORT), silent=views.array(schema.PORT)),
        params={"service_id": schema.ID},
        errors=(404, 409),
        tag="peer",
    ),
    Route(
        "DELETE",
        "/peer/svms/{service_id}",
        abort_svm,
        "The caller's migration of this service VM failed: drop its pending record.",
        "peer-mtls",
        response=views.obj(service_id=schema.ID, changed=views.BOOLEAN),
        params={"service_id": schema.ID},
        errors=(409,),
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
        response=views.obj(
            issuer=schema.ID,
            recipient_cloudlet=schema.ID,
            period=schema.PERIOD,
            credentials=views.array(
                views.obj(device_id=schema.ID, name=schema.DEVICE_NAME, bundle=views.BASE64)
            ),
        ),
        errors=(409,),
        tag="peer",
    ),
]
