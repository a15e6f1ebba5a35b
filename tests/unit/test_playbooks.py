"""playbooks.run_playbook: ansible-runner's events and stats, as data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cloudlet import audit
from cloudlet.playbooks import run_playbook

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("ansible_runner")

BOOK = """
- name: A small ceremony
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Change something
      ansible.builtin.command: "true"
    - name: Keep going past an ignored failure
      ansible.builtin.command: "false"
      ignore_errors: true
    - name: Fail with a reason
      ansible.builtin.fail:
        msg: the code did not match
    - name: Never runs
      ansible.builtin.debug:
        msg: unreachable
"""


def test_a_failed_run_names_its_task_host_and_reason(tmp_path):
    (tmp_path / "book.yml").write_text(BOOK)
    log = tmp_path / "audit.log"
    env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "plugins" / "callback"),
        "CLOUDLET_AUDIT_LOG": str(log),
    }
    args = ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    run = run_playbook("book.yml", args, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 2
    assert [(t.task, t.status) for t in run.tasks] == [
        ("Change something", "changed"),
        ("Keep going past an ignored failure", "failed"),
        ("Fail with a reason", "failed"),
    ]
    (failure,) = run.failures  # the ignored one is not a failure of the run
    assert (failure.host, failure.message) == ("localhost", "the code did not match")
    assert run.explain() == "localhost: Fail with a reason: the code did not match"
    assert run.recap == {
        "localhost": {"ok": 2, "changed": 2, "failed": 1, "unreachable": 0, "skipped": 0,
                      "rescued": 0, "ignored": 1}
    }  # fmt: skip
    assert all(t.seconds >= 0 for t in run.tasks) and run.slowest(1)[0] in run.tasks
    assert "PLAY RECAP" in run.stdout
    # The project's audit callback still records the run under ansible-runner.
    records = log.read_text().splitlines()
    assert len(records) >= 5 and audit.verify(log, audit.load_key(audit.default_key_path(log))).ok
