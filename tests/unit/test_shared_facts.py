"""One home per fact: what several roles need is stated once, in cloudlet_common.

Every cloudlet role depends on cloudlet_common and derives its own variables
from the shared facts there; none writes a shared fact's value out again, and
no default reads a cloudlet variable that nothing defines. The plugins the
role carries (the control directory lookup, the subnet filters) are shims
over cloudlet.control and cloudlet.addressing, tested here without Ansible.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import yaml

from cloudlet import addressing, audit
from cloudlet.control import control_dir
from cloudlet.errors import CloudletError

ROOT = Path(__file__).resolve().parents[2]
COMMON = "cloudlet_common"
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/defaults/main.yml"))
# The roles that share the facts: all but the lab and the home of the facts itself.
SHARING = [role for role in ROLES if role not in ("lab", COMMON)]
# Per-host facts with no sensible default: the inventory states them (the lab writes them).
INVENTORY_FACTS = {"cloudlet_pair_address", "cloudlet_field_address", "cloudlet_field_interface",
                   "cloudlet_field_subnet"}
TEMPLATE = re.compile(r"{{|{%")


def load(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) if path.exists() else None) or {}


def defaults(role: str) -> dict:
    return load(ROOT / "roles" / role / "defaults" / "main.yml")


def leaves(value):
    """Every scalar in a default (lists and dicts walked)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


SHARED = defaults(COMMON)
LITERALS = {
    name: value for name, value in SHARED.items()
    if isinstance(value, str) and not TEMPLATE.search(value)
}  # fmt: skip


def repeats(text: str, literal: str) -> bool:
    """Whether ``text`` writes ``literal`` out: the whole value, or a path inside it."""
    if text == literal:
        return True
    if literal.startswith("/"):
        return re.search(rf"(?<![\w./-]){re.escape(literal)}(?![\w.-])", text) is not None
    return f"'{literal}'" in text or f'"{literal}"' in text


def test_the_shared_facts_are_the_ones_the_roles_need():
    for name in ("cloudlet_id", "cloudlet_user", "cloudlet_group", "cloudlet_venv",
                 "cloudlet_python", "cloudlet_state_dir", "cloudlet_config_dir",
                 "cloudlet_ca_cert", "cloudlet_ibe_dir", "cloudlet_ibe_params_name",
                 "cloudlet_ibe_master_key_name", "cloudlet_migration_server_cert",
                 "cloudlet_network_ssid", "cloudlet_svm_zone", "cloudlet_svm_subnet",
                 "cloudlet_svm_gateway", "cloudlet_control_dir"):  # fmt: skip
        assert name in SHARED, name
    assert not (ROOT / "roles" / COMMON / "tasks").exists(), "cloudlet_common is defaults only"


@pytest.mark.parametrize("role", SHARING)
def test_every_cloudlet_role_depends_on_the_shared_facts(role):
    meta = load(ROOT / "roles" / role / "meta" / "main.yml")
    names = [d.get("role", d.get("name")) if isinstance(d, dict) else d
             for d in meta.get("dependencies") or []]  # fmt: skip
    assert COMMON in names, f"{role}: meta/main.yml does not list {COMMON} in dependencies"


@pytest.mark.parametrize("role", SHARING)
def test_no_role_writes_out_a_shared_fact_again(role):
    found = [
        f"{name} repeats {fact} ({literal!r})"
        for name, value in defaults(role).items()
        for leaf in leaves(value) if isinstance(leaf, str)
        for fact, literal in LITERALS.items() if repeats(leaf, literal)
    ]  # fmt: skip
    assert not found, f"{role}: derive these from {COMMON} instead: {found}"


def defined_names() -> set[str]:
    """Every variable a role's defaults or vars define, or a role task sets as a fact."""
    names = set(INVENTORY_FACTS)
    for path in ROOT.glob("roles/*/defaults/main.yml"):
        names |= set(load(path))
    for path in ROOT.glob("roles/*/vars/main.yml"):
        names |= set(load(path))
    for path in ROOT.glob("roles/*/tasks/*.yml"):
        for task in yaml.safe_load(path.read_text()) or []:
            names |= set(task.get("ansible.builtin.set_fact") or {})
    return names


class _AnyFilter(dict):
    """Ansible's and the roles' filters: only the variables they are applied to matter here."""

    def get(self, name, default=None):
        return super().get(name) or (lambda *args, **kwargs: None)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_read_only_cloudlet_variables_that_something_defines(role):
    env = jinja2.Environment()
    env.filters = _AnyFilter(env.filters)
    known = defined_names()
    read = set()
    for value in defaults(role).values():
        for leaf in leaves(value):
            if isinstance(leaf, str) and TEMPLATE.search(leaf):
                read |= jinja2.meta.find_undeclared_variables(env.parse(leaf))
    unknown = sorted(n for n in read if n.startswith(("cloudlet_", "device_client_"))
                     and n not in known)  # fmt: skip
    assert not unknown, f"{role}: its defaults read variables nothing defines: {unknown}"


# --- the control directory (cloudlet.control; the lookup and the audit callback) -----------


def test_the_control_dir_is_the_checkouts_unless_the_environment_names_one(tmp_path):
    assert control_dir(tmp_path, {}) == tmp_path / "control"
    assert control_dir(tmp_path, {"CLOUDLET_CONTROL_DIR": ""}) == tmp_path / "control"
    assert control_dir(tmp_path, {"CLOUDLET_CONTROL_DIR": "/srv/ctl"}) == Path("/srv/ctl")
    home = control_dir(tmp_path, {"CLOUDLET_CONTROL_DIR": "~/ctl"})
    assert home.is_absolute() and home == Path("~/ctl").expanduser()


def test_the_audit_log_follows_the_control_dir(tmp_path):
    assert audit.default_log_path(tmp_path, {}) == tmp_path / "control" / "audit.log"
    moved = audit.default_log_path(tmp_path, {"CLOUDLET_CONTROL_DIR": str(tmp_path / "v")})
    assert moved == tmp_path / "v" / "audit.log"


# --- the SVM network: one subnet, the gateway derived ---------------------------------------


def test_the_gateway_and_prefix_come_from_the_subnet():
    assert addressing.subnet_host("10.200.0.0/24") == "10.200.0.1"
    assert addressing.subnet_host("10.200.0.64/26", 62) == "10.200.0.126"
    assert addressing.subnet_prefix("10.200.0.0/24") == 24
    assert addressing.subnet_host(SHARED["cloudlet_svm_subnet"]) == "10.200.0.1"


@pytest.mark.parametrize(("subnet", "index", "says"), [
    ("10.200.0.5/24", 1, "host bits set"),
    ("svm-net", 1, "not an IPv4 network"),
    ("fd00::/64", 1, "not an IPv4 network"),
    (None, 1, "not a string"),
    ("10.200.0.0/30", 3, "has no host number 3"),
    ("10.200.0.0/24", 0, "has no host number 0"),
    ("10.200.0.0/24", True, "not a whole number"),
])  # fmt: skip
def test_a_bad_subnet_or_host_number_is_refused_with_what_to_do(subnet, index, says):
    with pytest.raises(CloudletError) as err:
        addressing.subnet_host(subnet, index)
    assert says in str(err.value)
