"""Every role declares its interface, and the README documents it and every module option.

A role's interface is its meta/argument_specs.yml: one entry point per tasks
file a play calls, declaring every variable of its defaults/main.yml with a type
and a description. Ansible checks the variables against it when the role starts
and `ansible-doc -t role` renders it. The variables are also documented in the
top-level README or in the role's own README. A module's options are those of
its DOCUMENTATION block; they are listed in the README's "Modules" section.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Every role with defaults, including the defaults-only cloudlet_common.
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/defaults/main.yml"))
MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))
# Where plays call roles: a tasks_from there is an entry point of the role.
PLAYS = sorted(
    [*ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/molecule/*/*.yml"),
     *ROOT.glob("tests/molecule/*.yml"), *ROOT.glob("roles/*/tasks/*.yml")]
)
ROLE_CALLS = {"include_role", "import_role"}
TEMPLATE = re.compile(r"{{|{%")


def load(path: Path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


def defaults(role: str) -> dict:
    return load(ROOT / "roles" / role / "defaults" / "main.yml") or {}


def entry_points(role: str) -> dict:
    """The argument_specs of a role: {entry point: spec}."""
    spec = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")
    assert spec and spec.get("argument_specs"), f"{role}: no meta/argument_specs.yml"
    return spec["argument_specs"]


def declared(role: str) -> dict:
    """Every option of every entry point of a role: {name: [its spec in each entry point]}."""
    options: dict[str, list[dict]] = {}
    for spec in entry_points(role).values():
        for name, option in (spec.get("options") or {}).items():
            options.setdefault(name, []).append(option)
    return options


def called_entry_points(role: str) -> set[str]:
    """main, and every tasks_from a playbook, a molecule scenario or a role gives the role."""
    found = {"main"}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                call = key.rsplit(".", 1)[-1] in ROLE_CALLS and isinstance(value, dict)
                if call and value.get("name") == role:
                    found.add(value.get("tasks_from", "main"))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for play in PLAYS:
        walk(load(play))
    return found


def templated(value) -> bool:
    if isinstance(value, str):
        return bool(TEMPLATE.search(value))
    if isinstance(value, dict):
        return any(templated(v) for v in value.values())
    if isinstance(value, list):
        return any(templated(v) for v in value)
    return False


def option_problems(name: str, option: dict) -> list[str]:
    """What an option (or a sub-option, recursively) lacks."""
    problems = []
    if not option.get("description"):
        problems.append(f"{name} has no description")
    if not option.get("type"):
        problems.append(f"{name} has no type")
    if option.get("type") == "list" and not option.get("elements"):
        problems.append(f"{name} is a list without elements")
    if option.get("required") and "default" in option:
        problems.append(f"{name} is required and has a default")
    for sub, sub_option in (option.get("options") or {}).items():
        problems += option_problems(f"{name}.{sub}", sub_option)
    return problems


def documented(text: str) -> set[str]:
    """Names written as code (`name`) in a Markdown text."""
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", text))


def module_section(name: str) -> str:
    """The README's bullet for one module: from its name to the next bullet."""
    match = re.search(rf"^- \*\*`{name}`\*\*(.*?)(?=^- \*\*|^## )", README, re.S | re.M)
    assert match, f"README.md has no bullet for the module {name}"
    return match.group(1)


def _documentation(path: Path) -> dict:
    """The DOCUMENTATION string of a module or doc fragment, parsed."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DOCUMENTATION" for t in node.targets
        ):
            return yaml.safe_load(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no DOCUMENTATION")


def module_options(name: str) -> set[str]:
    """A module's options, with those of the doc fragments it extends."""
    doc = _documentation(ROOT / "library" / f"{name}.py")
    options = set(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment") or []:
        path = ROOT / "plugins" / "doc_fragments" / f"{fragment}.py"
        options |= set(_documentation(path).get("options") or {})
    return options


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_a_play_calls_is_declared(role):
    declared_points = set(entry_points(role))
    assert declared_points == called_entry_points(role), (
        f"{role}: argument_specs entry points {sorted(declared_points)}, "
        f"plays call {sorted(called_entry_points(role))}"
    )
    tasks = ROOT / "roles" / role / "tasks"
    for point in declared_points:
        # A defaults-only role (cloudlet_common) has no tasks; Ansible still
        # validates its variables (main) when a role that depends on it starts.
        defaults_only = point == "main" and not tasks.exists()
        assert (tasks / f"{point}.yml").exists() or defaults_only, f"{role}: {point}"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_declared_and_every_declared_variable_has_a_default(role):
    options = declared(role)
    undeclared = sorted(set(defaults(role)) - set(options))
    assert not undeclared, f"{role}: in defaults/main.yml, not in argument_specs: {undeclared}"
    no_default = sorted(
        name for name, specs in options.items()
        if name not in defaults(role) and not all(spec.get("required") for spec in specs)
    )
    assert not no_default, f"{role}: declared, not required, no default in defaults: {no_default}"


@pytest.mark.parametrize("role", ROLES)
def test_every_declared_variable_has_a_type_and_a_description(role):
    problems = [
        f"{point}: {problem}"
        for point, spec in entry_points(role).items()
        for name, option in (spec.get("options") or {}).items()
        for problem in option_problems(name, option)
    ]
    assert not problems, f"{role}: {problems}"


@pytest.mark.parametrize("role", ROLES)
def test_declared_defaults_are_the_role_defaults(role):
    """A literal default is declared as it is (one of its choices); a templated one in words.

    Ansible renders the defaults written in argument_specs when the role starts
    (ansible-core 2.19), so a Jinja default there could fail a play on its own.
    """
    wrong = []
    for name, value in defaults(role).items():
        for spec in declared(role).get(name, []):
            if templated(value):
                if not isinstance(spec.get("default"), (str, list)) or templated(spec["default"]):
                    wrong.append(f"{name}: describe the templated default in words")
            elif spec.get("default") != value:
                wrong.append(f"{name}: declared default {spec.get('default')!r} is not {value!r}")
            elif "choices" in spec and value not in spec["choices"]:
                wrong.append(f"{name}: default {value!r} is not one of its choices")
    for name, specs in declared(role).items():
        kinds = {(s.get("type"), s.get("elements"), repr(s.get("default"))) for s in specs}
        if len(kinds) > 1:
            wrong.append(f"{name}: entry points disagree on its type or default")
    assert not wrong, f"{role}: {wrong}"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_variable_is_documented(role):
    own = ROOT / "roles" / role / "README.md"
    names = documented(README) | (documented(own.read_text()) if own.exists() else set())
    missing = sorted((set(defaults(role)) | set(declared(role))) - names)
    assert not missing, f"{role}: not documented in README.md or its own README: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_option_is_documented(module):
    missing = sorted(module_options(module) - documented(module_section(module)))
    assert not missing, f"{module}: options missing from README.md: {missing}"


def test_there_is_something_to_check():
    assert len(ROLES) >= 10 and "cloudlet_common" in ROLES and len(MODULES) >= 6
