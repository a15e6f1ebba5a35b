"""The execution environment definition: ansible-builder makes its build context.

Building the image needs a container engine; the context (Containerfile,
the cloudlet wheel, the pins) is what can be checked here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / ".venv" / "bin" / "ansible-builder"

pytestmark = pytest.mark.skipif(not BUILDER.exists(), reason="ansible-builder not in venv")


def _pins() -> dict[str, str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups() for line in lines
                if re.match(r"[A-Za-z0-9_.-]+==", line))  # fmt: skip


def test_the_ee_runs_the_control_nodes_ansible():
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    pins = _pins()
    assert (
        ee["dependencies"]["ansible_core"]["package_pip"] == f"ansible-core=={pins['ansible-core']}"
    )
    assert (
        ee["dependencies"]["ansible_runner"]["package_pip"]
        == f"ansible-runner=={pins['ansible-runner']}"
    )


def test_ansible_builder_creates_the_build_context(tmp_path):
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-ee-context"), str(tmp_path / "ee")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    context = tmp_path / "ee" / "context"
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-core==" in containerfile and "cloudlet-wheels" in containerfile
    (wheel,) = (context / "_build" / "wheels").glob("cloudlet-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    pins = (context / "_build" / "wheels" / "pins.txt").read_text()
    assert "aiohttp==" in pins and "cryptography==" in pins
