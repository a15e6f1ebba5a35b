"""One lab machine: an overlay over the base image, booted by systemd-nspawn.

Layout under ``<state_dir>/machines/<name>/``::

    upper/ work/   the overlay's writable layers (the machine's own changes)
    root/          the merged root the container boots from
    image          the base image key the overlay was made on
    nspawn.pid     the PID of the systemd-nspawn process the lab started
    console.log    what the container printed

A machine is *running* when its PID file names a live systemd-nspawn whose
command line boots exactly this root. Nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

from cloudlet.errors import LabError
from cloudlet.lab import cgroup
from cloudlet.lab.system import mounts_under, run
from cloudlet.lab.topology import Machine

__all__ = ["MachineDir", "find_lab_processes"]

STOP_GRACE = 20.0  # seconds for an orderly poweroff before the hard stop


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _nspawn_root(argv: list[str]) -> str | None:
    if not argv or not argv[0].endswith("systemd-nspawn"):
        return None
    for i, arg in enumerate(argv):
        if arg == "-D" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--directory="):
            return arg.split("=", 1)[1]
    return None


def _container_root(pid: int) -> str | None:
    """The machine root of a container's PID 1, read from its root mount.

    After pivot_root a container's /proc/PID/root reads "/", and once its
    nspawn is gone nothing else ties it to the lab; its root mount still
    names the overlay's upper directory, even after that was deleted.
    """
    if not _is_namespace_init(pid):
        return None
    try:
        mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/" and " - overlay " in line:
            for opt in fields[-1].split(","):
                if opt.startswith("upperdir="):
                    upper = opt.split("=", 1)[1].removesuffix("//deleted")
                    return str(Path(upper).parent / "root")
    return None


def find_lab_processes(state_dir: str) -> dict[int, str]:
    """The lab's processes, each with the machine root it belongs to.

    Those are systemd-nspawn processes booting a root under ``state_dir``, and
    containers (their PID 1) running on such a root: a container whose nspawn
    died hard keeps running on its own, and is the lab's all the same.
    """
    prefix = os.path.realpath(state_dir).rstrip("/") + "/"
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        root = _nspawn_root(_cmdline(pid)) or _container_root(pid)
        if root and (root.rstrip("/") + "/").startswith(prefix):
            found[pid] = root.rstrip("/")
    return found


class MachineDir:
    def __init__(self, state_dir: str, name: str) -> None:
        self.state_dir = state_dir
        self.name = name
        self.base = Path(state_dir) / "machines" / name
        self.root = self.base / "root"
        self.pidfile = self.base / "nspawn.pid"
        self.cgroup_key = f"{Path(state_dir).name}.{name}"

    # -- observation ---------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _nspawn_root(_cmdline(pid)) == str(self.root) else None

    def image_key(self) -> str | None:
        try:
            return (self.base / "image").read_text().strip()
        except OSError:
            return None

    def mounted(self) -> bool:
        return str(self.root) in mounts_under(str(self.base))

    def processes(self) -> list[int]:
        """Every nspawn and container PID 1 on this machine's root, strays included."""
        return [p for p, root in find_lab_processes(self.state_dir).items()
                if root == str(self.root)]

    def running(self, image_key: str) -> bool:
        """Healthy: our nspawn and its container, nothing stray, on this image."""
        pid = self.pid()
        return (
            pid is not None
            and self.mounted()
            and self.image_key() == image_key
            and set(self.processes()) == {pid, *_children(pid)[:1]}
        )

    # -- actions ---------------------------------------------------------
    def prepare(self, image: str, image_key: str, files: dict[str, tuple[str, int]]) -> None:
        """Make a fresh overlay and write the machine's own files into it."""
        self.destroy()
        for sub in ("upper", "work", "root"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "image").write_text(image_key + "\n")
        run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={image},upperdir={self.base / 'upper'},workdir={self.base / 'work'}",
                str(self.root),
            ]
        )
        for rel, (content, mode) in files.items():
            path = self.root / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            os.chmod(path, mode)
        (self.root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        run(["ssh-keygen", "-A", "-f", str(self.root)])  # its own host keys

    def device_nodes(self, devices: tuple[str, ...]) -> tuple[str, ...]:
        """This machine's own nodes for the host's ``devices`` that exist, as nspawn binds.

        The machine owns its copies: what its systemd or libvirt chowns (the host's
        /dev/kvm had taken the containers' kvm group; libvirt gives /dev/userfaultfd
        to QEMU's user) is its node, not the host's."""
        binds = []
        (self.base / "dev").mkdir(exist_ok=True)
        for dev in devices:
            try:
                rdev = os.stat(dev).st_rdev
            except FileNotFoundError:
                continue
            node = self.base / "dev" / Path(dev).name
            node.unlink(missing_ok=True)
            os.mknod(node, 0o600 | stat.S_IFCHR, rdev)
            shutil.copymode(dev, node)
            binds.append(f"{node}:{dev}")
        return tuple(binds)

    def start(self, machine: Machine, devices: tuple[str, ...] = (),
              syscalls: tuple[str, ...] = ()) -> int:
        # nspawn runs *inside* the machine's namespace (nsenter execs it), rather
        # than being handed it with --network-namespace-path: only then is the
        # container's /sys/class/net its own and not the host's, which
        # libvirt and hostapd read. The namespace is private to the machine,
        # so it keeps CAP_NET_ADMIN there.
        argv = [
            "nsenter",
            f"--net=/run/netns/{machine.netns}",
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--boot",
            "--quiet",
            "--console=passive",
            "--capability=CAP_NET_ADMIN",
            f"--machine={self.name}",
            f"--hostname={self.name}",
            "-D",
            str(self.root),
        ]
        argv += [f"--bind={dev}" for dev in devices]
        argv += [f"--system-call-filter={call}" for call in syscalls]
        # A shell joins the machine's own cgroups, then execs nsenter, which
        # execs nspawn: one PID throughout, so the PID file names the nspawn.
        procs = []
        for group in cgroup.machine_cgroups(self.cgroup_key):
            group.mkdir(parents=True, exist_ok=True)
            procs.append(str(group / "cgroup.procs"))
        join = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n-1)); done'
        argv = ["sh", "-ec", f'{join}; exec "$@"', "sh", str(len(procs)), *procs, *argv]
        log = open(self.base / "console.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pidfile.write_text(f"{proc.pid}\n")
        time.sleep(0.2)
        if proc.poll() is not None:
            tail = (self.base / "console.log").read_text(errors="replace").strip()[-500:]
            raise LabError(f"systemd-nspawn for {self.name} exited at once: {tail}")
        return proc.pid

    def stop(self, grace: float = STOP_GRACE) -> bool:
        """Power the container off: orderly first, then hard. True if it ran."""
        mine = self.processes()
        nspawns = [p for p in mine if _nspawn_root(_cmdline(p))]
        for pid in nspawns:
            _terminate(pid, _children(pid), grace)
        # A container whose nspawn is gone: killing its PID 1 ends its namespace.
        orphans = [p for p in mine if p not in nspawns and _alive(p)]
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, 10.0):
                raise LabError(f"The container of {self.name} (PID {pid}) did not stop.")
        return bool(mine)

    def destroy(self) -> bool:
        """Stop, unmount and delete everything of this machine."""
        existed = self.base.exists()
        self.stop()
        for point in mounts_under(str(self.base)):
            run(["umount", point])
        if self.base.exists():
            shutil.rmtree(self.base)
        cgroup.remove(self.cgroup_key)
        return existed


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_namespace_init(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return len(ids) > 1 and ids[-1] == "1"
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; it is reaped by whoever started it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _terminate(pid: int, leaders: list[int], grace: float) -> None:
    # systemd-nspawn turns the first SIGTERM into a poweroff request to the
    # container's systemd, and a second one into an immediate stop. If even
    # that fails, killing the container's PID 1 ends its whole PID namespace.
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, wait):
            return
    for target in (*leaders, pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    if not _wait_gone(pid, 5.0):
        raise LabError(f"systemd-nspawn (PID {pid}) did not stop, even after SIGKILL.")
