"""The setup and delivery ceremonies on the lab: real roles, real services.

Order matters inside this module: setup first, then what it built, then
delivery (which replaces setup-time SSH access) last. The module runs after
test_lab.py, whose plain-TCP live migration predates the TLS-only libvirt
that setup configures.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import AUDIT_LOG, CONTROL_DIR, ROOT

from cloudlet import pki

SVM = "demo-counter"
SVM_FQDN = f"{SVM}.svm.mission.internal"
MANAGER_PORT = 8443
MANAGER_NAME = "manager.cloudlet-a.cloudlet"
ADMIN_SOCKET = "/run/cloudlet-manager/admin.sock"


def test_check_mode_on_a_fresh_cloudlet_reports_what_setup_would_do(lab):
    """Before the first setup: no failure, the changes it would make, and nothing made."""
    run = lab.ceremony("setup", "--check")
    assert all(r["failed"] == 0 for r in run.recap.values()), run.explain()
    assert run.recap["cloudlet-a"]["changed"] > 0
    assert "cannot be checked before a first real setup run" in run.stdout
    assert lab.ssh("cloudlet-a", "test -e /opt/cloudlet/venv", check=False).returncode == 1


@pytest.fixture(scope="module")
def set_up(lab):
    return lab.ceremony("setup")


def admin(lab, host: str, method: str, path: str, body: dict | None = None) -> dict:
    """Call the Manager's admin API on its unix socket, on the cloudlet."""
    data = "" if body is None else f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'"
    out = lab.ssh(host, f"curl -sS --fail-with-body --unix-socket {ADMIN_SOCKET} "
                        f"-X {method} {data} http://cloudlet{path}").stdout
    return json.loads(out)


def peer_call(lab, cert: str = "", key: str = "") -> tuple[int, dict]:
    """GET cloudlet-a's /peer/info from cloudlet-b, over the inter-cloudlet link.

    Returns the HTTP status and JSON body; status 0 means no HTTP answer came
    (curl failed, e.g. the TLS handshake was refused).
    """
    a_pair = lab.address("cloudlet-a", "pair0")
    client = f"--cert {cert} --key {key}" if cert else ""
    proc = lab.ssh("cloudlet-b",
                   f"curl -sS --cacert /root/ca-a.pem {client} -w '\\n%{{http_code}}' "
                   f"--resolve {MANAGER_NAME}:{MANAGER_PORT}:{a_pair} "
                   f"https://{MANAGER_NAME}:{MANAGER_PORT}/peer/info", check=False)
    body, _, status = proc.stdout.rpartition("\n")
    if proc.returncode != 0:
        return 0, {"curl": proc.returncode, "stderr": proc.stderr}
    return int(status), (json.loads(body) if body.startswith("{") else {})


def test_setup_then_a_second_run_changes_nothing(lab, set_up):
    assert all(r["failed"] == 0 for r in set_up.recap.values())
    again = lab.ceremony("setup")
    changed = {host: r["changed"] for host, r in again.recap.items()}
    assert set(changed.values()) == {0}, changed


def test_check_mode_on_a_set_up_cloudlet_reports_no_change(lab, set_up):
    proc = lab.ceremony("setup", "--check")
    changed = {host: r["changed"] for host, r in proc.recap.items()}
    assert set(changed.values()) == {0}, changed


def test_svm_runs_under_qemu_and_its_counter_answers(lab, set_up):
    xml = lab.ssh("cloudlet-a", f"virsh -c qemu:///system dumpxml {SVM}").stdout
    assert "<domain type='qemu'" in xml
    state = lab.ssh("cloudlet-a", f"virsh -c qemu:///system domstate {SVM}").stdout.strip()
    assert state == "running"
    # The cloudlet's DNS holds its name; devices resolve and call it once paired
    # and on the network (test_pair_device.py).
    address = lab.ssh("cloudlet-a", f"grep ' {SVM_FQDN}$' /etc/cloudlet-dns/svm-hosts"
                      ).stdout.split()[0]
    assert address.startswith("10.200.0.")
    counts = [json.loads(lab.ssh("cloudlet-a", f"curl -sS --max-time 10 http://{address}/")
                         .stdout)["count"] for _ in range(2)]
    assert counts[1] == counts[0] + 1


def test_manager_api_answers_over_mutual_tls_and_refuses_strangers(lab, set_up):
    ca_a = lab.ssh("cloudlet-a", "cat /etc/cloudlet/pki/ca.pem").stdout
    lab.ssh("cloudlet-b", f"cat > /root/ca-a.pem <<'EOF'\n{ca_a}EOF")

    # A paired cloudlet (cloudlet-b, paired here through the admin API) is known by its cert.
    ca_b = lab.ssh("cloudlet-b", "cat /etc/cloudlet/pki/ca.pem").stdout
    params_b = lab.ssh("cloudlet-b", "base64 -w0 /etc/cloudlet/pki/ibe/ibe_params.bin").stdout
    b_pair = lab.address("cloudlet-b", "pair0")
    admin(lab, "cloudlet-a", "PUT", "/admin/cloudlets/cloudlet-b",
          {"ca_pem": ca_b, "params": params_b.strip(), "api_host": b_pair,
           "api_port": MANAGER_PORT})
    try:
        _check_peer_api(lab)
    finally:  # the pairing ceremony's tests start from unpaired cloudlets
        admin(lab, "cloudlet-a", "DELETE", "/admin/cloudlets/cloudlet-b")


def _check_peer_api(lab) -> None:
    pki_b = "/etc/cloudlet/pki"
    status, body = peer_call(lab, f"{pki_b}/peer.pem", f"{pki_b}/private/peer.key")
    assert status == 200 and body.get("caller") == "cloudlet-b", body

    # No client certificate: the peer API refuses.
    status, body = peer_call(lab)
    assert status in (401, 403), body

    # A certificate from a CA cloudlet-a never paired with: refused at the TLS layer.
    rogue_key = pki.generate_key()
    rogue_ca = pki.make_ca(rogue_key, "cloudlet-b")  # even claiming a paired cloudlet's name
    leaf_key = pki.generate_key()
    leaf = pki.issue_certificate(rogue_key, rogue_ca, leaf_key.public_key(),
                                 pki.Profile.PEER_CLIENT, pki.subject_names("cloudlet-b"))
    lab.ssh("cloudlet-b", f"cat > /root/rogue.pem <<'EOF'\n{leaf.decode()}EOF\n"
                          f"cat > /root/rogue.key <<'EOF'\n{pki.key_to_pem(leaf_key).decode()}EOF")
    status, body = peer_call(lab, "/root/rogue.pem", "/root/rogue.key")
    assert status == 0, body

    # The management network does not reach the API at all.
    a_mgmt = lab.address("cloudlet-a", "mgmt0")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((a_mgmt, MANAGER_PORT), timeout=10)


def test_manager_keeps_its_state_across_a_restart(lab, set_up):
    admin(lab, "cloudlet-a", "PUT", "/admin/devices/device-9", {"valid_from": "2026-11"})
    lab.ssh("cloudlet-a", "systemctl restart cloudlet-manager")
    lab.ssh("cloudlet-a", f"for i in $(seq 50); do [ -S {ADMIN_SOCKET} ] && exit 0; "
                          "sleep 0.2; done; exit 1")
    device = admin(lab, "cloudlet-a", "GET", "/admin/devices/device-9")
    assert device["device_id"] == "device-9"


def test_a_tampered_svm_image_is_refused_at_start(lab, set_up):
    # cloudlet-b holds the image (every cloudlet does) but does not run the SVM.
    store = f"/var/lib/cloudlet/svm/{SVM}"
    lab.ssh("cloudlet-b", f"cp -p {store}/base.qcow2 /root/base.qcow2.orig && "
                          f"printf X | dd of={store}/base.qcow2 bs=1 seek=70000 conv=notrunc")
    try:
        args = {"name": SVM, "manifest": f"{store}/manifest.json", "state": "running",
                "domain_type": "qemu", "address": "10.200.0.10/24", "gateway": "10.200.0.1"}
        proc = lab.ansible("cloudlet-b", "cloudlet_svm", json.dumps(args), "-e",
                           "ansible_python_interpreter=/opt/cloudlet/venv/bin/python")
        assert proc.returncode != 0
        assert f"{store}/base.qcow2 does not match its manifest" in proc.stdout
        domains = lab.ssh("cloudlet-b", "virsh -c qemu:///system list --all --name").stdout
        assert SVM not in domains
    finally:
        lab.ssh("cloudlet-b", f"mv /root/base.qcow2.orig {store}/base.qcow2")


def test_an_edited_audit_log_line_is_detected():
    log = Path(AUDIT_LOG)
    ok = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "cloudlet.audit", "verify",
                         str(log)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "audit.log"
        for suffix in ("", ".head", ".key"):
            src = Path(str(log) + suffix)
            if src.exists():
                Path(str(copy) + suffix).write_bytes(src.read_bytes())
                Path(str(copy) + suffix).chmod(0o600)
        lines = copy.read_text().splitlines(keepends=True)
        lines[3] = lines[3].replace('"ok"', '"failed"', 1).replace('"changed"', '"failed"', 1)
        copy.write_text("".join(lines))
        bad = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "cloudlet.audit", "verify",
                              str(copy)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "line 4" in (bad.stdout + bad.stderr)


def test_delivery_names_a_tampered_file_then_hands_over(lab, set_up):
    victim = "/opt/cloudlet/venv/lib/python3.11/site-packages/cloudlet/__init__.py"
    # cp -p keeps the file's time, so Python's cached bytecode matches again after.
    lab.ssh("cloudlet-b", f"cp -p {victim} /root/victim.orig && echo '# altered' >> {victim}")
    try:
        proc = lab.ceremony("delivery", "--limit", "cloudlet-b", check=False)
        assert proc.returncode != 0
        (failure,) = proc.failures
        assert failure.host == "cloudlet-b" and f"{victim} changed" in failure.message
    finally:
        lab.ssh("cloudlet-b", f"cp -p /root/victim.orig {victim} && rm /root/victim.orig")

    lab.ceremony("delivery")
    # Where the ceremonies kept them: the session's control directory.
    records = {h: json.loads((CONTROL_DIR / "deliveries" / f"{h}.json").read_text())
               for h in ("cloudlet-a", "cloudlet-b")}
    for host, record in records.items():
        assert record["cloudlet"] == host
        assert len(record["ibe_params_digest"]) == 64
        assert re.fullmatch("[0-9a-f]{64}", record["ca_fingerprint_sha256"])
        keys = record["host_keys"]
        assert keys and all(k.startswith(("ssh-", "ecdsa-")) for k in keys)
        assert len(record["manifest_digest"]) == 64
        assert record["ssid"]
    # Setup-time access is gone: only the field admin's key is authorised now.
    keys = lab.ssh("cloudlet-a", "cat /root/.ssh/authorized_keys").stdout
    assert "cloudlet-lab-field-admin" in keys and "cloudlet-lab-provisioning" not in keys
    a_ip = lab.address("cloudlet-a", "mgmt0")
    old_key = subprocess.run(
        ["ssh", "-i", f"{lab.state_dir}/id_ed25519", "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={lab.state_dir}/known_hosts", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", f"root@{a_ip}", "true"],
        capture_output=True, text=True, timeout=60)
    assert old_key.returncode == 255 and "Permission denied" in old_key.stderr
    # The host keys recorded at delivery are all a later run needs to trust the cloudlet.
    field = subprocess.run(
        ["ssh", "-i", f"{lab.state_dir}/field_ed25519", "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={CONTROL_DIR}/deliveries/known_hosts", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", f"root@{a_ip}", "true"],
        capture_output=True, text=True, timeout=60)
    assert field.returncode == 0, field.stderr
