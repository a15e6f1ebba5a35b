"""The integration suite's lab: real machines, built once per session.

It uses its own lab name and subnet, so a lab an admin brought up with
``make demo`` is left alone. Playbooks run through ansible-runner
(``cloudlet.playbooks``): a failure names its task, host and reason from the
job events, and recaps come from the job stats.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudlet.playbooks import PlaybookRun, run_playbook

ROOT = Path(__file__).resolve().parents[2]
# $CLOUDLET_ITEST_LAB / $CLOUDLET_ITEST_SUBNET give a session a lab of its own
# (two engineers on one machine).
LAB = os.environ.get("CLOUDLET_ITEST_LAB", "itest")
SUBNET = os.environ.get("CLOUDLET_ITEST_SUBNET", "10.78.0.0/16")
STATE_DIR = f"/var/lib/cloudlet-lab/{LAB}"
# The control node's state for this test session: the manifest signing key and
# the delivery records (cloudlet_control_dir), and the ceremonies' audit log
# (the callback is always on), so the checkout's own control/ is left alone.
CONTROL_DIR = Path(f"/tmp/cloudlet-itest-control-{os.getpid()}")
AUDIT_LOG = f"{CONTROL_DIR}/audit.log"


# The lab's machines: the two cloudlets and two devices of make demo's lab, and
# a third cloudlet after them (so the others keep their addresses), set up like
# the others and never paired: what the pairing and migration tests refuse.
CLOUDLETS = ("cloudlet-a", "cloudlet-b", "cloudlet-c")
DEVICES = ("device-1", "device-2")
MACHINES = [{"name": "cloudlet-a", "role": "cloudlet"}, {"name": "cloudlet-b", "role": "cloudlet"},
            *({"name": d, "role": "device", "home": "cloudlet-a"} for d in DEVICES),
            {"name": "cloudlet-c", "role": "cloudlet"}]

# The modules that share the session's lab, in the order the ceremonies
# happen: the lab itself, then setup and delivery (the first checks run on
# fresh cloudlets), device pairing, cloudlet pairing (it starts unpaired) and
# the migration (it leaves the SVM on cloudlet-b). Others run after them.
LAB_ORDER = ("test_lab", "test_setup_delivery", "test_pair_device", "test_pair_cloudlets",
             "test_migrate")


def pytest_collection_modifyitems(items):
    """Lab modules in ceremony order; ``teardown`` tests last (they take the lab down)."""
    def key(item):
        module = item.module.__name__.rpartition(".")[2]
        order = LAB_ORDER.index(module) if module in LAB_ORDER else len(LAB_ORDER)
        return item.get_closest_marker("teardown") is not None, order

    items.sort(key=key)


@dataclass
class Lab:
    name: str
    state_dir: str
    inventory: Path

    def playbook(self, *args: str, check: bool = True) -> PlaybookRun:
        return playbook("playbooks/lab.yml", *self.extra_vars(), *args, check=check)

    def ansible(self, hosts: str, module: str, args: str, *extra: str):
        """One ad-hoc module run against lab hosts (its failure is returned, not raised)."""
        return subprocess.run(["ansible", hosts, "-i", str(self.inventory), "-m", module,
                               "-a", args, *extra], cwd=ROOT, env=ansible_env(),
                              capture_output=True, text=True, timeout=600, check=False)

    def ceremony(self, name: str, *args: str, check: bool = True) -> PlaybookRun:
        """Run playbooks/<name>.yml against this lab, as an admin would."""
        return playbook(f"playbooks/{name}.yml", "-i", str(self.inventory), *args, check=check)

    def extra_vars(self) -> list[str]:
        return ["-e", f"lab_name={self.name}", "-e", f"lab_subnet={SUBNET}",
                "-e", f"lab_inventory_path={self.inventory}",
                "-e", json.dumps({"lab_machines": MACHINES})]

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-F", f"{self.state_dir}/ssh_config", host, command],
            capture_output=True, text=True, timeout=120, check=check,
        )

    def host_port(self, host: str, ifname: str) -> str:
        """The host end of a machine's veth, where a capture sees that machine's traffic
        (a capture on the bridge misses the unicast it forwards)."""
        peer = json.loads(self.ssh(host, f"ip -j link show dev {ifname}").stdout)[0]["link_index"]
        links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True,
                                          check=True).stdout)
        return next(link["ifname"] for link in links
                    if link["ifindex"] == peer and link.get("master", "").startswith(self.name))

    def address(self, host: str, ifname: str) -> str:
        """The IPv4 address a lab machine has on one of its links, read on the machine."""
        return self.ssh(host, f"ip -4 -o addr show {ifname}").stdout.split()[3].split("/")[0]

    def libvirt_uri(self, host: str) -> str:
        return f"qemu+ssh://{host}/system?command={self.state_dir}/ssh"


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            # ansible-runner adds its own callback directory: name ours here too.
            "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "plugins" / "callback"),
            "CLOUDLET_CONTROL_DIR": str(CONTROL_DIR), "CLOUDLET_AUDIT_LOG": AUDIT_LOG}


def playbook(book: str, *args: str, check: bool = True) -> PlaybookRun:
    run = run_playbook(book, args, cwd=ROOT, env=ansible_env(), timeout=1800)
    if check and run.returncode != 0:
        pytest.fail(f"ansible-playbook {book} {' '.join(args)} failed:\n{run.explain()}")
    return run


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
