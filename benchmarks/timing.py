"""What the lab benchmarks share: one playbook run, timed, that stops the benchmark on failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_playbook(name: str, *extra: str) -> float:
    """Wall time of ``ansible-playbook playbooks/<name>.yml``, in seconds."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    start = time.monotonic()
    proc = subprocess.run(["ansible-playbook", f"playbooks/{name}.yml", *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{name}.yml failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-1000:]}")
    return elapsed
