"""Bring a whole lab up or down: the steps the lab role's module drives.

Bring-up converges: machines that are running on the current image with their
network in place are kept; anything of this lab that is stale, half-made or
left over from an earlier run (a machine, overlay, mount, namespace, bridge,
veth or orphaned nspawn) is removed before the missing pieces are created.
"""

from __future__ import annotations

import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudlet.errors import LabError
from cloudlet.lab import net
from cloudlet.lab.machine import MachineDir, find_lab_processes
from cloudlet.lab.system import mounts_under, require_commands, run
from cloudlet.lab.topology import Plan

__all__ = ["down", "host_keys", "ssh_key", "up"]

# What a cloudlet's QEMU needs of the host: KVM (where it works), tap devices, and
# for post-copy migration userfaultfd and munlockall() (nspawn's filter allows the
# @memlock calls only to containers with CAP_IPC_LOCK, which would let them lock
# memory too).
VM_HOST_DEVICES = ("/dev/kvm", "/dev/net/tun", "/dev/userfaultfd")
VM_HOST_SYSCALLS = ("@memlock",)
READY_TIMEOUT = 120.0


SSH_KEYS = {"id_ed25519": "cloudlet-lab-provisioning", "field_ed25519": "cloudlet-lab-field-admin"}


def ssh_key(state_dir: str) -> str:
    """The lab's provisioning key, root's only key on every machine at bring-up.

    The lab also makes the key its field admin will hold: the delivery
    ceremony installs that one and removes the provisioning key, as it does
    in the field. Both are made once per lab.
    """
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    for name, comment in SSH_KEYS.items():
        key = Path(state_dir) / name
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    return (Path(state_dir) / "id_ed25519.pub").read_text().strip()


def _machine_files(plan: Plan, name: str, pubkey: str) -> dict[str, tuple[str, int]]:
    hosts = ["127.0.0.1 localhost", f"127.0.1.1 {name}", "::1 localhost ip6-localhost"]
    hosts += [f"{m.mgmt_ip} {m.name}" for m in plan.machines if m.name != name]
    hosts.append(f"{plan.host_ip} control")
    return {
        "/etc/hostname": (f"{name}\n", 0o644),
        "/etc/hosts": ("\n".join(hosts) + "\n", 0o644),
        "/root/.ssh/authorized_keys": (pubkey + "\n", 0o600),
    }


def _machine_dirs(state_dir: str) -> list[str]:
    base = Path(state_dir) / "machines"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def _wait_ssh(address: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1.0) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise LabError(f"No SSH answer from {address} within {READY_TIMEOUT:.0f} s.")


def pending(plan: Plan, state_dir: str, image_key: str) -> dict[str, list[str]]:
    """What bring-up would do, without doing it (check mode)."""
    planned = {m.name for m in plan.machines}
    return {
        "remove": [n for n in _machine_dirs(state_dir) if n not in planned],
        "start": [
            m.name for m in plan.machines if not MachineDir(state_dir, m.name).running(image_key)
        ],
    }


def up(plan: Plan, state_dir: str, image: str, image_key: str) -> dict:
    require_commands(["ip", "nsenter", "systemd-nspawn", "ssh-keygen", "mount"])
    done: list[str] = []
    pubkey = ssh_key(state_dir)
    planned = {m.name for m in plan.machines}

    # 1. Leftovers: machines no longer planned, orphaned nspawns, stale overlays.
    for name in _machine_dirs(state_dir):
        if name not in planned:
            MachineDir(state_dir, name).destroy()
            done.append(f"removed leftover machine {name}")
    known = {str(MachineDir(state_dir, m.name).root) for m in plan.machines}
    for root in set(find_lab_processes(state_dir).values()) - known:
        MachineDir(state_dir, Path(root).parent.name).destroy()
        done.append(f"stopped orphaned machine {root}")
    to_start = []
    for machine in plan.machines:
        mdir = MachineDir(state_dir, machine.name)
        if not mdir.running(image_key):
            if mdir.base.exists() or mdir.processes():
                mdir.destroy()
                done.append(f"cleared stale machine {machine.name}")
            to_start.append(machine)

    # 2. Network, for every planned machine (kept ones included).
    done += net.converge(plan)

    # 3. Machines: overlays and boots are independent; start them together.
    def boot(machine):
        mdir = MachineDir(state_dir, machine.name)
        mdir.prepare(image, image_key, _machine_files(plan, machine.name, pubkey))
        if machine.role == "cloudlet":
            mdir.start(machine, mdir.device_nodes(VM_HOST_DEVICES), VM_HOST_SYSCALLS)
        else:
            mdir.start(machine)
        return machine

    deadline = time.monotonic() + READY_TIMEOUT
    with ThreadPoolExecutor(max_workers=max(1, len(to_start))) as pool:
        for machine in pool.map(boot, to_start):
            done.append(f"started {machine.name}")
    with ThreadPoolExecutor(max_workers=max(1, len(plan.machines))) as pool:
        list(pool.map(lambda m: _wait_ssh(m.mgmt_ip, deadline), plan.machines))

    return {
        "changed": bool(done),
        "actions": done,
        "host_keys": host_keys(plan, state_dir),
        "pids": {m.name: MachineDir(state_dir, m.name).pid() for m in plan.machines},
    }


def host_keys(plan: Plan, state_dir: str) -> dict[str, str]:
    """Each existing machine's SSH host key, for known_hosts."""
    keys = {}
    for machine in plan.machines:
        pub = MachineDir(state_dir, machine.name).root / "etc/ssh/ssh_host_ed25519_key.pub"
        if pub.exists():
            keys[machine.name] = " ".join(pub.read_text().split()[:2])
    return keys


def down(lab: str, state_dir: str) -> dict:
    """Remove everything of this lab: processes, mounts, namespaces, links, files."""
    done: list[str] = []
    names = _machine_dirs(state_dir)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        destroyed = pool.map(lambda n: MachineDir(state_dir, n).destroy(), names)
        done += [f"removed machine {n}" for n, gone in zip(names, destroyed, strict=True) if gone]
    for root in set(find_lab_processes(state_dir).values()):
        MachineDir(state_dir, Path(root).parent.name).destroy()
        done.append(f"stopped orphaned machine {root}")
    for point in mounts_under(state_dir):
        run(["umount", point])
        done.append(f"unmounted {point}")
    done += net.remove(lab)
    if Path(state_dir).exists():
        shutil.rmtree(state_dir)
        done.append(f"removed {state_dir}")
    return {"changed": bool(done), "actions": done}
