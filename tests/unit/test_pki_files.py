"""pki_files.ensure: plan from what is on disk, change only what must change."""

from __future__ import annotations

import pytest

from cloudlet import pki, pki_files
from cloudlet.errors import CertificateError


def _leaf(tmp_path):
    names = pki.subject_names("manager.cl-alpha", ["manager.cl-alpha"], ["10.20.0.1"])
    return pki_files.Leaf(
        str(tmp_path / "manager.pem"), str(tmp_path / "manager.key"),
        pki.Profile.MANAGER_SERVER, names,
    )  # fmt: skip


def _ensure(tmp_path, **kw):
    ca = (str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"))
    return pki_files.ensure("cl-alpha", *ca, _leaf(tmp_path), **kw)


def test_check_mode_plans_and_writes_nothing(tmp_path):
    out = _ensure(tmp_path, check_mode=True)
    assert (out.ca_action, out.action, out.key_action) == ("create", "issue", "create")
    assert out.changed and out.ca_fingerprint is None and list(tmp_path.iterdir()) == []


def test_create_then_nothing_to_do(tmp_path):
    first = _ensure(tmp_path)
    assert first.changed and first.fingerprint and first.ca_fingerprint
    again = _ensure(tmp_path)
    assert not again.changed and again.reasons == [] and again.ca_reasons == []
    assert (again.ca_fingerprint, again.fingerprint) == (first.ca_fingerprint, first.fingerprint)
    # New names: only the leaf is issued again, with the key it had.
    leaf = _leaf(tmp_path)
    other = pki_files.Leaf(
        leaf.cert, leaf.key, leaf.profile, pki.subject_names("manager.cl-alpha", [], ["10.20.0.2"])
    )
    out = pki_files.ensure("cl-alpha", str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"), other)
    assert (out.ca_action, out.action, out.key_action) == ("none", "issue", "keep")


def test_a_damaged_ca_key_is_refused_and_left_untouched(tmp_path):
    _ensure(tmp_path)
    (tmp_path / "ca.key").write_bytes(b"not a key")
    with pytest.raises(CertificateError, match="damaged"):
        _ensure(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == b"not a key"
