"""curve.py: RFC 9380 vectors, strict point decoding, scalars."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudlet.crypto import curve
from cloudlet.errors import FormatError

RFC_DST = b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_"
# RFC 9380 appendix J.9.1, BLS12381G1_XMD:SHA-256_SSWU_RO_: (msg, P.x, P.y)
RFC_VECTORS = [
    (
        b"",
        "052926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1",
        "08ba738453bfed09cb546dbb0783dbb3a5f1f566ed67bb6be0e8c67e2e81a4cc68ee29813bb7994998f3eae0c9c6a265",
    ),
    (
        b"abc",
        "03567bc5ef9c690c2ab2ecdf6a96ef1c139cc0b2f284dca0a9a7943388a49a3aee664ba5379a7655d3c68900be2f6903",
        "0b9c15f3fe6e5cf4211f346271d7b01c8f3b28be689c8429c85b67af215533311f0b8dfaaa154fa6b88176c229f2885d",
    ),
    (
        b"abcdef0123456789",
        "11e0b079dea29a68f0383ee94fed1b940995272407e3bb916bbf268c263ddd57a6a27200a784cbc248e84f357ce82d98",
        "03a87ae2caf14e8ee52e51fa2ed8eefe80f02457004ba4d486d6aa1f517c0889501dc7413753f9599b099ebcbbd2d709",
    ),
    (
        b"q128_" + b"q" * 128,
        "15f68eaa693b95ccb85215dc65fa81038d69629f70aeee0d0f677cf22285e7bf58d7cb86eefe8f2e9bc3f8cb84fac488",
        "1807a1d50c29f430b8cafc4f8638dfeeadf51211e1602a5f184443076715f91bb90a48ba1e370edce6ae1062f5e6dd38",
    ),
    (
        b"a512_" + b"a" * 512,
        "082aabae8b7dedb0e78aeb619ad3bfd9277a2f77ba7fad20ef6aabdc6c31d19ba5a6d12283553294c1825c4b3ca2dcfe",
        "05b84ae5a942248eea39e1d91030458c40153f3b654ab7872d779ad1e942856a20c438e8d99bc8abfbf74729ce1f7ac8",
    ),
]

P = curve.FIELD_P


def _compressed_g1(x: int, y_big: bool = False) -> bytes:
    raw = bytearray(x.to_bytes(48, "big"))
    raw[0] |= 0x80 | (0x20 if y_big else 0)
    return bytes(raw)


def _is_square(a: int) -> bool:
    return a % P == 0 or pow(a, (P - 1) // 2, P) == 1


def _y_of(x: int) -> int:
    return pow((x**3 + 4) % P, (P + 1) // 4, P)


def _uncompressed_y(point) -> int:
    """y of a G1 point, via our encoding plus the curve equation."""
    raw = bytearray(curve.g1_to_bytes(point))
    big = bool(raw[0] & 0x20)
    raw[0] &= 0x1F
    x = int.from_bytes(raw, "big")
    y = _y_of(x)
    return y if (y > P - y) == big else P - y


@pytest.mark.parametrize(("msg", "px", "py"), RFC_VECTORS)
def test_hash_to_g1_matches_rfc9380_vectors(msg, px, py):
    point = curve.hash_to_g1(msg, RFC_DST)
    raw = bytearray(curve.g1_to_bytes(point))
    assert raw[0] & 0x80  # compressed
    raw[0] &= 0x1F
    assert raw.hex() == px
    assert _uncompressed_y(point) == int(py, 16)


XMD_DST = b"QUUX-V01-CS02-with-expander-SHA256-128"
# RFC 9380 appendix K.1, expand_message_xmd(SHA-256): (msg, len, uniform_bytes)
XMD_VECTORS = [
    (b"", 0x20, "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"),
    (b"abc", 0x20, "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"),
    (
        b"",
        0x80,
        "af84c27ccfd45d41914fdff5df25293e221afc53d8ad2ac06d5e3e29485dadbe"
        "e0d121587713a3e0dd4d5e69e93eb7cd4f5df4cd103e188cf60cb02edc3edf18"
        "eda8576c412b18ffb658e3dd6ec849469b979d444cf7b26911a08e63cf31f9dc"
        "c541708d3491184472c2c29bb749d4286b004ceb5ee6b9a7fa5b646c993f0ced",
    ),
    (
        b"abc",
        0x80,
        "abba86a6129e366fc877aab32fc4ffc70120d8996c88aee2fe4b32d6c7b6437a"
        "647e6c3163d40b76a73cf6a5674ef1d890f95b664ee0afa5359a5c4e07985635"
        "bbecbac65d747d3d2da7ec2b8221b17b0ca9dc8a1ac1c07ea6a1e60583e2cb00"
        "058e77b7b72a298425cd1b941ad4ec65e8afc50303a22c0f99b0509b4c895f40",
    ),
]


@pytest.mark.parametrize(("msg", "length", "expected"), XMD_VECTORS)
def test_expand_message_xmd_matches_rfc9380_vectors(msg, length, expected):
    """Our own expand_message_xmd (used by hash_to_scalar) against the RFC."""
    assert curve.expand_message_xmd(msg, XMD_DST, length).hex() == expected


def test_hash_to_scalar_cross_check():
    """hash_to_field into Z_r (L = 48), against DFINITY's vetKD test values."""
    dst = b"QUUX-V01-CS02-with-BLS12381SCALAR_XMD:SHA-256_SSWU_RO_"
    assert curve.scalar_to_bytes(curve.hash_to_scalar(dst, b"abc")).hex() == (
        "47e7a8839695a3df27f202cf71e295a8554b47cef75c1e316b1865317720e188"
    )


def test_expand_message_xmd_limits():
    with pytest.raises(ValueError):
        curve.expand_message_xmd(b"abc", b"x" * 256, 32)
    with pytest.raises(ValueError):
        curve.expand_message_xmd(b"abc", b"DST", 255 * 32 + 1)


def test_project_dst_differs_from_rfc_dst():
    from cloudlet.crypto.ibe import DST_H1

    assert curve.hash_to_g1(b"abc", DST_H1) != curve.hash_to_g1(b"abc", RFC_DST)


def test_g1_round_trip_and_generator_encoding():
    g = curve.g1_generator()
    data = curve.g1_to_bytes(g)
    assert data.hex().startswith("97f1d3a73197d794")
    assert curve.g1_from_bytes(data) == g


def _first_x(on_curve: bool, start: int = 1) -> int:
    x = start
    while _is_square(x**3 + 4) != on_curve:
        x += 1
    return x


def test_g1_off_curve_point_rejected():
    x = _first_x(on_curve=False)
    with pytest.raises(FormatError, match="not on the curve"):
        curve.g1_from_bytes(_compressed_g1(x))


def test_g1_point_outside_subgroup_rejected():
    from py_arkworks_bls12381 import G1Point

    x = _first_x(on_curve=True)
    data = _compressed_g1(x)
    # The library agrees the point is on the curve but outside the subgroup ...
    assert not G1Point.from_compressed_bytes_unchecked(data).is_in_subgroup()
    # ... and our decoder refuses it.
    with pytest.raises(FormatError, match="subgroup"):
        curve.g1_from_bytes(data)


def _fp2_is_square(c0: int, c1: int) -> bool:
    return _is_square(c0 * c0 + c1 * c1)  # square iff its norm is (p = 3 mod 4)


def test_g2_point_outside_subgroup_rejected():
    from py_arkworks_bls12381 import G2Point

    # y^2 = x^3 + 4(1 + u); take x = c0 + 1*u with u^2 = -1.
    for c0 in range(1, 200):
        c1 = 1
        x2_0, x2_1 = (c0 * c0 - c1 * c1) % P, (2 * c0 * c1) % P
        x3_0, x3_1 = (x2_0 * c0 - x2_1 * c1) % P, (x2_0 * c1 + x2_1 * c0) % P
        if _fp2_is_square(x3_0 + 4, x3_1 + 4):
            break
    raw = bytearray(c1.to_bytes(48, "big") + c0.to_bytes(48, "big"))
    raw[0] |= 0x80
    data = bytes(raw)
    assert not G2Point.from_compressed_bytes_unchecked(data).is_in_subgroup()
    with pytest.raises(FormatError, match="subgroup"):
        curve.g2_from_bytes(data)


def test_g2_off_curve_rejected():
    for c0 in range(1, 200):
        x2_0, x2_1 = (c0 * c0 - 1) % P, (2 * c0) % P
        x3_0, x3_1 = (x2_0 * c0 - x2_1) % P, (x2_0 + x2_1 * c0) % P
        if not _fp2_is_square(x3_0 + 4, x3_1 + 4):
            break
    raw = bytearray((1).to_bytes(48, "big") + c0.to_bytes(48, "big"))
    raw[0] |= 0x80
    with pytest.raises(FormatError, match="not on the curve"):
        curve.g2_from_bytes(bytes(raw))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\x00",  # too long
        lambda d: bytes([d[0] & 0x7F]) + d[1:],  # uncompressed flag
        lambda d: bytes([0xC0]) + bytes(47),  # identity
        lambda d: _compressed_g1(P + 1),  # x >= p (non-canonical)
        lambda d: bytes([d[0] | 0x40]) + d[1:],  # infinity flag with data
    ],
)
def test_g1_bad_encodings_rejected(mutate):
    data = curve.g1_to_bytes(curve.g1_generator())
    with pytest.raises(FormatError):
        curve.g1_from_bytes(mutate(data))


def test_bytes_the_library_accepts_are_still_refused():
    """arkworks decodes 'infinity flag + garbage' as the identity; we do not."""
    from py_arkworks_bls12381 import G1Point

    data = bytes([0xC0]) + b"\x01" * 47
    assert G1Point.from_compressed_bytes(data) == G1Point.identity()
    with pytest.raises(FormatError, match="canonical"):
        curve.g1_from_bytes(data, allow_identity=True)


def test_pairing_check_checks_its_input():
    with pytest.raises(ValueError):
        curve.pairing_check([curve.g1_generator()], [])
    with pytest.raises(TypeError):
        curve.pairing_check([curve.g2_generator()], [curve.g1_generator()])


def test_identity_accepted_only_when_asked():
    ident = curve.g1_to_bytes(curve.g1_identity())
    with pytest.raises(FormatError, match="identity"):
        curve.g1_from_bytes(ident)
    assert curve.g1_from_bytes(ident, allow_identity=True) == curve.g1_identity()


def test_decoders_check_types():
    with pytest.raises(TypeError):
        curve.g1_from_bytes("not bytes")
    with pytest.raises(TypeError):
        curve.g1_to_bytes(curve.g2_generator())
    with pytest.raises(TypeError):
        curve.pairing(curve.g2_generator(), curve.g1_generator())


@pytest.mark.parametrize(
    "data",
    [
        bytes(32),
        curve.ORDER.to_bytes(32, "big"),
        (curve.ORDER + 5).to_bytes(32, "big"),
        b"\x01" * 31,
    ],
)
def test_scalar_decoding_is_strict(data):
    with pytest.raises(FormatError):
        curve.scalar_from_bytes(data)


@given(st.integers(min_value=1, max_value=curve.ORDER - 1))
def test_fixed_base_g2_matches_generic_multiplication(k):
    s = curve.scalar_from_int(k)
    assert curve.g2_mul_generator(s) == curve.g2_generator() * s
    assert curve.scalar_from_bytes(curve.scalar_to_bytes(s)) == s


def test_pairing_is_bilinear(rng):
    a, b = curve.random_scalar(rng), curve.random_scalar(rng)
    lhs = curve.pairing(curve.g1_generator() * a, curve.g2_generator() * b)
    rhs = curve.pairing(curve.g1_generator() * (a * b), curve.g2_generator())
    assert curve.gt_to_bytes(lhs) == curve.gt_to_bytes(rhs)
    assert len(curve.gt_to_bytes(lhs)) == curve.GT_BYTES


def test_random_scalar_uses_injected_rng():
    from conftest import DetRng

    assert curve.random_scalar(DetRng(b"x")) == curve.random_scalar(DetRng(b"x"))
    assert curve.random_scalar(DetRng(b"x")) != curve.random_scalar(DetRng(b"y"))
