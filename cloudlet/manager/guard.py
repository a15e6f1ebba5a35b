"""Bounds on every phase of a public connection, which aiohttp alone does not give.

Left to aiohttp, a client decides how long its connection lives: the TLS
handshake may take asyncio's default 60 s, nothing times the request headers,
and an idle connection is kept for about an hour. A thousand such
connections use up the file descriptors, and then the Manager accepts
nothing at all while asyncio logs the failing accept() in a loop.

``GuardedSite`` listens on plain TCP, so every connection is seen the moment
it is accepted, and each one (``_Connection``) is

1. counted, and aborted at once when ``max_connections`` are already open
   (``connection_cap`` keeps that below the descriptor limit);
2. upgraded to TLS by ``loop.start_tls`` within ``handshake_timeout``;
3. handed to aiohttp's own per-connection protocol, and aborted unless its
   first request reaches a handler within ``header_timeout``
   (``guard_middleware`` reports the arrival).

The later phases are bounded elsewhere: aiohttp closes a kept-alive
connection whose next request is not complete after ``keepalive_timeout``
(however much of it has arrived), and handlers read bodies under
``body_timeout`` (``web.read_body``, ``web.json_body``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time

from aiohttp import web

from cloudlet.errors import ConfigError
from cloudlet.manager.web import Handler

__all__ = [
    "FD_RESERVE",
    "GUARD",
    "ConnectionGuard",
    "GuardedSite",
    "connection_cap",
    "guard_middleware",
]

log = logging.getLogger("cloudlet.manager")

# Descriptors the Manager needs besides its public connections: the database,
# listening and admin sockets, mDNS, logs. The unit's LimitNOFILE leaves more.
FD_RESERVE = 128
_WARN_EVERY = 60.0  # seconds between "connections refused" warnings


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered if need be to stay below the descriptor limit.

    Refusing a connection is cheap and local; running out of descriptors
    stops everything, the database and the admin socket included.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    cap = soft - FD_RESERVE
    if cap < 1:
        raise ConfigError(
            f"The open-file limit is {soft}; the Manager needs more than {FD_RESERVE}.",
            "Raise LimitNOFILE in the unit (the cloudlet_manager role sets it).",
        )
    if max_connections > cap:
        log.warning(
            "limits.max_connections is %d, but the open-file limit %d leaves room for %d: "
            "accepting at most %d connections. Raise LimitNOFILE or lower max_connections.",
            max_connections,
            soft,
            cap,
            cap,
        )
        return cap
    return max_connections


class ConnectionGuard:
    """The public connections of one Manager (all its listening addresses)."""

    def __init__(
        self, max_connections: int, handshake_timeout: float, header_timeout: float
    ) -> None:
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.header_timeout = header_timeout
        self.active = 0  # accepted and not yet closed, in any phase
        self.refused = 0
        self._handshaking: set[_Connection] = set()
        # TLS transport -> its connection, until the first request reaches a handler.
        self._waiting: dict[asyncio.BaseTransport, _Connection] = {}
        self._warned = -_WARN_EVERY

    def admit(self) -> bool:
        """Count a new connection, or say no when the cap is reached."""
        if self.active >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._warned >= _WARN_EVERY:
                self._warned = now
                log.warning(
                    "%d connections are open (limits.max_connections): refusing new ones; "
                    "%d refused since start.",
                    self.active,
                    self.refused,
                )
            return False
        self.active += 1
        return True

    def request_arrived(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection's request reached a handler: its header deadline is met."""
        conn = self._waiting.pop(transport, None) if transport is not None else None
        if conn is not None:
            conn.cancel_deadline()

    def abort_handshakes(self) -> None:
        """Drop connections still in their TLS handshake (aiohttp does not know them)."""
        for conn in list(self._handshaking):
            conn.abort()


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard", ConnectionGuard)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[GUARD].request_arrived(request.transport)
    return await handler(request)


class _Connection(asyncio.Protocol):
    """One accepted TCP connection: counted, upgraded to TLS, then aiohttp's.

    Created without TLS, it first owns the raw socket. ``start_tls`` then
    makes it the protocol of the TLS transport, and from there it forwards
    every event to the aiohttp RequestHandler made for the connection (a
    plain ``asyncio.Protocol``, as this is). The count is released exactly
    once: by ``connection_lost`` once TLS is up, by ``_upgrade`` otherwise,
    since a failed handshake never reaches this protocol.
    """

    def __init__(self, guard: ConnectionGuard, ssl_context: ssl.SSLContext, server) -> None:
        self._guard = guard
        self._ssl_context = ssl_context
        self._server = server  # aiohttp's Server: calling it makes a RequestHandler
        self._raw: asyncio.Transport | None = None
        self._tls: asyncio.Transport | None = None
        self._handler: asyncio.Protocol | None = None
        self._early: list[bytes] = []  # decrypted along with the end of the handshake
        self._counted = False
        self._closed = False
        self._deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport
        if not self._guard.admit():
            transport.abort()
            return
        self._counted = True
        self._guard._handshaking.add(self)
        transport.pause_reading()  # not a byte before start_tls owns the socket
        self._task = asyncio.get_running_loop().create_task(self._upgrade())

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        tls = None
        try:
            if not self._closed:
                tls = await loop.start_tls(
                    self._raw,
                    self,
                    self._ssl_context,
                    server_side=True,
                    ssl_handshake_timeout=self._guard.handshake_timeout,
                )
        except OSError as exc:  # SSLError, reset, or the handshake deadline
            log.debug("TLS handshake failed: %s", exc)
        finally:
            self._guard._handshaking.discard(self)
            if tls is None:  # failed, or the peer left mid-handshake
                self._release()
        if tls is None or self._closed:
            return
        self._tls = tls
        self._guard._waiting[tls] = self
        self._deadline = loop.call_later(self._guard.header_timeout, self._headers_late)
        self._handler = self._server()
        self._handler.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            self._handler.data_received(data)

    def _headers_late(self) -> None:
        self._deadline = None
        if self._guard._waiting.pop(self._tls, None) is not None:
            log.debug("No request within %g s: closing the connection.", self._guard.header_timeout)
            self._tls.abort()

    def cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def abort(self) -> None:
        self._raw.abort()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.active -= 1

    # Events of the TLS transport (or, before start_tls, of the raw socket).

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            self._early.append(data)
        else:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        # Under TLS the transport closes after an EOF whatever this returns.
        return self._handler.eof_received() if self._handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.cancel_deadline()
        if self._tls is not None:
            self._guard._waiting.pop(self._tls, None)
        if self._handler is not None:
            self._handler.connection_lost(exc)
        self._release()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections go through ``_Connection`` (see the module docstring).

    The server itself is created without TLS, so that each connection is
    seen, and counted, before its handshake.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # register with the runner; the server is ours
        server, ssl_context = self._runner.server, self._ssl_context
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._guard, ssl_context, server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        self._guard.abort_handshakes()
