"""Accuracy regression gate: compare current metrics with a committed baseline.

The baseline is a JSON file ``{"default_tolerance": t, "metrics": {name: {"value": v, "tolerance": t?}}}``
whose names are the flattened keys of ``reports/metrics.json`` (``protocol/backbone/method/dataset/setting``).
A metric below ``value - tolerance`` is a regression; above ``value + tolerance`` an improvement; a baseline
metric absent from the current run is missing. Regressions and missing metrics fail the gate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from clipbench.errors import DataError
from clipbench.io import atomic_write_json

DEFAULT_TOLERANCE = 1.0  # accuracy points


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1.0}}`` -> ``{"a/b": 1.0}``."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = float(value)
    return out


def read_json(path: Path, what: str) -> dict:
    if not Path(path).is_file():
        raise DataError(
            f"{what} {path} not found"
            + (
                "; run `dvc repro` first"
                if what == "metrics file"
                else "; create it with `clipbench check --update-baseline`"
            )
        )
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path} is not valid JSON ({exc})") from exc


@dataclass(frozen=True)
class Finding:
    metric: str
    status: str  # "regression" | "improvement" | "missing" | "new" | "ok"
    baseline: float
    current: float
    tolerance: float

    @property
    def delta(self) -> float:
        return self.current - self.baseline


def compare(current: dict[str, float], baseline: dict) -> list[Finding]:
    """Classify every baseline metric (and every current metric the baseline lacks)."""
    default = float(baseline.get("default_tolerance", DEFAULT_TOLERANCE))
    entries = baseline.get("metrics", {})
    findings = []
    for name, entry in sorted(entries.items()):
        tol = float(entry.get("tolerance", default))
        base = float(entry["value"])
        now = current.get(name, math.nan)
        if math.isnan(now):
            status = "missing"
        elif now < base - tol:
            status = "regression"
        elif now > base + tol:
            status = "improvement"
        else:
            status = "ok"
        findings.append(Finding(name, status, base, now, tol))
    findings += [Finding(n, "new", math.nan, v, default) for n, v in sorted(current.items()) if n not in entries]
    return findings


def failed(findings: list[Finding]) -> bool:
    return any(f.status in ("regression", "missing") for f in findings)


def render(findings: list[Finding], show_ok: bool = False) -> str:
    """A Markdown table of the findings that matter (regressions first) and a one-line verdict."""
    order = {"regression": 0, "missing": 1, "improvement": 2, "new": 3, "ok": 4}
    rows = [f for f in sorted(findings, key=lambda f: (order[f.status], f.metric)) if show_ok or f.status != "ok"]
    lines = ["| status | metric | baseline | current | delta | tolerance |", "|---|---|---|---|---|---|"]
    for f in rows:
        lines.append(
            f"| {f.status} | {f.metric} | {f.baseline:.2f} | {f.current:.2f} | {f.delta:+.2f} | {f.tolerance:.2f} |"
        )
    counts = {s: sum(f.status == s for f in findings) for s in order}
    verdict = "FAIL" if failed(findings) else "PASS"
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return ("\n".join(lines) + "\n\n" if rows else "") + f"{verdict}: {summary}\n"


def updated_baseline(current: dict[str, float], old: dict | None) -> dict:
    """A baseline holding ``current`` values, keeping per-metric tolerances and the default of ``old``."""
    old = old or {}
    entries = old.get("metrics", {})
    metrics = {}
    for name, value in sorted(current.items()):
        entry = {"value": round(value, 4)}
        if "tolerance" in entries.get(name, {}):
            entry["tolerance"] = entries[name]["tolerance"]
        metrics[name] = entry
    return {"default_tolerance": old.get("default_tolerance", DEFAULT_TOLERANCE), "metrics": metrics}


def write_baseline(path: Path, baseline: dict) -> None:
    atomic_write_json(path, baseline)
