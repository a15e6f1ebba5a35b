"""Shared helpers for the Manager tests (no tests here).

Each test cloudlet gets a real CA and certificates from ``cloudlet.pki``; the
Manager runs on 127.0.0.1 in a background event loop, and the tests talk to
it with the standard library's HTTP client, so the server is checked with a
client stack that has nothing in common with aiohttp.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import socket
import ssl
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from cloudlet import formats, pki
from cloudlet.crypto import ibe
from cloudlet.manager import protocol
from cloudlet.manager.app import Manager
from cloudlet.manager.config import Config

LOCAL = pki.subject_names("localhost", ["localhost"], ["127.0.0.1"])


@dataclass
class CloudletPki:
    cloudlet_id: str
    dir: Path
    ca_key: object
    ca_pem: bytes

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def leaf(self, name: str, profile: pki.Profile) -> tuple[Path, Path]:
        key = pki.generate_key()
        pem = pki.issue_certificate(self.ca_key, self.ca_pem, key.public_key(), profile, LOCAL)
        pki.write_certificate(self.dir / f"{name}.pem", pem)
        pki.write_private_key(self.dir / f"{name}.key", key)
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"


def make_pki(root: Path, cloudlet_id: str) -> CloudletPki:
    d = root / f"pki-{cloudlet_id}"
    d.mkdir(parents=True, exist_ok=True)
    key = pki.generate_key()
    ca_pem = pki.make_ca(key, cloudlet_id)
    pki.write_certificate(d / "ca.pem", ca_pem)
    p = CloudletPki(cloudlet_id, d, key, ca_pem)
    p.leaf("server", pki.Profile.MANAGER_SERVER)
    p.leaf("client", pki.Profile.PEER_CLIENT)
    return p


def make_config(root: Path, p: CloudletPki, master: ibe.MasterKey, **kw) -> Config:
    formats.write_secret_file(root / f"{p.cloudlet_id}.master", formats.encode_master_key(master))
    cfg = Config(
        cloudlet_id=p.cloudlet_id,
        zone=f"{p.cloudlet_id}.cloudlet",
        fqdn="localhost",
        db=root / f"{p.cloudlet_id}.db",
        admin_socket=root / f"run-{p.cloudlet_id}" / "admin.sock",
        ca_cert=p.ca,
        server_cert=p.dir / "server.pem",
        server_key=p.dir / "server.key",
        master_key=root / f"{p.cloudlet_id}.master",
        listen_hosts=("127.0.0.1",),
        listen_port=0,
        api_host="127.0.0.1",
        ssid=f"net-{p.cloudlet_id}",
        discovery=False,
        max_body_bytes=16 * 1024,
        svm_dir=root / f"svm-{p.cloudlet_id}",
        credential_workers=1,  # in the Manager's thread; test_manager_limits tries processes
        svm_network=ipaddress.IPv4Network("127.0.0.0/24"),  # where a test's "SVM" listens
    )
    return replace(cfg, **kw)


def stock(cfg: Config, service_id: str, images: dict[str, str]) -> Path:
    """Provision a service's manifest in a Manager's SVM store, as cloudlet_svm_store does."""
    path = cfg.svm_dir / service_id / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {role: {"name": f"{role}.img", "sha256": digest} for role, digest in images.items()}
    path.write_text(json.dumps({"id": service_id, "files": files}))
    return path


def write_toml(cfg: Config, path: Path) -> Path:
    """The Manager's configuration file, as the cloudlet_manager role writes it (the
    fields the modules read)."""
    path.write_text(
        f'cloudlet_id = "{cfg.cloudlet_id}"\nzone = "{cfg.zone}"\nfqdn = "{cfg.fqdn}"\n'
        f'api_host = "{cfg.api_host}"\ndb = "{cfg.db}"\nadmin_socket = "{cfg.admin_socket}"\n'
        f'listen_hosts = {list(cfg.listen_hosts)!r}\nlisten_port = {cfg.listen_port}\n'
        f'[tls]\nca_cert = "{cfg.ca_cert}"\n'
        f'server_cert = "{cfg.server_cert}"\nserver_key = "{cfg.server_key}"\n'
        f'[ibe]\nmaster_key = "{cfg.master_key}"\n[network]\nssid = "{cfg.ssid}"\n'
    )
    return path


class Running:
    """A Manager on its own event loop thread, started and stopped synchronously."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.manager = Manager(cfg)
        try:
            self._call(self.manager.start())
        except BaseException:
            self._halt()
            raise

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    @property
    def port(self) -> int:
        return self.manager.port

    @property
    def state(self):
        return self.manager.state

    def stop(self) -> None:
        try:
            self._call(self.manager.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def send(conn: http.client.HTTPConnection, method: str, path: str, body=None, headers=None):
    """One request; returns (status, parsed JSON body)."""
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, (json.loads(raw) if raw else None)


def admin(run: Running, method: str, path: str, body=None, headers=None):
    conn = UnixHTTPConnection(str(run.cfg.admin_socket))
    try:
        return send(conn, method, path, body, headers)
    finally:
        conn.close()


def client_ctx(server: CloudletPki, me: CloudletPki | None = None) -> ssl.SSLContext:
    """Trust ``server``'s CA; present ``me``'s peer client certificate if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=server.ca)
    if me is not None:
        ctx.load_cert_chain(me.dir / "client.pem", me.dir / "client.key")
    return ctx


def https(run: Running, ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", run.port, context=ctx, timeout=10)


def call(run, ctx, method, path, body=None, headers=None):
    conn = https(run, ctx)
    try:
        return send(conn, method, path, body, headers)
    finally:
        conn.close()


def device_call(run, ctx, key, method, path, body=b"", audience=None, headers=None, sign_path=None):
    """A device request with a fresh proof (``sign_path`` signs a different path)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = protocol.authorization_header(
        key, audience or run.cfg.cloudlet_id, method, sign_path or path, raw
    )
    hdrs = {"Authorization": auth, **(headers or {})}
    if raw:
        hdrs.setdefault("Content-Type", "application/json")
    return call(run, ctx, method, path, raw or None, hdrs), auth


def pair(run: Running, peer: CloudletPki, peer_master: ibe.MasterKey, port: int = 9443,
         pending: bool = False, **extra):
    """PUT /admin/cloudlets/<peer>; ``extra`` adds body fields (eap_password, network)."""
    import base64

    return admin(
        run,
        "PUT",
        f"/admin/cloudlets/{peer.cloudlet_id}",
        {
            "ca_pem": peer.ca_pem.decode(),
            "params": base64.b64encode(formats.encode_params(peer_master.params)).decode(),
            "api_host": "127.0.0.1",
            "api_port": port,
            "pending": pending,
            **extra,
        },
    )


def snapshot(db_path: Path) -> list:
    """Every row of every table but the replay cache: for 'nothing changed' checks."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if r[0] != "seen_proofs"
        ]
        return [(t, sorted(map(tuple, con.execute(f"SELECT * FROM {t}")))) for t in sorted(tables)]
    finally:
        con.close()
