"""The integration suite's lab: real machines, built once per session.

It uses its own lab name and subnet, so a lab an admin brought up with
``make demo`` is left alone.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = "itest"
SUBNET = "10.78.0.0/16"
STATE_DIR = f"/var/lib/cloudlet-lab/{LAB}"
# The ceremonies' audit log for this test session (the callback is always on).
AUDIT_LOG = f"/tmp/cloudlet-itest-audit-{os.getpid()}/audit.log"


def pytest_collection_modifyitems(items):
    """Tests marked ``teardown`` run last: they take the session's lab down."""
    items.sort(key=lambda item: item.get_closest_marker("teardown") is not None)


@dataclass
class Lab:
    name: str
    state_dir: str
    inventory: Path

    def playbook(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return playbook("playbooks/lab.yml", *self.extra_vars(), *args, check=check)

    def ansible(self, hosts: str, module: str, args: str, *extra: str):
        """One ad-hoc module run against lab hosts (its failure is returned, not raised)."""
        return subprocess.run(["ansible", hosts, "-i", str(self.inventory), "-m", module,
                               "-a", args, *extra], cwd=ROOT, env=ansible_env(),
                              capture_output=True, text=True, timeout=600, check=False)

    def ceremony(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run playbooks/<name>.yml against this lab, as an admin would."""
        return playbook(f"playbooks/{name}.yml", "-i", str(self.inventory), *args, check=check)

    def extra_vars(self) -> list[str]:
        return ["-e", f"lab_name={self.name}", "-e", f"lab_subnet={SUBNET}",
                "-e", f"lab_inventory_path={self.inventory}"]

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-F", f"{self.state_dir}/ssh_config", host, command],
            capture_output=True, text=True, timeout=120, check=check,
        )

    def address(self, host: str, ifname: str) -> str:
        """The IPv4 address a lab machine has on one of its links, read on the machine."""
        return self.ssh(host, f"ip -4 -o addr show {ifname}").stdout.split()[3].split("/")[0]

    def libvirt_uri(self, host: str) -> str:
        return f"qemu+ssh://{host}/system?command={self.state_dir}/ssh"


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "CLOUDLET_AUDIT_LOG": AUDIT_LOG}


def playbook(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["ansible-playbook", *args], cwd=ROOT, env=ansible_env(), capture_output=True, text=True,
        timeout=1800, check=False,
    )
    if check and proc.returncode != 0:
        fatal = [line for line in proc.stdout.splitlines() if line.startswith("fatal:")]
        pytest.fail(f"ansible-playbook {' '.join(args)} failed:\n" + "\n".join(fatal)
                    + f"\n...\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines into {host: {ok: n, changed: n, ...}}."""
    found = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return found


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    if os.geteuid() != 0:
        pytest.fail("The lab tests need root: they boot machines and create bridges.")
    inventory_dir = tmp_path_factory.mktemp("inventory")
    # The lab inventory's group_vars hold the lab-specific settings.
    (inventory_dir / "group_vars").symlink_to(ROOT / "inventories" / "lab" / "group_vars")
    inventory = inventory_dir / "hosts.yml"
    the_lab = Lab(LAB, STATE_DIR, inventory)
    the_lab.playbook()
    yield the_lab
    the_lab.playbook("-e", "lab_state=absent", check=False)
