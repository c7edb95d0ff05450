"""Declared = tested: every third-party import in dialtone/ is a declared dependency, and
every declared dependency's lower bound is pinned in constraints-lowest.txt, which
`make test-lowest` (run by CI next to `make test`) installs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def version(text: str) -> tuple[int, ...]:
    parts = [int(part) for part in text.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def declared() -> dict[str, str]:
    """Each runtime dependency's name and its lower bound."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds: dict[str, str] = {}
    for requirement in project["dependencies"]:
        match = REQUIREMENT.match(requirement)
        assert match is not None, requirement
        name, specifiers = match.groups()
        lower = [s.strip()[2:] for s in specifiers.split(",") if s.strip().startswith(">=")]
        assert len(lower) == 1, f"{requirement}: needs exactly one lower bound (>=)"
        bounds[normalise(name)] = lower[0].strip()
    return bounds


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pin = line.partition("==")
            assert pin, f"constraints-lowest.txt: {line!r} is not an exact pin"
            pins[normalise(name)] = pin.strip()
    return pins


def third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "dialtone").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"dialtone"}}


def test_every_imported_package_is_a_declared_dependency() -> None:
    owners = importlib.metadata.packages_distributions()
    bounds = declared()
    undeclared = {
        module: owners.get(module)
        for module in third_party_imports()
        if not any(normalise(dist) in bounds for dist in owners.get(module, []))
    }
    assert undeclared == {}, "imported by dialtone/ but not in [project] dependencies"


def test_every_lower_bound_is_pinned_for_the_lowest_run() -> None:
    bounds, pins = declared(), pinned()
    assert set(pins) == set(bounds), (
        "constraints-lowest.txt and pyproject.toml name different packages"
    )
    wrong = {
        name: (bounds[name], pins[name])
        for name in bounds
        if version(bounds[name]) != version(pins[name])
    }
    assert wrong == {}, "lower bound (pyproject.toml) != pin (constraints-lowest.txt)"
