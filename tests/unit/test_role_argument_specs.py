"""Ansible checks a role's variables against its meta/argument_specs.yml when the role starts.

A real ansible-playbook (the venv's, with this checkout's ansible.cfg) runs
against localhost with a local connection, no facts and --check. The
validation is the role's first task: a wrong value fails it, and the play
stops before any task of the role runs. The audit log that ansible.cfg enables
records every task that ran, so it shows what did.

The ceremonies' playbooks pass the validation with what the lab inventory (as
the lab role's template writes it), its group_vars, the playbooks and the
command line (strings) give the roles: run with a tag no task has, only the
validation tasks (tagged always) run, and nothing reaches a machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from cloudlet.lab import topology

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")
VALIDATION = "Validating arguments against arg spec"
ONLY_VALIDATION = ["--tags", "no-task-has-this-tag"]
# key=value extra vars are strings: numbers and booleans from the command line pass.
COMMAND_LINE = [
    "-e", "cloudlet_manager_port=8443", "-e", "cloudlet_libvirt_tls_port=16514",
    "-e", "cloudlet_pki_ca_days=3650", "-e", "cloudlet_libvirt_ip_forward=yes",
]

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook not in venv")


def ansible_playbook(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list]:
    """Run ansible-playbook in check mode; return it and the tasks the audit log recorded."""
    log = tmp_path / "audit" / "audit.log"
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        CLOUDLET_AUDIT_LOG=str(log),
    )
    proc = subprocess.run(
        [str(PLAYBOOK_BIN), "--check", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    tasks = [(r["host"], r["task"], r["outcome"]) for r in records if r["event"] == "task"]
    return proc, tasks


def failed_result(stdout: str) -> dict:
    """The result of the task that failed, as the default callback prints it."""
    marker = "FAILED! => "
    lines = [line for line in stdout.splitlines() if marker in line]
    assert len(lines) == 1, stdout
    return json.loads(lines[0].split(marker, 1)[1])


def short_description(role: str, entry_point: str) -> str:
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"][entry_point]["short_description"]


# Every cloudlet role depends on cloudlet_common: its validation runs first.
COMMON_VALIDATION = (
    f"cloudlet_common : {VALIDATION} 'main' - {short_description('cloudlet_common', 'main')}"
)


# role, entry point, its variables as a play passes them, what the error must say
WRONG = [
    pytest.param(
        "cloudlet_base", "main", {"cloudlet_base_apt_update": "sometimes"},
        ["argument 'cloudlet_base_apt_update' is of type str",
         "unable to convert to bool"],
        id="wrong-type",
    ),
    pytest.param(
        "lab", "main", {"lab_state": "sideways"},
        ["value of lab_state must be one of: present, absent, got: sideways"],
        id="not-a-choice",
    ),
    pytest.param(
        "lab", "main", {"lab_machines": [{"name": "cloudlet-a"}]},
        ["missing required arguments: role found in lab_machines"],
        id="missing-required-key",
    ),
    pytest.param(
        "cloudlet_delivery", "seal", {"cloudlet_delivery_roots": {"etc": "/etc/cloudlet"}},
        ["argument 'cloudlet_delivery_roots' is of type dict", "unable to convert to list"],
        id="seal-entry-point",
    ),
]


@pytest.mark.parametrize(("role", "entry_point", "variables", "errors"), WRONG)
def test_a_wrong_variable_fails_the_role_before_any_of_its_tasks(
    tmp_path, role, entry_point, variables, errors
):
    play = [{
        "name": "Apply a role with a wrong variable",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [{
            "name": "Apply the role",
            "ansible.builtin.import_role": {"name": role, "tasks_from": entry_point},
            "vars": variables,
        }],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc, tasks = ansible_playbook(tmp_path, "-i", "localhost,", "play.yml")

    assert proc.returncode == 2, proc.stdout + proc.stderr
    validation = (
        f"{role} : {VALIDATION} '{entry_point}' - {short_description(role, entry_point)}"
    )
    # The role's validation is the only task of it that ran, and it failed. Before
    # it, only the validation of its dependency cloudlet_common (the shared facts).
    before = [] if role == "lab" else [("localhost", COMMON_VALIDATION, "ok")]
    assert tasks == [*before, ("localhost", validation, "failed")], proc.stdout
    assert f"ok={len(before)} " in proc.stdout and "failed=1 " in proc.stdout
    result = failed_result(proc.stdout)
    assert result["validate_args_context"]["type"] == "role"
    assert result["validate_args_context"]["name"] == role
    assert result["validate_args_context"]["argument_spec_name"] == entry_point
    for error in errors:
        assert error in result["msg"], result["msg"]
    assert f"TASK [{validation}]" in proc.stdout


def test_a_wrong_shared_fact_fails_before_any_task_of_the_role_that_reads_it(tmp_path):
    play = [{
        "name": "Apply a role with a wrong shared fact",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"cloudlet_svm_domain_type": "xen", "cloudlet_pair_address": "192.0.2.1"},
        "roles": [{"role": "cloudlet_libvirt"}],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc, tasks = ansible_playbook(tmp_path, "-i", "localhost,", "play.yml")

    assert proc.returncode == 2, proc.stdout + proc.stderr
    # Only the shared facts' validation ran; cloudlet_libvirt's never started.
    assert tasks == [("localhost", COMMON_VALIDATION, "failed")], proc.stdout
    result = failed_result(proc.stdout)
    assert result["validate_args_context"]["name"] == "cloudlet_common"
    assert "value of cloudlet_svm_domain_type must be one of: kvm, qemu, got: xen" in result["msg"]


def lab_inventory(tmp_path: Path) -> Path:
    """The lab's inventory as the lab role writes it for its default machines, no lab up.

    Beside it, the lab inventory's own group_vars; the field admin's public key
    it names is a file of this test.
    """
    defaults = yaml.safe_load((ROOT / "roles" / "lab" / "defaults" / "main.yml").read_text())
    name, state_dir = defaults["lab_name"], tmp_path / "lab-state"
    plan = topology.plan(name, defaults["lab_subnet"], defaults["lab_machines"])
    state_dir.mkdir()
    (state_dir / "field_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test\n")

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROOT / "roles" / "lab" / "templates"),
        undefined=jinja2.StrictUndefined,
    )
    # The two filters it uses that are Ansible's, not Jinja's.
    env.filters["to_nice_yaml"] = lambda value, indent=4: yaml.safe_dump(
        value, indent=indent, default_flow_style=False, allow_unicode=True
    )
    env.filters["split"] = lambda text, separator=None: text.split(separator)
    text = env.get_template("hosts.yml.j2").render(
        ansible_managed="Written by a test",
        lab_name=name,
        lab_state_dir=str(state_dir),
        __lab={"ssh_key": str(state_dir / "id_ed25519"), "plan": plan.as_dict()},
    )
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(text)
    (inventory / "group_vars").symlink_to(ROOT / "inventories" / "lab" / "group_vars")
    return inventory


def test_the_playbooks_pass_validation_with_the_lab_inventory_and_the_command_line(tmp_path):
    # The seal entry point, called as setup.yml calls it; tagged so the include runs.
    seal = [{
        "name": "Seal the cloudlets",
        "hosts": "cloudlets",
        "gather_facts": False,
        "tasks": [{
            "name": "Seal the cloudlet with a signed manifest of what is installed",
            "ansible.builtin.include_role": {"name": "cloudlet_delivery", "tasks_from": "seal"},
            "tags": ["always"],
        }],
    }]
    (tmp_path / "seal.yml").write_text(yaml.safe_dump(seal))
    inventory = lab_inventory(tmp_path)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]["lab"]
    cloudlets = set(hosts["children"]["cloudlets"]["hosts"])
    devices = set(hosts["children"]["devices"]["hosts"])
    assert cloudlets and devices

    proc, tasks = ansible_playbook(
        tmp_path, "-i", str(inventory), "-e", "ansible_connection=local", *COMMAND_LINE,
        *ONLY_VALIDATION,
        str(ROOT / "playbooks" / "lab.yml"), str(ROOT / "playbooks" / "setup.yml"),
        str(ROOT / "playbooks" / "delivery.yml"), "seal.yml",
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(outcome == "ok" for _, _, outcome in tasks), tasks
    validated = {
        (host, task.split(" : ")[0], task.split("'")[1]) for host, task, _ in tasks
        if VALIDATION in task
    }
    on_cloudlets = [
        ("cloudlet_base", "main"), ("cloudlet_pki", "main"), ("cloudlet_libvirt", "main"),
        ("cloudlet_manager", "main"), ("cloudlet_network", "main"), ("cloudlet_pairing", "main"),
        ("cloudlet_svm_store", "main"), ("cloudlet_dns", "main"),
        ("cloudlet_delivery", "main"), ("cloudlet_delivery", "seal"),
    ]
    assert validated == (
        {("localhost", "lab", "main")}
        | {(host, role, point) for host in cloudlets for role, point in on_cloudlets}
        | {(host, "device_client", "main") for host in devices}
        | {(host, "cloudlet_common", "main") for host in cloudlets | devices}
    )
    # Nothing else ran but the include of the seal.
    others = {task for _, task, _ in tasks if VALIDATION not in task}
    assert others == {seal[0]["tasks"][0]["name"]}
