"""library/cloudlet_manifest.py: scan on the cloudlet, sign on the laptop, check at delivery."""

from __future__ import annotations

import os
import stat

import pytest
from ansible_module import load, run

MOD = load("cloudlet_manifest")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "venv"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "app.py").write_text("print('hello')\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(root / "bin" / "tool", 0o755)
    return root


def scan(root):
    result = run(MOD, mode="scan", roots=[str(root)])
    assert not result["changed"] and result["entries"] == 5
    return result["manifest"]


def test_sign_is_idempotent_and_check_mode_writes_nothing(tree, tmp_path):
    key, dest = tmp_path / "keys" / "manifest.key", tmp_path / "out" / "a.manifest"
    body = scan(tree)
    checked = run(MOD, mode="sign", manifest=body, signing_key=str(key), dest=str(dest),
                  _ansible_check_mode=True)
    assert checked["changed"] and not key.exists() and not dest.exists()

    first = run(MOD, mode="sign", manifest=body, signing_key=str(key), dest=str(dest))
    assert first["changed"] and dest.exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    # A new scan of the same files (a later scan time) is no change.
    again = run(MOD, mode="sign", manifest=scan(tree), signing_key=str(key), dest=str(dest))
    assert not again["changed"] and again["digest"] == first["digest"]
    assert not run(MOD, mode="sign", manifest=scan(tree), signing_key=str(key), dest=str(dest),
                   _ansible_check_mode=True)["changed"]


def test_check_passes_then_names_the_altered_file(tree, tmp_path):
    key, dest = tmp_path / "manifest.key", tmp_path / "a.manifest"
    run(MOD, mode="sign", manifest=scan(tree), signing_key=str(key), dest=str(dest))
    public = (tmp_path / "manifest.key.pub").read_text()

    ok = run(MOD, mode="check", path=str(dest), public_key=public)
    assert not ok.get("failed") and ok["entries"] == 5

    (tree / "lib" / "app.py").write_text("print('pwned')\n")
    (tree / "lib" / "extra.py").write_text("")
    bad = run(MOD, mode="check", path=str(dest), public_key=public)
    assert bad["failed"]
    assert f"{tree}/lib/app.py changed" in bad["msg"]
    assert f"{tree}/lib/extra.py unexpected" in bad["msg"]
    assert len(bad["problems"]) == 2


def test_check_refuses_a_manifest_signed_by_another_key(tree, tmp_path):
    dest = tmp_path / "a.manifest"
    run(MOD, mode="sign", manifest=scan(tree), signing_key=str(tmp_path / "k1"), dest=str(dest))
    run(MOD, mode="sign", manifest=scan(tree), signing_key=str(tmp_path / "k2"),
        dest=str(tmp_path / "b.manifest"))
    bad = run(MOD, mode="check", path=str(dest), public_key=(tmp_path / "k2.pub").read_text())
    assert bad["failed"] and "not by the trusted key" in bad["msg"]


def test_a_key_readable_by_others_is_refused(tree, tmp_path):
    key = tmp_path / "k"
    run(MOD, mode="sign", manifest=scan(tree), signing_key=str(key), dest=str(tmp_path / "m"))
    os.chmod(key, 0o644)
    bad = run(MOD, mode="sign", manifest=scan(tree), signing_key=str(key),
              dest=str(tmp_path / "m2"))
    assert bad["failed"] and "chmod 600" in bad["msg"]
    assert not (tmp_path / "m2").exists()


def test_scan_of_a_missing_root_is_a_clear_error(tmp_path):
    bad = run(MOD, mode="scan", roots=[str(tmp_path / "absent")])
    assert bad["failed"] and "does not exist" in bad["msg"]
