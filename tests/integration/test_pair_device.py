"""The device pairing ceremony on the lab: push, idempotence, use, revocation.

Runs after test_setup_delivery.py (the cloudlets are set up, the devices
have the device client), on the same lab: device-1 is paired with its home
cloudlet-a through its pairing request, a second run and a check run change
nothing, the device holds its bundle and the Manager answers it over its
field link, and once revoked its next call is refused.
"""

from __future__ import annotations

import json

import pytest

CLIENT = "/opt/cloudlet/venv/bin/cloudlet-device"


@pytest.fixture(scope="module")
def paired(lab):
    if lab.ssh("cloudlet-a", "test -S /run/cloudlet-manager/admin.sock", check=False).returncode:
        lab.ceremony("setup")
    return lab.ceremony("pair_device", "-e", "device=device-1")


def _api(lab) -> str:
    return f"{lab.address('cloudlet-a', 'field0')}:8443"


def test_pairing_pushes_the_bundle_and_a_second_run_changes_nothing(lab, paired):
    assert paired.recap["cloudlet-a"]["changed"] > 0
    assert "Paired device-1 with cloudlet-a" in paired.stdout
    status = json.loads(lab.ssh("device-1", f"{CLIENT} status --json").stdout)
    assert status["current"]["identity"].startswith("cloudlet-id-v1/cloudlet-a/device-1/")
    assert status["current"]["eap_identity"] == "device-1"
    assert status["pairing_request"] is False  # the one-time key is gone after the import
    ca = lab.ssh("cloudlet-a", "openssl x509 -in /etc/cloudlet/pki/ca.pem -outform DER "
                               "| sha256sum").stdout.split()[0]
    assert status["ca_fingerprint"] == ca
    again = lab.ceremony("pair_device", "-e", "device=device-1")
    assert {h: r["changed"] for h, r in again.recap.items()} == {
        h: 0 for h in again.recap}, again.recap
    check = lab.ceremony("pair_device", "-e", "device=device-1", "--check")
    assert {r["changed"] for r in check.recap.values()} == {0}


def test_unknown_device_fails_clearly(lab, paired):
    run = lab.ceremony("pair_device", "-e", "device=device-99", check=False)
    assert run.returncode != 0
    assert "Unknown device device-99" in run.stdout


def test_the_device_api_answers_the_paired_device_then_refuses_it_revoked(lab, paired):
    ok = lab.ssh("device-1", f"{CLIENT} --api {_api(lab)} messages", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lab.ceremony("revoke_device", "-e", "device=device-1")
    refused = lab.ssh("device-1", f"{CLIENT} --api {_api(lab)} messages", check=False)
    assert refused.returncode == 1
    assert "revoked" in refused.stderr, refused.stderr
