"""The ceremony audit log: one hash-chained JSON line per playbook event.

Why a chain: after a mission someone must be able to say which ceremonies ran,
as whom, against which cloudlet, and with what outcome, and be sure that nobody
quietly edited that story afterwards. Each record carries the hash of the one
before it, so editing, removing, reordering or inserting a line breaks the
chain at that line. A small "head" file beside the log holds the last sequence
number and hash, so cutting lines off the *end* is caught too.

Why a key: a bare SHA-256 chain only catches accidents and careless edits; who
can edit the file can recompute every hash. With a key (an HMAC key in a 0600
file, created beside the log on first use) the records and the head are MACs,
and an attacker without the key can neither forge a record nor move the head
back to hide removed lines. The verifier must be told out of band whether the
log is keyed; a log whose records say "not keyed" while a key is given fails.

What is never recorded: task arguments and results. A record holds names and
outcomes only, and the builders below take no argument through which a secret
could enter. For a ``no_log`` task even the name is taken *before* templating,
because Ansible templates task names and a name may contain a secret.

Appends are serialised with ``fcntl.flock`` on a lock file (several
ansible-playbook processes may run at once), written with ``O_APPEND`` in one
``write`` and fsynced, and the head is replaced atomically afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import getpass
import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudlet.errors import AuditError, CloudletError
from cloudlet.formats import write_secret_file

__all__ = [
    "DEFAULT_LOG",
    "EVENTS",
    "GENESIS",
    "OUTCOMES",
    "AuditLog",
    "Event",
    "Record",
    "Verification",
    "default_key_path",
    "head_path_for",
    "load_key",
    "local_user",
    "main",
    "new_run_id",
    "playbook_end",
    "playbook_start",
    "task_is_no_log",
    "task_label",
    "task_result",
    "verify",
]

VERSION = 1
DEFAULT_LOG = "~/.local/state/cloudlet/audit.log"
GENESIS = "0" * 64
EVENTS = ("playbook_start", "task", "playbook_end")
OUTCOMES = {
    "playbook_start": ("started",),
    "task": ("ok", "changed", "failed", "skipped", "unreachable"),
    "playbook_end": ("ok", "failed"),
}
MAX_TEXT = 512
KEY_BYTES = 32
_RECORD_TAG = b"cloudlet-audit-record-v1\x00"
_HEAD_TAG = b"cloudlet-audit-head-v1\x00"
_MAX_LINE = 16 * 1024


# --- events and records ------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """What happened, before it gets its place in the chain.

    Only names and outcomes: there is deliberately no field for arguments,
    results or messages, so no code path can put a secret into the log.
    """

    run: str
    event: str
    outcome: str
    local_user: str
    remote_user: str | None = None
    playbook: str | None = None
    host: str | None = None
    task: str | None = None
    ignored: bool = False
    no_log: bool = False

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown audit event {self.event!r}")
        if self.outcome not in OUTCOMES[self.event]:
            raise ValueError(f"outcome {self.outcome!r} is not valid for {self.event}")
        for name in ("run", "local_user", "remote_user", "playbook", "host", "task"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be text")
            if isinstance(value, str) and len(value) > MAX_TEXT:
                object.__setattr__(self, name, value[: MAX_TEXT - 3] + "...")


@dataclass(frozen=True)
class Record:
    """One line of the log: the event plus its place in the chain."""

    v: int
    seq: int
    time: str
    keyed: bool
    prev: str
    run: str
    event: str
    outcome: str
    local_user: str
    remote_user: str | None
    playbook: str | None
    host: str | None
    task: str | None
    ignored: bool
    no_log: bool
    hash: str = field(default="")

    def body(self) -> dict[str, Any]:
        """Everything the hash covers (all fields except the hash itself)."""
        data = asdict(self)
        del data["hash"]
        return data

    def line(self) -> bytes:
        return _canonical(asdict(self)) + b"\n"


_TYPES: dict[str, tuple[type, ...]] = {
    "v": (int,),
    "seq": (int,),
    "time": (str,),
    "keyed": (bool,),
    "prev": (str,),
    "run": (str,),
    "event": (str,),
    "outcome": (str,),
    "local_user": (str,),
    "remote_user": (str, type(None)),
    "playbook": (str, type(None)),
    "host": (str, type(None)),
    "task": (str, type(None)),
    "ignored": (bool,),
    "no_log": (bool,),
    "hash": (str,),
}


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _digest(body: dict[str, Any], key: bytes | None) -> str:
    data = _RECORD_TAG + _canonical(body)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _head_mac(seq: int, last: str, key: bytes | None) -> str | None:
    if key is None:
        return None
    return hmac.new(key, _HEAD_TAG + _canonical({"seq": seq, "hash": last}), "sha256").hexdigest()


def _is_hex64(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _parse_line(raw: bytes) -> Record:
    """Strictly decode one line: exact fields and types, and canonical bytes."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not valid JSON") from None
    if not isinstance(data, dict) or set(data) != set(_TYPES):
        raise ValueError("not an audit record (wrong fields)")
    for name, types in _TYPES.items():
        value = data[name]
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            raise ValueError(f"field {name!r} has the wrong type")
    if data["v"] != VERSION:
        raise ValueError(f"record version {data['v']} is not supported (expected {VERSION})")
    if not (_is_hex64(data["prev"]) and _is_hex64(data["hash"])):
        raise ValueError("prev/hash are not SHA-256 hex digests")
    record = Record(**data)
    if record.line() != raw:
        raise ValueError("not in canonical form (reformatted or edited)")
    return record


# --- builders used by the callback --------------------------------------------


def new_run_id() -> str:
    """A random id that groups the records of one ansible-playbook run."""
    return secrets.token_hex(8)


def local_user() -> str:
    """The login on the control laptop (falls back to the uid)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _truthy(value: Any) -> bool:
    """Ansible booleans may still be strings here; anything unclear counts as true."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    falsy = ("", "no", "false", "off", "0", "n")
    return not (isinstance(value, str) and value.strip().lower() in falsy)


def task_is_no_log(task: Any, result: Mapping[str, Any] | None = None) -> bool:
    """Whether a task result is under ``no_log``; when in doubt, it is.

    The result's ``_ansible_no_log`` is what Ansible itself decided after
    templating; the task attribute is the fallback (it may still be a string).
    """
    if result is not None and result.get("_ansible_no_log"):
        return True
    return _truthy(getattr(task, "no_log", False))


def task_label(task: Any, no_log: bool | None = None) -> str:
    """The name to log for an Ansible task, without leaking templated secrets.

    Ansible templates task names ("Set password for {{ user }}"). For a
    ``no_log`` task the *untemplated* name from the playbook is used instead,
    and when that is not available only the action is logged.
    """
    hidden = _truthy(getattr(task, "no_log", False)) if no_log is None else no_log
    if hidden:
        ds = task.get_ds() if hasattr(task, "get_ds") else None
        raw = ds.get("name") if isinstance(ds, dict) else None
        if isinstance(raw, str) and raw:
            return str(raw)
        action = getattr(task, "action", None)
        return f"({action or 'task'}, name hidden by no_log)"
    name = task.get_name() if hasattr(task, "get_name") else getattr(task, "name", None)
    return str(name) if name else "(unnamed task)"


def playbook_start(run: str, playbook: str, user: str | None = None) -> Event:
    return Event(run, "playbook_start", "started", user or local_user(), playbook=playbook)


def playbook_end(run: str, playbook: str | None, failed: bool, user: str | None = None) -> Event:
    outcome = "failed" if failed else "ok"
    return Event(run, "playbook_end", outcome, user or local_user(), playbook=playbook)


def task_result(
    run: str,
    *,
    playbook: str | None,
    host: str,
    task: str,
    outcome: str,
    remote_user: str | None = None,
    ignored: bool = False,
    no_log: bool = False,
    user: str | None = None,
) -> Event:
    return Event(
        run,
        "task",
        outcome,
        user or local_user(),
        remote_user=remote_user,
        playbook=playbook,
        host=host,
        task=task,
        ignored=ignored,
        no_log=no_log,
    )


# --- files -----------------------------------------------------------------------


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
    """An append-only, hash-chained log file (see the module docstring).

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


# --- verification ------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The verdict on a log: ``line`` is the first bad line (1-based) when not ok."""

    ok: bool
    records: int
    keyed: bool
    line: int | None = None
    reason: str | None = None
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.ok:
            kind = "keyed (HMAC)" if self.keyed else "NOT keyed (plain SHA-256)"
            return f"OK: {self.records} records, chain intact, {kind}."
        return f"BROKEN at line {self.line}: {self.reason}"


def _check_record(raw: bytes, n: int, prev: str, key: bytes | None) -> Record | str:
    """Line ``n`` as a record if it continues the chain, else why it breaks it."""
    if not raw.endswith(b"\n"):
        return "the line is incomplete (a write was cut off, or the file was truncated)"
    try:
        rec = _parse_line(raw)
    except ValueError as exc:
        return f"not a valid audit record: {exc}"
    seq = n
    if rec.keyed != (key is not None):
        if rec.keyed:
            return "the record is keyed; give the key file (--key) to verify it"
        return "the record is not keyed although the log is: it was rewritten without the key"
    if not hmac.compare_digest(rec.hash, _digest(rec.body(), key)):
        return "its hash does not match its content: the line was edited or forged"
    if rec.seq > seq:
        return f"it has sequence {rec.seq} where {seq} was expected: lines were removed or moved"
    if rec.seq < seq:
        return f"it has sequence {rec.seq} where {seq} was expected: a line was inserted or moved"
    if rec.prev != prev:
        return f"it does not chain to line {n - 1}: a line was inserted, removed or replaced"
    return rec


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while raw := fh.readline(_MAX_LINE + 1):
            yield raw


def verify(
    path: str | os.PathLike,
    key: bytes | None = None,
    head_path: str | os.PathLike | None = None,
) -> Verification:
    """Check the whole chain and the head; reports the first bad line.

    ``key`` must be given for a keyed log and omitted for a plain one. Raises
    AuditError only when the files cannot be read at all.
    """
    path = Path(path)
    head_file = Path(head_path) if head_path else head_path_for(path)
    keyed = key is not None
    head = _read_head(head_file)
    if not path.exists():
        if head is None:
            raise AuditError(f"There is no audit log at {path}.", "Check the path.")
        return Verification(False, 0, keyed, 1, "the log file is missing but its head exists")
    n = 0
    prev, before = GENESIS, GENESIS
    try:
        for n, raw in enumerate(_lines(path), start=1):
            checked = _check_record(raw, n, prev, key)
            if isinstance(checked, str):
                return Verification(False, n - 1, keyed, n, checked)
            before, prev = prev, checked.hash
    except OSError as exc:
        raise AuditError(f"Cannot read the audit log {path}: {exc.strerror}.") from None
    if head is None:
        if n == 0:
            return Verification(True, 0, keyed)
        return Verification(
            False,
            n,
            keyed,
            n + 1,
            f"the head file {head_file} is missing: lines removed from the end would go unseen",
        )
    if head["mac"] != _head_mac(head["seq"], head["hash"], key):
        return Verification(False, n, keyed, n + 1, f"the head file {head_file} was altered")
    if head["seq"] > n:
        return Verification(
            False,
            n,
            keyed,
            n + 1,
            f"the log ends after line {n} but its head records {head['seq']} lines: "
            f"lines {n + 1}-{head['seq']} were removed from the end",
        )
    if head["seq"] == n and head["hash"] == prev:
        return Verification(True, n, keyed)
    if head["seq"] == n - 1 and head["hash"] == before:
        note = f"line {n} is not yet in the head file (an append was interrupted)"
        return Verification(True, n, keyed, warnings=(note,))
    bad = min(head["seq"], n) if head["seq"] >= 1 else 1
    return Verification(
        False,
        n,
        keyed,
        bad,
        f"line {bad} does not match the head file (the end of the log was replaced)",
    )


# --- command line --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudlet.audit verify LOGFILE``: 0 = intact, 1 = broken, 2 = cannot check."""
    parser = argparse.ArgumentParser(prog="python -m cloudlet.audit")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="verify a ceremony audit log")
    check.add_argument("logfile")
    check.add_argument("--key", help="HMAC key file (default: LOGFILE.key if it exists)")
    check.add_argument("--no-key", action="store_true", help="the log is not keyed")
    check.add_argument("--head", help="head file (default: LOGFILE.head)")
    args = parser.parse_args(argv)
    try:
        key = None
        if args.key:
            key = load_key(args.key)
        elif not args.no_key and default_key_path(args.logfile).exists():
            key = load_key(default_key_path(args.logfile))
        result = verify(args.logfile, key, args.head)
    except CloudletError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    print(result)
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if result.ok and not result.keyed:
        print(
            "warning: the chain is not keyed; anyone who can edit the file can rewrite it.",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
