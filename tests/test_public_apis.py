"""Dependencies are used through their public interfaces: no class of ours extends a
class from a dependency's implementation module, and nothing of ours assigns to a
private attribute of another object or to a framework's handler."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dialtone"
# Attributes of a framework object that its own code builds and relies on.
FRAMEWORK_ATTRIBUTES = {"asgi_handler", "asgi_router", "route_handler_method_map"}


def third_party_imports(tree: ast.Module) -> dict[str, str]:
    """Local name → the dotted path it was imported from (dependencies only)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root == "dialtone" or root in sys.stdlib_module_names:
                continue
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root != "dialtone" and root not in sys.stdlib_module_names:
                    names[alias.asname or root] = alias.name if alias.asname else root
    return names


def dotted(node: ast.expr, imports: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return imports.get(node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, imports)
        return f"{base}.{node.attr}" if base else None
    return None


def is_implementation_detail(path: str) -> bool:
    parts = path.split(".")
    return (
        any(p.startswith("_") and not p.startswith("__") for p in parts)
        or any(p.endswith("_impl") for p in parts[:-1])
        or path.startswith("uvicorn.protocols.")
    )


def findings() -> list[str]:
    found: list[str] = []
    for source in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(source.read_text(), filename=str(source))
        imports = third_party_imports(tree)
        where = source.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    path = dotted(base, imports)
                    if path and is_implementation_detail(path):
                        found.append(f"{where}:{node.lineno} class {node.name} extends {path}")
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if not isinstance(target, ast.Attribute):
                    continue
                owner = target.value
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                private = target.attr.startswith("_") and not target.attr.startswith("__")
                if (private and not own) or target.attr in FRAMEWORK_ATTRIBUTES:
                    found.append(f"{where}:{node.lineno} assigns .{target.attr}")
    return found


def test_no_dependency_internals_are_extended_or_assigned() -> None:
    assert findings() == []


def test_the_check_sees_what_it_forbids() -> None:
    """The scanner itself: each forbidden pattern is reported."""
    tree = ast.parse(
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol\n"
        "from litestar import Litestar\n"
        "class P(HttpToolsProtocol): pass\n"
    )
    imports = third_party_imports(tree)
    base = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)).bases[0]
    assert is_implementation_detail(dotted(base, imports) or "")
    assert not is_implementation_detail("litestar.Litestar")
    assert not is_implementation_detail("uvicorn.Server")
