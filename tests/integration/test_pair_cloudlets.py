"""Cloudlet pairing on the lab: both sides of pair_cloudlets.yml over the pairing segment.

scripts/pair-cloudlets runs the host side (cloudlet-a) in the background,
reads the code it shows and runs the join side (cloudlet-b) with it, as the
second admin would type it; the Managers, libvirt, the code ledger and the
link (pair0, link-local addresses) are the real ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, ansible_env

from cloudlet.crypto import codes

A, B, C = "cloudlet-a", "cloudlet-b", "cloudlet-c"
MITM = Path(__file__).with_name("mitm_pairing.py")
PEER_CERT = "--cert /etc/cloudlet/pki/peer.pem --key /etc/cloudlet/pki/private/peer.key"


def pair_both(lab, *args: str, extra: tuple[str, ...] = (),
              sides: tuple[str, str] = (A, B)) -> subprocess.CompletedProcess:
    """Both sides, as make demo runs them; ``extra`` goes to both ansible-playbook runs."""
    return subprocess.run(
        [str(ROOT / "scripts" / "pair-cloudlets"), *sides, *args, "--", "-i",
         str(lab.inventory), *extra],
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


def nothing_stored(lab, host: str) -> None:
    """No peer in the Manager, no peer CA in libvirt's trust."""
    assert peers(lab, host) == []
    assert lab.ssh(host, "ls /etc/cloudlet/pki/libvirt-trust/").stdout.split() == ["ca.pem"]


def said(run: subprocess.CompletedProcess, tag: str) -> str:
    """What one side's admin saw (pair-cloudlets tags each side's lines)."""
    return "\n".join(line for line in run.stdout.splitlines() if line.startswith(tag))


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
        assert "The code did not match. Ask the other admin to read it again" in said(run, tag), out
    for host in (A, B):
        nothing_stored(lab, host)
        link_gone(lab, host)


@pytest.fixture
def man_in_the_middle(lab):
    """Cut the pairing segment between A and B, with a network namespace on each cut end.

    A's port moves from the segment's bridge to a bridge of its own; the
    attacker's namespaces hang one on each bridge (the host address towards B,
    the join address towards A). Yields the namespaces; puts A back after.
    """
    def ip(*args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True)

    a_port = lab.host_port(A, "pair0")
    segment = json.loads(subprocess.run(["ip", "-j", "link", "show", a_port], check=True,
                                        capture_output=True, text=True).stdout)[0]["master"]
    cut = f"{lab.name}-mitm"
    ends = {A: (f"{lab.name}-mitm-a", f"{lab.name}-ma", cut, "169.254.77.2/30"),
            B: (f"{lab.name}-mitm-b", f"{lab.name}-mb", segment, "169.254.77.1/30")}
    try:
        ip("link", "add", cut, "type", "bridge")
        ip("link", "set", cut, "up")
        ip("link", "set", a_port, "master", cut)
        for netns, veth, bridge, address in ends.values():
            ip("netns", "add", netns)
            ip("link", "add", veth, "type", "veth", "peer", "name", "pair0", "netns", netns)
            ip("link", "set", veth, "master", bridge, "up")
            ip("-n", netns, "link", "set", "pair0", "up")
            ip("-n", netns, "addr", "add", address, "dev", "pair0")
        yield {side: netns for side, (netns, *_) in ends.items()}
    finally:
        ip("link", "set", a_port, "master", segment, check=False)
        for netns, veth, *_ in ends.values():
            ip("link", "delete", veth, check=False)
            ip("netns", "delete", netns, check=False)
        ip("link", "delete", cut, check=False)


def test_a_man_in_the_middle_is_detected_and_nothing_is_stored(lab, set_up, man_in_the_middle):
    """The admins read and type the right code; the attacker in between has to guess one."""
    attacker = subprocess.Popen([sys.executable, str(MITM), man_in_the_middle[A],
                                 man_in_the_middle[B], A, B, "300"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = pair_both(lab)
        out, err = attacker.communicate(timeout=120)
    finally:
        attacker.kill()
    seen = json.loads(out.splitlines()[-1])
    # The attacker reached both (each half ran the PAKE) and opened nothing.
    assert set(seen) == {A, B} and all("failed" in half for half in seen.values()), out + err
    assert "did not match" in seen[A]["failed"] + seen[B]["failed"], seen
    assert run.returncode == 1
    for tag in ("[A]", "[B]"):
        assert "The code did not match. Ask the other admin to read it again" in said(run, tag), \
            run.stdout
    for host in (A, B):
        nothing_stored(lab, host)
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


def test_a_third_cloudlet_never_paired_is_refused_by_both(lab, set_up):
    """cloudlet-c: set up like the others (its own CA and certificates), never paired.

    It knows A's and B's CA certificates (they are not secret), so each refusal
    is the peer's: neither Manager nor libvirtd takes a certificate of C's CA.
    """
    assert [peer["cloudlet_id"] for peer in peers(lab, A)] == [B]  # A and B are paired
    for peer in (A, B):
        ca = lab.ssh(peer, "cat /etc/cloudlet/pki/ca.pem").stdout
        pki = f"/tmp/pki-{peer}"  # libvirt's client files, C's own certificate
        lab.ssh(C, f"mkdir -p {pki} && cat > {pki}/cacert.pem <<'EOF'\n{ca}EOF\n"
                   f"cp /etc/pki/libvirt/clientcert.pem {pki}/ && "
                   f"cp /etc/pki/libvirt/private/clientkey.pem {pki}/")
        answer = peer_api(lab, C, peer, f"{pki}/cacert.pem")
        assert answer.returncode != 0 or '"PeerAuthError"' in answer.stdout, answer.stdout
        assert answer.returncode != 60, answer.stderr  # 60: C refused A's certificate
        listed = lab.ssh(C, f"virsh -c 'qemu+tls://{lab.address(peer, 'pair0')}/system"
                            f"?pkipath={pki}' hostname", check=False)
        assert listed.returncode != 0 and peer not in listed.stdout, listed.stdout
        assert "server certificate" not in listed.stderr, listed.stderr  # C trusted the peer


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
