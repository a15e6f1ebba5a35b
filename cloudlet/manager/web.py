"""What every handler shares: the runtime state, the route table type, JSON in and out.

Handlers raise ``CloudletError`` subclasses; ``error_middleware`` turns them
(and aiohttp's own 404/405/413) into one JSON error shape with the
operator hint, so a client never has to parse HTML or a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cloudlet.crypto.auth import DeviceVerifier
from cloudlet.crypto.ibe import MasterKey
from cloudlet.errors import (
    AuthenticationError,
    CloudletError,
    FormatError,
    IdentityError,
    ManagerError,
    RequestError,
    UnsupportedMediaType,
)
from cloudlet.manager import schema
from cloudlet.manager.config import Config
from cloudlet.manager.store import Store
from cloudlet.manager.tlsctx import TrustStore

__all__ = [
    "STATE",
    "Route",
    "State",
    "b64",
    "error_middleware",
    "json_body",
    "reply",
    "unb64",
]

log = logging.getLogger("cloudlet.manager")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class State:
    """The Manager's runtime objects; everything durable is in ``store`` or on disk."""

    config: Config
    store: Store
    master: MasterKey
    ca_pem: str
    ca_fingerprint: str
    verifier: DeviceVerifier
    trust: TrustStore | None = None
    api_port: int = 8443  # the port devices are told to dial (set once bound)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def peers_changed(self) -> None:
        """Rebuild the TLS trust store after a cloudlet was paired or removed."""
        if self.trust is not None:
            self.trust.rebuild(self.store.cloudlets())


STATE: web.AppKey[State] = web.AppKey("cloudlet_state", State)


@dataclass(frozen=True)
class Route:
    """One endpoint: registered in aiohttp and described in OpenAPI from the same row."""

    method: str
    path: str
    handler: Handler
    summary: str
    security: str  # "none" | "peer-mtls" | "device-proof" | "admin-socket"
    body: dict | None = None
    response: dict | None = None
    query: tuple[str, ...] = ()
    tag: str = ""


def state(request: web.Request) -> State:
    return request.app[STATE]


async def json_body(request: web.Request, body_schema: dict, raw: bytes | None = None) -> Any:
    """Read (size-limited by aiohttp), parse strictly and validate a JSON body."""
    if raw is None:
        raw = await request.read()
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"The body must be application/json, not {request.content_type!r}."
        )
    return schema.validate(body_schema, schema.parse_json(raw))


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"The {what} is not valid base64.") from None


def _status(exc: CloudletError) -> int:
    if isinstance(exc, ManagerError):
        return exc.status
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, (FormatError, IdentityError)):
        return 400
    return 500


def _error(status: int, kind: str, message: str, hint: str = "") -> web.Response:
    return web.json_response(
        {"error": {"status": status, "type": kind, "message": message, "hint": hint}},
        status=status,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CloudletError as exc:
        status = _status(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        else:
            log.info("%s %s refused (%d): %s", request.method, request.path, status, exc.message)
        return _error(status, type(exc).__name__, exc.message, exc.hint)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        hint = {
            404: "See GET /openapi.json for the routes.",
            405: "See GET /openapi.json for the methods of this route.",
            413: "Nothing was changed. Send less per request.",
        }.get(exc.status, "")
        return _error(exc.status, type(exc).__name__, exc.reason, hint)
