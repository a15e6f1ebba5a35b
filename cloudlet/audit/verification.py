"""Checking a whole log: the chain line by line, then the head.

The verdict names the first bad line and why, so that whoever reads it knows
where the story stops being trustworthy.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloudlet.audit.log import _read_head, head_path_for
from cloudlet.audit.records import _MAX_LINE, GENESIS, Record, _digest, _head_mac, _parse_line
from cloudlet.errors import AuditError


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
