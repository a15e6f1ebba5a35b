"""Running a ceremony's playbook from Python, through ansible-runner.

The tests and benchmarks drive the ceremonies the way AWX does: through
ansible-runner, reading its job events and stats instead of parsing the
console output. A run answers which tasks failed on which host and why, each
task's time, and the per-host recap, as data.

Control node only: ansible-runner is imported when a playbook is run, so
the cloudlets' wheel does not need it.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PlaybookRun", "TaskResult", "run_playbook"]

_STATUS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    status: str  # ok | changed | failed | unreachable | skipped
    seconds: float
    message: str = ""
    ignored: bool = False


@dataclass
class PlaybookRun:
    """One ansible-playbook run: its exit code, output, tasks and recap."""

    playbook: str
    returncode: int
    stdout: str
    seconds: float
    tasks: list[TaskResult] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """{host: {ok, changed, failed, unreachable, skipped, ...}}, as PLAY RECAP shows."""
        names = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
                 "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}  # fmt: skip
        hosts = set().union(*(self.stats.get(k) or {} for k in names))
        return {
            host: {name: (self.stats.get(key) or {}).get(host, 0) for key, name in names.items()}
            for host in sorted(hosts)
        }

    @property
    def failures(self) -> list[TaskResult]:
        return [t for t in self.tasks if t.status in ("failed", "unreachable") and not t.ignored]

    def explain(self) -> str:
        """The failed tasks, one per line: what a test or a benchmark prints when it stops."""
        lines = [f"{t.host}: {t.task}: {t.message}" for t in self.failures]
        return "\n".join(lines) or self.stdout[-3000:]

    def slowest(self, count: int = 5) -> list[TaskResult]:
        return sorted(self.tasks, key=lambda t: t.seconds, reverse=True)[:count]


def _message(result: Mapping) -> str:
    text = result.get("msg") or result.get("stderr") or result.get("reason") or ""
    return str(text).strip()


def _task(event: Mapping) -> TaskResult | None:
    status = _STATUS.get(event.get("event", ""))
    if status is None:
        return None
    data = event.get("event_data", {})
    result = data.get("res") or {}
    if status == "ok" and result.get("changed"):
        status = "changed"
    return TaskResult(
        host=data.get("host", ""),
        task=data.get("task", ""),
        status=status,
        seconds=float(data.get("duration") or 0.0),
        message=_message(result) if status in ("failed", "unreachable") else "",
        ignored=bool(data.get("ignore_errors")),
    )


def run_playbook(
    playbook: str | os.PathLike,
    args: Sequence[str] = (),
    cwd: str | os.PathLike = ".",
    env: Mapping[str, str] | None = None,
    timeout: int | None = None,
) -> PlaybookRun:
    """Run ``ansible-playbook PLAYBOOK ARGS`` in ``cwd`` through ansible-runner."""
    import ansible_runner  # control node only

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cloudlet-run-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(cwd),
            playbook=str(Path(cwd, playbook).resolve()),
            cmdline=shlex.join(args),
            envvars=dict(env or {}),
            timeout=timeout,
            quiet=True,
        )
        tasks = [t for event in runner.events if (t := _task(event))]
        stdout = runner.stdout.read()
        return PlaybookRun(
            playbook=str(playbook),
            returncode=runner.rc,
            stdout=stdout,
            seconds=time.monotonic() - start,
            tasks=tasks,
            stats=runner.stats or {},
        )
