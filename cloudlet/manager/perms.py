"""Permission bits the Manager insists on for what it keeps on disk.

A mode given at creation (``os.open(..., 0o600)``, ``mkdir(mode=0o700)``)
says nothing about a file or directory that already exists: one restored
from a backup, left by an older release or made by hand keeps whatever mode
it had, and SQLite creates its -wal and -shm files with the database's mode.
So the Manager sets the modes of what it opens every time it opens it, and
refuses to run when it cannot.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloudlet.errors import ConfigError, StorageError

__all__ = ["ensure_mode", "private_dir"]


def ensure_mode(path: Path, mode: int, what: str) -> bool:
    """Give ``path`` exactly the permission bits ``mode``; False if it does not exist.

    Raises StorageError when the mode cannot be set (not the owner, a
    read-only file system) or does not hold (a file system without Unix
    modes): a file the Manager cannot keep private is not used.
    """
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
        if current != mode:
            os.chmod(path, mode)
            current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(
            f"Cannot make the {what} {path} mode {mode:o}: {exc.strerror}.",
            f"Run the Manager as the owner of {path}, or fix it by hand: chmod {mode:o} {path}",
        ) from exc
    if current != mode:
        raise StorageError(
            f"The {what} {path} stays mode {current:o} after chmod {mode:o}.",
            "Keep the Manager's files on a file system with Unix permissions.",
        )
    return True


def private_dir(path: Path, own: str, what: str) -> None:
    """Make the directory ``path`` mode 0700, if it holds nothing but ``own``.

    Tightening a directory that other things live in (``/run``, ``/tmp``)
    would lock them out, so that is refused instead: the directory must be
    the Manager's own.
    """
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        others = sorted(p.name for p in path.iterdir() if p.name != own)
    except OSError as exc:
        raise StorageError(f"Cannot read the {what} directory {path}: {exc.strerror}.") from exc
    if current == 0o700:
        return
    if others:
        raise ConfigError(
            f"The {what} directory {path} is mode {current:o} and also holds "
            f"{', '.join(others[:3])}; it is not the Manager's own, so it cannot be made 0700.",
            "Put the admin socket in a directory of its own, e.g. "
            "admin_socket = /run/cloudlet-manager/admin.sock.",
        )
    ensure_mode(path, 0o700, f"{what} directory")
