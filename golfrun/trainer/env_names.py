"""The environment names a trainer declares, read from its source without running it.

golfrun's own trainer declares every setting in a `_ENV_SPEC` table of (NAME, type, default) and
the name families it owns in `ENV_FAMILIES`. A campaign variable in one of those families that is
not a declared name is a typo (MUON_WDD for MUON_WD) that the trainer would ignore, so golfrun
refuses it when the campaign loads instead of paying for a run with the default. A trainer that
declares no such table (a published record's script) is not checked: its names are unknown.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from dataclasses import dataclass

# Set by the launcher or the scheduler, never by a campaign, but always legal.
_RUNTIME = frozenset({"RANK", "WORLD_SIZE", "LOCAL_RANK"})


@dataclass(frozen=True)
class DeclaredEnv:
    names: frozenset[str]
    families: tuple[str, ...]

    def unknown(self, name: str) -> str | None:
        """None when `name` is fine; else the message saying why not (with the closest name)."""
        if name in self.names or not name.startswith(self.families):
            return None
        close = difflib.get_close_matches(name, sorted(self.names), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{name} is not a variable the trainer reads{hint}; it would be ignored"


def _assigned(tree: ast.Module, target: str) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == target:
            return node.value
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == target for t in node.targets):
            return node.value
    return None


def _strings(node: ast.expr | None, first_of_tuple: bool) -> Iterable[str]:
    if not isinstance(node, (ast.List, ast.Tuple)):
        return []
    out = []
    for item in node.elts:
        if first_of_tuple and isinstance(item, ast.Tuple) and item.elts:
            item = item.elts[0]
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            out.append(item.value)
    return out


def declared_env(source: str) -> DeclaredEnv | None:
    """The names and families a trainer's source declares, or None when it declares none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = list(_strings(_assigned(tree, "_ENV_SPEC"), first_of_tuple=True))
    families = tuple(_strings(_assigned(tree, "ENV_FAMILIES"), first_of_tuple=False))
    if not names or not families:
        return None
    return DeclaredEnv(frozenset(names) | _RUNTIME, families)
