"""The lab's base image: one cached Debian 12 root filesystem for every machine.

The cache key is a digest of everything that shapes the image (suite, mirror,
package list, and the configuration script below), so a change to any of them
is a cache miss and a rebuild, and an unchanged recipe is a hit. An image is
built in a scratch directory and renamed into place only when complete, so an
interrupted build never poisons the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from cloudlet.debian import host_mirror
from cloudlet.lab.system import mounts_under, run

__all__ = ["BACKPORTS", "BASE_PACKAGES", "EXTRA_PACKAGES", "build", "cache_key", "host_mirror"]

# debootstrap's resolver handles only simple dependencies; it gets the init
# system, the rest is installed with apt inside the chroot.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "libpam-systemd")
EXTRA_PACKAGES = (
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-apt",
    "python3-libvirt",
    "sudo",
    "ca-certificates",
    "openssl",
    "iproute2",
    "iputils-ping",
    "nftables",
    "procps",
    "curl",
    "qemu-system-x86",
    "qemu-utils",
    "libvirt-daemon-system",
    "libvirt-clients",
    "hostapd",
    "wpasupplicant",
    "dnsmasq-base",
)
# Of those, the packages (apt patterns) pinned to the suite's backports, so
# that apt takes them and their exact-version dependencies from there: Debian
# 12's QEMU 7.2 under TCG corrupts a guest that is sent traffic while it is
# live-migrated, QEMU 10.0 does not; libvirt 9.0 cannot ask QEMU for multifd
# compression, 11.3 can (docs/migration.md).
BACKPORTS = ("qemu-*", "libvirt*", "seabios")

# Runs inside the chroot after the packages are in. Part of the cache key.
CONFIGURE = r"""
set -eu
# libvirt in a container: the cgroup filesystem is read-only (DESIGN.md §6).
printf '\ncgroup_controllers = [ ]\n' >> /etc/libvirt/qemu.conf
# A machine has its own network namespace, so its /proc/sys/net is its own, as
# on a real host (nspawn, started inside the namespace, mounts /proc/sys
# read-only): made writable at boot, then the net.* sysctl.d settings applied.
cat > /etc/systemd/system/lab-sysctl-net.service <<'UNIT'
[Unit]
Description=Writable /proc/sys/net (the machine's own network namespace)
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind /proc/sys/net /proc/sys/net
ExecStart=/bin/mount -o remount,bind,rw /proc/sys/net
ExecStart=/usr/lib/systemd/systemd-sysctl --prefix=/net/

[Install]
WantedBy=sysinit.target
UNIT
systemctl enable lab-sysctl-net.service
# Two daemons must not share a host UUID, or migration refuses; each machine
# gets its own machine-id at bring-up.
printf '\nhost_uuid_source = "machine-id"\n' >> /etc/libvirt/libvirtd.conf
# Lab machines stop in seconds: no waiting on guests at shutdown, and no
# default NAT network (the roles create the networks they need).
systemctl mask libvirt-guests.service
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
# Key-only root login; host keys and machine-id are made per machine.
printf 'PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n' \
    > /etc/ssh/sshd_config.d/lab.conf
rm -f /etc/ssh/ssh_host_*
systemctl enable ssh.service
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# No route out, no resolver out: names come from /etc/hosts.
: > /etc/resolv.conf
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
"""

def cache_key(suite: str, mirror: str, packages: tuple[str, ...] = EXTRA_PACKAGES) -> str:
    recipe = json.dumps(
        {
            "suite": suite,
            "mirror": mirror,
            "base": BASE_PACKAGES,
            "packages": sorted(packages),
            "backports": BACKPORTS,
            "configure": CONFIGURE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def backports_pin(suite: str) -> str:
    """The apt preferences that take BACKPORTS from the suite's backports."""
    return (f"Package: {' '.join(BACKPORTS)}\nPin: release n={suite}-backports\n"
            "Pin-Priority: 990\n")


def install_command(packages: tuple[str, ...]) -> str:
    return ("apt-get update -q && apt-get install -y -q --no-install-recommends "
            + " ".join(packages))


def image_path(cache_dir: str, key: str) -> Path:
    return Path(cache_dir) / key / "rootfs"


def is_cached(cache_dir: str, key: str) -> bool:
    return (Path(cache_dir) / key / "complete").exists()


def _chroot(root: Path, script: str) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    run(["mount", "-t", "proc", "proc", str(root / "proc")])
    try:
        run(["chroot", str(root), "sh", "-c", script], env=env, timeout=1800)
    finally:
        for point in mounts_under(str(root)):
            run(["umount", point], check=False)


def _lower_dirs() -> list[str]:
    """The lower directories of every overlay mounted on the host."""
    lowers = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            if " - overlay " in line:
                opts = line.rsplit(" ", 1)[-1]
                lowers += [o.split("=", 1)[1] for o in opts.split(",") if o.startswith("lowerdir=")]
    return lowers


def build(
    cache_dir: str, suite: str, mirror: str, packages: tuple[str, ...] = EXTRA_PACKAGES
) -> dict:
    """Return the cached image for this recipe, building it on a miss."""
    key = cache_key(suite, mirror, packages)
    final = image_path(cache_dir, key)
    if is_cached(cache_dir, key):
        return {"key": key, "path": str(final), "built": False, "seconds": 0.0}

    start = time.monotonic()
    scratch = Path(cache_dir) / f".build-{key}-{os.getpid()}"
    root = scratch / "rootfs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                suite,
                str(root),
                mirror,
            ],
            timeout=1800,
        )
        Path(root, "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        os.chmod(root / "usr/sbin/policy-rc.d", 0o755)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        Path(root, "etc/apt/sources.list.d/backports.list").write_text(
            f"deb {mirror} {suite}-backports main\n"
        )
        Path(root, "etc/apt/preferences.d/backports.pref").write_text(backports_pin(suite))
        _chroot(root, install_command(packages))
        _chroot(root, CONFIGURE)
        (scratch / "recipe.json").write_text(
            json.dumps({"suite": suite, "mirror": mirror, "packages": list(packages),
                        "backports": list(BACKPORTS)}, indent=1)
        )
        (scratch / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        if final.parent.exists():
            shutil.rmtree(final.parent)
        os.rename(scratch, final.parent)
    finally:
        for point in mounts_under(str(scratch)):
            run(["umount", point], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "key": key,
        "path": str(final),
        "built": True,
        "seconds": round(time.monotonic() - start, 1),
    }


def prune(cache_dir: str, keep: str) -> list[str]:
    """Remove cached images other than ``keep``, unless a machine still has one mounted."""
    removed = []
    base = Path(cache_dir)
    if not base.is_dir():
        return removed
    in_use = _lower_dirs()
    for entry in base.iterdir():
        if entry.name == keep or not entry.is_dir():
            continue
        if any(lower.startswith(str(entry) + "/") for lower in in_use):
            continue
        shutil.rmtree(entry)
        removed.append(entry.name)
    return removed
