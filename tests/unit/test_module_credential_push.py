"""cloudlet_credential_push through AnsibleModule, against a real Manager."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from ansible_module import load, run
from test_manager_support import Running, make_config, make_pki, write_toml

from cloudlet.crypto.identity import Period
from cloudlet.device.client import DeviceClient

MODULE = load("cloudlet_credential_push")


@pytest.fixture
def alpha(tmp_path, master_a):
    pki = make_pki(tmp_path, "cl-alpha")
    cfg = make_config(tmp_path, pki, master_a)
    toml = write_toml(cfg, tmp_path / "manager.toml")
    running = Running(cfg)
    yield running, dict(manager_config=str(toml), master_key=str(cfg.master_key),
                        ca_cert=str(cfg.ca_cert), ssid="net-cl-alpha")
    running.stop()


def test_check_apply_check(alpha, tmp_path):
    _run, common = alpha
    client = DeviceClient(tmp_path / "dev")
    key = client.pairing_request().public_key_b64
    first = run(MODULE, device="tablet-07", public_key=key, _ansible_check_mode=True, **common)
    assert first["changed"] and first["issued"] and first["envelope"] is None
    applied = run(MODULE, device="tablet-07", public_key=key, **common)
    assert applied["changed"] and applied["issued"]
    client.import_bundle(base64.b64decode(applied["envelope"]))
    status = {"current": {"identity": applied["identity"], "cloudlet": "cl-alpha",
                          "expired": False}, "ca_fingerprint": applied["ca_fingerprint"]}
    again = run(MODULE, device="tablet-07", device_status=status, _ansible_check_mode=True,
                **common)
    assert not again["changed"] and again["envelope"] is None
    assert applied["valid_from"] == Period.containing(datetime.now(UTC)).not_before.strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def test_revoke_and_messages_modes(alpha):
    _run, common = alpha
    missing = run(MODULE, mode="revoke", device="nobody", **common)
    assert missing["failed"] and "not paired" in missing["msg"]
    bad = run(MODULE, mode="messages", messages=[{"device_id": "tablet-07", "kind": "credential",
                                                   "issuer": "cl-bravo", "body": "AAAA"}],
              **common)
    assert bad["failed"] and "Message 0" in bad["msg"]


def test_bad_input_fails_clearly(alpha, tmp_path):
    _run, common = alpha
    short = run(MODULE, device="tablet-07", public_key="c2hvcnQ=", **common)
    assert short["failed"] and "32 bytes" in short["msg"]
    nokey = run(MODULE, device="tablet-07", **common)
    assert nokey["failed"] and "pairing request" in nokey["msg"]
    down = run(MODULE, device="tablet-07", **{**common, "manager_config": str(tmp_path / "x")})
    assert down["failed"] and "manager" in down["msg"].lower()
