"""What the lab benchmarks share: one playbook run, timed, that stops the benchmark on failure.

Playbooks run through ansible-runner (``cloudlet.playbooks``), so a failure
names its task, host and reason, and each task's time is in the job events.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cloudlet.playbooks import PlaybookRun, run_playbook

ROOT = Path(__file__).resolve().parents[1]


def playbook(name: str, *extra: str) -> PlaybookRun:
    """``ansible-playbook playbooks/<name>.yml``; the benchmark stops if it fails."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "plugins" / "callback")}  # fmt: skip
    run = run_playbook(f"playbooks/{name}.yml", extra, cwd=ROOT, env=env)
    if run.returncode != 0:
        sys.exit(f"{name}.yml failed:\n{run.explain()}")
    return run


def timed_playbook(name: str, *extra: str) -> float:
    """Wall time of ``ansible-playbook playbooks/<name>.yml``, in seconds."""
    return playbook(name, *extra).seconds
