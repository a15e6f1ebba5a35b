"""The builders the callback uses to turn Ansible's happenings into events.

None of them takes an argument through which a task's arguments or results
could enter, and task names are chosen so that ``no_log`` tasks leak nothing
(see ``task_label``).
"""

from __future__ import annotations

import getpass
import os
import secrets
from collections.abc import Mapping
from typing import Any

from cloudlet.audit.records import Event


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
