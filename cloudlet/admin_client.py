"""A small client for the Manager's admin API, on its unix socket.

The modules that run on a cloudlet (as root, in the package's venv) talk to
the Manager through it. Every failure is a ``ManagerError`` that says what
to do: the socket missing means the Manager is not running, an error
answer carries the Manager's own message.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from cloudlet.errors import ManagerError, NotFoundError

__all__ = ["AdminClient", "DEFAULT_SOCKET"]

DEFAULT_SOCKET = "/run/cloudlet-manager/admin.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("cloudlet", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    """JSON requests to ``/admin/...``; answers are dicts."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        conn = _UnixConnection(self.path, self.timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, payload, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise ManagerError(
                f"The Cloudlet Manager is not running: nothing listens on {self.path}.",
                "Start it (systemctl start cloudlet-manager) or run the setup ceremony first.",
            ) from None
        except OSError as exc:
            raise ManagerError(
                f"The Cloudlet Manager's admin socket {self.path} did not answer: {exc}."
            ) from None
        finally:
            conn.close()
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise ManagerError(f"The Manager answered {method} {path} with non-JSON.") from None
        if resp.status >= 400:
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            message = err.get("message") or f"HTTP {resp.status}"
            cls = NotFoundError if resp.status == 404 else ManagerError
            raise cls(f"The Manager refused {method} {path}: {message}", err.get("hint"))
        return answer

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def put(self, path: str, body: dict) -> Any:
        return self.request("PUT", path, body)

    def post(self, path: str, body: dict) -> Any:
        return self.request("POST", path, body)
