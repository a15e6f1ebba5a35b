"""What the Manager benchmarks share: a ``python -m cloudlet.manager`` subprocess, started
and waited for as its unit would be."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1, for a Manager to take."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_manager(config: Path, admin_socket: Path, log: Path,
                  preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen:
    """Start a Manager on ``config`` (its output in ``log``) and wait for its admin socket;
    the benchmark stops, with the log, if it does not come up within 30 s."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudlet.manager", "--config", str(config),
             "--log-level", "WARNING"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not admin_socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_manager(proc)
            sys.exit(f"The Manager ({config}) did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


def stop_manager(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)
