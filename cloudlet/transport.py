"""The transport envelope: a first bundle sealed to a device's pairing request.

When the device is an Ansible host, its first bundle travels from the
cloudlet to the device through the admin's control laptop. The laptop must
only ever see ciphertext, so the device first makes a one-time X25519 key
pair (its *pairing request*, ``cloudlet.device.pairing``) and hands out the
public half; the cloudlet seals the signed bundle to it here, and only the
device can open it.

Envelope type ``TRANSPORT_SEALED`` (11), no curve, six fields::

    aead         b"chacha20-poly1305"
    recipient    32 bytes: the pairing request's X25519 public key
    ephemeral    32 bytes: the sender's one-time X25519 public key
    device id    ASCII: whose bundle it is
    cloudlet id  ASCII: the cloudlet that issued it
    body         ciphertext and the 16-byte tag

The key and nonce come from HKDF-SHA256 over the X25519 secret (the
ephemeral key is used once, so a derived nonce is never reused), and every
header field is in the AEAD's associated data under a versioned label: a
bundle cannot be moved to another request, device or cloudlet, and any
change, truncation or extension is refused before a byte is stored.
docs/wire-format.md section 15 is the normative text; tests/vectors/transport.json
its known-answer vector.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cloudlet import formats
from cloudlet.crypto import curve
from cloudlet.errors import DecryptionError, FormatError
from cloudlet.formats import Kind

__all__ = [
    "AAD_TRANSPORT",
    "KEY_BYTES",
    "LABEL_TRANSPORT",
    "Sealed",
    "TransportKey",
    "decode_public_key",
    "describe",
    "open_transport",
    "seal_transport",
]

LABEL_TRANSPORT = b"CLOUDLET-V01-TRANSPORT-KDF"
AAD_TRANSPORT = b"CLOUDLET-V01-TRANSPORT-AAD"
AEAD = b"chacha20-poly1305"
KEY_BYTES = 32
OKM_BYTES = 44  # 32-byte key, 12-byte nonce
TAG_BYTES = 16


def _lp(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def decode_public_key(raw: bytes) -> bytes:
    """Check a pairing request's public key: 32 bytes that X25519 accepts."""
    if not isinstance(raw, bytes):
        raise TypeError("the public key must be bytes")
    if len(raw) != KEY_BYTES:
        raise FormatError(
            f"A pairing request's public key is {KEY_BYTES} bytes, not {len(raw)}.",
            "Copy it again from `cloudlet-device pairing-request` on the device.",
        )
    X25519PublicKey.from_public_bytes(raw)
    return raw


@dataclass(frozen=True, repr=False)
class TransportKey:
    """A device's one-time pairing key (the private half stays on the device)."""

    private: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.private, bytes) or len(self.private) != KEY_BYTES:
            raise FormatError(f"A pairing key is {KEY_BYTES} bytes.")

    def __repr__(self) -> str:
        return "TransportKey(<secret>)"

    @classmethod
    def generate(cls, rng: curve.Rng | None = None) -> TransportKey:
        return cls((rng or curve.default_rng)(KEY_BYTES))

    @property
    def public(self) -> bytes:
        return _raw(X25519PrivateKey.from_private_bytes(self.private).public_key())

    def exchange(self, peer: bytes) -> bytes:
        return _exchange(X25519PrivateKey.from_private_bytes(self.private), peer)


def _exchange(private: X25519PrivateKey, peer: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:  # cryptography refuses an all-zero (small-order) result
        shared = bytes(KEY_BYTES)
    if shared == bytes(KEY_BYTES):
        raise DecryptionError("The sealed bundle carries an invalid key.")
    return shared


def _okm(shared: bytes, fields: list[bytes]) -> tuple[bytes, bytes]:
    okm = HKDF(hashes.SHA256(), OKM_BYTES, salt=None, info=_lp(LABEL_TRANSPORT, *fields)).derive(
        shared
    )
    return okm[:32], okm[32:]


def _header(recipient: bytes, ephemeral: bytes, device_id: str, cloudlet_id: str) -> list[bytes]:
    return [AEAD, recipient, ephemeral, device_id.encode("ascii"), cloudlet_id.encode("ascii")]


def seal_transport(
    data: bytes,
    recipient: bytes,
    device_id: str,
    cloudlet_id: str,
    rng: curve.Rng | None = None,
) -> bytes:
    """Seal ``data`` (a signed first bundle) to the pairing request ``recipient``."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    decode_public_key(recipient)
    if not (device_id.isascii() and cloudlet_id.isascii()):
        raise FormatError("Device and cloudlet ids are ASCII.")
    eph = X25519PrivateKey.from_private_bytes((rng or curve.default_rng)(KEY_BYTES))
    header = _header(recipient, _raw(eph.public_key()), device_id, cloudlet_id)
    key, nonce = _okm(_exchange(eph, recipient), header[1:])
    body = ChaCha20Poly1305(key).encrypt(nonce, data, _lp(AAD_TRANSPORT, *header))
    return formats.pack(Kind.TRANSPORT_SEALED, [*header, body], formats.CURVE_NONE)


@dataclass(frozen=True)
class Sealed:
    """The clear header of a transport envelope (nothing authenticated yet)."""

    recipient: bytes
    ephemeral: bytes
    device_id: str
    cloudlet_id: str
    body: bytes


def describe(data: bytes) -> Sealed:
    """Parse the envelope strictly; FormatError if damaged or truncated."""
    aead, recipient, ephemeral, device, cloudlet, body = formats.unpack(
        data,
        Kind.TRANSPORT_SEALED,
        [None, KEY_BYTES, KEY_BYTES, None, None, None],
        formats.CURVE_NONE,
    )
    if aead != AEAD:
        raise FormatError(f"The sealed bundle uses {aead[:32]!r}; this release reads {AEAD!r}.")
    if len(body) < TAG_BYTES:
        raise FormatError("The sealed bundle is truncated (shorter than its tag).")
    return Sealed(
        recipient,
        ephemeral,
        formats.text_field(device, "device id", ascii_only=True),
        formats.id_field(cloudlet),
        body,
    )


def open_transport(data: bytes, key: TransportKey) -> tuple[Sealed, bytes]:
    """Check the envelope is for ``key`` and unaltered; return its header and content."""
    if not isinstance(key, TransportKey):
        raise TypeError("key must be a TransportKey")
    sealed = describe(data)
    if sealed.recipient != key.public:
        raise DecryptionError(
            "This bundle was sealed to another pairing request, not to this device's.",
            "Nothing was stored. Run the pairing ceremony again for this device.",
        )
    header = _header(sealed.recipient, sealed.ephemeral, sealed.device_id, sealed.cloudlet_id)
    secret, nonce = _okm(key.exchange(sealed.ephemeral), header[1:])
    try:
        plain = ChaCha20Poly1305(secret).decrypt(nonce, sealed.body, _lp(AAD_TRANSPORT, *header))
    except InvalidTag:
        raise DecryptionError(
            "The sealed bundle was altered or truncated in transit.",
            "Nothing was stored. Run the pairing ceremony again for this device.",
        ) from None
    return sealed, plain
