"""The cloudlet_audit callback, run by a real ansible-playbook against localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudlet import audit

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")
SECRET = "Zebra-Quartz-7781-do-not-log"

PLAYBOOK = """\
- name: Audit callback test
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    test_secret: "{{ lookup('ansible.builtin.env', 'TEST_SECRET') }}"
  tasks:
    - name: Say hello
      ansible.builtin.debug:
        msg: hello

    - name: Store the secret {{ test_secret }}
      ansible.builtin.set_fact:
        stored_secret: "{{ test_secret }}"
        literal: "SECRET_ARG_PLACEHOLDER"
      no_log: true

    - name: Fail on purpose
      ansible.builtin.fail:
        msg: expected failure
      ignore_errors: true

    - name: Never runs
      ansible.builtin.debug:
        msg: skipped
      when: false
"""

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook not in venv")


def _run(tmp_path: Path, log: Path | None, **more_env: str) -> subprocess.CompletedProcess:
    """The playbook, recorded in ``log`` (None: where the callback puts it by default)."""
    book = tmp_path / "ceremony.yml"
    book.write_text(PLAYBOOK.replace("SECRET_ARG_PLACEHOLDER", SECRET))
    outer = {k: v for k, v in os.environ.items()
             if k not in ("CLOUDLET_AUDIT_LOG", "CLOUDLET_CONTROL_DIR")}  # fmt: skip
    env = dict(
        outer,
        ANSIBLE_CALLBACKS_ENABLED="cloudlet_audit",
        ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "plugins" / "callback"),
        ANSIBLE_CONFIG=str(tmp_path / "none.cfg"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOWS="1",
        TEST_SECRET=SECRET,
        **({} if log is None else {"CLOUDLET_AUDIT_LOG": str(log)}),
        **more_env,
    )
    cmd = [
        str(PLAYBOOK_BIN),
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(book),
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_real_playbook_is_recorded(tmp_path):
    log = tmp_path / "state" / "audit.log"
    proc = _run(tmp_path, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT recorded" not in proc.stdout + proc.stderr

    key = audit.load_key(audit.default_key_path(log))
    result = audit.verify(log, key)
    assert result.ok and not result.warnings, result

    records = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [(r["event"], r["task"], r["outcome"]) for r in records]
    assert seen == [
        ("playbook_start", None, "started"),
        ("task", "Say hello", "ok"),
        ("task", "Store the secret {{ test_secret }}", "ok"),
        ("task", "Fail on purpose", "failed"),
        ("task", "Never runs", "skipped"),
        ("playbook_end", None, "ok"),
    ]
    by_task = {r["task"]: r for r in records if r["event"] == "task"}
    assert by_task["Store the secret {{ test_secret }}"]["no_log"] is True
    assert by_task["Fail on purpose"]["ignored"] is True
    assert by_task["Say hello"]["no_log"] is False
    assert {r["host"] for r in by_task.values()} == {"localhost"}
    assert {r["remote_user"] for r in by_task.values()} == {audit.local_user()}
    assert {r["playbook"] for r in records} == {str(tmp_path / "ceremony.yml")}
    assert len({r["run"] for r in records}) == 1

    for path in (log, audit.head_path_for(log)):
        assert SECRET.encode() not in path.read_bytes(), f"secret leaked into {path}"

    # A second ceremony continues the same chain.
    assert _run(tmp_path, log).returncode == 0
    again = audit.verify(log, key)
    assert again.ok and again.records == 12
    assert SECRET.encode() not in log.read_bytes()


def test_by_default_the_log_is_in_the_control_dir_and_the_log_path_still_wins(tmp_path):
    """CLOUDLET_CONTROL_DIR moves the log with the signing key and the records."""
    control = tmp_path / "persistent" / "control"
    proc = _run(tmp_path, None, CLOUDLET_CONTROL_DIR=str(control))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = control / "audit.log"
    assert audit.verify(log, audit.load_key(audit.default_key_path(log))).records == 6
    assert (control.stat().st_mode & 0o777) == 0o700

    named = tmp_path / "named" / "audit.log"
    assert _run(tmp_path, named, CLOUDLET_CONTROL_DIR=str(control)).returncode == 0
    assert audit.verify(named, audit.load_key(audit.default_key_path(named))).records == 6
    assert audit.verify(log, audit.load_key(audit.default_key_path(log))).records == 6
