# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
name: cloudlet_audit
type: aggregate
short_description: Record every ceremony in the hash-chained cloudlet audit log
description:
  - Appends one record per event to the ceremony audit log on the control
    laptop, when a playbook starts, for every task result on every host, and
    when the playbook ends.
  - Each record holds the sequence number, UTC time, the local user and the
    Ansible remote user, the playbook, the host, the task name and the outcome
    (ok, changed, failed, skipped, unreachable), chained to the record before
    it by SHA-256 or, by default, an HMAC with a key kept beside the log.
  - Task arguments and results are never recorded. For tasks with C(no_log) the
    untemplated task name from the playbook is recorded, not the templated one.
  - Check the log with C(python -m cloudlet.audit verify LOGFILE).
  - The work is done by the C(cloudlet) Python package (C(cloudlet.audit)),
    which must be importable by the Python that runs C(ansible-playbook).
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
requirements:
  - cloudlet (this project's package)
  - enable in ansible.cfg (C(callbacks_enabled = cloudlet_audit)) or with
    E(ANSIBLE_CALLBACKS_ENABLED=cloudlet_audit)
options:
  log_path:
    description:
      - The audit log file. Its directory is created (mode C(0700)) if needed.
      - A lock file (V(.lock)), the head file (V(.head)) and, for a keyed log,
        the key (V(.key)) sit beside it.
      - When not set, C(audit.log) in the control directory - E(CLOUDLET_CONTROL_DIR)
        if set, else C(control/) in the project checkout (the parent of this
        plugin's C(plugins/) directory). The manifest signing key and the
        delivery records live there too (role default C(cloudlet_control_dir)),
        so a run from a container or an AWX job given that directory continues
        the same chain.
    type: path
    env:
      - name: CLOUDLET_AUDIT_LOG
    ini:
      - section: cloudlet_audit
        key: log_path
  keyed:
    description:
      - Chain the records with an HMAC key instead of a bare SHA-256, so that
        someone who can edit the log cannot recompute the chain.
      - Keep the same setting for the life of a log.
    type: bool
    default: true
    env:
      - name: CLOUDLET_AUDIT_KEYED
    ini:
      - section: cloudlet_audit
        key: keyed
  key_path:
    description:
      - The HMAC key file (mode C(0600)); created on first use.
      - Defaults to the log path with V(.key) appended.
    type: path
    env:
      - name: CLOUDLET_AUDIT_KEY
    ini:
      - section: cloudlet_audit
        key: key_path
notes:
  - If the log cannot be written (for example because it failed its own checks)
    every failed append is shown as an error, and the playbook goes on.
"""

import os
import traceback
from pathlib import Path

from ansible.plugins.callback import CallbackBase

try:
    from cloudlet import audit
    from cloudlet.errors import CloudletError
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None

# plugins/callback/<this file>: the project checkout is two levels up.
PROJECT = Path(__file__).resolve().parents[2]


class CallbackModule(CallbackBase):
    """Shim over cloudlet.audit: turns Ansible events into audit events."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cloudlet_audit"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._log = None
        self._run = None
        self._playbook = None
        self._play = None
        self._users = {}

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        if not HAS_CLOUDLET:
            self._display.error(
                "cloudlet_audit: the cloudlet package cannot be imported, so this "
                "ceremony is NOT being recorded. Install it for the Python that runs "
                f"ansible-playbook.\n{CLOUDLET_IMPORT_ERROR}"
            )
            self.disabled = True
            return
        self._log = audit.AuditLog(
            self.get_option("log_path") or audit.default_log_path(PROJECT),
            keyed=self.get_option("keyed"),
            key_path=self.get_option("key_path"),
        )
        self._run = audit.new_run_id()

    def _append(self, event):
        if self._log is None:
            return
        try:
            self._log.append(event)
        except CloudletError as exc:
            self._display.error(f"cloudlet_audit: this event was NOT recorded: {exc}")

    def _remote_user(self, result):
        """The configured remote user (task, host vars, play), cached per host and play."""
        host = result.host.get_name()
        task_user = getattr(result.task, "remote_user", None)
        if task_user:
            return str(task_user)
        if host not in self._users:
            self._users[host] = self._configured_user(result)
        return self._users[host]

    def _configured_user(self, result):
        play = self._play
        hostvars = {}
        if play is not None:
            try:
                hostvars = play.get_variable_manager().get_vars(
                    play=play, host=result.host, task=result.task
                )
            except Exception:  # noqa: BLE001 - best effort; the record says None
                hostvars = {}
        for name in ("ansible_user", "ansible_ssh_user", "ansible_remote_user"):
            if hostvars.get(name):
                return str(hostvars[name])
        if play is not None and play.remote_user:
            return str(play.remote_user)
        connection = hostvars.get("ansible_connection") or getattr(play, "connection", None)
        if connection == "local":
            return audit.local_user()
        return None

    def _task(self, result, outcome, ignored=False):
        no_log = audit.task_is_no_log(result.task, result.result)
        self._append(
            audit.task_result(
                self._run,
                playbook=self._playbook,
                host=result.host.get_name(),
                task=audit.task_label(result.task, no_log),
                outcome=outcome,
                remote_user=self._remote_user(result),
                ignored=ignored,
                no_log=no_log,
            )
        )

    def v2_playbook_on_start(self, playbook):
        name = getattr(playbook, "_file_name", None)
        self._playbook = os.path.abspath(name) if name else None
        self._append(audit.playbook_start(self._run, self._playbook or "(unknown)"))

    def v2_playbook_on_play_start(self, play):
        self._play = play
        self._users = {}

    def v2_runner_on_ok(self, result):
        self._task(result, "changed" if result.result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task(result, "failed", ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result):
        self._task(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._task(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        failed = any(
            stats.summarize(host)["failures"] or stats.summarize(host)["unreachable"]
            for host in stats.processed
        )
        self._append(audit.playbook_end(self._run, self._playbook, failed))
