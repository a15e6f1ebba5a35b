"""Thin wrappers over the host commands the lab drives (ip, mount, nspawn)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from cloudlet.errors import LabError

__all__ = ["mounts_under", "require_commands", "run"]

# Host command -> Debian package that provides it, for a clear error.
HOST_COMMANDS = {
    "ip": "iproute2",
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ssh-keygen": "openssh-client",
    "mount": "mount",
    "chroot": "coreutils",
    "nsenter": "util-linux",
}


def require_commands(names: Sequence[str]) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pkgs = sorted({HOST_COMMANDS.get(n, n) for n in missing})
        raise LabError(
            f"The control node lacks {', '.join(missing)}.",
            f"Install the Debian packages {', '.join(pkgs)} (make setup does this).",
        )


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess:
    """Run a command; on failure raise LabError carrying its stderr."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=None if env is None else {**os.environ, **env},
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        require_commands([argv[0]])
        raise
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout} s.") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LabError(f"{' '.join(argv)} failed (exit {proc.returncode}): {' / '.join(detail)}")
    return proc


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount)."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if (point + "/").startswith(prefix):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)
