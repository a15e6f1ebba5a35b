"""How a device proof travels over HTTP (shared by the Manager and the device client).

Every device request carries ``Authorization: CloudletProof <base64>``, the
base64 of a ``formats``-encoded ``AuthProof``. The proof signs
``request_binding(method, path, body)``: the method, the path with its query
string exactly as sent, and the SHA-256 of the body, length-prefixed. So a
captured proof cannot be moved to another endpoint, another message id or
another body, and the audience, time stamp and nonce inside the proof stop
it being sent to another cloudlet, later, or twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from datetime import datetime

from cloudlet import formats
from cloudlet.crypto import auth
from cloudlet.crypto.auth import AuthProof
from cloudlet.crypto.ibe import DeviceKey
from cloudlet.errors import AuthenticationError, CloudletError

__all__ = [
    "API_VERSION",
    "SCHEME",
    "authorization_header",
    "parse_authorization",
    "request_binding",
]

API_VERSION = "1"
SCHEME = "CloudletProof"
_LABEL = b"CLOUDLET-V01-HTTP-REQUEST"
_MAX_HEADER = 4096


def request_binding(method: str, path: str, body: bytes) -> bytes:
    """The request bytes a device proof signs (see the module docstring)."""
    if not isinstance(body, bytes):
        raise TypeError("body must be bytes")
    parts = (_LABEL, method.upper().encode("ascii"), path.encode("utf-8"))
    digest = hashlib.sha256(body).digest()
    return b"".join(struct.pack(">I", len(p)) + p for p in (*parts, digest))


def authorization_header(
    key: DeviceKey,
    audience: str,
    method: str,
    path: str,
    body: bytes = b"",
    now: datetime | None = None,
) -> str:
    """Device side: the Authorization header value for one request."""
    proof = auth.make_proof(key, audience, request_binding(method, path, body), now=now)
    return f"{SCHEME} " + base64.b64encode(formats.encode_auth_proof(proof)).decode("ascii")


def parse_authorization(value: str | None) -> AuthProof:
    """Manager side: decode the header, or AuthenticationError (401)."""
    if not value:
        raise AuthenticationError(
            "The request carries no device proof.",
            f"Device requests need an 'Authorization: {SCHEME} ...' header; "
            "use the cloudlet device client.",
        )
    scheme, _, blob = value.partition(" ")
    if scheme != SCHEME or len(blob) > _MAX_HEADER:
        raise AuthenticationError(f"The Authorization header is not a {SCHEME} proof.")
    try:
        raw = base64.b64decode(blob.strip(), validate=True)
        return formats.decode_auth_proof(raw)
    except (binascii.Error, ValueError, TypeError, CloudletError):
        raise AuthenticationError("The device proof is damaged and cannot be read.") from None
