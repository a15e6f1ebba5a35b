"""library/cloudlet_ibe_pkg.py run through AnsibleModule, in process."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from ansible_module import load, run

MOD = load("cloudlet_ibe_pkg")


def run_module(**args) -> dict:
    return run(MOD, **args)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir(mode=0o700)
    return d


def _snapshot(d: Path) -> dict:
    return {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in d.iterdir()}


def test_check_apply_apply(pki):
    first = run_module(path=str(pki), cloudlet_id="cl-alpha", _ansible_check_mode=True)
    assert first["changed"] and first["action"] == "create"
    assert first["params_digest"] is None
    assert list(pki.iterdir()) == []  # check mode wrote nothing

    second = run_module(path=str(pki), cloudlet_id="cl-alpha")
    assert second["changed"] and second["action"] == "create"
    assert len(second["params_digest"]) == 64
    assert second["diff"]["after"]["params_digest"] == second["params_digest"]
    master = Path(second["master_key_path"])
    params = Path(second["params_path"])
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    assert stat.S_IMODE(params.stat().st_mode) == 0o644

    third = run_module(path=str(pki), cloudlet_id="cl-alpha")
    assert not third["changed"] and third["action"] == "none"
    assert third["params_digest"] == second["params_digest"]

    check_again = run_module(path=str(pki), cloudlet_id="cl-alpha", _ansible_check_mode=True)
    assert not check_again["changed"]


def test_corrupt_master_key_fails_and_is_untouched(pki):
    run_module(path=str(pki), cloudlet_id="cl-alpha")
    master = pki / "ibe_master.key"
    master.write_bytes(master.read_bytes()[:-7])
    before = _snapshot(pki)
    result = run_module(path=str(pki), cloudlet_id="cl-alpha")
    assert result["failed"] and "damaged" in result["msg"] and "untouched" in result["msg"]
    assert _snapshot(pki) == before


def test_rotate(pki):
    first = run_module(path=str(pki), cloudlet_id="cl-alpha")
    check = run_module(path=str(pki), cloudlet_id="cl-alpha", rotate=True, _ansible_check_mode=True)
    assert check["changed"] and check["action"] == "rotate"
    assert (
        run_module(path=str(pki), cloudlet_id="cl-alpha")["params_digest"] == first["params_digest"]
    )
    rotated = run_module(path=str(pki), cloudlet_id="cl-alpha", rotate=True)
    assert rotated["changed"] and rotated["params_digest"] != first["params_digest"]
    assert rotated["diff"]["before"]["params_digest"] == first["params_digest"]
    assert stat.S_IMODE((pki / "ibe_master.key").stat().st_mode) == 0o600


def test_rotate_replaces_a_damaged_key_explicitly(pki):
    run_module(path=str(pki), cloudlet_id="cl-alpha")
    (pki / "ibe_master.key").write_bytes(b"garbage")
    result = run_module(path=str(pki), cloudlet_id="cl-alpha", rotate=True)
    assert result["changed"] and result["action"] == "rotate"
    assert not run_module(path=str(pki), cloudlet_id="cl-alpha")["changed"]


def test_missing_params_are_regenerated_from_the_master(pki):
    first = run_module(path=str(pki), cloudlet_id="cl-alpha")
    (pki / "ibe_params.bin").unlink()
    again = run_module(path=str(pki), cloudlet_id="cl-alpha")
    assert again["changed"] and again["action"] == "params"
    assert again["params_digest"] == first["params_digest"]


def test_wrong_cloudlet_id_fails(pki):
    run_module(path=str(pki), cloudlet_id="cl-alpha")
    result = run_module(path=str(pki), cloudlet_id="cl-bravo")
    assert result["failed"] and "belongs to cloudlet 'cl-alpha'" in result["msg"]
    bad = run_module(path=str(pki), cloudlet_id="Not Valid!")
    assert bad["failed"] and "cloudlet_id" in bad["msg"]


def test_mode_change_is_reported(pki):
    run_module(path=str(pki), cloudlet_id="cl-alpha")
    (pki / "ibe_master.key").chmod(0o644)
    result = run_module(path=str(pki), cloudlet_id="cl-alpha")
    assert result["changed"] and result["action"] == "none"
    assert stat.S_IMODE((pki / "ibe_master.key").stat().st_mode) == 0o600


def test_missing_directory_fails(tmp_path):
    result = run_module(path=str(tmp_path / "absent"), cloudlet_id="cl-alpha")
    assert result["failed"] and "does not exist" in result["msg"]
