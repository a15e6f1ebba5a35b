"""formats.py: strict envelopes, round trips, and atomic secret files."""

from __future__ import annotations

import os
import stat
import struct

import pytest
from conftest import NOW, DetRng
from hypothesis import given
from hypothesis import strategies as st

from cloudlet import formats
from cloudlet.crypto import curve, ibe
from cloudlet.crypto.identity import device_identity
from cloudlet.errors import FormatError, StorageError
from cloudlet.formats import Kind

seeds = st.binary(min_size=1, max_size=16)
dev_ids = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(seeds)
def test_master_and_params_round_trip(seed):
    master = ibe.setup("cl-alpha", DetRng(seed))
    again = formats.decode_master_key(formats.encode_master_key(master))
    assert again.s_enc == master.s_enc and again.s_sig == master.s_sig
    params = formats.decode_params(formats.encode_params(master.params))
    assert params == master.params and params.digest == master.params.digest


@given(dev_ids)
def test_device_key_round_trip(master_a, did):
    key = ibe.extract(master_a, device_identity("cl-alpha", did, "2026-11"))
    assert formats.decode_device_key(formats.encode_device_key(key)) == key


@given(st.binary(max_size=512))
def test_ciphertext_round_trip(master_a, dev_id, payload):
    ct = ibe.encrypt(master_a.params, dev_id, payload, now=NOW)
    assert formats.decode_ciphertext(formats.encode_ciphertext(ct)) == ct


def test_every_truncation_rejected(master_a):
    data = formats.encode_params(master_a.params)
    for n in range(len(data)):
        with pytest.raises(FormatError):
            formats.decode_params(data[:n])


def test_trailing_bytes_rejected(master_a):
    with pytest.raises(FormatError, match="trailing"):
        formats.decode_params(formats.encode_params(master_a.params) + b"\x00")


def _with_header(data: bytes, **changes) -> bytes:
    magic, kind, version, cid, count = struct.unpack_from(">4sBBBB", data)
    fields = dict(magic=magic, kind=kind, version=version, cid=cid, count=count) | changes
    return struct.pack(">4sBBBB", *fields.values()) + data[8:]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"version": 2}, "version 2"),
        ({"kind": 99}, "Unknown object type"),
        ({"kind": int(Kind.DEVICE_KEY)}, "Expected"),
        ({"magic": b"XXXX"}, "magic"),
        ({"cid": 7}, "Curve id"),
        ({"count": 2}, "fields"),
    ],
)
def test_header_checks(master_a, changes, match):
    data = _with_header(formats.encode_params(master_a.params), **changes)
    with pytest.raises(FormatError, match=match):
        formats.decode_params(data)


def _replace_field(data: bytes, index: int, new: bytes) -> bytes:
    pos = 8
    out = [data[:8]]
    for i in range(data[7]):
        (length,) = struct.unpack_from(">I", data, pos)
        value = data[pos + 4 : pos + 4 + length]
        if i == index:
            value = new
        out.append(struct.pack(">I", len(value)) + value)
        pos += 4 + length
    return b"".join(out)


def test_damaged_point_in_params_rejected(master_a):
    """One flipped bit in P_enc: off the curve or outside the subgroup (curve tests pin each)."""
    bad = bytearray(curve.g2_to_bytes(master_a.params.p_enc))
    bad[-1] ^= 0x01
    with pytest.raises(FormatError, match="curve|subgroup"):
        formats.decode_params(_replace_field(formats.encode_params(master_a.params), 1, bytes(bad)))


def test_out_of_subgroup_point_in_device_key_rejected(dev_key):
    x = 4  # x^3 + 4 is a square: on the curve, but not in the r-torsion
    raw = bytearray(x.to_bytes(48, "big"))
    raw[0] |= 0x80
    assert curve.G1.from_compressed_bytes_unchecked(bytes(raw))  # really on the curve
    data = _replace_field(formats.encode_device_key(dev_key), 2, bytes(raw))
    with pytest.raises(FormatError, match="subgroup"):
        formats.decode_device_key(data)


def test_identity_point_in_ciphertext_rejected(master_a, dev_id):
    ct = formats.encode_ciphertext(ibe.encrypt(master_a.params, dev_id, b"x", now=NOW))
    inf = bytes([0xC0]) + bytes(95)
    with pytest.raises(FormatError, match="identity"):
        formats.decode_ciphertext(_replace_field(ct, 2, inf))


def test_wrong_field_length_and_bad_text(master_a, dev_key):
    data = formats.encode_device_key(dev_key)
    with pytest.raises(FormatError, match="32 bytes"):
        formats.decode_device_key(_replace_field(data, 1, bytes(31)))
    with pytest.raises(FormatError, match="identity"):
        formats.decode_device_key(_replace_field(data, 0, b"cloudlet-id-v1/CL/x/2026-11"))
    with pytest.raises(FormatError):
        formats.decode_params(_replace_field(formats.encode_params(master_a.params), 0, b"\xff"))


def test_non_canonical_scalar_rejected(master_a):
    data = formats.encode_master_key(master_a)
    with pytest.raises(FormatError):
        formats.decode_master_key(_replace_field(data, 1, curve.ORDER.to_bytes(32, "big")))


def test_write_secret_file_mode_and_replace(tmp_path):
    target = tmp_path / "k.bin"
    formats.write_secret_file(target, b"one")
    formats.write_secret_file(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["k.bin"]


def test_write_secret_file_failure_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "k.bin"
    formats.write_secret_file(target, b"old")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formats.os, "fsync", boom)
    with pytest.raises(StorageError, match="No space"):
        formats.write_secret_file(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["k.bin"]


def test_write_secret_file_missing_dir(tmp_path):
    with pytest.raises(StorageError):
        formats.write_secret_file(tmp_path / "nope" / "k.bin", b"x")


def test_read_pkg_states(tmp_path, master_a):
    mk, pp = tmp_path / "m", tmp_path / "p"
    assert formats.read_pkg(mk, pp).master is None
    formats.write_pkg(master_a, mk, pp)
    files = formats.read_pkg(mk, pp)
    assert files.params_current and files.master.params == master_a.params
    assert stat.S_IMODE(mk.stat().st_mode) == 0o600
    mk.write_bytes(mk.read_bytes()[:-3])
    with pytest.raises(FormatError, match="damaged"):
        formats.read_pkg(mk, pp)
