"""Accuracy and invariant gate: compare a run's metrics and exact invariants with a committed baseline.

The baseline (``SCHEMA`` 2) is a JSON object with exactly these keys::

    {"schema": 2, "default_tolerance": 1.0, "invariant_rel_tolerance": 1e-6,
     "metrics": {name: {"value": v, "tolerance": t?}}, "invariants": {name: number}}

``metrics`` names are the flattened keys of ``reports/metrics.json`` (``protocol/backbone/method/dataset/setting``);
``invariants`` names those of ``reports/invariants.json`` (``backbone/method/dataset/cell/diagnostic``, and
``.../cell/eval/<dataset>/<subset>/{accuracy,n}`` per evaluation cell: :mod:`clipbench.invariants`). Every
tolerance is a finite number >= 0 and every value finite; anything else is refused on load, naming the key.

* A metric outside ``value ± tolerance`` fails, whichever the direction (an improvement is accepted on purpose
  with ``--update-baseline``).
* An invariant fails unless equal: integers exactly, floats within ``invariant_rel_tolerance`` (relative).
* A baseline entry absent from the run fails (``missing``); an entry the baseline lacks is reported (``new``).
* A run with no metric at all fails; so does an update that would drop or add more entries than allowed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from clipbench.errors import DataError
from clipbench.io import atomic_write_json

SCHEMA = 2
DEFAULT_TOLERANCE = 1.0  # accuracy points
DEFAULT_REL_TOLERANCE = 1e-6  # relative, for float invariants (integers are compared exactly)
TOP_KEYS = ("schema", "default_tolerance", "invariant_rel_tolerance", "metrics", "invariants")
ENTRY_KEYS = ("value", "tolerance")
FAILING = ("regression", "improvement", "changed", "missing")
FIX = "fix the file or re-create it with `clipbench check --update-baseline`"


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1.0}}`` -> ``{"a/b": 1.0}`` (integers stay integers)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value if _is_int(value) else float(value)
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_json(path: Path, what: str) -> dict:
    if not Path(path).is_file():
        hint = "create it with `clipbench check --update-baseline`" if what == "baseline" else "run `dvc repro` first"
        raise DataError(f"{what} {path} not found; {hint}")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{what} {path} must hold a JSON object, not {type(data).__name__}")
    return data


def read_metrics(path: Path) -> dict[str, float]:
    """The flattened metrics of a run; a file with no metric is an error (a gate over nothing passes nothing)."""
    current = flatten(read_json(path, "metrics file"))
    if not current:
        raise DataError(f"metrics file {path} has no entries; run `dvc repro` (a run with no metric cannot pass)")
    return current


def read_invariants(path: Path) -> dict[str, float]:
    """The flattened training invariants of a run (``reports/invariants.json``, written by ``aggregate``)."""
    return flatten(read_json(path, "invariants file"))


@dataclass(frozen=True)
class Entry:
    value: float
    tolerance: float | None = None  # None: the baseline's default


@dataclass(frozen=True)
class Baseline:
    metrics: dict[str, Entry]
    invariants: dict[str, float] = field(default_factory=dict)
    default_tolerance: float = DEFAULT_TOLERANCE
    invariant_rel_tolerance: float = DEFAULT_REL_TOLERANCE

    def as_json(self) -> dict:
        metrics = {}
        for name, e in sorted(self.metrics.items()):
            metrics[name] = {"value": e.value} if e.tolerance is None else {"value": e.value, "tolerance": e.tolerance}
        return {
            "schema": SCHEMA,
            "default_tolerance": self.default_tolerance,
            "invariant_rel_tolerance": self.invariant_rel_tolerance,
            "metrics": metrics,
            "invariants": dict(sorted(self.invariants.items())),
        }


def _number(path: Path, key: str, value, tolerance: bool = False) -> float:
    """``value`` if it is a finite number (>= 0 for a tolerance), else one error line naming file and key."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (tolerance and value < 0):
        need = "a finite number >= 0" if tolerance else "a finite number"
        raise DataError(f"baseline {path}: `{key}` is {value!r}; it must be {need} ({FIX})")
    return value


def _object(path: Path, where: str, value) -> None:
    if not isinstance(value, dict):
        raise DataError(f"baseline {path}: `{where}` must be a JSON object, not {type(value).__name__} ({FIX})")


def _keys(path: Path, where: str, mapping, allowed: tuple[str, ...]) -> None:
    _object(path, where or "the top level", mapping)
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise DataError(
            f"baseline {path}: unknown key `{where + '/' if where else ''}{unknown[0]}`; "
            f"valid keys: {', '.join(allowed)} ({FIX})"
        )


def parse_baseline(data: dict, path: Path) -> Baseline:
    """Validate a baseline object (schema, known keys only, finite values, finite non-negative tolerances)."""
    _keys(path, "", data, TOP_KEYS)
    if data.get("schema") != SCHEMA:
        raise DataError(
            f"baseline {path}: `schema` is {data.get('schema')!r}; this clipbench reads schema {SCHEMA} "
            f'(add "schema": {SCHEMA} to a pre-schema file whose other keys are valid)'
        )
    metrics = data.get("metrics")
    _object(path, "metrics", metrics)
    if not metrics:
        raise DataError(f"baseline {path}: `metrics` is empty; an empty baseline gates nothing ({FIX})")
    entries = {}
    for name, entry in metrics.items():
        _keys(path, f"metrics/{name}", entry, ENTRY_KEYS)
        if "value" not in entry:
            raise DataError(f"baseline {path}: `metrics/{name}` has no `value` ({FIX})")
        tol = entry.get("tolerance")
        entries[name] = Entry(
            _number(path, f"metrics/{name}/value", entry["value"]),
            None if tol is None else _number(path, f"metrics/{name}/tolerance", tol, tolerance=True),
        )
    invariants = data.get("invariants", {})
    _object(path, "invariants", invariants)
    return Baseline(
        metrics=entries,
        invariants={n: _number(path, f"invariants/{n}", v) for n, v in invariants.items()},
        default_tolerance=_number(path, "default_tolerance", data.get("default_tolerance", DEFAULT_TOLERANCE), True),
        invariant_rel_tolerance=_number(
            path, "invariant_rel_tolerance", data.get("invariant_rel_tolerance", DEFAULT_REL_TOLERANCE), True
        ),
    )


def load_baseline(path: Path) -> Baseline:
    return parse_baseline(read_json(path, "baseline"), path)


@dataclass(frozen=True)
class Finding:
    metric: str
    status: str  # "regression" | "improvement" | "changed" | "missing" | "new" | "ok"
    baseline: float
    current: float
    tolerance: float
    kind: str = "metric"  # "metric" | "invariant"

    @property
    def delta(self) -> float:
        return self.current - self.baseline


def _present(current: dict[str, float], name: str) -> bool:
    return name in current and not math.isnan(current[name])


def compare_metrics(current: dict[str, float], baseline: Baseline) -> list[Finding]:
    """Classify every baseline metric (two-sided) and every current metric the baseline lacks."""
    findings = []
    for name, entry in sorted(baseline.metrics.items()):
        tol = baseline.default_tolerance if entry.tolerance is None else entry.tolerance
        now = current[name] if _present(current, name) else math.nan
        if math.isnan(now):
            status = "missing"
        elif now < entry.value - tol:
            status = "regression"
        elif now > entry.value + tol:
            status = "improvement"
        else:
            status = "ok"
        findings.append(Finding(name, status, entry.value, now, tol))
    new = [n for n in sorted(current) if n not in baseline.metrics and _present(current, n)]
    return findings + [Finding(n, "new", math.nan, current[n], baseline.default_tolerance) for n in new]


def same_invariant(base: float, now: float, rel: float) -> bool:
    """Integers exactly (an integer that became a float is a change); floats within ``rel`` of the larger magnitude."""
    if _is_int(base) or _is_int(now):
        return _is_int(base) and _is_int(now) and base == now
    return abs(now - base) <= rel * max(abs(base), abs(now))


def compare_invariants(current: dict[str, float], baseline: Baseline) -> list[Finding]:
    rel, findings = baseline.invariant_rel_tolerance, []
    for name, base in sorted(baseline.invariants.items()):
        if not _present(current, name):
            findings.append(Finding(name, "missing", base, math.nan, rel, "invariant"))
            continue
        status = "ok" if same_invariant(base, current[name], rel) else "changed"
        findings.append(Finding(name, status, base, current[name], rel, "invariant"))
    new = [n for n in sorted(current) if n not in baseline.invariants]
    return findings + [Finding(n, "new", math.nan, current[n], rel, "invariant") for n in new]


def compare(current: dict[str, float], baseline: Baseline, invariants: dict[str, float] | None = None) -> list[Finding]:
    """Every finding of the metrics and (when given) the invariants."""
    return compare_metrics(current, baseline) + compare_invariants(invariants or {}, baseline)


def failed(findings: list[Finding]) -> bool:
    return any(f.status in FAILING for f in findings)


def largest_change(findings: list[Finding]) -> Finding | None:
    """The failing finding with the largest relative change (missing entries count as infinite)."""
    bad = [f for f in findings if f.status in FAILING]

    def size(f: Finding) -> float:
        if math.isnan(f.current):
            return math.inf
        return abs(f.delta) if f.kind == "metric" else abs(f.delta) / max(abs(f.baseline), 1e-12)

    return max(bad, key=size, default=None)


def _fmt(value: float, kind: str) -> str:
    if math.isnan(value):
        return "—"
    return (
        str(value) if kind == "invariant" and _is_int(value) else f"{value:.2f}" if kind == "metric" else f"{value:.6g}"
    )


def render(findings: list[Finding], show_ok: bool = False) -> str:
    """A Markdown table of the findings that matter (failures first) and a one-line verdict."""
    order = {"regression": 0, "improvement": 1, "changed": 2, "missing": 3, "new": 4, "ok": 5}
    rows = [
        f for f in sorted(findings, key=lambda f: (order[f.status], f.kind, f.metric)) if show_ok or f.status != "ok"
    ]
    lines = [
        "| status | kind | name | baseline | current | delta | tolerance |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        delta = "—" if math.isnan(f.delta) else f"{f.delta:+.2f}" if f.kind == "metric" else f"{f.delta:+.3g}"
        tol = f"{f.tolerance:.2f}" if f.kind == "metric" else "exact" if _is_int(f.baseline) else f"rel {f.tolerance:g}"
        lines.append(
            f"| {f.status} | {f.kind} | {f.metric} | {_fmt(f.baseline, f.kind)} | {_fmt(f.current, f.kind)} "
            f"| {delta} | {tol} |"
        )
    counts = {s: sum(f.status == s for f in findings) for s in order}
    verdict = "FAIL" if failed(findings) else "PASS"
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return ("\n".join(lines) + "\n\n" if rows else "") + f"{verdict}: {summary}\n"


def updated_baseline(current: dict[str, float], invariants: dict[str, float], old: Baseline | None) -> Baseline:
    """A baseline holding the current values, keeping the per-metric and default tolerances of ``old``."""
    keep = old.metrics if old else {}
    metrics = {
        n: Entry(round(v, 4), keep[n].tolerance if n in keep else None)
        for n, v in sorted(current.items())
        if not math.isnan(v)
    }
    if old is None:
        return Baseline(metrics, dict(invariants))
    return Baseline(metrics, dict(invariants), old.default_tolerance, old.invariant_rel_tolerance)


def entry_changes(old: Baseline | None, new: Baseline) -> tuple[list[str], list[str]]:
    """(removed, added) entry names, metrics and invariants together."""
    before = set(old.metrics) | {f"invariant:{n}" for n in old.invariants} if old else set()
    after = set(new.metrics) | {f"invariant:{n}" for n in new.invariants}
    return sorted(before - after), sorted(after - before) if old else []


def refuse_update(removed: list[str], added: list[str], allow_removed: int, allow_added: int, path: Path) -> None:
    """An error when the update drops or adds more entries than allowed (a first baseline may add any)."""
    for what, names, allowed, flag in (
        ("remove", removed, allow_removed, "--allow-removed"),
        ("add", added, allow_added, "--allow-added"),
    ):
        if len(names) > allowed:
            raise DataError(
                f"baseline {path}: the update would {what} {len(names)} entries (e.g. {names[0]}) but {flag} is "
                f"{allowed}; nothing was written — check the run, or pass {flag} {len(names)} to accept"
            )


def write_baseline(path: Path, baseline: Baseline) -> None:
    atomic_write_json(path, baseline.as_json())
