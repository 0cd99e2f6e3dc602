"""(h) Power of the accuracy/invariant gate: plant realistic one- or two-line bugs, re-run, count what is caught.

A reduced suite of every method is run once with ``dvc repro`` in a scratch copy of the project and baselined
(``clipbench check --update-baseline``). Then:

* a clean re-run (a second scratch copy, run from nothing) is checked against that baseline: it must pass;
* each bug of :data:`CATALOGUE` is planted in its own copy of the completed workspace; ``dvc repro`` re-runs only
  the stages whose code fingerprint changed, and ``clipbench check`` gives the verdict. A bug that makes a stage
  crash is caught too (reported as such).

Each bug replaces one exact snippet that must occur exactly once in its file, so a catalogue that no longer
matches the code fails loudly instead of measuring nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clipbench import check as gate
from clipbench.bench.dvc_overhead import _scratch_copy
from clipbench.bench.sizes import CAPS
from clipbench.errors import ConfigError
from clipbench.suites import Reduction, capped_method_params, reduced_params, smoke_params

BASELINE = "gate-baseline.json"


@dataclass(frozen=True)
class Bug:
    name: str
    family: str  # what it breaks: a method family, the sampler, the split, the text classifier, evaluation
    path: str  # file, relative to the project root
    old: str  # exact snippet, present once
    new: str


CATALOGUE: tuple[Bug, ...] = (
    Bug(
        "val shots min(K, 2)",
        "k-shot sampler",
        "clipbench/data/kshot.py",
        "return min(shots, 4)",
        "return min(shots, 2)",
    ),
    Bug(
        "K-1 train shots",
        "k-shot sampler",
        "clipbench/data/kshot.py",
        "few_train = sample_per_class(train, shots, rng)",
        "few_train = sample_per_class(train, max(1, shots - 1), rng)",
    ),
    Bug(
        "base = floor(n/2)",
        "base/new split",
        "clipbench/data/kshot.py",
        "m = math.ceil(len(labels) / 2)",
        "m = len(labels) // 2",
    ),
    Bug(
        "spaces become underscores",
        "text classifier",
        "clipbench/data/base.py",
        'name.replace("_", " ")',
        'name.replace(" ", "_")',
    ),
    Bug(
        "templates averaged unnormalised",
        "text classifier",
        "clipbench/backbones/spec.py",
        "parts.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))",
        "parts.append(self.model.encode_text(tokens).float())",
    ),
    Bug(
        "last class never predicted",
        "evaluation",
        "clipbench/pipeline/evaluate.py",
        "correct = (logits.argmax(dim=1) == labels).sum().item()",
        "correct = (logits[:, :-1].argmax(dim=1) == labels).sum().item()",
    ),
    Bug(
        "accuracy over n + 1",
        "evaluation",
        "clipbench/pipeline/evaluate.py",
        '"value": 100.0 * correct / len(labels)',
        '"value": 100.0 * correct / (len(labels) + 1)',
    ),
    Bug(
        "one ensemble template",
        "zero-shot",
        "clipbench/methods/zeroshot_ensemble.py",
        "IMAGENET_TEMPLATES_SELECT + tuple(extra)",
        "IMAGENET_TEMPLATES_SELECT[:1] + tuple(extra)",
    ),
    Bug(
        "C peak at argmin",
        "linear probe",
        "clipbench/methods/linear_probe.py",
        "peak = self.config.coarse_grid[int(np.argmax(accs))]",
        "peak = self.config.coarse_grid[int(np.argmin(accs))]",
    ),
    Bug(
        "residual ratio swapped",
        "adapter (CLIP-Adapter)",
        "clipbench/methods/clip_adapter.py",
        "feats = alpha * adapter(x) + (1 - alpha) * x",
        "feats = (1 - alpha) * adapter(x) + alpha * x",
    ),
    Bug(
        "affinity sign",
        "cache (Tip-Adapter, -F)",
        "clipbench/methods/tip_adapter.py",
        "alpha * torch.exp(-beta * (1 - affinity)) @ values",
        "alpha * torch.exp(-beta * affinity) @ values",
    ),
    Bug(
        "10x learning rate",
        "cache (Tip-Adapter-F)",
        "clipbench/methods/tip_adapter_f.py",
        "torch.optim.AdamW([keys], lr=cfg.lr,",
        "torch.optim.AdamW([keys], lr=cfg.lr * 10,",
    ),
    Bug(
        "no warm-up / cosine",
        "prompt (CoOp)",
        "clipbench/methods/coop.py",
        "set_lr(opt, dassl_lr(epoch, cfg.lr, epochs, warmup_lr=cfg.warmup_lr))",
        "set_lr(opt, cfg.lr)",
    ),
    Bug(
        "Meta-Net without ReLU",
        "prompt (CoCoOp)",
        "clipbench/methods/cocoop.py",
        "nn.Linear(image_dim, hidden), nn.ReLU(inplace=True), nn.Linear(",
        "nn.Linear(image_dim, hidden), nn.Linear(",
    ),
    Bug(
        "penalty mean, not sum",
        "projection (ProLIP)",
        "clipbench/methods/prolip.py",
        "return (weight - initial).pow(2).sum()",
        "return (weight - initial).pow(2).mean()",
    ),
    Bug(
        "regulariser weight dropped",
        "fine-tuning (ClipFit)",
        "clipbench/methods/clipfit.py",
        "loss = ce + lam * reg",
        "loss = ce + reg",
    ),
    Bug(
        "wrong term weighted",
        "fine-tuning (CLIP-CITE)",
        "clipbench/methods/clip_cite.py",
        "cfg.eta_vld * terms[2]",
        "cfg.eta_vld * terms[1]",
    ),
)


def plant(root: Path, bug: Bug) -> None:
    """Apply ``bug`` to the copy of the project at ``root``."""
    path = root / bug.path
    text = path.read_text()
    if text.count(bug.old) != 1:
        raise ConfigError(
            f"gate bug {bug.name!r}: its snippet occurs {text.count(bug.old)} times in {bug.path} (needs 1); "
            "update clipbench/bench/gate_power.py to the current code"
        )
    path.write_text(text.replace(bug.old, bug.new))


def gate_suite(params: dict, reduction: Reduction | None = None) -> dict:
    """``params`` reduced (:mod:`clipbench.suites`), every method at its smoke settings and capped, no tracking."""
    methods = list(params.get("methods") or [])
    p = capped_method_params(reduced_params(params, reduction or Reduction(), smoke_params(methods)), CAPS)
    p["tracking"] = {**(p.get("tracking") or {}), "enabled": False}
    return p


def _env() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)


def _repro(work: Path) -> tuple[bool, list[str], float, str]:
    start = time.perf_counter()
    proc = _run([sys.executable, "-m", "dvc", "repro", "--no-run-cache"], work)
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)))
    return proc.returncode == 0, ran, time.perf_counter() - start, (proc.stdout + proc.stderr)[-2000:]


def _check(work: Path, baseline: Path) -> dict:
    """``clipbench check`` in ``work`` against ``baseline``: exit code, failing entries, largest change."""
    proc = _run([sys.executable, "-m", "clipbench.cli", "check", "--baseline", str(baseline)], work)
    reports = work / "reports"
    findings = gate.compare(
        gate.read_metrics(reports / "metrics.json"),
        gate.load_baseline(baseline),
        gate.read_invariants(reports / "invariants.json"),
    )
    worst = gate.largest_change(findings)
    return {
        "exit": proc.returncode,
        "failing": sum(f.status in gate.FAILING for f in findings),
        "metrics": sum(f.status in gate.FAILING and f.kind == "metric" for f in findings),
        "invariants": sum(f.status in gate.FAILING and f.kind == "invariant" for f in findings),
        "largest": None if worst is None else f"{worst.status} {worst.metric} {worst.baseline} -> {worst.current}",
    }


def _trial(dest: Path, bug: Bug | None, baseline: Path) -> dict:
    """Plant ``bug`` (if any) in the workspace ``dest``, ``dvc repro``, check, then delete ``dest``."""
    if bug is not None:
        plant(dest, bug)
    ok, ran, seconds, tail = _repro(dest)
    row = {"stages": len(ran), "seconds": seconds}
    if not ok:
        row.update(exit=None, failing=0, metrics=0, invariants=0, largest=f"dvc repro failed: {tail.splitlines()[-1:]}")
    else:
        row.update(_check(dest, baseline))
    row["caught"] = not ok or row["exit"] == 1
    shutil.rmtree(dest, ignore_errors=True)
    return row


def gate_power(root: Path, work: Path, params: dict, bugs: tuple[Bug, ...] = CATALOGUE, log=print) -> dict:
    """Run the suite once, baseline it, then a clean re-run and every bug; the rows :func:`render` formats."""
    base, fresh = work / "base", work / "fresh"
    for d in (base, fresh):
        d.mkdir(parents=True)
        _scratch_copy(root, d, params)
    log("gate: reference run")
    ok, ran, seconds, tail = _repro(base)
    if not ok:
        raise RuntimeError(f"gate: the reference dvc repro failed in {base}:\n{tail}")
    baseline = work / BASELINE
    made = _run(
        [sys.executable, "-m", "clipbench.cli", "check", "--update-baseline", "--baseline", str(baseline)], base
    )
    if made.returncode != 0:
        raise RuntimeError(f"gate: baselining failed:\n{made.stdout}{made.stderr}")
    log("gate: clean re-run from nothing")
    clean = _trial(fresh, None, baseline)
    rows = []
    for bug in bugs:
        log(f"gate: {bug.family}: {bug.name}")
        shutil.copytree(base, work / "trial", symlinks=True)
        rows.append({"bug": bug.name, "family": bug.family, "path": bug.path, **_trial(work / "trial", bug, baseline)})
    entries = gate.load_baseline(baseline)
    return {
        "reference_s": seconds,
        "reference_stages": len(ran),
        "baseline": {"metrics": len(entries.metrics), "invariants": len(entries.invariants)},
        "clean": clean,
        "bugs": rows,
        "methods": params.get("methods"),
    }


def render(result: dict) -> str:
    """The Markdown section of ``reports/bench.md``."""
    bugs, clean = result["bugs"], result["clean"]
    caught = sum(r["caught"] for r in bugs)
    lines = [
        "## (h) Gate power: planted bugs",
        "",
        f"Reduced suite ({', '.join(result['methods'])}); reference run {result['reference_s']:.0f} s, "
        f"{result['reference_stages']} stages; baseline of {result['baseline']['metrics']} metrics and "
        f"{result['baseline']['invariants']} invariants. Clean re-run from nothing: "
        f"{'**false alarm**' if clean['caught'] else 'no alarm'} ({clean['failing']} failing entries). "
        f"Caught **{caught} / {len(bugs)}** planted bugs.",
        "",
        "| family | bug | file | stages re-run | verdict | failing metrics | failing invariants | largest change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in bugs:
        verdict = "caught" if r["caught"] else "**missed**"
        lines.append(
            f"| {r['family']} | {r['bug']} | `{r['path']}` | {r['stages']} | {verdict} | {r['metrics']} "
            f"| {r['invariants']} | {r['largest'] or '—'} |"
        )
    return "\n".join(lines) + "\n"
