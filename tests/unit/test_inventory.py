"""Inventories: a broken one fails the run; the lab's and the field example's parse.

These run ansible-playbook for real with the project's ansible.cfg, on
``--list-hosts`` or on an inventory that fails to parse, so no host is
contacted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = ROOT / ".venv" / "bin" / "ansible-playbook"

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook not in venv")


def _playbook(tmp_path: Path, inventory: Path, playbook: str, *args: str):
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        CLOUDLET_AUDIT_LOG=str(tmp_path / "audit.log"),
    )
    cmd = [str(PLAYBOOK_BIN), "-i", str(inventory), str(ROOT / "playbooks" / playbook), *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_an_inventory_with_a_syntax_error_fails_setup(tmp_path):
    inventory = tmp_path / "convoy"
    shutil.copytree(ROOT / "inventories" / "field-example", inventory)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("cloudlet-bravo:", "cloudlet-bravo: [", 1))
    proc = _playbook(tmp_path, inventory, "setup.yml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "hosts.yml" in out and "No inventory was parsed" in out
    assert "PLAY RECAP" not in out  # nothing ran


def test_the_lab_inventory_parses_before_the_first_bring_up(tmp_path):
    inventory = tmp_path / "lab"
    shutil.copytree(
        ROOT / "inventories" / "lab", inventory, ignore=shutil.ignore_patterns("hosts.yml")
    )
    proc = _playbook(tmp_path, inventory, "lab.yml", "--list-hosts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hosts (0)" in proc.stdout  # the lab's machines do not exist yet


def test_smoke_runs_on_the_field_examples_hosts(tmp_path):
    proc = _playbook(tmp_path, ROOT / "inventories" / "field-example", "smoke.yml", "--list-hosts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = {line.strip() for line in proc.stdout.splitlines()}
    assert {"cloudlet-alpha", "cloudlet-bravo", "handheld-01"} <= listed
