"""Cloudlet pairing on the lab: both sides of pair_cloudlets.yml over the pairing segment.

scripts/pair-cloudlets runs the host side (cloudlet-a) in the background,
reads the code it shows and runs the join side (cloudlet-b) with it, as the
second admin would type it; the Managers, libvirt, the code ledger and the
link (pair0, link-local addresses) are the real ones.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from conftest import ROOT, ansible_env

from cloudlet.crypto import codes

A, B = "cloudlet-a", "cloudlet-b"
PEER_CERT = "--cert /etc/cloudlet/pki/peer.pem --key /etc/cloudlet/pki/private/peer.key"


def pair_both(lab, *args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Both sides, as make demo runs them; ``extra`` goes to both ansible-playbook runs."""
    return subprocess.run(
        [str(ROOT / "scripts" / "pair-cloudlets"), A, B, *args, "--", "-i", str(lab.inventory),
         *extra],
        cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=900, check=False)


def peers(lab, host: str) -> list[dict]:
    out = lab.ssh(host, "curl -sS --unix-socket /run/cloudlet-manager/admin.sock "
                        "http://c/admin/cloudlets").stdout
    return json.loads(out)["cloudlets"]


def peer_api(lab, host: str, peer: str, cacert: str, cert: str = PEER_CERT):
    """GET /peer/info on ``peer``'s Manager over the pairing segment, from ``host``."""
    address = lab.address(peer, "pair0")
    return lab.ssh(host, f"curl -sS --max-time 10 --cacert {cacert} {cert} "
                         f"--resolve manager.{peer}.cloudlet:8443:{address} "
                         f"https://manager.{peer}.cloudlet:8443/peer/info", check=False)


def virsh_tls(lab, host: str, peer: str) -> subprocess.CompletedProcess:
    """libvirt over TLS from ``host`` to ``peer``'s pairing-segment address (in its SAN)."""
    return lab.ssh(host, f"virsh -c qemu+tls://{lab.address(peer, 'pair0')}/system hostname",
                   check=False)


def link_gone(lab, host: str) -> None:
    addrs = lab.ssh(host, "ip -4 -o addr show dev pair0").stdout
    assert "169.254.77." not in addrs, addrs
    assert "169.254.77." not in lab.ssh(host, "ip -4 route show").stdout
    # No pairing hostapd or wpa_supplicant (the field network's hostapd stays).
    daemons = lab.ssh(host, "ps -eo args").stdout
    assert "cloudlet-pairing" not in daemons, daemons
    assert lab.ssh(host, "ls -A /run/cloudlet-pairing 2>/dev/null || true").stdout == ""


@pytest.fixture(scope="module")
def set_up(lab):
    for host in (A, B):
        if lab.ssh(host, "test -S /run/cloudlet-manager/admin.sock", check=False).returncode:
            lab.ceremony("setup")
            break


def test_a_wrong_code_fails_on_both_sides_and_stores_nothing(lab, set_up):
    run = pair_both(lab, "--code", str(codes.generate_code()))
    assert run.returncode == 1
    out = run.stdout
    assert "[A]" in out and "[B]" in out
    for tag in ("[A]", "[B]"):
        mine = "\n".join(line for line in out.splitlines() if line.startswith(tag))
        assert "The code did not match. Ask the other admin to read it again" in mine, out
    assert peers(lab, A) == [] and peers(lab, B) == []
    for host in (A, B):
        link_gone(lab, host)


def test_pairing_lets_each_cloudlet_call_the_other_and_leaves_no_link(lab, set_up, tmp_path):
    pcap = tmp_path / "pair.pcap"  # what an eavesdropper on the pairing segment sees
    capture = subprocess.Popen(["tcpdump", "-i", lab.host_port(B, "pair0"), "-U", "-s", "0",
                                "-w", str(pcap), "net 169.254.77.0/30"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        run = pair_both(lab)
        time.sleep(1)
    finally:
        capture.terminate()
        capture.wait(10)
    seen = pcap.read_bytes()
    assert run.returncode == 0, run.stdout
    exchange = subprocess.run(["tcpdump", "-r", str(pcap), "tcp port 7747"],
                              capture_output=True, text=True, check=False).stdout
    assert exchange.count("\n") > 10, "the capture missed the exchange"
    fingerprint = {h: lab.ssh(h, "openssl x509 -in /etc/cloudlet/pki/ca.pem -outform DER "
                                 "| sha256sum").stdout.split()[0] for h in (A, B)}
    assert f"Paired {A} with {B} (its CA sha256 {fingerprint[B]})" in run.stdout
    assert f"Paired {B} with {A} (its CA sha256 {fingerprint[A]})" in run.stdout
    (on_a,), (on_b,) = peers(lab, A), peers(lab, B)
    assert (on_a["cloudlet_id"], on_a["pending"], on_a["ca_fingerprint"]) == (B, False,
                                                                              fingerprint[B])
    assert (on_b["cloudlet_id"], on_b["pending"]) == (A, False)
    # Each Manager's peer API answers the other over mutual TLS, trusting the CA it learned.
    for host, peer in ((A, B), (B, A)):
        answer = peer_api(lab, host, peer, f"/etc/cloudlet/pki/libvirt-trust/peer-{peer}.pem")
        assert json.loads(answer.stdout)["caller"] == host, answer.stdout + answer.stderr
    # ... and each libvirtd accepts the other's TLS client certificate (migration's channel).
    for host, peer in ((A, B), (B, A)):
        listed = virsh_tls(lab, host, peer)
        assert listed.returncode == 0 and listed.stdout.strip() == peer, listed.stderr
    # Each field network now knows the other as an 802.1X user.
    users = lab.ssh(A, "cat /etc/cloudlet-network/eap_users").stdout
    assert f'"peer:{B}"' in users
    for host in (A, B):
        link_gone(lab, host)
    # Nothing in the clear on the segment: no CA, no EAP password, no code.
    secret = json.loads(lab.ssh(A, "curl -sS --unix-socket /run/cloudlet-manager/admin.sock "
                                   "http://c/admin/eap-users").stdout)["users"][0]["password"]
    code = run.stdout.split("Voice code: ")[1].split()[0]
    for clear in (b"BEGIN CERTIFICATE", secret.encode(), code.encode(),
                  code.split("-")[0].encode()):
        assert clear not in seen


def test_an_unpaired_cloudlet_is_refused_by_both(lab, set_up):
    """A cloudlet that never paired: its own CA, a peer client certificate from it."""
    make = ("cd /tmp && /opt/cloudlet/venv/bin/python -c '"
            "from cloudlet import pki; k = pki.generate_key(); ca = pki.make_ca(k, \"rogue\"); "
            "c = pki.generate_key(); "
            "open(\"rogue.pem\", \"wb\").write(pki.issue_certificate(k, ca, c.public_key(), "
            "pki.Profile.PEER_CLIENT, pki.subject_names(\"rogue\", [], []))); "
            "pki.write_private_key(\"rogue.key\", c)'")
    for host, peer in ((A, B), (B, A)):
        lab.ssh(host, make)
        answer = peer_api(lab, host, peer, f"/etc/cloudlet/pki/libvirt-trust/peer-{peer}.pem",
                          "--cert /tmp/rogue.pem --key /tmp/rogue.key")
        assert answer.returncode != 0 or '"PeerAuthError"' in answer.stdout, answer.stdout


def test_pairing_again_needs_replace_and_unpairing_refuses_both_ways(lab, set_up):
    again = pair_both(lab)
    assert again.returncode == 1 and "already paired" in again.stdout
    assert "replace=true" in again.stdout
    replaced = pair_both(lab, extra=("-e", "replace=true"))
    assert replaced.returncode == 0 and "replaced the earlier pairing" in replaced.stdout
    for host, peer in ((A, B), (B, A)):
        lab.ceremony("unpair_cloudlet", "-e", f"cloudlet={host}", "-e", f"peer={peer}")
    assert peers(lab, A) == [] and peers(lab, B) == []
    for host, peer in ((A, B), (B, A)):
        # The caller still knows the peer's CA (read here, as an attacker would); the
        # peer no longer accepts the caller's certificate.
        ca = lab.ssh(peer, "cat /etc/cloudlet/pki/ca.pem").stdout
        lab.ssh(host, f"cat > /tmp/{peer}-ca.pem <<'EOF'\n{ca}EOF")
        answer = peer_api(lab, host, peer, f"/tmp/{peer}-ca.pem")
        assert answer.returncode != 0 or '"PeerAuthError"' in answer.stdout, answer.stdout
        assert virsh_tls(lab, host, peer).returncode != 0
    assert '"peer:' not in lab.ssh(A, "cat /etc/cloudlet-network/eap_users").stdout
