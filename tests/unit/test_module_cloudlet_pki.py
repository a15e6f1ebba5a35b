"""library/cloudlet_pki.py run through AnsibleModule, in process."""

from __future__ import annotations

import grp
import importlib.util
import io
import json
import os
import pwd
import stat
from contextlib import redirect_stdout
from pathlib import Path

import pytest

pytest.importorskip("ansible")
from ansible.module_utils.testing import patch_module_args  # noqa: E402

from cloudlet import pki  # noqa: E402

MODULE_PATH = Path(__file__).resolve().parents[2] / "library" / "cloudlet_pki.py"


def _load():
    spec = importlib.util.spec_from_file_location("cloudlet_pki", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MOD = _load()


def run_module(**args) -> dict:
    out = io.StringIO()
    with patch_module_args(args), redirect_stdout(out), pytest.raises(SystemExit):
        MOD.main()
    return json.loads(out.getvalue())


@pytest.fixture
def d(tmp_path):
    (tmp_path / "private").mkdir(mode=0o700)
    return tmp_path


def ca_args(d: Path, **extra) -> dict:
    """Files owned by whoever runs the tests, so no root is needed."""
    args = dict(
        cloudlet_id="cl-alpha",
        ca_cert=str(d / "ca.pem"),
        ca_key=str(d / "private" / "ca.key"),
        ca_owner=pwd.getpwuid(os.getuid()).pw_name,
        ca_group=grp.getgrgid(os.getgid()).gr_name,
    )
    args.update(extra)
    return args


def leaf_args(d: Path, **extra) -> dict:
    args = dict(
        profile="manager-server",
        cert=str(d / "manager.pem"),
        key=str(d / "private" / "manager.key"),
        common_name="manager.alpha.cloudlet",
        dns_names=["manager.alpha.cloudlet"],
        ip_addresses=["10.30.0.10", "10.31.0.1"],
    )
    args.update(extra)
    return ca_args(d, **args)


def _snapshot(d: Path) -> dict:
    return {
        str(p.relative_to(d)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def test_check_apply_apply(d):
    first = run_module(**leaf_args(d), _ansible_check_mode=True)
    assert first["changed"] and first["ca_action"] == "create" and first["action"] == "issue"
    assert first["fingerprint"] is None and first["ca_fingerprint"] is None
    assert _snapshot(d) == {}  # check mode wrote nothing

    second = run_module(**leaf_args(d))
    assert second["changed"] and second["ca_action"] == "create" and second["action"] == "issue"
    assert "missing" in second["reasons"] and second["key_action"] == "create"
    assert len(second["fingerprint"]) == 64 and len(second["ca_fingerprint"]) == 64
    assert second["diff"]["after"]["fingerprint"] == second["fingerprint"]
    for name, mode in (("private/ca.key", 0o600), ("private/manager.key", 0o600)):
        assert stat.S_IMODE((d / name).stat().st_mode) == mode
    assert stat.S_IMODE((d / "ca.pem").stat().st_mode) == 0o644
    ca_pem = (d / "ca.pem").read_bytes()
    cert_pem = (d / "manager.pem").read_bytes()
    key = pki.load_key((d / "private" / "manager.key").read_bytes())
    names = pki.subject_names(
        "manager.alpha.cloudlet", ["manager.alpha.cloudlet"], ["10.31.0.1", "10.30.0.10"]
    )
    assert pki.check_certificate(cert_pem, ca_pem, pki.Profile.MANAGER_SERVER, names, key) == []
    assert pki.fingerprint(cert_pem) == second["fingerprint"]

    before = _snapshot(d)
    third = run_module(**leaf_args(d))
    assert not third["changed"] and third["action"] == "none" and third["reasons"] == []
    assert third["fingerprint"] == second["fingerprint"]
    assert third["ca_fingerprint"] == second["ca_fingerprint"]
    assert _snapshot(d) == before

    again = run_module(**leaf_args(d), _ansible_check_mode=True)
    assert not again["changed"]


def test_ca_only(d):
    first = run_module(**ca_args(d))
    assert first["changed"] and first["ca_action"] == "create" and first["fingerprint"] is None
    assert not run_module(**ca_args(d))["changed"]


def test_new_name_reissues_with_the_same_key_and_reports_why(d):
    first = run_module(**leaf_args(d))
    key_before = (d / "private" / "manager.key").read_bytes()
    check = run_module(**leaf_args(d, ip_addresses=["10.30.0.10"]), _ansible_check_mode=True)
    assert check["changed"] and check["action"] == "issue"
    assert any("names differ" in r for r in check["reasons"])
    assert pki.fingerprint((d / "manager.pem").read_bytes()) == first["fingerprint"]

    moved = run_module(**leaf_args(d, ip_addresses=["10.30.0.10"]))
    assert moved["changed"] and moved["key_action"] == "keep"
    assert moved["fingerprint"] != first["fingerprint"]
    assert moved["ca_fingerprint"] == first["ca_fingerprint"]
    assert (d / "private" / "manager.key").read_bytes() == key_before
    assert not run_module(**leaf_args(d, ip_addresses=["10.30.0.10"]))["changed"]


def test_wrong_profile_reissues(d):
    run_module(**leaf_args(d))
    result = run_module(**leaf_args(d, profile="peer-client"))
    assert result["changed"] and any("purpose" in r for r in result["reasons"])


def test_corrupt_ca_key_fails_and_nothing_is_touched(d):
    run_module(**leaf_args(d))
    ca_key = d / "private" / "ca.key"
    ca_key.write_bytes(ca_key.read_bytes()[:40])
    (d / "manager.pem").unlink()  # even a missing leaf must not lead to a new CA
    before = _snapshot(d)
    result = run_module(**leaf_args(d))
    assert result["failed"]
    assert "CA key" in result["msg"] and "damaged" in result["msg"]
    assert "untouched" in result["msg"] and "pair again" in result["msg"]
    assert _snapshot(d) == before


def test_missing_ca_key_next_to_a_ca_cert_fails(d):
    run_module(**ca_args(d))
    (d / "private" / "ca.key").unlink()
    before = _snapshot(d)
    result = run_module(**ca_args(d))
    assert result["failed"] and "Restore the CA key" in result["msg"]
    assert _snapshot(d) == before


def test_damaged_ca_cert_is_reissued_from_the_same_key(d):
    first = run_module(**leaf_args(d))
    ca_key = (d / "private" / "ca.key").read_bytes()
    (d / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    result = run_module(**leaf_args(d))
    assert result["changed"] and result["ca_action"] == "reissue" and result["ca_reasons"]
    assert (d / "private" / "ca.key").read_bytes() == ca_key
    # Same key and name: the existing leaf still chains, so it is kept.
    assert result["action"] == "none"
    assert result["fingerprint"] == first["fingerprint"]


def test_leaf_from_another_ca_is_reissued(d, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "private").mkdir()
    run_module(**leaf_args(other))
    run_module(**ca_args(d))
    for name in ("manager.pem", "private/manager.key"):
        (d / name).write_bytes((other / name).read_bytes())
    result = run_module(**leaf_args(d))
    assert result["changed"] and "not issued by this cloudlet's CA" in result["reasons"]
    assert result["key_action"] == "keep"


def test_damaged_leaf_key_gets_a_new_key(d):
    first = run_module(**leaf_args(d))
    (d / "private" / "manager.key").write_bytes(b"garbage")
    result = run_module(**leaf_args(d))
    assert result["changed"] and result["key_action"] == "create"
    assert any(r.startswith("key unreadable") for r in result["reasons"])
    assert result["fingerprint"] != first["fingerprint"]
    assert stat.S_IMODE((d / "private" / "manager.key").stat().st_mode) == 0o600


def test_mode_change_is_reported_and_fixed(d):
    run_module(**leaf_args(d))
    (d / "private" / "manager.key").chmod(0o644)
    result = run_module(**leaf_args(d))
    assert result["changed"] and result["action"] == "none"
    assert stat.S_IMODE((d / "private" / "manager.key").stat().st_mode) == 0o600


def test_wrong_cloudlet_id_fails(d):
    run_module(**ca_args(d))
    result = run_module(**ca_args(d, cloudlet_id="cl-bravo"))
    assert result["failed"] and "belongs to cloudlet 'cl-alpha'" in result["msg"]


def test_bad_input_fails_clearly(d):
    no_names = run_module(**leaf_args(d, dns_names=[], ip_addresses=[]))
    assert no_names["failed"] and "at least one DNS name or IP address" in no_names["msg"]
    bad_ip = run_module(**leaf_args(d, ip_addresses=["10.0.0.999"]))
    assert bad_ip["failed"] and "not an IP address" in bad_ip["msg"]
    missing = run_module(**ca_args(d, profile="peer-client"))
    assert missing["failed"] and "cert" in missing["msg"]
    no_dir = run_module(**ca_args(d, ca_key=str(d / "absent" / "ca.key")))
    assert no_dir["failed"] and "does not exist" in no_dir["msg"]
