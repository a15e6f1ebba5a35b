"""cloudlet_pairing through AnsibleModule: codes, check mode, unpair, clear failures.

Both sides of a real pairing run in test_peering_ceremony (over loopback) and
in the lab (tests/integration/test_pair_cloudlets.py).
"""

from __future__ import annotations

import pytest
from ansible_module import load, run
from test_manager_support import pair, write_toml

from cloudlet.crypto import codes

MODULE = load("cloudlet_pairing")


@pytest.fixture
def files(alpha, tmp_path):
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "ca.pem").write_bytes(alpha.cfg.ca_cert.read_bytes())
    return dict(manager_config=str(write_toml(alpha.cfg, tmp_path / "manager.toml")),
                params=str(tmp_path / "params"), peer_cert=str(tmp_path / "peer.pem"),
                peer_key=str(tmp_path / "peer.key"), ledger_dir=str(tmp_path / "ledger"),
                trust_dir=str(trust), libvirt_ca_cert=str(tmp_path / "cacert.pem"),
                libvirt_reload=["true"])


def test_a_code_is_fresh_parses_and_starts_its_record(files, tmp_path):
    first = run(MODULE, action="code", backend="radio", **files)
    second = run(MODULE, action="code", backend="radio", **files)
    assert first["changed"] and first["code"] != second["code"]
    assert str(codes.parse_code(first["code"])) == first["code"]
    assert first["ssid"].startswith("cloudlet-pair-")
    assert len(list((tmp_path / "ledger").glob("*.json"))) == 2
    assert run(MODULE, action="code", backend="wired", **files)["ssid"] is None
    checked = run(MODULE, action="code", _ansible_check_mode=True, **files)
    assert checked["changed"] and "code" not in checked


def test_no_code_is_made_for_a_pairing_that_would_be_refused(files, alpha, pkis, master_b,
                                                             tmp_path):
    pair(alpha, pkis["cl-bravo"], master_b)
    refused = run(MODULE, action="code", peer="cl-bravo", **files)
    assert refused["failed"] and "already paired" in refused["msg"] and "code" not in refused
    assert not (tmp_path / "ledger").exists()
    assert "code" in run(MODULE, action="code", peer="cl-bravo", replace=True, **files)


def test_unpair_reports_only_what_it_removes(files, alpha, pkis, master_b):
    assert run(MODULE, action="unpair", peer="cl-bravo", **files)["changed"] is False
    pair(alpha, pkis["cl-bravo"], master_b)
    assert run(MODULE, action="unpair", peer="cl-bravo", _ansible_check_mode=True,
               **files)["changed"] is True
    assert run(MODULE, action="unpair", peer="cl-bravo", **files)["changed"] is True
    assert run(MODULE, action="unpair", peer="cl-bravo", **files)["changed"] is False


def test_bad_input_fails_clearly_before_any_link(files):
    missing = run(MODULE, action="pair", side="join", peer="cl-bravo", code="x",
                  interface="wlan1", **files)
    assert missing["failed"] and "network name (ssid)" in missing["msg"]
    typo = run(MODULE, action="pair", side="host", peer="cl-bravo", code="acid banjo",
               backend="wired", interface="pair0", **files)
    assert typo["failed"] and "not a complete code" in typo["msg"]
    assert "pair" in run(MODULE, action="pair", **files)["msg"]  # required_if names what is missing
