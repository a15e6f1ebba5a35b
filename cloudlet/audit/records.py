"""Audit records: what a line of the log holds, its canonical bytes and its digest.

The encoding is canonical (sorted keys, no spaces, ASCII only) so that a
record has exactly one valid spelling: a line reformatted or edited in any
way, even without changing its meaning, fails to parse back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field
from typing import Any

VERSION = 1
GENESIS = "0" * 64
EVENTS = ("playbook_start", "task", "playbook_end")
OUTCOMES = {
    "playbook_start": ("started",),
    "task": ("ok", "changed", "failed", "skipped", "unreachable"),
    "playbook_end": ("ok", "failed"),
}
MAX_TEXT = 512
_RECORD_TAG = b"cloudlet-audit-record-v1\x00"
_HEAD_TAG = b"cloudlet-audit-head-v1\x00"
_MAX_LINE = 16 * 1024


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
