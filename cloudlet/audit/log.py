"""The log's files: the append-only log itself, its key, its head and its lock.

How appends stay safe (several ansible-playbook processes may run at once) is
described in the package docstring of ``cloudlet.audit``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudlet.audit.records import (
    _MAX_LINE,
    GENESIS,
    VERSION,
    Event,
    Record,
    _canonical,
    _digest,
    _head_mac,
    _parse_line,
)
from cloudlet.control import control_dir
from cloudlet.errors import AuditError
from cloudlet.formats import write_secret_file

LOG_NAME = "audit.log"
KEY_BYTES = 32


def default_log_path(
    project: str | os.PathLike, environ: Mapping[str, str] | None = None
) -> Path:
    """The log when none is named: ``audit.log`` in the control directory.

    The control directory (``cloudlet.control``) also holds the manifest
    signing key and the delivery records, so a run from a container or an AWX
    job that keeps that one directory keeps the same chain. The callback's
    ``log_path`` option (``$CLOUDLET_AUDIT_LOG``) still wins over this.
    """
    return control_dir(project, environ) / LOG_NAME


def default_key_path(log_path: str | os.PathLike) -> Path:
    return Path(str(log_path) + ".key")


def head_path_for(log_path: str | os.PathLike) -> Path:
    return Path(str(log_path) + ".head")


def _lock_path(log_path: Path) -> Path:
    return Path(str(log_path) + ".lock")


def load_key(path: str | os.PathLike) -> bytes:
    """Read an HMAC key file; refuses one that others could read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise AuditError(
            f"Cannot read the audit key {path}: {exc.strerror}.",
            "Give the key file that was created beside the log (LOGFILE.key).",
        ) from None
    with os.fdopen(fd, "rb") as fh:
        if stat.S_IMODE(os.fstat(fh.fileno()).st_mode) & 0o077:
            raise AuditError(
                f"The audit key {path} is readable or writable by other users.",
                f"Run `chmod 600 {path}`; if others may have read it, start a new log and key.",
            )
        text = fh.read(4 * KEY_BYTES).decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise AuditError(
            f"The audit key {path} is damaged (expected {2 * KEY_BYTES} hex digits).",
            "Restore it from backup; without it the keyed log cannot be verified.",
        )
    return key


def _load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        write_secret_file(path, secrets.token_bytes(KEY_BYTES).hex().encode() + b"\n")
    return load_key(path)


def _read_head(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"Cannot read the audit head {path}: {exc.strerror}.") from None
    try:
        head = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        head = None
    if (
        not isinstance(head, dict)
        or set(head) != {"v", "seq", "hash", "mac"}
        or head["v"] != VERSION
        or type(head["seq"]) is not int
        or not isinstance(head["hash"], str)
        or not isinstance(head["mac"], (str, type(None)))
    ):
        raise AuditError(f"The audit head file {path} is damaged.")
    return head


def _write_head(path: Path, seq: int, last: str, key: bytes | None) -> None:
    head = {"v": VERSION, "seq": seq, "hash": last, "mac": _head_mac(seq, last, key)}
    write_secret_file(path, _canonical(head) + b"\n")


def _last_line(fd: int) -> bytes | None:
    """The last line of the file (with its newline, if it has one), or None if empty."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None
    chunk = b""
    pos = end
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        chunk = os.pread(fd, step, pos) + chunk
        cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
        if cut != -1:
            return chunk[cut + 1 :]
        if len(chunk) > _MAX_LINE:
            break
    return chunk if pos == 0 else chunk[-_MAX_LINE:]


def _now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """An append-only, hash-chained log file (see the ``cloudlet.audit`` docstring).

    ``keyed=True`` (the default) makes the chain an HMAC chain with the key in
    ``key_path``, which defaults to ``LOGFILE.key`` and is created (0600) on
    first use.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        keyed: bool = True,
        key_path: str | os.PathLike | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.keyed = keyed
        self.key_path = (
            Path(os.path.expanduser(str(key_path))) if key_path else default_key_path(self.path)
        )
        self.head_path = head_path_for(self.path)
        self._clock = clock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(_lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(
                f"Cannot open the audit log lock beside {self.path}: {exc.strerror}.",
                "Check the directory exists and is writable by the admin running Ansible.",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _key_for(self, last: Record | None) -> bytes | None:
        """The key to chain with; a new keyed log gets a new key file."""
        if last is not None and last.keyed != self.keyed:
            had, now = ("with", "without") if last.keyed else ("without", "with")
            raise AuditError(
                f"The audit log {self.path} was written {had} a key, but is now opened {now} one.",
                "Keep the keyed setting the log was started with, or move the log aside "
                "to start a new one.",
            )
        if not self.keyed:
            return None
        if last is None:
            return _load_or_create_key(self.key_path)
        return load_key(self.key_path)

    def _tail(self, fd: int) -> tuple[int, str, bytes | None]:
        """Sequence and hash of the last record (checked against the head), and the key."""
        raw = _last_line(fd)
        head = _read_head(self.head_path)
        if raw is None:
            if head is not None:
                raise AuditError(
                    f"The audit log {self.path} is empty but its head file says it held "
                    f"{head['seq']} records: it was truncated."
                )
            return 0, GENESIS, self._key_for(None)
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("the last line is incomplete (a write was cut off)")
            last = _parse_line(raw)
        except ValueError as exc:
            raise AuditError(f"The audit log {self.path} cannot be appended to: {exc}.") from None
        key = self._key_for(last)
        if head is None:
            raise AuditError(
                f"The head file {self.head_path} of the audit log is missing, so lines "
                "removed from the end could go unnoticed. Refusing to append."
            )
        if head["mac"] != _head_mac(head["seq"], head["hash"], key):
            raise AuditError(f"The audit head file {self.head_path} was altered.")
        fresh = head["seq"] == last.seq and head["hash"] == last.hash
        interrupted = head["seq"] == last.seq - 1 and head["hash"] == last.prev
        if not (fresh or interrupted):
            raise AuditError(
                f"The audit log {self.path} ends at record {last.seq}, but its head file "
                f"says record {head['seq']}: lines were removed or replaced."
            )
        return last.seq, last.hash, key

    def append(self, event: Event) -> Record:
        """Add one record; durable (fsynced) when this returns."""
        with self._locked():
            created = not self.path.exists()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise AuditError(
                    f"Cannot open the audit log {self.path}: {exc.strerror}."
                ) from None
            try:
                seq, prev, key = self._tail(fd)
                stamp = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                record = Record(VERSION, seq + 1, stamp, key is not None, prev, **asdict(event))
                record = Record(**{**asdict(record), "hash": _digest(record.body(), key)})
                line = record.line()
                if os.write(fd, line) != len(line):
                    raise OSError(errno.EIO, "short write")
                os.fsync(fd)
            except OSError as exc:
                raise AuditError(
                    f"Cannot write the audit log {self.path}: {exc.strerror}."
                ) from None
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path.parent)
            _write_head(self.head_path, record.seq, record.hash, key)
            return record


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
