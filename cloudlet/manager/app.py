"""The Cloudlet Manager: two aiohttp applications and their life cycle.

* the public API (HTTPS only): ``/peer/...`` (mutual TLS), ``/device/...``
  (device proofs) and ``GET /openapi.json``;
* the admin API on a local unix socket (``/admin/...``).

aiohttp, not an ASGI server, because a handler must see the client
certificate of its connection (``transport.get_extra_info("ssl_object")``);
uvicorn does not pass it to the application.

All state is in SQLite and in the key/certificate files, so stopping and
starting again (``Manager.start``/``stop``) loses nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from cloudlet import formats, pki
from cloudlet.bundles import BundleIssuer
from cloudlet.crypto.auth import DeviceVerifier
from cloudlet.errors import CloudletError, ConfigError, StorageError
from cloudlet.manager import admin, device, discovery, openapi, peer, perms
from cloudlet.manager.config import Config
from cloudlet.manager.guard import (
    GUARD,
    ConnectionGuard,
    GuardedSite,
    connection_cap,
    guard_middleware,
)
from cloudlet.manager.limiter import FailureLimiter
from cloudlet.manager.store import PersistentReplayCache, Store
from cloudlet.manager.tlsctx import TrustStore
from cloudlet.manager.web import (
    STATE,
    Route,
    State,
    error_middleware,
    neutral_server_header,
    register,
    reply,
)

__all__ = ["ADMIN_ROUTES", "PUBLIC_ROUTES", "Manager", "build_admin_app", "build_public_app"]

log = logging.getLogger("cloudlet.manager")

PUBLIC_ROUTES: list[Route] = [*peer.ROUTES, *device.ROUTES]
ADMIN_ROUTES: list[Route] = list(admin.ROUTES)
# The admin socket is root's alone; a batch of 1,000 devices' credentials is about 2.3 MB.
_ADMIN_MAX_BODY = 8 * 1024 * 1024


def _add_routes(app: web.Application, routes: list[Route], title: str) -> None:
    register(app, routes)
    app.on_response_prepare.append(neutral_server_header)
    spec = openapi.build(routes, title, extra_paths=["/openapi.json"])

    async def serve_spec(_request: web.Request) -> web.Response:
        return reply(spec)

    app.router.add_route("GET", "/openapi.json", serve_spec)


def build_public_app(st: State) -> web.Application:
    """Peer and device routes; served only behind TLS by ``Manager``."""
    cfg = st.config
    app = web.Application(
        client_max_size=cfg.max_body_bytes, middlewares=[guard_middleware, error_middleware]
    )
    app[STATE] = st
    app[GUARD] = ConnectionGuard(
        connection_cap(cfg.max_connections), cfg.handshake_timeout, cfg.header_timeout
    )
    _add_routes(app, PUBLIC_ROUTES, "Cloudlet Manager API")
    return app


def build_admin_app(st: State) -> web.Application:
    app = web.Application(client_max_size=_ADMIN_MAX_BODY, middlewares=[error_middleware])
    app[STATE] = st
    _add_routes(app, ADMIN_ROUTES, "Cloudlet Manager admin API")
    return app


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the {what} {path}: {exc.strerror}.",
            "Run the setup ceremony (cloudlet_pki / cloudlet_manager roles) first.",
        ) from exc


def load_state(cfg: Config, clock: Callable[[], datetime] | None = None) -> State:
    """Open the database and load the keys the Manager needs (not the CA key)."""
    master = formats.decode_master_key(_read(cfg.master_key, "IBE master key"))
    if master.cloudlet_id != cfg.cloudlet_id:
        raise ConfigError(
            f"The IBE master key is for {master.cloudlet_id!r}, but the configuration says "
            f"{cfg.cloudlet_id!r}."
        )
    ca_pem = _read(cfg.ca_cert, "CA certificate").decode("ascii", "replace")
    fingerprint = pki.fingerprint(ca_pem)
    store = Store(cfg.db)
    verifier = DeviceVerifier(master.params, cache=PersistentReplayCache(store))
    st = State(cfg, store, master, ca_pem, fingerprint, verifier, api_port=cfg.listen_port)
    st.failures = FailureLimiter(
        cfg.auth_failures, cfg.auth_failure_window, cfg.auth_cooldown, cfg.auth_max_sources
    )
    if clock is not None:
        st.clock = clock
    return st


class Manager:
    """Runs the public HTTPS site, the admin socket and DNS-SD; stops them cleanly."""

    def __init__(self, cfg: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.config = cfg
        self.clock = clock
        self.state: State | None = None
        self._runners: list[web.AppRunner] = []
        self._advertiser: discovery.Advertiser | None = None
        self.port: int | None = None
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        cfg = self.config
        st = load_state(cfg, self.clock)
        try:
            st.trust = TrustStore(cfg.server_cert, cfg.server_key)
            st.peers_changed()
            st.credential_issuer = BundleIssuer(
                st.master, cfg.credential_workers or len(os.sched_getaffinity(0))
            )
            st.credential_issuer.warm()
            app = build_public_app(st)
            self.guard = app[GUARD]
            public = web.AppRunner(app, access_log=log, keepalive_timeout=cfg.keepalive_timeout)
            await public.setup()
            self._runners.append(public)
            # The first site fixes the port (port 0 picks one); the others share it.
            port = cfg.listen_port
            for host in cfg.listen_hosts:
                site = GuardedSite(
                    public, host, port, ssl_context=st.trust.listening, guard=self.guard
                )
                try:
                    await site.start()
                except OSError as exc:
                    raise ConfigError(
                        f"Cannot listen on {host} port {port}: {exc.strerror}. "
                        "Check listen_hosts: they must be this cloudlet's own addresses."
                    ) from exc
                port = public.addresses[0][1]
            self.port = port
            st.api_port = self.port
            await self._start_admin(st)
            if cfg.discovery:
                addrs = list(cfg.discovery_interfaces)
                addrs = addrs or discovery.local_addresses(cfg.listen_hosts)
                info = discovery.service_info(cfg.cloudlet_id, self.port, addrs, st.ca_fingerprint)
                self._advertiser = discovery.Advertiser(info, cfg.discovery_interfaces)
                await self._advertiser.start()
        except BaseException:
            self.state = st
            await self.stop()
            raise
        self.state = st
        log.info("Cloudlet Manager %s listening on port %d", cfg.cloudlet_id, self.port)

    async def _start_admin(self, st: State) -> None:
        sock = self.config.admin_socket
        try:
            sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create {sock.parent}: {exc.strerror}.") from exc
        # mkdir's mode applies only to a directory it creates.
        perms.private_dir(sock.parent, sock.name, "admin socket")
        runner = web.AppRunner(build_admin_app(st), access_log=log)
        await runner.setup()
        self._runners.append(runner)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            await web.UnixSite(runner, str(sock)).start()
        finally:
            os.umask(old_umask)
        os.chmod(sock, 0o600)

    async def stop(self) -> None:
        if self._advertiser is not None:
            try:
                await self._advertiser.stop()
            except (OSError, CloudletError) as exc:  # never block shutdown on mDNS
                log.warning("DNS-SD withdrawal failed: %s", exc)
            self._advertiser = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.state is not None:
            if self.state.credential_issuer is not None:
                # The handlers that used it are done; do not block the loop on a straggler.
                self.state.credential_issuer.close(wait=False)
            self.state.store.close()
            self.state = None
