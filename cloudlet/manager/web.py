"""What every handler shares: the runtime state, the route table type, JSON in and out.

Handlers raise ``CloudletError`` subclasses; ``error_middleware`` turns them
(and aiohttp's own 404/405/413) into one JSON error shape with the
operator hint, so a client never has to parse HTML or a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from cloudlet.bundles import BundleIssuer
from cloudlet.crypto.auth import DeviceVerifier
from cloudlet.crypto.ibe import MasterKey
from cloudlet.errors import (
    AuthenticationError,
    CloudletError,
    FormatError,
    IdentityError,
    ManagerError,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    TooManyRequests,
    UnsupportedMediaType,
)
from cloudlet.manager import schema
from cloudlet.manager.config import Config
from cloudlet.manager.limiter import FailureLimiter
from cloudlet.manager.store import Store
from cloudlet.manager.tlsctx import TrustStore

__all__ = [
    "ROUTES",
    "STATE",
    "Route",
    "State",
    "b64",
    "error_middleware",
    "neutral_server_header",
    "params",
    "register",
    "json_body",
    "read_body",
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
    # Failed device proofs per source address (load_state sizes it from config).
    failures: FailureLimiter = field(default_factory=FailureLimiter)
    # Seals device credentials for peers on the credential_workers processes.
    credential_issuer: BundleIssuer | None = None

    def peers_changed(self) -> None:
        """Rebuild the TLS trust store after a cloudlet was paired or removed."""
        if self.trust is not None:
            self.trust.rebuild(self.store.cloudlets())
        self.users_changed()  # a paired cloudlet is a user of our field network too

    def users_changed(self) -> None:
        """Say the field network's 802.1X users changed: touch the stamp file beside the
        database, which the cloudlet_network role's path unit watches (as root, it brings
        hostapd in step: ``python -m cloudlet.access``). Visitors adopted through the peer
        API reach the network this way, with no admin run."""
        stamp = users_stamp(self.config.db)
        try:
            stamp.touch(mode=0o600)
            os.utime(stamp)
        except OSError as exc:
            log.warning("Cannot touch %s, so hostapd does not learn of the change: %s",
                        stamp, exc.strerror)


def users_stamp(db: Path) -> Path:
    """The stamp touched when the field network's users change: ``eap-users.changed``."""
    return db.with_name("eap-users.changed")


STATE: web.AppKey[State] = web.AppKey("cloudlet_state", State)


@dataclass(frozen=True)
class Route:
    """One endpoint: registered in aiohttp and described in OpenAPI from the same row.

    ``params`` holds the schema of every path parameter (each ``{name}`` in
    ``path``) and of every optional query parameter (any other name); the
    handler reads them through ``params(request)``, which validates them
    with these very schemas. ``errors`` lists the statuses the handler
    itself raises beyond those its body, parameters and security imply
    (``openapi`` adds those); ``status`` is the success status, ``media``
    its content type.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    security: str  # "none" | "peer-mtls" | "device-proof" | "admin-socket"
    body: dict | None = None
    response: dict | None = None
    params: Mapping[str, dict] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    status: int = 200
    tag: str = ""
    media: str = "application/json"  # of the success response

    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


# For ``params``: which Route row an aiohttp route was registered from.
ROUTES: web.AppKey[dict] = web.AppKey("cloudlet_routes", dict)


def register(app: web.Application, routes: Iterable[Route]) -> None:
    """Add ``routes`` to ``app``, remembering each row for ``params``."""
    rows = app.setdefault(ROUTES, {})
    for route in routes:
        rows[app.router.add_route(route.method, route.path, route.handler)] = route


def params(request: web.Request) -> dict[str, str]:
    """The request's path and query parameters, validated with its Route's schemas.

    The one way handlers read parameters, so what the OpenAPI document says
    about them is what is enforced. Absent query parameters are left out;
    a repeated one is refused (two readers could pick different copies).
    """
    route = request.app[ROUTES][request.match_info.route]
    in_path = route.path_params()
    out = {}
    for name, sub in route.params.items():
        if name in in_path:
            value, where = request.match_info[name], "path"
        else:
            values = request.query.getall(name, [])
            if not values:
                continue
            if len(values) > 1:
                raise RequestError(f"The query parameter {name} is given more than once.")
            value, where = values[0], "query"
        schema.validate(sub, value, f"The {where} parameter {name}")
        out[name] = value
    return out


def state(request: web.Request) -> State:
    return request.app[STATE]


def _late_body(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"The request body did not arrive within {timeout:g} s.")


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, refused when longer than ``limit`` bytes or slower than ``timeout`` s.

    Content-Length is checked before a byte is read, and a chunked body is
    counted as it arrives, so an oversized upload is never buffered. The
    deadline stops a client that sends a few bytes and stalls from holding
    the connection and its buffer.
    """
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"The body is {request.content_length} bytes; at most {limit} are accepted here."
        )
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The body is longer than {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise _late_body(timeout) from None
    return b"".join(chunks)


async def json_body(request: web.Request, body_schema: dict, raw: bytes | None = None) -> Any:
    """Read (size-limited by aiohttp, time-limited by body_timeout), parse and validate."""
    if raw is None:
        timeout = state(request).config.body_timeout
        try:
            async with asyncio.timeout(timeout):
                raw = await request.read()
        except TimeoutError:
            raise _late_body(timeout) from None
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
        # raw_path as sent (percent-encoded): request.path would decode %0A into a line break.
        path = request.raw_path
        if status >= 500:
            log.error("%s %s failed: %s", request.method, path, exc)
        else:
            log.info("%s %s refused (%d): %s", request.method, path, status, exc.message)
        response = _error(status, type(exc).__name__, exc.message, exc.hint)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        hint = {
            404: "See GET /openapi.json for the routes.",
            405: "See GET /openapi.json for the methods of this route.",
            413: "Nothing was changed. Send less per request.",
        }.get(exc.status, "")
        response = _error(exc.status, type(exc).__name__, exc.reason, hint)
        if "Allow" in exc.headers:  # 405 must say which methods the route has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:  # a bug: logged with its traceback, answered in the one error shape
        log.exception("%s %s failed", request.method, request.raw_path)
        return _error(
            500, "InternalError", "The Manager failed on this request.", "See the Manager's log."
        )


async def neutral_server_header(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a Server header that names no software versions.

    aiohttp's default ("Python/3.11 aiohttp/3.x") tells a scanner exactly
    which published vulnerabilities to try.
    """
    response.headers["Server"] = "cloudlet-manager"
