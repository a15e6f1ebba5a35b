"""BLS12-381 behind one small interface.

This is the only module that imports the pairing library
(py-arkworks-bls12381), so that the library can be swapped without touching
the schemes. Everything here is pure: no I/O, randomness only through an
injected ``rng`` (a callable ``n -> n random bytes``).

Decoding is strict on purpose: a point from the outside is accepted only if
its encoding is canonical, it lies on the curve, it is in the prime-order
subgroup and it is not the identity. Small-subgroup and invalid-curve inputs
are the classic way to pull key bits out of pairing-based schemes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from py_arkworks_bls12381 import GT as _GT
from py_arkworks_bls12381 import G1Point as _G1
from py_arkworks_bls12381 import G2Point as _G2
from py_arkworks_bls12381 import Scalar as _Scalar

from cloudlet.errors import FormatError

__all__ = [
    "CURVE_ID",
    "CURVE_NAME",
    "G1",
    "G1_BYTES",
    "G2",
    "G2_BYTES",
    "GT",
    "GT_BYTES",
    "HASH_TO_G1_SUITE",
    "ORDER",
    "Rng",
    "SCALAR_BYTES",
    "Scalar",
    "default_rng",
    "expand_message_xmd",
    "g1_from_bytes",
    "g1_generator",
    "g1_identity",
    "g1_to_bytes",
    "g2_from_bytes",
    "g2_generator",
    "g2_mul_generator",
    "g2_to_bytes",
    "gt_to_bytes",
    "hash_to_g1",
    "hash_to_scalar",
    "pairing",
    "pairing_check",
    "random_scalar",
    "scalar_from_bytes",
    "scalar_from_int",
    "scalar_to_bytes",
]

Rng = Callable[[int], bytes]

G1 = _G1
G2 = _G2
GT = _GT
Scalar = _Scalar

CURVE_NAME = "BLS12-381"
CURVE_ID = 1  # the curve byte in every encoding (cloudlet.formats)
HASH_TO_G1_SUITE = "BLS12381G1_XMD:SHA-256_SSWU_RO_"

ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
FIELD_P = int(
    "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f624"
    "1eabfffeb153ffffb9feffffffffaaab",
    16,
)
SCALAR_BYTES = 32
G1_BYTES = 48
G2_BYTES = 96
GT_BYTES = 576


def default_rng(n: int) -> bytes:
    """The production randomness source."""
    return secrets.token_bytes(n)


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(value)


# --- scalars ---------------------------------------------------------------


def scalar_from_int(value: int) -> Scalar:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("scalar value must be an int")
    return _Scalar(value % ORDER)


def scalar_to_bytes(s: Scalar) -> bytes:
    if not isinstance(s, _Scalar):
        raise TypeError("expected a Scalar")
    return s.to_be_bytes()


def scalar_from_bytes(data: bytes) -> Scalar:
    """Strict: exactly 32 big-endian bytes, canonical (< order), not zero."""
    data = _check_bytes("scalar", data)
    if len(data) != SCALAR_BYTES:
        raise FormatError(f"A scalar must be {SCALAR_BYTES} bytes, got {len(data)}.")
    value = int.from_bytes(data, "big")
    if value == 0 or value >= ORDER:
        raise FormatError("The scalar is zero or not reduced modulo the group order.")
    return _Scalar(value)


def random_scalar(rng: Rng | None = None) -> Scalar:
    """A uniform non-zero scalar (64 bytes reduced: bias below 2**-250)."""
    rng = rng or default_rng
    while True:
        data = rng(64)
        if len(data) != 64:
            raise ValueError("rng returned the wrong number of bytes")
        value = int.from_bytes(data, "big") % ORDER
        if value:
            return _Scalar(value)


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-256: the hash-to-field building block."""
    msg = _check_bytes("msg", msg)
    dst = _check_bytes("dst", dst)
    if len(dst) > 255:
        raise ValueError("DST longer than 255 bytes")
    ell = -(-length // 32)
    if ell > 255 or length > 65535:
        raise ValueError("requested output too long")
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha256(bytes(64) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime).digest()
    blocks = [hashlib.sha256(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha256(mixed + bytes([i]) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_scalar(dst: bytes, msg: bytes) -> Scalar:
    """RFC 9380 hash_to_field into Z_r (L = 48, k = 128); never zero."""
    value = int.from_bytes(expand_message_xmd(msg, dst, 48), "big") % ORDER
    return _Scalar(value or 1)


# --- groups ----------------------------------------------------------------


def g1_generator() -> G1:
    return _G1()


def g1_identity() -> G1:
    return _G1.identity()


def g2_generator() -> G2:
    return _G2()


def hash_to_g1(msg: bytes, dst: bytes) -> G1:
    """RFC 9380 hash_to_curve, suite BLS12381G1_XMD:SHA-256_SSWU_RO_."""
    msg = _check_bytes("msg", msg)
    dst = _check_bytes("dst", dst)
    if not 0 < len(dst) <= 255:
        raise ValueError("DST must be 1..255 bytes")
    return _G1.hash_to_curve(msg, dst)


_G2_TABLE: list[list[G2]] | None = None


def _g2_table() -> list[list[G2]]:
    """Fixed-base table: row i holds j * 256**i * g2 for j in 0..255.

    Built once per process (about 40 ms); it makes r*g2, which every
    encryption and every decryption check needs, five times faster than a
    generic scalar multiplication.
    """
    global _G2_TABLE
    if _G2_TABLE is None:
        rows = []
        base = _G2()
        for _ in range(SCALAR_BYTES):
            row = [_G2.identity()]
            acc = _G2.identity()
            for _ in range(255):
                acc = acc + base
                row.append(acc)
            rows.append(row)
            base = acc + base
        _G2_TABLE = rows
    return _G2_TABLE


def g2_mul_generator(s: Scalar) -> G2:
    """s * g2 through the fixed-base table."""
    if not isinstance(s, _Scalar):
        raise TypeError("expected a Scalar")
    table = _g2_table()
    acc = _G2.identity()
    for i, byte in enumerate(s.to_le_bytes()):
        if byte:
            acc = acc + table[i][byte]
    return acc


def pairing(p: G1, q: G2) -> GT:
    if not isinstance(p, _G1) or not isinstance(q, _G2):
        raise TypeError("pairing takes a G1 point and a G2 point")
    return _GT.pairing(p, q)


def pairing_check(g1s: list[G1], g2s: list[G2]) -> bool:
    """True when the product of e(g1s[i], g2s[i]) is one."""
    g1s, g2s = list(g1s), list(g2s)
    if len(g1s) != len(g2s) or not g1s:
        raise ValueError("pairing_check needs two non-empty lists of the same length")
    if not all(isinstance(p, _G1) for p in g1s) or not all(isinstance(q, _G2) for q in g2s):
        raise TypeError("pairing_check takes G1 points and G2 points")
    return _GT.pairing_check(g1s, g2s)


def gt_to_bytes(z: GT) -> bytes:
    """Canonical bytes of a target-group element, for key derivation only."""
    if not isinstance(z, _GT):
        raise TypeError("expected a GT element")
    data = bytes.fromhex(str(z))
    if len(data) != GT_BYTES:  # the library changed its text form
        raise RuntimeError("unexpected GT serialisation from the pairing library")
    return data


# --- encodings -------------------------------------------------------------
# Compressed ZCash/IETF format: 48 bytes for G1, 96 for G2, flag bits in the
# top three bits of the first byte.


def g1_to_bytes(p: G1) -> bytes:
    if not isinstance(p, _G1):
        raise TypeError("expected a G1 point")
    return p.to_compressed_bytes()


def g2_to_bytes(p: G2) -> bytes:
    if not isinstance(p, _G2):
        raise TypeError("expected a G2 point")
    return p.to_compressed_bytes()


def _decode(kind, data: bytes, size: int, name: str, allow_identity: bool):
    data = _check_bytes(name, data)
    if len(data) != size:
        raise FormatError(f"A {name} point must be {size} bytes, got {len(data)}.")
    if not data[0] & 0x80:
        raise FormatError(f"The {name} point is not in compressed form.")
    # Decode without the subgroup check first, so that "off the curve" and
    # "outside the subgroup" get their own messages (and their own tests).
    # Whatever the library raises on bad bytes becomes a FormatError here.
    try:
        point = kind.from_compressed_bytes_unchecked(data)
    except Exception as exc:  # noqa: BLE001 - the library's errors are not a stable API
        raise FormatError(f"The {name} point is not on the curve (or is badly encoded).") from exc
    # A round trip rejects non-canonical encodings (x >= p, stray flag bits,
    # an infinity flag followed by garbage, which the library accepts).
    if point.to_compressed_bytes() != data:
        raise FormatError(f"The {name} point is not canonically encoded.")
    if not point.is_in_subgroup():
        raise FormatError(f"The {name} point is not in the prime-order subgroup.")
    if not allow_identity and point == kind.identity():
        raise FormatError(f"The {name} point is the identity, which is never valid here.")
    return point


def g1_from_bytes(data: bytes, allow_identity: bool = False) -> G1:
    return _decode(_G1, data, G1_BYTES, "G1", allow_identity)


def g2_from_bytes(data: bytes, allow_identity: bool = False) -> G2:
    return _decode(_G2, data, G2_BYTES, "G2", allow_identity)
