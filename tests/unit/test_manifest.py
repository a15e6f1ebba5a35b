"""manifest.py: signed manifests and the delivery check, file by file."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from cloudlet import manifest as mf
from cloudlet.errors import CryptoError, FormatError, StorageError

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def tree(tmp_path):
    """A small installed tree: a venv-like layout with a symlink and an executable."""
    root = tmp_path / "opt" / "cloudlet"
    lib = root / "venv" / "lib" / "site-packages" / "cloudlet"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("VERSION = 1\n")
    (lib / "x.py").write_text("def f():\n    return 42\n")
    bindir = root / "venv" / "bin"
    bindir.mkdir()
    (bindir / "cloudlet-manager").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(bindir / "cloudlet-manager", 0o755)
    os.symlink("/usr/bin/python3", bindir / "python")
    (root / "manager.toml").write_text("port = 8443\n")
    os.chmod(root / "manager.toml", 0o644)
    return root


def _signed(tree, key, exclude=()):
    return mf.sign(mf.scan([tree], exclude, now=NOW), key)


def _fails(data, key, *names):
    with pytest.raises(mf.DeliveryCheckError) as err:
        mf.check_delivery(data, key.public_key())
    text = str(err.value)
    assert text.startswith("Delivery check failed: ")
    for name in names:
        assert name in text
    return err.value.report


# --- round trip -------------------------------------------------------------------------


def test_round_trip(tree, key):
    data = _signed(tree, key)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    got = mf.check_delivery(data, key.public_key())
    assert got == mf.scan([tree], now=NOW)
    by_path = {e.path: e for e in got.entries}
    x = by_path[str(tree / "venv/lib/site-packages/cloudlet/x.py")]
    assert x.type == "file" and x.size == 23 and x.mode == 0o644 and len(x.sha256) == 64
    assert by_path[str(tree / "venv/bin/python")].target == "/usr/bin/python3"
    assert by_path[str(tree / "venv/bin/cloudlet-manager")].mode == 0o755
    assert by_path[str(tree)].type == "dir"
    assert json.loads(data)["v"] == mf.VERSION


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True), st.binary()))
def test_round_trip_any_content(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("t")
    for name, content in files.items():
        (root / name).write_bytes(content)
    key = Ed25519PrivateKey.generate()
    assert mf.check_delivery(_signed(root, key), key.public_key()).roots == (str(root),)


def test_signing_key_files(tmp_path, tree):
    priv, pub = tmp_path / "keys" / "manifest.key", tmp_path / "keys" / "manifest.pub"
    priv.parent.mkdir()
    public = mf.generate_signing_key(priv, pub)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    key = mf.load_signing_key(priv)
    assert mf.fingerprint(mf.load_public_key(pub)) == mf.fingerprint(public)
    mf.check_delivery(_signed(tree, key), public)


def test_signing_key_readable_by_others_is_refused(tmp_path):
    priv = tmp_path / "manifest.key"
    mf.generate_signing_key(priv)
    os.chmod(priv, 0o640)
    with pytest.raises(StorageError, match="chmod 600"):
        mf.load_signing_key(priv)


def test_not_a_key(tmp_path):
    bad = tmp_path / "k.pem"
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    os.chmod(bad, 0o600)
    with pytest.raises(FormatError, match="not an Ed25519 private key"):
        mf.load_signing_key(bad)
    with pytest.raises(FormatError, match="not an Ed25519 public key"):
        mf.load_public_key(bad)


# --- each difference is reported by name ------------------------------------------------


def test_changed_file(tree, key):
    data = _signed(tree, key)
    target = tree / "venv/lib/site-packages/cloudlet/x.py"
    target.write_text("def f():\n    return 43\n")  # same size
    report = _fails(data, key, f"{target} changed (sha256 ")
    assert [p for p, _ in report.changed] == [str(target)]
    assert not report.missing and not report.unexpected


def test_removed_file(tree, key):
    data = _signed(tree, key)
    (tree / "manager.toml").unlink()
    report = _fails(data, key, f"{tree / 'manager.toml'} missing")
    assert report.missing == [str(tree / "manager.toml")] and not report.changed


def test_added_file(tree, key):
    data = _signed(tree, key)
    evil = tree / "venv/lib/site-packages/cloudlet/backdoor.py"
    evil.write_text("import os\n")
    report = _fails(data, key, f"{evil} unexpected")
    assert report.unexpected == [str(evil)]


def test_changed_mode(tree, key):
    data = _signed(tree, key)
    os.chmod(tree / "manager.toml", 0o666)
    report = _fails(data, key, f"{tree / 'manager.toml'} changed (mode 0644 -> 0666)")
    assert len(report.changed) == 1


def test_setuid_bit_is_a_change(tree, key):
    data = _signed(tree, key)
    os.chmod(tree / "venv/bin/cloudlet-manager", 0o4755)
    _fails(data, key, "mode 0755 -> 4755")


def test_changed_symlink_target(tree, key):
    data = _signed(tree, key)
    link = tree / "venv/bin/python"
    link.unlink()
    os.symlink("/tmp/evil-python", link)
    _fails(data, key, f"{link} changed (target /usr/bin/python3 -> /tmp/evil-python)")


def test_file_replaced_by_symlink(tree, key):
    data = _signed(tree, key)
    victim = tree / "manager.toml"
    victim.unlink()
    os.symlink("/etc/passwd", victim)
    _fails(data, key, f"{victim} changed (type file -> symlink)")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_changed_owner(tree, key):
    data = _signed(tree, key)
    os.chown(tree / "manager.toml", 65534, -1)
    _fails(data, key, f"{tree / 'manager.toml'} changed (owner root:")


def test_removed_root(tree, key, tmp_path):
    data = _signed(tree, key)
    os.rename(tree, tmp_path / "moved")
    report = _fails(data, key, f"{tree} missing")
    assert len(report.missing) == 11  # every dir, file and link


def test_several_problems_each_named(tree, key):
    data = _signed(tree, key)
    (tree / "manager.toml").unlink()
    (tree / "new.conf").write_text("x")
    (tree / "venv/bin/cloudlet-manager").write_text("#!/bin/sh\nevil\n")
    report = _fails(data, key, "manager.toml missing", "new.conf unexpected", "cloudlet-manager")
    assert len(report.problems()) == 3


def test_exclusions_are_signed_and_reapplied(tree, key):
    data = _signed(tree, key, exclude=[str(tree / "venv/lib/*/__pycache__")])
    cache = tree / "venv/lib/site-packages/__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\x00")
    mf.check_delivery(data, key.public_key())
    doc = json.loads(data)
    assert doc["body"]["exclude"] == [str(tree / "venv/lib/*/__pycache__")]


def test_scan_refuses_missing_root_and_relative_root(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        mf.scan([tmp_path / "nope"])
    with pytest.raises(ValueError, match="absolute"):
        mf.scan(["relative/dir"])


# --- the manifest itself -----------------------------------------------------------------


def test_tampered_hash_fails_signature(tree, key):
    data = _signed(tree, key)
    file_entry = next(e for e in json.loads(data)["body"]["files"] if e["type"] == "file")
    tampered = data.replace(file_entry["sha256"].encode(), b"0" * 64)
    assert tampered != data
    with pytest.raises(CryptoError, match="signature does not match"):
        mf.verify_manifest(tampered, key.public_key())


def test_tampered_mode_fails_signature(tree, key):
    data = _signed(tree, key)
    tampered = data.replace(b'"mode":493', b'"mode":511', 1)
    assert tampered != data
    with pytest.raises(CryptoError, match="altered"):
        mf.check_delivery(tampered, key.public_key())


def test_wrong_key_fails(tree, key):
    data = _signed(tree, key)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(CryptoError, match="not by the trusted key"):
        mf.verify_manifest(data, other.public_key())


def test_resigned_with_other_key_fails(tree, key):
    """An attacker's own signature, with our fingerprint pasted in, still fails."""
    other = Ed25519PrivateKey.generate()
    data = _signed(tree, other)
    forged = data.replace(
        mf.fingerprint(other.public_key()).encode(), mf.fingerprint(key.public_key()).encode()
    )
    with pytest.raises(CryptoError, match="signature does not match"):
        mf.verify_manifest(forged, key.public_key())


def test_unknown_version_fails(tree, key):
    data = _signed(tree, key).replace(b'"v":1', b'"v":2')
    with pytest.raises(FormatError, match="version 2 is not supported"):
        mf.verify_manifest(data, key.public_key())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.replace(b'"format":"cloudlet-manifest"', b'"format":"other"'),
        lambda d: d.replace(b',"v":1}', b',"v":1,"extra":0}'),
        lambda d: json.dumps(json.loads(d), indent=2).encode(),
        lambda d: d[:-10],
        lambda d: b"\xff" + d,
        lambda d: d.rstrip(b"\n"),
    ],
    ids=["format", "extra-field", "reformatted", "truncated", "not-utf8", "no-newline"],
)
def test_malformed_manifest_is_refused(tree, key, mangle):
    with pytest.raises(FormatError):
        mf.verify_manifest(mangle(_signed(tree, key)), key.public_key())
