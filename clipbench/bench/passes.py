"""(j) Frozen-encoder passes of a suite's plan: clipbench's shared extraction against the reference harnesses.

A reference harness run (CoOp/Dassl, Tip-Adapter, ProLIP, ...) encodes, for its own cell only: its training
images once per epoch or step that draws a fresh augmentation (the views its method reads, uncapped), its
validation set when it selects something, and every test set it is evaluated on. clipbench encodes each
(backbone, dataset) once: the few-shot pools, the views of every view group (methods with one recipe share them;
base-to-new base cells share their manifest's images with the few-shot cells) and each test set, for all methods,
shots, seeds and protocols (:func:`clipbench.plan.extraction_images`). Both sides are counted from the plan
alone, nothing is run; the methods that train the image encoder (ClipFit, CLIP-CITE) re-encode every epoch in
both and are left out. The reference side is a lower bound: its plain encodes of training images (the linear
probe's) are not counted.
"""

from __future__ import annotations

from dataclasses import replace

from clipbench.config import SuiteConfig
from clipbench.methods import METHODS, Inputs
from clipbench.protocols import eval_units, training_units


def frozen_methods(cfg: SuiteConfig) -> list[str]:
    """The suite's methods whose image encoder stays frozen (they read cached embeddings)."""
    return [m for m in cfg.methods if METHODS.get(m).requires is not Inputs.IMAGES]


def reference_passes(cfg: SuiteConfig, method: str) -> dict[str, int]:
    """Image-encoder inputs of ``method``'s reference runs over the suite's cells, by kind."""
    from clipbench.plan import cell_shape, dataset_size, target_shape  # plan imports the bench package

    cls, out = METHODS.get(method), {"views": 0, "val": 0, "test": 0}
    for dataset in cfg.datasets:
        size = dataset_size(dataset)
        for unit in training_units(cfg, method, dataset):
            shape, need = cell_shape(unit.cell), cls.view_need(unit.config, dataset, unit.cell.shots)
            out["views"] += shape.images * (need.count if need else 0)
            if cls.selects(unit.config):
                out["val"] += min(size.val or size.test, shape.classes * min(unit.cell.shots, 4))
    out["test"] = sum(target_shape(cell).images for cell in eval_units(cfg, method))
    return out


def encoder_passes(cfg: SuiteConfig) -> dict:
    """Reference and clipbench passes of ``cfg``'s frozen-encoder methods, with the share of each saving."""
    from clipbench.plan import extraction_images  # plan imports the bench package

    methods = frozen_methods(cfg)
    reference = {m: reference_passes(cfg, m) for m in methods}
    alone = {m: extraction_images(replace(cfg, methods=(m,))) for m in methods}  # one extraction per method
    shared = extraction_images(replace(cfg, methods=tuple(methods)))
    return {
        "suite": cfg.suite,
        "methods": methods,
        "reference": reference,
        "per_method": alone,
        "shared": shared,
        "max_views": cfg.features.max_views,
    }


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def render(result: dict) -> str:
    """The Markdown section of ``reports/bench.md``."""
    ref, alone, shared = result["reference"], result["per_method"], result["shared"]
    ref_total = sum(_total(c) for c in ref.values())
    ratio = _total(shared) / ref_total
    rows = [
        f"| {m} | {c['views']:,} | {c['val']:,} | {c['test']:,} | {_total(c):,} | {_total(alone[m]):,} |"
        for m, c in ref.items()
    ]
    kinds = ("views", "val", "test")
    by_kind = {k: sum(c[k] for c in ref.values()) for k in kinds}
    alone_kind = {k: sum(c.get(k, 0) for c in alone.values()) for k in (*kinds, "train")}
    return "\n".join(
        [
            "## (j) Encoder passes: clipbench vs the reference harnesses (goal ≤ 1.0)",
            "",
            f"Suite `{result['suite']}`, frozen-encoder methods {', '.join(result['methods'])}, counted from the "
            "plan (`clipbench bench --passes`; nothing is run). Reference: every run encodes its own training "
            "views (one per epoch or step that draws a fresh augmentation, Tip-Adapter's key views), its "
            "validation set when it selects, and each test set it is scored on; its plain training encodes are "
            "not counted. clipbench: one extraction per dataset for all methods, shots, seeds and protocols "
            f"(views of equal recipes shared; K-shot pools of one seed assumed disjoint, an upper bound). "
            f"`features.max_views`: {result['max_views']}.",
            "",
            "| method | reference views | reference val | reference test | reference total | clipbench, "
            "this method alone |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "| encoder inputs | views | train pools | val | test | total |",
            "|---|---|---|---|---|---|",
            f"| reference harnesses | {by_kind['views']:,} | — | {by_kind['val']:,} | {by_kind['test']:,} "
            f"| {ref_total:,} |",
            f"| clipbench, one extraction per method | {alone_kind['views']:,} | {alone_kind['train']:,} "
            f"| {alone_kind['val']:,} | {alone_kind['test']:,} | {sum(alone_kind.values()):,} |",
            f"| clipbench, shared | {shared['views']:,} | {shared['train']:,} | {shared['val']:,} "
            f"| {shared['test']:,} | {_total(shared):,} |",
            "",
            f"Ratio clipbench / reference: **{ratio:.3f}** (goal ≤ 1.0: {'met' if ratio <= 1.0 else '**not met**'}). "
            f"Sharing across methods saves {_saving(alone_kind['views'], shared['views'])} of the views; one test "
            f"encode per dataset instead of one per evaluated cell (methods, shots, seeds, protocols) saves "
            f"{_saving(by_kind['test'], shared['test'])} of the test encodes.",
            "",
        ]
    )


def _saving(before: int, after: int) -> str:
    return f"{100 * (1 - after / before):.1f}%" if before else "nothing (none needed)"
