"""The README documents every public role variable and every module option.

A role's variables live in its defaults/main.yml; they are documented in the
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
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/defaults/main.yml"))
MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))


def documented(text: str) -> set[str]:
    """Names written as code (`name`) in a Markdown text."""
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", text))


def module_section(name: str) -> str:
    """The README's bullet for one module: from its name to the next bullet."""
    match = re.search(rf"^- \*\*`{name}`\*\*(.*?)(?=^- \*\*|^## )", README, re.S | re.M)
    assert match, f"README.md has no bullet for the module {name}"
    return match.group(1)


def module_options(name: str) -> set[str]:
    tree = ast.parse((ROOT / "library" / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DOCUMENTATION" for t in node.targets
        ):
            return set(yaml.safe_load(ast.literal_eval(node.value)).get("options") or {})
    raise AssertionError(f"library/{name}.py has no DOCUMENTATION")


@pytest.mark.parametrize("role", ROLES)
def test_every_role_variable_is_documented(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    own = ROOT / "roles" / role / "README.md"
    names = documented(README) | (documented(own.read_text()) if own.exists() else set())
    missing = sorted(set(defaults or {}) - names)
    assert not missing, f"{role}: not documented in README.md or its own README: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_option_is_documented(module):
    missing = sorted(module_options(module) - documented(module_section(module)))
    assert not missing, f"{module}: options missing from README.md: {missing}"


def test_there_is_something_to_check():
    assert len(ROLES) >= 9 and len(MODULES) >= 6
