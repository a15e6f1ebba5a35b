"""cloudlet_identity_info: one fingerprint format, host keys, clear errors."""

from __future__ import annotations

import subprocess

import ansible_module
import pytest
from conftest import DetRng

from cloudlet import formats, pki
from cloudlet.errors import StorageError
from cloudlet.identity_info import read_identity

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtlabhostkeyforunittestsonly000000000000"
ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBtest"


@pytest.fixture
def cloudlet(tmp_path, master_a):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.make_ca(pki.generate_key(DetRng(b"ca")), "cl-alpha"))
    params = tmp_path / "ibe_params.bin"
    params.write_bytes(formats.encode_params(master_a.params))
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    (ssh / "ssh_host_ed25519_key.pub").write_text(ED25519 + " root@cloudlet-a\n")
    (ssh / "ssh_host_ecdsa_key.pub").write_text(ECDSA + "\n")
    (ssh / "ssh_host_ed25519_key").write_text("private: never read\n")
    return ca, params, ssh


def test_reads_the_public_identity_in_one_format(cloudlet, master_a):
    ca, params, ssh = cloudlet
    info = read_identity(ca, params, ssh)
    assert info.cloudlet_id == "cl-alpha"
    assert info.params_digest == master_a.params.digest.hex()
    # The same fingerprint OpenSSL prints, in the one format used everywhere.
    colon = (
        subprocess.run(
            ["openssl", "x509", "-in", str(ca), "-noout", "-fingerprint", "-sha256"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split("=", 1)[1]
    )
    assert info.ca_fingerprint == colon.replace(":", "").lower() == pki.fingerprint(ca.read_bytes())
    assert info.host_keys == (ECDSA, ED25519)  # sorted, comments dropped, no private key


def test_missing_or_damaged_files_fail_clearly(cloudlet, tmp_path):
    ca, params, ssh = cloudlet
    with pytest.raises(StorageError, match="Run the setup ceremony"):
        read_identity(tmp_path / "nope.pem", params, ssh)
    params.write_bytes(b"garbage")
    with pytest.raises(StorageError, match="ibe_params.bin"):
        read_identity(ca, params, ssh)


def test_the_module_reports_without_changing_anything(cloudlet, monkeypatch):
    ca, params, ssh = cloudlet
    module = ansible_module.load("cloudlet_identity_info")
    monkeypatch.setattr(module, "SSH_DIR", ssh)
    out = ansible_module.run(
        module, ca_cert=str(ca), ibe_params=str(params), _ansible_check_mode=True
    )
    assert out["changed"] is False and out["cloudlet_id"] == "cl-alpha"
    assert out["host_keys"] == [ECDSA, ED25519]
    out = ansible_module.run(module, ca_cert=str(ca), ibe_params=str(params), host_keys=False)
    assert out["host_keys"] == []
    failed = ansible_module.run(module, ca_cert=str(ca) + ".missing", ibe_params=str(params))
    assert failed["failed"] and "Cannot read the CA certificate" in failed["msg"]
