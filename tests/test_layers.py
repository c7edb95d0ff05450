"""The tree's imports run one way: api/ and realtime/ over services/ over db/ and security/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dialtone"

# (layer, what it must never import): prefixes of absolute module names.
RULES = [
    ("realtime", ("dialtone.api",)),
    ("services", ("dialtone.api", "dialtone.realtime", "litestar", "uvicorn")),
    ("db", ("dialtone.api", "dialtone.realtime", "dialtone.services", "litestar")),
    ("security", ("dialtone.api", "dialtone.realtime", "dialtone.services", "dialtone.db")),
    ("schemas", ("dialtone.api", "dialtone.realtime", "dialtone.services", "dialtone.db")),
]


def imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, at any depth."""
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def violations(layer: str, forbidden: tuple[str, ...], root: Path = PACKAGE) -> list[str]:
    return sorted(
        f"{path.relative_to(root.parent)} imports {module}"
        for path in (root / layer).rglob("*.py")
        for module in imports(path, root)
        if any(module == prefix or module.startswith(prefix + ".") for prefix in forbidden)
    )


@pytest.mark.parametrize(("layer", "forbidden"), RULES, ids=[layer for layer, _ in RULES])
def test_layer_imports_run_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    assert violations(layer, forbidden) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The walker itself: relative, absolute and function-level imports are all found."""
    root = tmp_path / "dialtone"
    (root / "realtime").mkdir(parents=True)
    (root / "realtime" / "bad.py").write_text(
        "from ..api import dependencies\n"
        "from dialtone.services import auth\n"
        "def later():\n"
        "    import dialtone.api.edge\n"
    )
    assert violations("realtime", ("dialtone.api",), root) == [
        "dialtone/realtime/bad.py imports dialtone.api",
        "dialtone/realtime/bad.py imports dialtone.api.dependencies",
        "dialtone/realtime/bad.py imports dialtone.api.edge",
    ]
