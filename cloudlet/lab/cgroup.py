"""A cgroup of its own for each lab machine.

With ``--keep-unit`` systemd-nspawn puts the container under the cgroup it was
started in. On a host without systemd that is the same cgroup for every
machine, so the containers' systemds shared one ``payload/system.slice``: a
unit stopping in one machine removed the cgroup a same-named unit was being
started in by another ("Failed at step CGROUP", exit 219), and each tried to
kill the others' processes. Each machine's nspawn is therefore started in a
cgroup of its own, in every hierarchy systemd uses (the named v1 ``systemd``
one and the v2 one), and the cgroup is removed when the machine is.
"""

from __future__ import annotations

import os
from pathlib import Path

from cloudlet.errors import LabError

__all__ = ["machine_cgroups", "remove"]

MOUNTINFO = "/proc/self/mountinfo"
OWN_CGROUPS = "/proc/self/cgroup"


def _hierarchies() -> dict[str, str]:
    """Where the cgroup hierarchies systemd uses are mounted, by /proc/self/cgroup key."""
    found: dict[str, str] = {}
    for line in Path(MOUNTINFO).read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        mountpoint, fstype, options = fields[4], extra[0], extra[2].split(",")
        if fstype == "cgroup2":
            found.setdefault("", mountpoint)
        elif fstype == "cgroup" and "name=systemd" in options:
            found.setdefault("name=systemd", mountpoint)
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup in each hierarchy ('' is the v2 one)."""
    paths = {}
    for line in Path(OWN_CGROUPS).read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path
    return paths


def machine_cgroups(key: str) -> list[Path]:
    """The cgroup directories a machine's nspawn runs in (not created here)."""
    own = _own_paths()
    return [
        Path(mountpoint) / own.get(hierarchy, "/").lstrip("/") / f"cloudlet-lab.{key}"
        for hierarchy, mountpoint in sorted(_hierarchies().items())
    ]


def remove(key: str) -> None:
    """Remove a stopped machine's cgroups, innermost first (they hold no process)."""
    for top in machine_cgroups(key):
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise LabError(f"Cannot remove the cgroup {dirpath}: {exc.strerror}.") from None
