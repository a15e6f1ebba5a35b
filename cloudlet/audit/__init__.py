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
outcomes only, and the builders in ``events`` take no argument through which a
secret could enter. For a ``no_log`` task even the name is taken *before*
templating, because Ansible templates task names and a name may contain a
secret.

Appends are serialised with ``fcntl.flock`` on a lock file (several
ansible-playbook processes may run at once), written with ``O_APPEND`` in one
``write`` and fsynced, and the head is replaced atomically afterwards.

The modules: ``records`` (what a line holds, its encoding and digest),
``events`` (the builders the callback uses), ``log`` (the log, key, head and
lock files), ``verification`` (checking a whole log) and ``cli`` (the command
line behind ``python -m cloudlet.audit``).
"""

from __future__ import annotations

from cloudlet.audit.cli import main
from cloudlet.audit.events import (
    local_user,
    new_run_id,
    playbook_end,
    playbook_start,
    task_is_no_log,
    task_label,
    task_result,
)
from cloudlet.audit.log import (
    LOG_NAME,
    AuditLog,
    default_key_path,
    default_log_path,
    head_path_for,
    load_key,
)
from cloudlet.audit.records import EVENTS, GENESIS, OUTCOMES, Event, Record
from cloudlet.audit.verification import Verification, verify

__all__ = [
    "EVENTS",
    "GENESIS",
    "LOG_NAME",
    "OUTCOMES",
    "AuditLog",
    "Event",
    "Record",
    "Verification",
    "default_key_path",
    "default_log_path",
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
