"""The Manager's device API over HTTPS, as the device sees it.

Trust comes only from the credential bundle: the TLS context holds the
bundle's CA and nothing else (never the system store, which knows no
cloudlet and must not be able to vouch for one), and the server must
present a certificate for the bundle's API host. Every request carries a
fresh identity-key proof (``manager.protocol``) bound to its method, path
and body, addressed to the bundle's issuing cloudlet.

``api_override`` changes only where the client dials (as curl's
``--resolve`` does): the certificate is still checked against the bundle's
API host, so an override cannot weaken the check. It serves tests and a
device whose DNS is not up yet.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudlet.bundles import DeviceBundle
from cloudlet.crypto.identity import normalise_id
from cloudlet.errors import (
    CloudletRefused,
    CloudletUnreachable,
    FormatError,
    IdentityError,
)
from cloudlet.manager import protocol

__all__ = ["DeviceApi", "Endpoint", "Message", "SvmLocation", "parse_endpoint", "tls_context"]

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_MESSAGE_ID = re.compile(r"[0-9a-f]{32}\Z")


@dataclass(frozen=True)
class Endpoint:
    """``host``/``port`` are what the certificate must name; ``dial_*`` where to connect."""

    host: str
    port: int
    dial_host: str
    dial_port: int

    def __str__(self) -> str:
        where = f"{self.host}:{self.port}"
        if (self.dial_host, self.dial_port) != (self.host, self.port):
            where += f" (dialled at {self.dial_host}:{self.dial_port})"
        return where


def parse_endpoint(bundle: DeviceBundle, override: str | None = None) -> Endpoint:
    """The bundle's API endpoint, optionally dialled at ``HOST[:PORT]`` instead."""
    if not override:
        return Endpoint(bundle.api_host, bundle.api_port, bundle.api_host, bundle.api_port)
    host, port = override, bundle.api_port
    if override.startswith("["):
        host, _, rest = override[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"))
    elif override.count(":") == 1:
        host, _, raw = override.partition(":")
        port = _port(raw)
    if not host:
        raise FormatError(f"API address {override!r} names no host.", "Use HOST or HOST:PORT.")
    return Endpoint(bundle.api_host, bundle.api_port, host, port)


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise FormatError(f"Port {raw!r} is not in 1..65535.", "Use HOST or HOST:PORT.")
    return int(raw)


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly one CA: the cloudlet's, from the bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks host names
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


class _Connection(http.client.HTTPSConnection):
    """HTTPS to ``dial_*``, with the certificate checked for ``host``."""

    def __init__(self, endpoint: Endpoint, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(endpoint.host, endpoint.port, context=context, timeout=timeout)
        self._dial = (endpoint.dial_host, endpoint.dial_port)
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection(self._dial, self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@dataclass(frozen=True, repr=False)
class Message:
    """One queued message; ``body`` is ciphertext only this device can open."""

    message_id: str
    kind: str
    issuer: str
    issuer_params: bytes | None
    created_at: int
    body: bytes

    def __repr__(self) -> str:
        return f"Message({self.message_id}, {self.kind!r} from {self.issuer!r})"


@dataclass(frozen=True)
class SvmLocation:
    service_id: str
    fqdn: str
    ports: tuple[int, ...]


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"The cloudlet sent a {what} that is not base64 text.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"The cloudlet sent a {what} that is not valid base64.") from None


def _field(data: dict, name: str, kind: type | tuple[type, ...]) -> object:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise FormatError(f"The cloudlet's answer lacks a valid {name!r}.")
    return value


def _message(item: dict) -> Message:
    message_id = _field(item, "message_id", str)
    if not _MESSAGE_ID.match(message_id):
        raise FormatError("The cloudlet sent a malformed message id.")
    params = item.get("issuer_params") if isinstance(item, dict) else None
    return Message(
        message_id,
        _field(item, "kind", str),
        _field(item, "issuer", str),
        None if params is None else _b64(params, "issuer params"),
        _field(item, "created_at", int),
        _b64(item.get("body"), "message body"),
    )


class DeviceApi:
    """Authenticated calls to the device API of the bundle's cloudlet."""

    def __init__(
        self,
        bundle: DeviceBundle,
        api_override: str | None = None,
        timeout: float = 15.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.bundle = bundle
        self.endpoint = parse_endpoint(bundle, api_override)
        self.audience = bundle.params.cloudlet_id
        self.timeout = timeout
        self.clock = clock or (lambda: datetime.now(UTC))
        self._tls = tls_context(bundle.tls_ca_pem)

    def _send(self, method: str, path: str, body: bytes) -> tuple[int, dict, str | None]:
        key = self.bundle.device_key
        auth = protocol.authorization_header(key, self.audience, method, path, body, self.clock())
        headers = {"Authorization": auth, "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        conn = _Connection(self.endpoint, self._tls, self.timeout)
        try:
            payload = body if body or method != "GET" else None
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_RESPONSE_BYTES + 1)
            retry_after = resp.getheader("Retry-After")
        except ssl.SSLCertVerificationError as exc:
            raise CloudletUnreachable(
                f"The server at {self.endpoint} is not the cloudlet in this device's credential: "
                f"its certificate {exc.verify_message}.",
                "Do not use this network: something may be impersonating the cloudlet. If the "
                "cloudlet's CA was re-created, ask its admin for a new bundle.",
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise CloudletUnreachable(
                f"Cannot reach the API of cloudlet {self.audience} at {self.endpoint}: {reason}."
            ) from None
        finally:
            conn.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise FormatError("The cloudlet's answer is larger than any valid one.")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise FormatError(f"The cloudlet answered HTTP {resp.status} with no JSON.") from None
        if not isinstance(data, dict):
            raise FormatError("The cloudlet's answer is not a JSON object.")
        return resp.status, data, retry_after

    def request(self, method: str, path: str, body: bytes = b"") -> dict:
        """One authenticated request; an error answer becomes CloudletRefused."""
        status, data, retry_after = self._send(method, path, body)
        if status < 400:
            return data
        err = data.get("error") if isinstance(data.get("error"), dict) else {}
        message = str(err.get("message") or f"The cloudlet answered HTTP {status}.")
        hint = str(err.get("hint") or "")
        if status == 429 and retry_after:
            hint = f"Retry after {retry_after} s. {hint}".strip()
        raise CloudletRefused(message, hint, status, str(err.get("type") or ""))

    def messages(self) -> list[Message]:
        """This device's unacknowledged messages, oldest first (reading changes nothing)."""
        data = self.request("GET", "/device/messages")
        items = data.get("messages")
        if not isinstance(items, list):
            raise FormatError("The cloudlet's message list is malformed.")
        return [_message(item) for item in items]

    def ack(self, message_id: str) -> bool:
        """Acknowledge a message; True the first time, False if it was acked before."""
        if not isinstance(message_id, str) or not _MESSAGE_ID.match(message_id):
            raise FormatError(f"{message_id!r} is not a message id (32 hex digits).")
        data = self.request("POST", f"/device/messages/{message_id}/ack")
        return bool(_field(data, "changed", bool))

    def locate(self, service_id: str) -> SvmLocation:
        """Where the cloudlet says a service VM is reachable: its FQDN and ports."""
        try:
            service_id = normalise_id(service_id, "service id")
        except IdentityError as exc:
            raise FormatError(exc.message, exc.hint) from None
        try:
            data = self.request("GET", f"/device/svms/{service_id}")
        except CloudletRefused as exc:
            if exc.status != 404:
                raise
            raise CloudletRefused(
                exc.message,
                "Check the service id with the cloudlet admin. If the service VM is moving, "
                "fetch messages (cloudlet-device messages) for the new cloudlet's credential.",
                404,
                exc.kind,
            ) from None
        ports = _field(data, "ports", list)
        if not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise FormatError("The cloudlet sent invalid SVM ports.")
        return SvmLocation(
            str(_field(data, "service_id", str)), str(_field(data, "fqdn", str)), tuple(ports)
        )
