"""Versioned, self-describing, strict encodings, and safe secret files.

Every object we store or send has the same envelope::

    magic   4 bytes   b"CLDT"
    type    1 byte    Kind (master key, params, device key, ciphertext, ...)
    version 1 byte    1
    curve   1 byte    1 = BLS12-381, 0 = no curve data
    count   1 byte    number of fields
    fields            each: u32 big-endian length, then the bytes

The parser is strict: the type, version, curve and field count must be the
expected ones, every field must have its exact length, points must be
canonical, on the curve, in the prime-order subgroup and not the identity,
and there may be no trailing bytes. Anything else is a FormatError.
Strictness is what makes "the bytes on disk mean exactly one thing" true,
which the signatures and AEADs above rely on.

``write_secret_file`` writes atomically with mode 0600: a crash leaves the
old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloudlet.crypto import curve
from cloudlet.crypto.auth import NONCE_BYTES, AuthProof
from cloudlet.crypto.ibe import DeviceKey, IbeCiphertext, MasterKey, PublicParams
from cloudlet.crypto.identity import Identity, normalise_id
from cloudlet.errors import CloudletError, FormatError, IdentityError, StorageError

__all__ = [
    "MAGIC",
    "MAX_OBJECT_BYTES",
    "VERSION",
    "Kind",
    "PkgFiles",
    "decode_auth_proof",
    "decode_ciphertext",
    "decode_device_key",
    "decode_master_key",
    "decode_params",
    "encode_auth_proof",
    "encode_ciphertext",
    "encode_device_key",
    "encode_master_key",
    "encode_params",
    "id_field",
    "pack",
    "peek_kind",
    "read_pkg",
    "text_field",
    "unpack",
    "write_pkg",
    "write_secret_file",
]

MAGIC = b"CLDT"
VERSION = 1
CURVE_NONE = 0
MAX_OBJECT_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">4sBBBB")


class Kind(enum.IntEnum):
    MASTER_KEY = 1
    PARAMS = 2
    DEVICE_KEY = 3
    IBE_CIPHERTEXT = 4
    AUTH_PROOF = 5
    DEVICE_BUNDLE = 6
    PAIRING_BUNDLE = 7
    SEALED_BUNDLE = 8
    SIGNED_DEVICE_BUNDLE = 9
    PASSPHRASE_SEALED = 10
    TRANSPORT_SEALED = 11


_NAMES = {
    Kind.MASTER_KEY: "IBE master key",
    Kind.PARAMS: "IBE public parameters",
    Kind.DEVICE_KEY: "device key",
    Kind.IBE_CIPHERTEXT: "IBE ciphertext",
    Kind.AUTH_PROOF: "device authentication proof",
    Kind.DEVICE_BUNDLE: "device credential bundle",
    Kind.PAIRING_BUNDLE: "cloudlet pairing bundle",
    Kind.SEALED_BUNDLE: "sealed pairing bundle",
    Kind.SIGNED_DEVICE_BUNDLE: "signed device credential bundle",
    Kind.PASSPHRASE_SEALED: "passphrase-sealed file",
    Kind.TRANSPORT_SEALED: "bundle sealed to a pairing request",
}


def pack(kind: Kind, fields: list[bytes], curve_id: int = curve.CURVE_ID) -> bytes:
    if len(fields) > 255:
        raise ValueError("too many fields")
    out = [_HEADER.pack(MAGIC, int(kind), VERSION, curve_id, len(fields))]
    for f in fields:
        if not isinstance(f, bytes):
            raise TypeError("fields must be bytes")
        out.append(struct.pack(">I", len(f)))
        out.append(f)
    return b"".join(out)


def peek_kind(data: bytes) -> Kind:
    """The type of an encoded object, after checking magic and version."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("data must be bytes")
    if len(data) < _HEADER.size:
        raise FormatError("The data is truncated: shorter than a header.")
    magic, kind, version, _curve, _count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("The data is not a cloudlet object (bad magic bytes).")
    if version != VERSION:
        raise FormatError(
            f"Format version {version} is not supported (this release reads {VERSION})."
        )
    try:
        return Kind(kind)
    except ValueError:
        raise FormatError(f"Unknown object type {kind}.") from None


def unpack(
    data: bytes, kind: Kind, sizes: list[int | None], curve_id: int = curve.CURVE_ID
) -> list[bytes]:
    """Split an object into its fields; ``sizes`` gives each exact length or None."""
    if len(data) > MAX_OBJECT_BYTES:
        raise FormatError("The object is larger than any valid cloudlet object.")
    found = peek_kind(data)
    if found != kind:
        raise FormatError(f"Expected a {_NAMES[kind]}, but this is a {_NAMES[found]}.")
    _magic, _kind, _version, cid, count = _HEADER.unpack_from(data)
    if cid != curve_id:
        raise FormatError(f"Curve id {cid} is not supported here (expected {curve_id}).")
    if count != len(sizes):
        raise FormatError(f"A {_NAMES[kind]} has {len(sizes)} fields, this one has {count}.")
    pos = _HEADER.size
    fields = []
    for i, size in enumerate(sizes):
        if pos + 4 > len(data):
            raise FormatError(f"The {_NAMES[kind]} is truncated (field {i}).")
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + length > len(data):
            raise FormatError(f"The {_NAMES[kind]} is truncated (field {i}).")
        if size is not None and length != size:
            raise FormatError(
                f"Field {i} of the {_NAMES[kind]} must be {size} bytes, not {length}."
            )
        fields.append(bytes(data[pos : pos + length]))
        pos += length
    if pos != len(data):
        raise FormatError(f"The {_NAMES[kind]} has {len(data) - pos} unexpected trailing bytes.")
    return fields


def text_field(raw: bytes, what: str, ascii_only: bool = False) -> str:
    try:
        value = raw.decode("ascii" if ascii_only else "utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"The {what} is not valid text.") from None
    return value


def id_field(raw: bytes) -> str:
    """A cloudlet id field: ASCII and already canonical, or a FormatError."""
    text = text_field(raw, "cloudlet id", ascii_only=True)
    try:
        if normalise_id(text, "cloudlet id") != text:
            raise FormatError("The cloudlet id is not in canonical form.")
    except IdentityError as exc:
        raise FormatError(exc.message) from None
    return text


def _identity(raw: bytes) -> Identity:
    try:
        return Identity.parse(raw)
    except IdentityError as exc:
        raise FormatError(f"Bad identity in encoded object: {exc.message}") from None


# --- keys and params -------------------------------------------------------


def encode_master_key(key: MasterKey) -> bytes:
    return pack(
        Kind.MASTER_KEY,
        [
            key.cloudlet_id.encode("ascii"),
            curve.scalar_to_bytes(key.s_enc),
            curve.scalar_to_bytes(key.s_sig),
        ],
    )


def decode_master_key(data: bytes) -> MasterKey:
    cid, s_enc, s_sig = unpack(
        data, Kind.MASTER_KEY, [None, curve.SCALAR_BYTES, curve.SCALAR_BYTES]
    )
    return MasterKey(id_field(cid), curve.scalar_from_bytes(s_enc), curve.scalar_from_bytes(s_sig))


def encode_params(params: PublicParams) -> bytes:
    return pack(
        Kind.PARAMS,
        [
            params.cloudlet_id.encode("ascii"),
            curve.g2_to_bytes(params.p_enc),
            curve.g2_to_bytes(params.p_sig),
        ],
    )


def decode_params(data: bytes) -> PublicParams:
    cid, p_enc, p_sig = unpack(data, Kind.PARAMS, [None, curve.G2_BYTES, curve.G2_BYTES])
    return PublicParams(id_field(cid), curve.g2_from_bytes(p_enc), curve.g2_from_bytes(p_sig))


def encode_device_key(key: DeviceKey) -> bytes:
    return pack(
        Kind.DEVICE_KEY,
        [
            key.identity.encode(),
            key.params_digest,
            curve.g1_to_bytes(key.d_enc),
            curve.g1_to_bytes(key.d_sig),
        ],
    )


def decode_device_key(data: bytes) -> DeviceKey:
    ident, pd, d_enc, d_sig = unpack(
        data, Kind.DEVICE_KEY, [None, 32, curve.G1_BYTES, curve.G1_BYTES]
    )
    return DeviceKey(_identity(ident), pd, curve.g1_from_bytes(d_enc), curve.g1_from_bytes(d_sig))


def encode_ciphertext(ct: IbeCiphertext) -> bytes:
    return pack(
        Kind.IBE_CIPHERTEXT,
        [ct.identity.encode(), ct.params_digest, curve.g2_to_bytes(ct.u), ct.v, ct.body],
    )


def decode_ciphertext(data: bytes) -> IbeCiphertext:
    ident, pd, u, v, body = unpack(data, Kind.IBE_CIPHERTEXT, [None, 32, curve.G2_BYTES, 32, None])
    if len(body) < 16:
        raise FormatError("The IBE ciphertext body is shorter than its tag.")
    return IbeCiphertext(_identity(ident), pd, curve.g2_from_bytes(u), v, body)


def encode_auth_proof(proof: AuthProof) -> bytes:
    return pack(
        Kind.AUTH_PROOF,
        [
            proof.identity.encode(),
            proof.params_digest,
            proof.audience.encode("ascii"),
            struct.pack(">Q", proof.timestamp),
            proof.nonce,
            curve.g1_to_bytes(proof.u),
            curve.g1_to_bytes(proof.v),
        ],
    )


def decode_auth_proof(data: bytes) -> AuthProof:
    ident, pd, aud, ts, nonce, u, v = unpack(
        data,
        Kind.AUTH_PROOF,
        [None, 32, None, 8, NONCE_BYTES, curve.G1_BYTES, curve.G1_BYTES],
    )
    (timestamp,) = struct.unpack(">Q", ts)
    if timestamp >= 2**63:
        raise FormatError("The proof's time stamp is out of range.")
    return AuthProof(
        _identity(ident),
        pd,
        id_field(aud),
        timestamp,
        nonce,
        curve.g1_from_bytes(u),
        curve.g1_from_bytes(v),
    )


# --- files -----------------------------------------------------------------


def write_secret_file(
    path: str | os.PathLike,
    data: bytes,
    mode: int = 0o600,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Atomically replace ``path`` with ``data``, created with ``mode``.

    The temporary file lives in the same directory (so ``os.replace`` is an
    atomic rename), gets its mode and owner before any byte is written, is
    fsynced, renamed over the target, and the directory is fsynced. On any
    error the temporary file is removed and the old file is left as it was.
    """
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"Cannot create a file in {directory}: {exc.strerror}.") from exc
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"Cannot write {target}: {exc.strerror}.") from exc
    finally:
        if fd != -1:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _read(path: Path, what: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_OBJECT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"Cannot read the {what} {path}: {exc.strerror}.") from exc
    return data


@dataclass(frozen=True, repr=False)
class PkgFiles:
    """What is on disk for a cloudlet's PKG (see ``read_pkg``)."""

    master: MasterKey | None
    params_bytes: bytes | None
    params_current: bool  # params file exists and matches the master key


def read_pkg(master_path: str | os.PathLike, params_path: str | os.PathLike) -> PkgFiles:
    """Load the PKG files; a damaged master key file is an error, never 'absent'."""
    master_path, params_path = Path(master_path), Path(params_path)
    raw = _read(master_path, "IBE master key")
    master = None
    if raw is not None:
        try:
            master = decode_master_key(raw)
        except CloudletError as exc:
            raise FormatError(
                f"The IBE master key file {master_path} is damaged ({exc.message})",
                "It was left untouched. Restore it from backup, or move it aside and "
                "re-run with rotate=true (all device keys will then need re-pairing).",
            ) from None
    params_bytes = _read(params_path, "IBE parameters")
    current = False
    if master is not None and params_bytes is not None:
        current = params_bytes == encode_params(master.params)
    return PkgFiles(master, params_bytes, current)


def write_pkg(
    master: MasterKey,
    master_path: str | os.PathLike,
    params_path: str | os.PathLike,
    write_master: bool = True,
    key_mode: int = 0o600,
    params_mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
) -> bytes:
    """Write the master key (0600) and its public params; returns the params bytes."""
    params_bytes = encode_params(master.params)
    if write_master:
        write_secret_file(master_path, encode_master_key(master), key_mode, uid, gid)
    write_secret_file(params_path, params_bytes, params_mode, uid, gid)
    return params_bytes
