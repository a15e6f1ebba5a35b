"""A paired cloudlet as the migration ceremony sees it, and its peer API over mutual TLS.

``PeerLink`` is what pairing stored about the peer (``GET
/admin/cloudlets/{id}/link`` on our Manager): its CA, its Manager's name and
port, and the 802.1X credential it issued us for its field network.

``PeerClient`` calls the peer's ``/peer/...`` API at an address found by
discovery. The peer's CA is the only trust anchor and the name checked is
the Manager's FQDN from the pairing, never what discovery said, so a
look-alike answering DNS-SD cannot pass the handshake.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudlet.admin_client import AdminClient
from cloudlet.bundles import NetworkCredential
from cloudlet.errors import MigrationError, NotFoundError, PeerRefused
from cloudlet.manager.tlsctx import client_context

__all__ = ["PeerClient", "PeerLink", "peer_link"]


@dataclass(frozen=True)
class PeerLink:
    cloudlet_id: str
    ca_pem: str = field(repr=False)
    ca_fingerprint: str
    api_host: str
    api_port: int
    pending: bool
    network: NetworkCredential | None = field(default=None, repr=False)


def peer_link(admin: AdminClient, peer_id: str) -> PeerLink:
    """What pairing stored about ``peer_id``; refused when the two were never paired."""
    try:
        data = admin.get(f"/admin/cloudlets/{peer_id}/link")
    except NotFoundError:
        raise MigrationError(
            f"Cloudlet {peer_id!r} is not paired with this cloudlet (or its pairing was "
            "removed), so nothing can move there.",
            "Pair the two cloudlets first (pair_cloudlets.yml), or choose a paired target. "
            "Nothing was moved.",
        ) from None
    net = data.get("network")
    return PeerLink(
        data["cloudlet_id"],
        data["ca_pem"],
        data["ca_fingerprint"],
        data["api_host"],
        data["api_port"],
        bool(data["pending"]),
        NetworkCredential(net["ssid"], net["identity"], net["password"], net["method"])
        if net else None,
    )


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, checking the certificate against the paired name."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


class PeerClient:
    """JSON calls to a paired cloudlet's peer API; every failure is a MigrationError."""

    def __init__(self, link: PeerLink, address: str, port: int, cert: str | Path,
                 key: str | Path, timeout: float = 30.0) -> None:
        self.link = link
        self.address = address
        self.port = port
        self.timeout = timeout
        self._context = client_context(link.ca_pem, cert, key)

    def _call(self, method: str, path: str, payload: bytes | None,
              headers: dict[str, str]) -> tuple[int, bytes, float]:
        """One exchange: the status, the body, and the seconds the body took to arrive."""
        conn = _Connection(self.address, self.port, self.link.api_host, self._context,
                           self.timeout)
        try:
            conn.request(method, path, payload, headers)
            resp = conn.getresponse()
            start = time.monotonic()
            data = resp.read()
            return resp.status, data, time.monotonic() - start
        except ssl.SSLCertVerificationError as exc:
            raise MigrationError(
                f"{self.where} did not prove it is the cloudlet paired as "
                f"{self.link.cloudlet_id} ({exc.verify_message}).",
                "Something else answers at that address. Nothing was sent or moved.",
            ) from None
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise MigrationError(f"{self.where} did not answer {method} {path}: {exc}.") from None
        finally:
            conn.close()

    @property
    def where(self) -> str:
        return f"cloudlet {self.link.cloudlet_id}'s Manager at {self.address}:{self.port}"

    def _refused(self, method: str, path: str, status: int, data: bytes) -> PeerRefused:
        try:
            err = json.loads(data).get("error", {})
        except (ValueError, AttributeError):
            err = {}
        said = err.get("message") or f"HTTP {status}"
        return PeerRefused(f"{self.where} refused {method} {path}: {said}",
                           err.get("hint") or None, status, said)

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        status, data, _ = self._call(method, path, payload, headers)
        if status >= 400:
            raise self._refused(method, path, status, data)
        try:
            return json.loads(data) if data else {}
        except ValueError:
            raise MigrationError(f"{self.where} answered {method} {path} with non-JSON.") from None

    def link_rate(self) -> float:
        """The link's rate from the peer to us, in bit/s: its probe bytes over their time."""
        status, data, seconds = self._call("GET", "/peer/probe", None,
                                           {"Accept": "application/octet-stream"})
        if status >= 400:
            raise self._refused("GET", "/peer/probe", status, data)
        return len(data) * 8 / max(seconds, 1e-6)
