"""Every service that ends sessions or changes what a Caller holds tells the session cache.

The cache no longer watches SQL (services/session_cache.py): a service function that
deletes sessions or sets a caller flag must call ``ctx.sessions_changing(uow)``, or a
revoked token could be served from the cache for its TTL. This walks services/ and
names the functions that forget.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "dialtone" / "services"

# Repository calls that end sessions.
ENDING = {"delete_for_user", "delete_for_device"}
# What a Caller holds about its user (set by attribute, or passed as a keyword).
CALLER_FLAGS = {"is_admin", "is_trusted", "is_moderator", "is_locked"}
# Functions that may do so without telling the cache, and why.
EXEMPT = {
    ("auth.py", "register"): "the user it makes admin was created in this transaction",
}


def changes_auth(function: ast.AST) -> str | None:
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            owner = node.func.value
            if name in ENDING or (
                name == "delete" and isinstance(owner, ast.Attribute) and owner.attr == "sessions"
            ):
                return f"calls {name}()"
            flags = {k.arg for k in node.keywords} & CALLER_FLAGS
            if flags and name not in {"Caller", "User"}:
                return f"passes {sorted(flags)[0]}= to {name}()"
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in CALLER_FLAGS:
                    return f"sets .{target.attr}"
    return None


def tells_the_cache(function: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "sessions_changing"
        for node in ast.walk(function)
    )


def forgetful(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            reason = changes_auth(node)
            if reason and not tells_the_cache(node) and (filename, node.name) not in EXEMPT:
                found.append(f"services/{filename}: {node.name} {reason}")
    return found


def test_services_that_change_auth_tell_the_session_cache() -> None:
    problems = [
        problem
        for path in sorted(SERVICES.glob("*.py"))
        for problem in forgetful(path.read_text(), path.name)
    ]
    assert problems == [], "call ctx.sessions_changing(uow) before these writes"


def test_the_check_finds_a_forgetful_service() -> None:
    source = (
        "class S:\n"
        "    async def demote(self, user):\n"
        "        user.is_admin = False\n"
        "    async def kick(self, user_id):\n"
        "        await self.sessions.delete_for_user(user_id)\n"
        "    async def lock(self, user_id):\n"
        "        await self.users.set_flags(user_id, is_locked=True)\n"
        "    async def logout(self, caller):\n"
        "        self.ctx.sessions_changing(self.uow)\n"
        "        await self.sessions.delete(caller.token_hash)\n"
    )
    assert forgetful(source, "x.py") == [
        "services/x.py: demote sets .is_admin",
        "services/x.py: kick calls delete_for_user()",
        "services/x.py: lock passes is_locked= to set_flags()",
    ]
