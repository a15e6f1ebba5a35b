"""The lab of real machines: reachable, booted with systemd, KVM-capable,
able to live-migrate a guest, sealed off from the outside, and gone after
tear-down. The test marked ``teardown`` runs last and tears the lab down.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLOUDLETS, DEVICES

HOSTS = CLOUDLETS + DEVICES

# With ACPI, as the SVMs' domains: without it libvirt 9.0 passes -no-acpi, which
# QEMU 10 no longer has.
GUEST_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices><serial type='pty'/><memballoon model='none'/></devices>
</domain>
"""


def traces(lab) -> dict[str, list[str]]:
    """Everything of this lab visible on the host, found without the lab's own code."""
    prefix = f"{lab.name}-"
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True, check=True).stdout)
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(lab.state_dir)]
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        # A container's processes name the lab's overlay in their root mount.
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        if lab.state_dir in cmd or lab.state_dir in mountinfo:
            procs.append(f"{pid} {cmd[:80]}")
    cgroups = [str(d) for d in Path("/sys/fs/cgroup").glob("**/cloudlet-lab." + prefix[:-1] + ".*")
               if d.is_dir()]
    return {
        "cgroups": cgroups,
        "links": [link["ifname"] for link in links if link["ifname"].startswith(prefix)],
        "netns": [n for n in netns if n.startswith(prefix)],
        "mounts": mounts,
        "processes": procs,
        "files": [lab.state_dir] if os.path.exists(lab.state_dir) else [],
    }


def test_ansible_ping_answers_over_ssh_on_every_host(lab):
    proc = lab.ansible("all", "ping", "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answered = re.findall(r'^(\S+) \| SUCCESS => \{[^}]*"ping": "pong"', proc.stdout, re.M)
    assert sorted(answered) == sorted(HOSTS)


@pytest.mark.parametrize("host", HOSTS)
def test_systemd_is_pid_1(lab, host):
    assert lab.ssh(host, "cat /proc/1/comm").stdout.strip() == "systemd"
    state = lab.ssh(host, "systemctl is-system-running --wait", check=False).stdout.strip()
    assert state == "running", lab.ssh(host, "systemctl --failed --no-legend; "
                                             "journalctl -b -p err --no-pager | tail -20").stdout
    assert lab.ssh(host, "hostname").stdout.strip() == host


def test_every_machine_has_a_cgroup_of_its_own(lab):
    # Sharing one would let the machines' systemds remove each other's unit
    # cgroups (units then fail with "Failed at step CGROUP").
    inits = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        if argv[0].endswith(b"systemd-nspawn") and lab.state_dir.encode() in b" ".join(argv):
            name = next(a for a in argv if a.startswith(b"--machine=")).decode().split("=")[1]
            inits[name] = Path(f"/proc/{children[0]}/cgroup").read_text()
    assert sorted(inits) == sorted(HOSTS)
    assert len(set(inits.values())) == len(HOSTS), inits


@pytest.mark.parametrize("host", CLOUDLETS)
def test_libvirt_in_cloudlet_offers_kvm(lab, host):
    caps = lab.ssh(host, "virsh -c qemu:///system domcapabilities").stdout
    assert "<domain>kvm</domain>" in caps


@pytest.mark.parametrize("host", DEVICES)
def test_device_has_no_route_out_of_the_lab(lab, host):
    # Asked of the routing table only: nothing is ever sent to the outside address.
    proc = lab.ssh(host, "ip route get 192.0.2.1", check=False)
    assert proc.returncode != 0
    assert "unreachable" in proc.stderr.lower()
    assert "default" not in lab.ssh(host, "ip route show").stdout


def _tx_bytes(lab, host: str, ifname: str) -> int:
    return int(lab.ssh(host, f"cat /sys/class/net/{ifname}/statistics/tx_bytes").stdout)


def virsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=300, check=check)


def start_guest(lab, tmp_path: Path, name: str) -> tuple[str, str]:
    """A bare guest started on cloudlet-a; the two cloudlets' libvirt URIs."""
    src, dst = lab.libvirt_uri("cloudlet-a"), lab.libvirt_uri("cloudlet-b")
    xml = tmp_path / "guest.xml"
    xml.write_text(GUEST_XML.format(name=name))
    virsh(src, "create", str(xml))
    return src, dst


def test_guest_live_migrates_between_cloudlets_over_the_pairing_link(lab, tmp_path):
    src, dst = start_guest(lab, tmp_path, "lab-mig")
    uuid = virsh(src, "domuuid", "lab-mig").stdout.strip()
    time.sleep(1)  # let the guest's firmware run, so there is state to move
    dst_ip = lab.address("cloudlet-b", "pair0")
    before = _tx_bytes(lab, "cloudlet-a", "pair0")
    try:
        virsh(src, "migrate", "--live", "lab-mig", dst, "--migrateuri", f"tcp://{dst_ip}")
        sent = _tx_bytes(lab, "cloudlet-a", "pair0") - before
        assert virsh(dst, "domstate", "lab-mig").stdout.strip() == "running"
        assert virsh(dst, "domuuid", "lab-mig").stdout.strip() == uuid
        assert "lab-mig" not in virsh(src, "list", "--all", "--name").stdout
        # The guest's RAM crossed the pairing segment, not the management one.
        assert sent > 256 * 1024, f"only {sent} bytes left cloudlet-a on pair0"
    finally:
        virsh(dst, "destroy", "lab-mig", check=False)
        virsh(src, "destroy", "lab-mig", check=False)


def test_guest_post_copy_migrates_between_cloudlets(lab, tmp_path):
    """QEMU checks on both ends, when post-copy is asked for, that it can use
    userfaultfd and munlockall(); nspawn's defaults deny both (no /dev/userfaultfd,
    no @memlock calls), and the move fails at once. (A bare guest's pre-copy ends
    too soon to switch to post-copy reliably; docs/migration.md has real ones.)"""
    src, dst = start_guest(lab, tmp_path, "lab-pc")
    try:
        move = virsh(src, "migrate", "--live", "--postcopy", "--postcopy-after-precopy",
                     "lab-pc", dst, "--migrateuri",
                     f"tcp://{lab.address('cloudlet-b', 'pair0')}", check=False)
        assert move.returncode == 0, move.stderr
        assert virsh(dst, "domstate", "lab-pc").stdout.strip() == "running"
        assert "lab-pc" not in virsh(src, "list", "--all", "--name").stdout
    finally:
        virsh(dst, "destroy", "lab-pc", check=False)
        virsh(src, "destroy", "lab-pc", check=False)


def test_host_device_nodes_are_not_the_machines(lab):
    """Each cloudlet binds nodes of its own: its systemd and libvirt change their owner
    and group, never the host's."""
    for dev in ("/dev/kvm", "/dev/net/tun", "/dev/userfaultfd"):
        host = os.stat(dev)
        for machine in CLOUDLETS:
            seen = lab.ssh(machine, f"stat -c '%i %t:%T' {dev}").stdout.split()
            node = os.stat(Path(lab.state_dir, "machines", machine, "dev", Path(dev).name))
            assert int(seen[0]) == node.st_ino != host.st_ino
            assert seen[1] == f"{os.major(host.st_rdev):x}:{os.minor(host.st_rdev):x}"


def test_second_bring_up_changes_nothing(lab):
    proc = lab.playbook()
    assert proc.recap["localhost"]["changed"] == 0


def test_check_mode_on_a_healthy_lab_reports_nothing_to_do(lab):
    proc = lab.playbook("--check")
    assert proc.recap["localhost"]["changed"] == 0


def test_bring_up_clears_leftovers_of_an_earlier_run(lab):
    stale_bridge, stale_ns = f"{lab.name}-f9", f"{lab.name}-ghost"
    subprocess.run(["ip", "link", "add", stale_bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", stale_ns], check=True)
    ghost = Path(lab.state_dir, "machines", "ghost", "upper")
    ghost.mkdir(parents=True)
    # A machine that died hard: its nspawn is gone, its overlay still mounted.
    pid = int(Path(lab.state_dir, "machines", "device-2", "nspawn.pid").read_text())
    os.kill(pid, 9)

    proc = lab.playbook()
    assert proc.recap["localhost"]["changed"] > 0
    found = traces(lab)
    assert stale_bridge not in found["links"]
    assert stale_ns not in found["netns"]
    assert not ghost.parent.exists()
    assert lab.ssh("device-2", "systemctl is-system-running --wait", check=False).stdout.strip() \
        == "running"


@pytest.mark.teardown
def test_tear_down_leaves_nothing(lab):
    assert traces(lab)["processes"], "the lab should be running before tear-down"
    lab.playbook("-e", "lab_state=absent")
    assert traces(lab) == {"cgroups": [], "links": [], "netns": [], "mounts": [], "processes": [],
                           "files": []}
    assert not lab.inventory.exists()
