"""The ``clipbench`` command line (thin: every command calls library functions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from clipbench.errors import ClipbenchError
from clipbench.protocols import REGISTRY as PROTOCOL_REGISTRY


def _fail(exc: BaseException) -> None:
    from clipbench.boundary import EXIT_STATUS, one_line

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("debug"):
        raise exc

    click.echo(f"error: {one_line(exc)}", err=True)
    sys.exit(EXIT_STATUS)


class _OneLineErrors(click.Group):
    """Every known error of every command becomes one line and exit status 2 (``--debug``: the traceback)."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        from clipbench.boundary import KNOWN_ERRORS

        try:
            return super().invoke(ctx)
        except KNOWN_ERRORS as exc:
            if ctx.params.get("debug"):
                raise
            _fail(exc)


@click.group(cls=_OneLineErrors)
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug: bool) -> None:
    """clipbench: few-shot CLIP adaptation benchmark (run the pipeline with `dvc repro`)."""


@main.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "backbones"]))
def list_(what: str) -> None:
    """List registered methods, datasets or backbones."""
    from clipbench.backbones import BACKBONES
    from clipbench.data import DATASETS
    from clipbench.methods import METHODS

    if what == "methods":
        for name in METHODS.names():
            d = METHODS.get(name).describe()
            click.echo(f"{name:16} inputs={d['requires']:9} class_specific={str(d['class_specific']):5} {d['doc']}")
    elif what == "datasets":
        for name in DATASETS.names():
            spec = DATASETS.get(name)
            click.echo(f"{name:24} dir={spec.dirname:24} {'test-only' if spec.test_only else 'train/val/test'}")
    else:
        for name in BACKBONES.names():
            b = BACKBONES.get(name)
            click.echo(f"{name:16} model={b.model:20} pretrained={b.pretrained}")


@main.command()
@click.option("--params", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
def validate(params: Path) -> None:
    """Check params.yaml (names, types, protocols) and print the resolved method configs."""
    from clipbench import recipes
    from clipbench.config import load_suite
    from clipbench.layout import Layout
    from clipbench.protocols import eval_cells
    from clipbench.rules import check_prepared
    from clipbench.typed import to_plain

    try:
        cfg = load_suite(params)
        checked = check_prepared(cfg, Layout())
    except ClipbenchError as exc:
        _fail(exc)
    click.echo(f"{params}: ok (suite {cfg.suite!r}, {len(eval_cells(cfg))} evaluation cells per method)")
    if checked:
        click.echo(f"  data rules checked on the indexed datasets: {', '.join(checked)}")
    for name in cfg.methods:
        config = to_plain(cfg.method_config(name))
        click.echo(f"  {name}: {json.dumps(config, sort_keys=True)}")
        for protocol in cfg.overridden(name):  # only the fields the protocol's override changes
            changed = {k: v for k, v in to_plain(cfg.method_config(name, protocol)).items() if config.get(k) != v}
            click.echo(f"    {protocol}: {json.dumps(changed, sort_keys=True)}")
    if line := recipes.summary_line(cfg):
        click.echo(f"  {line.strip()}")


@main.command()
@click.option("--executor", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True)
@click.option("--max-parallel", default=4, show_default=True, help="Tasks running at once (the array's parallelism).")
@click.option(
    "--params",
    default="params.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The suite; another file is copied to params.yaml first (DVC reads params.yaml).",
)
@click.option("--short-s", default=300.0, show_default=True, help="Stages estimated shorter than this share a task.")
@click.option("--gpus", default=0, show_default=True, help="GPUs per task of a backbone/extract/train/evaluate stage.")
@click.option("--cpus", default=1, show_default=True, help="CPUs per task.")
@click.option("--mem-gb", default=2.0, show_default=True, help="Memory per task (GB).")
@click.option("--partition", default=None, help="SLURM partition (default: the cluster's default).")
@click.option("--folder", default=None, type=click.Path(path_type=Path), help="Logs and workspaces [.launch/].")
def launch(executor, max_parallel, params, short_s, gpus, cpus, mem_gb, partition, folder) -> None:
    """Fan the stale stages out as SLURM (or local) job arrays, then `dvc repro` restores them and runs the rest."""
    import shutil

    from clipbench.config import load_suite
    from clipbench.launch.launcher import LaunchConfig, final_repro
    from clipbench.launch.launcher import launch as run_launch

    load_suite(params)  # a bad suite fails here, in one line, before anything is submitted
    target = Path("params.yaml")
    if params.resolve() != target.resolve():
        shutil.copyfile(params, target)
        click.echo(f"params.yaml <- {params}")
    cfg = LaunchConfig(executor, max_parallel, short_s, gpus, cpus, mem_gb, partition, folder)
    report = run_launch(Path("."), cfg)
    for task in report.launched:
        click.echo(f"launched {' '.join(task['stages'])} ({task['seconds']['total']:.0f}s on {task['host']})")
    if report.launched:
        o = report.overhead()
        click.echo(f"fan-out overhead: {o['overhead']:.1%} of {o['stage_s']:.0f}s in stage commands")
    ran = final_repro(Path("."))
    click.echo(f"final dvc repro ran: {', '.join(ran) or 'nothing'}")


@main.command()
@click.option("--params", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
def plan(params: Path) -> None:
    """Before any compute: stages, cells, encoder passes, GPU-hours, peak GPU memory and disk per method."""
    from clipbench import plan as planning
    from clipbench.config import load_suite

    try:
        click.echo(planning.render(planning.suite_plan(load_suite(params))), nl=False)
    except ClipbenchError as exc:
        _fail(exc)


@main.command()
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder holding the datasets (default: data_root of --params).",
)
@click.option("--params", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--counts",
    type=click.Choice(["exact", "classes"]),
    default=None,
    help="exact: compare with the published split sizes (default: data_counts of --params, else exact).",
)
@click.option("--dataset", "names", multiple=True, help="Only these datasets (repeatable).")
def datasets(data_root: Path | None, params: Path, counts: str | None, names: tuple[str, ...]) -> None:
    """List every dataset as found / missing / invalid with its split sizes, and how to fix what is not found."""
    from clipbench.config import load_suite
    from clipbench.data import DATASETS
    from clipbench.data.survey import render, survey

    default_root, default_counts = Path("data/raw"), "exact"
    if params.is_file():  # also registers the suite's custom datasets
        try:
            cfg = load_suite(params)
            default_root, default_counts = Path(cfg.data_root), cfg.data_counts
        except ClipbenchError as exc:
            _fail(exc)
    root = data_root or default_root
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        _fail(ClipbenchError(DATASETS.unknown_message(unknown[0])))
    rows = survey(root, list(names) or None, counts or default_counts)
    click.echo(f"data_root: {root}")
    click.echo(render(rows))


@main.command()
@click.option("--reports", default="reports", show_default=True, type=click.Path(path_type=Path))
def results(reports: Path) -> None:
    """Print the Markdown summary written by the aggregate stage."""
    path = reports / "summary.md"
    if not path.is_file():
        _fail(ClipbenchError(f"{path} not found; run `dvc repro` first"))
    click.echo(path.read_text())


@main.command()
@click.argument("method_a")
@click.argument("method_b")
@click.option(
    "--results", "results_path", default="reports/results.parquet", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOL_REGISTRY.in_order()),
    help="Restrict to one protocol (default: every protocol both methods have).",
)
@click.option("--summary-only", is_flag=True, help="Leave out the per-seed differences.")
def compare(method_a: str, method_b: str, results_path: Path, protocol: str | None, summary_only: bool) -> None:
    """Paired comparison METHOD_A − METHOD_B on shared cells: per-seed differences, t-test and Wilcoxon."""
    from clipbench import compare as paired
    from clipbench.results import read_results

    try:
        results = read_results([results_path])
    except ClipbenchError as exc:
        _fail(exc)
    unknown = [m for m in (method_a, method_b) if m not in set(results.method)]
    if unknown:
        _fail(
            ClipbenchError(
                f"method {unknown[0]!r} has no rows in {results_path}; it has: {', '.join(sorted(set(results.method)))}"
            )
        )
    click.echo(paired.render(results, method_a, method_b, protocol, per_seed=not summary_only))


@main.command()
@click.option("--metrics", default="reports/metrics.json", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--invariants",
    default=None,
    type=click.Path(path_type=Path),
    help="Training invariants of the run  [default: invariants.json beside --metrics]",
)
@click.option("--baseline", default="baselines/toy.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--update-baseline", is_flag=True, help="Rewrite the baseline with the current metrics and invariants.")
@click.option("--allow-removed", default=0, show_default=True, help="Entries an update may drop from the baseline.")
@click.option("--allow-added", default=0, show_default=True, help="Entries an update may add to an existing baseline.")
@click.option("--show-ok", is_flag=True, help="Also list entries within tolerance.")
def check(
    metrics: Path,
    invariants: Path | None,
    baseline: Path,
    update_baseline: bool,
    allow_removed: int,
    allow_added: int,
    show_ok: bool,
) -> None:
    """Fail (exit 1) when a metric moves beyond tolerance (either way), a training invariant changes, or a baseline
    entry is missing; with --update-baseline, show the change and rewrite the baseline within the allowances."""
    from clipbench import check as gate

    try:
        current = gate.read_metrics(metrics)
        exact = gate.read_invariants(invariants or metrics.parent / "invariants.json")
        if update_baseline:
            old = gate.load_baseline(baseline) if baseline.is_file() else None
            new = gate.updated_baseline(current, exact, old)
            if old is not None:
                click.echo(gate.render(gate.compare(current, old, exact), show_ok))
            gate.refuse_update(*gate.entry_changes(old, new), allow_removed, allow_added, baseline)
            gate.write_baseline(baseline, new)
            click.echo(f"baseline {baseline} written: {len(new.metrics)} metrics, {len(new.invariants)} invariants")
            return
        old = gate.load_baseline(baseline)
        findings = gate.compare(current, old, exact)
    except ClipbenchError as exc:
        _fail(exc)
    click.echo(gate.render(findings, show_ok))
    if exact and not old.invariants:
        click.echo(f"warning: {baseline} gates no invariant; add them with --update-baseline --allow-added N")
    if gate.failed(findings):
        sys.exit(1)


@main.command()
@click.option(
    "--check", is_flag=True, help="Only check that docs/fidelity.md is current and every difference has a reason."
)
def fidelity(check: bool) -> None:
    """Regenerate docs/fidelity.md: each method's settings against its reference, for the paper suite."""
    from clipbench import fidelity as fid

    sys.exit(fid.main(["--check"] if check else []))


@main.command()
@click.option("--out", default="reports/bench.md", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--quick/--full",
    default=True,
    show_default=True,
    help="--quick fits a few minutes of a shared CPU; --full runs params.yaml's suite and larger sizes.",
)
@click.option("--params", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--gate", is_flag=True, help="Only the gate-power section: plant bugs in a reduced suite, check each.")
@click.option(
    "--passes",
    is_flag=True,
    help="Only the encoder-pass section: configs/paper.yaml's plan against the reference harnesses (no run).",
)
@click.option(
    "--device",
    default=None,
    help="Measure on this device only (e.g. cuda): extraction, training-step rates, the paper plan re-timed; "
    "writes reports/bench-device.md unless --out is given.",
)
def bench(out: Path, quick: bool, params: Path, gate: bool, passes: bool, device: str | None) -> None:
    """Benchmark (not a test): encoder work vs the floor, throughput, caching speed-up, DVC overhead, memory,
    GPU-hours; writes a Markdown report. Run from the project root (it copies the project for `dvc repro`)."""
    import tempfile

    import yaml

    from clipbench import bench as b
    from clipbench.config import load_suite
    from clipbench.io import atomic_write_text

    if gate:
        return _bench_gate(out, params)
    if passes:
        return _bench_passes(out)
    if device is not None:
        _device_bench(out if out != Path("reports/bench.md") else Path("reports/bench-device.md"), device, quick)
        return
    try:
        load_suite(params)
        with tempfile.TemporaryDirectory(prefix="clipbench-bench-") as tmp:
            result = b.run_bench(
                b.QUICK if quick else b.FULL,
                yaml.safe_load(params.read_text()),
                Path.cwd(),
                Path(tmp),
                log=lambda msg: click.echo(msg, err=True),
            )
    except ClipbenchError as exc:
        _fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, b.render(result))
    click.echo(f"{out} written ({result['total_s']:.0f} s)")


def _bench_passes(out: Path) -> None:
    """``clipbench bench --passes``: replace (or add) the encoder-pass section of ``out`` (paper suite's plan)."""
    from clipbench.bench.passes import encoder_passes, render
    from clipbench.bench.report import replace_section
    from clipbench.config import load_suite
    from clipbench.io import atomic_write_text

    try:
        section = render(encoder_passes(load_suite(Path("configs/paper.yaml"))))
    except ClipbenchError as exc:
        _fail(exc)
    atomic_write_text(out, replace_section(out.read_text() if out.is_file() else "", section))
    click.echo(section)


def _bench_gate(out: Path, params: Path) -> None:
    """``clipbench bench --gate``: replace (or add) the gate-power section of ``out``."""
    import tempfile

    import yaml

    from clipbench.bench import gate_power as g
    from clipbench.bench.report import replace_section
    from clipbench.config import load_suite
    from clipbench.io import atomic_write_text

    try:
        load_suite(params)
        suite = g.gate_suite(yaml.safe_load(params.read_text()))
        with tempfile.TemporaryDirectory(prefix="clipbench-gate-") as tmp:
            result = g.gate_power(Path.cwd(), Path(tmp), suite, log=lambda msg: click.echo(msg, err=True))
    except ClipbenchError as exc:
        _fail(exc)
    section = g.render(result)
    atomic_write_text(out, replace_section(out.read_text() if out.is_file() else "", section))
    click.echo(section)


def _device_bench(out: Path, device: str, quick: bool) -> None:
    import tempfile

    from clipbench import plan
    from clipbench.bench import device as measure
    from clipbench.config import load_suite
    from clipbench.io import atomic_write_text
    from clipbench.runtime import resolve_device

    try:
        torch_device = resolve_device(device)
        paper = plan.suite_plan(load_suite(Path("configs/paper.yaml")))
        with tempfile.TemporaryDirectory(prefix="clipbench-bench-device-") as tmp:
            result = measure.device_bench(paper, Path(tmp), torch_device, "amp", quick)
    except ClipbenchError as exc:
        _fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, measure.render(result))
    click.echo(f"{out} written")


if __name__ == "__main__":
    main()
