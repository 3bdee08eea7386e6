"""Checks: one comparison each (observed <op> limit → passed), and the verdict they add up to.

A check whose observed value is missing (None) or not a number where a number is compared (NaN)
fails, with that said in its detail: a value nobody measured never passes. Checks of severity
"warn" are reported but never fail a stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

from golfrun.summary import Check, Verdict


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return None if math.isnan(float(x)) else float(x)


def _compare(name: str, observed: Any, limit: Any, op: str, test: Callable[[float, float], bool],
             detail: str, severity: str) -> Check:
    obs, lim = _number(observed), _number(limit)
    if obs is None or lim is None:
        missing = "observed value" if obs is None else "limit"
        value = observed if obs is None else limit
        why = f"no {missing}" if value is None else f"{missing} {value!r} is not a number"
        return Check(name, observed, limit, op, False, f"{detail}; {why}" if detail else why, severity)
    return Check(name, observed, limit, op, bool(test(obs, lim)), detail, severity)


def at_most(name: str, observed: Any, limit: Any, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed <= limit."""
    return _compare(name, observed, limit, "<=", lambda a, b: a <= b, detail, severity)


def at_least(name: str, observed: Any, limit: Any, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed >= limit."""
    return _compare(name, observed, limit, ">=", lambda a, b: a >= b, detail, severity)


def less_than(name: str, observed: Any, limit: Any, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed < limit."""
    return _compare(name, observed, limit, "<", lambda a, b: a < b, detail, severity)


def greater_than(name: str, observed: Any, limit: Any, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed > limit."""
    return _compare(name, observed, limit, ">", lambda a, b: a > b, detail, severity)


def equals(name: str, observed: Any, expected: Any, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed == expected (any type; None never equals a set expectation)."""
    passed = observed is not None and observed == expected
    return Check(name, observed, expected, "==", passed, detail, severity)


def one_of(name: str, observed: Any, allowed: Sequence[Any], detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed is one of `allowed`."""
    return Check(name, observed, list(allowed), "in", observed is not None and observed in allowed, detail, severity)


def contains(name: str, observed: Any, item: Any, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff `item` is in `observed` (a string, list or set)."""
    passed = isinstance(observed, Container) and not isinstance(observed, bytes) and item in observed
    if isinstance(observed, (set, frozenset)):
        observed = sorted(observed)
    return Check(name, observed, item, "contains", passed, detail, severity)


def all_contain(name: str, observed: Iterable[str], item: str, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff every string in `observed` contains `item`, and there is at least one."""
    values = list(observed)
    passed = bool(values) and all(item in v for v in values)
    return Check(name, values, item, "all-contain", passed, detail, severity)


def starts_with(name: str, observed: Any, prefix: str, detail: str = "", severity: str = "fail") -> Check:
    """Passes iff observed is a string starting with `prefix`."""
    passed = isinstance(observed, str) and observed.startswith(prefix)
    return Check(name, observed, prefix, "startswith", passed, detail, severity)


def is_true(name: str, ok: bool, observed: Any = None, detail: str = "", severity: str = "fail") -> Check:
    """A check decided elsewhere (e.g. "file exists"), with what was seen."""
    return Check(name, observed, True, "is", bool(ok), detail, severity)


def within_tolerance(name: str, observed: Any, reference: float, tolerance: float, detail: str = "",
                     severity: str = "fail") -> Check:
    """Passes iff observed <= reference + tolerance (one-sided: lower is always fine)."""
    text = f"reference {reference:.8f} + tolerance {tolerance:g}"
    return at_most(name, observed, reference + tolerance, f"{detail}; {text}" if detail else text, severity)


def artifact_checks(prefix: str, total_bytes: Any, cap_bytes: int, headroom_bytes: int = 0) -> list[Check]:
    """The competition's cap (a failure) and, when asked for, our own headroom under it (a
    warning only: a safety margin must never look like a competition failure)."""
    checks = [at_most(f"{prefix}artifact_bytes", total_bytes, cap_bytes,
                      detail="code + compressed model against the competition's cap")]
    if headroom_bytes > 0:
        checks.append(at_most(f"{prefix}artifact_headroom", total_bytes, cap_bytes - headroom_bytes,
                              detail=f"our safety margin of {headroom_bytes} bytes under the cap (warning only)",
                              severity="warn"))
    return checks


def describe(check: Check) -> str:
    """One line: `val_bpb: 1.0755 > 1.0752 (detail)`, with the negated operator when failed."""
    negated = {"<=": ">", ">=": "<", "<": ">=", ">": "<=", "==": "!=", "in": "not in", "contains": "lacks",
               "startswith": "does not start with", "is": "is not", "all-contain": "do not all contain"}
    op = check.op if check.passed else negated.get(check.op, f"fails {check.op}")
    text = f"{check.name}: {_show(check.observed)} {op} {_show(check.limit)}"
    return f"{text} ({check.detail})" if check.detail else text


def _show(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.8g}"
    return repr(x) if isinstance(x, str) else str(x)


def verdict_from(checks: Sequence[Check]) -> tuple[Verdict, list[str]]:
    """KILL if any fail-severity check failed (reasons: those checks, then warnings); PASS
    otherwise (reasons: warnings, then a count). No checks at all is ERROR: nothing was decided."""
    if not checks:
        return Verdict.ERROR, ["no checks were made, so nothing can pass"]
    for c in checks:
        if c.severity not in ("fail", "warn"):
            raise ValueError(f"check {c.name!r}: severity must be 'fail' or 'warn', got {c.severity!r}")
    failed = [c for c in checks if not c.passed and c.severity == "fail"]
    warned = [f"warning: {describe(c)}" for c in checks if not c.passed and c.severity == "warn"]
    if failed:
        return Verdict.KILL, [describe(c) for c in failed] + warned
    n = sum(c.severity == "fail" for c in checks)
    return Verdict.PASS, warned + [f"all {n} gating checks passed"]
