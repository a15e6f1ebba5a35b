"""Reaching a service VM by its stable FQDN (migration step 7).

The device never keeps an SVM's address: it asks its cloudlet where the
SVM is (``DeviceApi.locate``), resolves the FQDN with the system resolver
(the device_client role points it at the cloudlet's dnsmasq), and calls
it. After a migration the same name resolves on the new cloudlet, so the
device needs nothing but its new credential to carry on.

The demo SVM is an HTTP counter: ``GET /`` answers a count (as JSON with a
``count`` field, or a bare number), which moves with the VM's memory.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass

from cloudlet.device.api import SvmLocation
from cloudlet.device.progress import Progress, Silent
from cloudlet.errors import FormatError, SvmUnreachable

__all__ = ["SvmReply", "call_svm", "resolve"]

MAX_REPLY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SvmReply:
    fqdn: str
    address: str
    port: int
    status: int
    body: str
    count: int | None


def resolve(fqdn: str, port: int) -> list[str]:
    """The FQDN's addresses from the system resolver, in its order, without repeats."""
    try:
        infos = socket.getaddrinfo(fqdn, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SvmUnreachable(f"The name {fqdn} does not resolve: {exc}.") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _count(body: str) -> int | None:
    text = body.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get("count") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_path(path: str) -> str:
    if not path.startswith("/") or not path.isascii() or not path.isprintable() or " " in path:
        raise FormatError(f"{path!r} is not a URL path.", "Give a path such as / or /status.")
    return path


def call_svm(
    location: SvmLocation,
    port: int | None = None,
    path: str = "/",
    timeout: float = 10.0,
    progress: Progress | None = None,
) -> SvmReply:
    """GET ``path`` on the SVM, trying each resolved address in turn."""
    progress = progress or Silent()
    path = _check_path(path)
    if port is None:
        if not location.ports:
            raise SvmUnreachable(
                f"Service VM {location.service_id} declares no port.",
                "Give the port to call with --port.",
            )
        port = location.ports[0]
    addresses = resolve(location.fqdn, port)
    progress.info(f"{location.fqdn} resolves to {', '.join(addresses)}")
    failures = []
    for address in addresses:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
        try:
            with progress.waiting(f"calling http://{location.fqdn}:{port}{path} at {address}"):
                conn.request("GET", path, headers={"Host": f"{location.fqdn}:{port}"})
                resp = conn.getresponse()
                raw = resp.read(MAX_REPLY_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{address}: {getattr(exc, 'strerror', None) or exc}")
            continue
        finally:
            conn.close()
        body = raw.decode("utf-8", "replace")
        if resp.status >= 400:
            raise SvmUnreachable(
                f"Service VM {location.service_id} at {address}:{port} answered HTTP "
                f"{resp.status}: {body.strip()[:200]}"
            )
        return SvmReply(location.fqdn, address, port, resp.status, body, _count(body))
    raise SvmUnreachable(
        f"Service VM {location.service_id} did not answer on port {port}: {'; '.join(failures)}."
    )
