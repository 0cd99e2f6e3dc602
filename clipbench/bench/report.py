"""The Markdown report (``reports/bench.md``) of one :func:`~clipbench.bench.runner.run_bench` result."""

from __future__ import annotations

import re


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(r: dict) -> str:
    """The Markdown report of one :func:`run_bench` result."""
    m = r["machine"]
    lines = [
        "# clipbench bench",
        "",
        f"Produced by `clipbench bench --{r['size']}` in {r['total_s']:.0f} s on one machine: {m['cpus']} CPUs, "
        f"torch {m['torch_version']} with {m['torch_threads']} threads, GPU: {m['gpu']}, Python {m['python']}. "
        f"Load average before/after: {m['load_before'][0]:.1f} / {m['load_after'][0]:.1f}"
        + (
            " — the machine was shared with other jobs, so absolute times are noisy; every ratio below is "
            "measured side by side in this one run."
            if max(m["load_before"][0], m["load_after"][0]) > 1.5
            else "."
        ),
        "Models are random-initialised (encoder cost does not depend on the weights).",
        "",
    ]
    for section in (_render_a, _render_b, _render_c, _render_d, _render_e, _render_f, _render_g, _render_i, _render_j):
        lines += section(r) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _render_a(r: dict) -> list[str]:
    a = r["a"]
    total = a["extract_encoded"] + a["methods_encoded"]
    ratio = total / a["needed"]
    rows = [
        [p["dataset"], p["train"], p["views"], p["val"], p["test"], p["train"] + p["views"] + p["val"] + p["test"]]
        for p in a["pools"]
    ]
    return [
        "## (a) Image-encoder inputs vs the unique images needed (goal ≤ 1.05)",
        "",
        f"Reduced toy suite run through the stage functions in-process: extract every dataset, then train and "
        f"evaluate every frozen-encoder method ({', '.join(a['methods'])}; {a['trained']} of {a['cells']} "
        "training cells trained in this run, then every evaluation cell). A "
        "forward pre-hook on the open_clip image tower counts every image that enters it, whoever calls it.",
        "",
        *_table(["dataset", "train pool", "augmented views", "val pool", "test", "needed (sum)"], rows),
        "",
        *_table(
            ["phase", "images into the image tower", "files decoded"],
            [
                ["extract", a["extract_encoded"], a["extract_decoded"]],
                [
                    "train + evaluate (all frozen-encoder methods, all cells)",
                    a["methods_encoded"],
                    a["methods_decoded"],
                ],
                ["**total** vs needed", f"**{total} / {a['needed']} = {ratio:.3f}**", ""],
            ],
        ),
        "",
        f"Encoder work recorded by the extract stage in the feature directories' `meta.json` "
        f"(`encode_counts`): {a['recorded_encoded']} images. Goal {_verdict(ratio <= 1.05)}.",
    ]


def _render_b(r: dict) -> list[str]:
    rows = [
        [
            b["model"],
            f"{b['image_size']} px",
            b["images"],
            b["batch_size"],
            f"{b['raw_ips']:.1f}",
            f"{b['ours_ips']:.1f}",
            f"{1000 / b['raw_ips']:.2f}",
            f"{1000 / b['ours_ips'] - 1000 / b['raw_ips']:.2f}",
            f"**{b['ratio']:.2f}**",
        ]
        for b in r["b"]
    ]
    big = [b for b in r["b"] if b["image_size"] >= 224]
    verdict = _verdict(all(b["ratio"] >= 0.9 for b in big)) if big else "not measured at 224 px"
    return [
        "## (b) Extraction throughput vs a raw `encode_image` loop (goal ≥ 0.9)",
        "",
        "Same model, same JPEG files (synthetic, 320×240). *raw*: `model.encode_image` over tensors decoded and "
        "transformed beforehand (untimed). *clipbench*: `features.encode_paths` including decoding, the test "
        "transform, and pre-projection + projected outputs. Best of 2 interleaved repeats each.",
        "",
        *_table(
            [
                "model",
                "input",
                "images",
                "batch",
                "raw img/s",
                "clipbench img/s",
                "encode ms/img",
                "extra ms/img (decode, transform)",
                "ratio",
            ],
            rows,
        ),
        "",
        f"Goal at real-backbone scale (224 px): {verdict}. The toy backbone (3 layers, width 96, 32 px) costs "
        "less to run than decoding and resizing a JPEG, so its ratio measures the decoder, not the encoder; at "
        "224 px the encoder dominates and decoding hides inside the ratio. On a GPU, `encode_paths` decodes and "
        "transforms batch i + 1 in a background thread while batch i is encoded (`overlap`, on by default when "
        "the model is on a GPU; off here, where both would compete for the same CPU cores).",
    ]


def _render_c(r: dict) -> list[str]:
    rows = []
    for c in r["c"]:
        cached = c["extract_s"] + c["cached_train_s"]
        ref = c["reference_steps"] / c["n_steps"]  # linear in steps; extraction does not grow
        at_ref = ref * c["reencode_s"] / (c["extract_s"] + ref * c["cached_train_s"])
        rows.append(
            [
                c["method"],
                c["steps"],
                c["images"],
                f"{c['extract_s']:.2f} ({c['cached_encoded']})",
                f"{c['cached_train_s']:.2f}",
                f"{c['reencode_s']:.2f} ({c['reencode_encoded']})",
                f"**{c['reencode_s'] / cached:.1f}×**",
                f"{c['reencode_s'] / c['cached_train_s']:.0f}×",
                f"{at_ref:.1f}× ({c['reference_steps']})",
            ]
        )
    return [
        "## (c) Training on cached features vs re-encoding images every step",
        "",
        "Toy backbone (32 px), rendered toy images. *cached*: extract the test-transform features and the view "
        "cache once, then train on them. *re-encode*: the same training loop where every epoch (CLIP-Adapter) or "
        "full-batch iteration (ProLIP) decodes, augments and encodes every training image again, as the "
        "references' data loaders do. CLIP-Adapter is `clipbench.methods.clip_adapter.ClipAdapter` "
        "and ProLIP is `clipbench.methods.prolip.Prolip` unchanged (the re-encoding runs behind their view "
        "tensors). ProLIP's own reference already caches "
        "300 views, so its re-encode column is a naive harness, not the reference.",
        "",
        *_table(
            [
                "method",
                "training",
                "images",
                "extract s (encodes)",
                "cached train s",
                "re-encode s (encodes)",
                "speed-up incl. extraction",
                "speed-up, extraction shared",
                "incl. extraction at the reference length",
            ],
            rows,
        ),
        "",
        "The extraction is shared by every frozen-encoder method, shot count and seed of a dataset, so the "
        "'extraction shared' column is the per-run gain once it is amortised; the last column scales the "
        "measured per-step times linearly to the reference's epochs / iterations. This section caches a few "
        "views and cycles them (as the toy suite's `features.max_views` does); the paper suite caches one fresh "
        "view per epoch or step, as the references draw them, so there the per-run encoder work equals the "
        "reference's and the saving comes from sharing views and test encodes across methods, shots, seeds and "
        "protocols (section j).",
    ]


def _render_d(r: dict) -> list[str]:
    d = r["d"]
    projected = d["per_stage_s"] * d["toy_suite_stages"]
    return [
        "## (d) DVC bookkeeping share (goal ≤ 10%) and a no-op `dvc repro`",
        "",
        f"`dvc repro` of the reduced toy suite (methods {', '.join(d['methods'])}) in a scratch copy of the "
        "project. Each stage command runs through a `python` wrapper that logs its own wall time; bookkeeping = "
        "`dvc repro` wall time − the sum of the stage processes' wall times (so Python start-up and imports count "
        "as stage time, everything DVC does between and around them as bookkeeping).",
        "",
        *_table(
            [
                "stages run",
                "dvc repro wall s",
                "sum of stage processes s",
                "bookkeeping s",
                "share",
                "bookkeeping per stage s",
                "no-op dvc repro s",
            ],
            [
                [
                    d["stages"],
                    f"{d['wall_s']:.1f}",
                    f"{d['stage_s']:.1f}",
                    f"{d['bookkeeping_s']:.1f}",
                    f"**{100 * d['share']:.1f}%**",
                    f"{d['per_stage_s']:.2f}",
                    f"**{d['noop_s']:.1f}** ({d['noop_ran']} stages ran)",
                ]
            ],
        ),
        "",
        *_table(
            ["stage kind", "processes", "seconds"],
            [[k, int(n), f"{s:.1f}"] for k, (n, s) in sorted(d["by_kind"].items())],
        ),
        "",
        f"A bare stage process (interpreter + `import stages._common`, which pulls in torch through "
        f"`clipbench.config`; open_clip, torchvision and scikit-learn are imported only where used) takes "
        f"{d['import_s']:.1f} s here, so ≈ {d['import_s'] * d['stages']:.0f} s of the {d['stage_s']:.0f} s of "
        "stage time is imports. That is stage-side cost, not DVC's, and is counted as stage time.",
        "",
        f"Goal on this reduced run: {_verdict(d['share'] <= 0.10)}. Bookkeeping is a per-stage cost, so the share "
        f"falls as stages do more work: the full toy suite expands to {d['toy_suite_stages']} stages, i.e. "
        f"≈ {projected:.0f} s of bookkeeping at the measured per-stage cost, which is ≤ 10% whenever the toy "
        f"suite's `dvc repro` takes ≥ {10 * projected:.0f} s.",
    ]


def _render_e(r: dict) -> list[str]:
    e = r["e"]
    rows = [
        [x["images"], x["decoded"], f"{x['seconds']:.1f}", f"{x['peak_rss_mb']:.0f}", f"{x['decoded_if_held_mb']:.0f}"]
        for x in e
    ]
    growth = e[-1]["peak_rss_mb"] / e[0]["peak_rss_mb"]
    return [
        "## (e) Peak memory of extraction at two dataset sizes (goal: flat)",
        "",
        "`features.encode_paths` with the toy backbone, batch 64, each size in a fresh process (its own "
        "peak resident memory, `VmHWM`: includes the interpreter, torch and the model).",
        "",
        *_table(["images", "decoded", "seconds", "peak RSS MB", "decoded pixels if all were held, MB"], rows),
        "",
        f"Peak grows {growth:.2f}× for {e[-1]['images'] / e[0]['images']:.0f}× the images: "
        f"{_verdict(growth <= 1.10)} (flat = within 10%). Only one batch of decoded images is alive at a time; "
        "the outputs (two small float vectors per image) are the only part that grows.",
    ]


def _render_f(r: dict) -> list[str]:
    f, fl = r["f"], r["f"].get("flops")
    rows = [
        [x["item"], f"{x['images']:,.0f}" if x["images"] else "", f"{x['flops']:.3e}", f"{x['gpu_hours']:.1f}"]
        for x in f["rows"]
    ]
    main = [x for x in f["rows"] if not x["item"].startswith(("for contrast", "feature extraction, 300"))]
    head = (
        f"Measured forward FLOPs (2 × MAC, `torch.utils.flop_counter`) of {fl['model']} at {fl['image_size']} "
        f"px: {fl['image_flops'] / 1e9:.1f} GFLOPs per image, {fl['text_flops'] / 1e9:.1f} GFLOPs per 77-token "
        "prompt. "
        if fl
        else ""
    )
    return [
        "## (f) GPU-hours of the paper suite (estimate)",
        "",
        head + f"Stated GPU: {f['gpu']['name']} at an assumed {100 * f['gpu']['utilisation']:.0f}% utilisation "
        f"= {f['sustained_tflops']:.0f} TFLOP/s sustained. Suite (`configs/paper.yaml`): {f['sources']} datasets + "
        f"{f['targets']} targets (spec §3.1, "
        f"§3.5), protocols of spec §5 ({f['cells_per_method']} training cells per method), one ViT-B/16 "
        "backbone. Assumptions are listed in `clipbench/compute_plan.py`.",
        "",
        *_table(["item", "images encoded", "FLOPs", "GPU-hours"], rows),
        "",
        f"Subtotal of these rows (extraction with {f['views']:,} augmented views + {' + '.join(f['methods'])}): "
        f"{sum(x['gpu_hours'] for x in main):.1f} GPU-hours. These rows leave out the prompt learners (CoOp, "
        "CoCoOp back-propagate through the text encoder); the GPU-hours of every registered method, peak memory "
        "and disk are in `clipbench plan --params configs/paper.yaml`.",
    ]


def _render_j(r: dict) -> list[str]:
    from clipbench.bench.passes import render as render_passes

    return render_passes(r["j"]).rstrip("\n").splitlines() if "j" in r else []


def _render_g(r: dict) -> list[str]:
    g = r.get("g")
    if not g:
        return []
    return [
        "## (g) Verified reads (goal ≤ 3% of the toy suite's time)",
        "",
        "Every artifact a stage reads is checked against the hash recorded when it was written (safetensors "
        "content hashes, `seal.json` of feature and cell directories). One verification of every artifact the "
        "`dvc repro` of (d) wrote, weighted by the stage processes that read it (features and text classifiers: "
        "the train and evaluate stage of every method; cells: two stages), against that `dvc repro`'s wall time.",
        "",
        *_table(
            ["feature files", "cells", "features s", "cells s", "weighted s", "dvc repro wall s", "share"],
            [
                [
                    g["feature_dirs"],
                    g["cells"],
                    f"{g['feature_s']:.2f}",
                    f"{g['cell_s']:.2f}",
                    f"{g['weighted_s']:.2f}",
                    f"{g['repro_wall_s']:.1f}",
                    f"**{100 * g['share']:.2f}%**",
                ]
            ],
        ),
        "",
        f"Goal: {_verdict(g['share'] <= 0.03)}.",
    ]


def _render_i(r: dict) -> list[str]:
    h = r.get("i")
    if not h:
        return []
    outside = h["total_s"] - h["stage_s"]
    return [
        "## (i) `clipbench launch` fan-out overhead (goal ≤ 10% of the stage time)",
        "",
        f"The suite of (d) launched with the local executor on {h['slots']} slots in a committed scratch copy: "
        f"{h['stages']} stages in {h['tasks']} tasks, then the final `dvc repro` (ran: {', '.join(h['final_ran'])}). "
        "Each task's time outside its stage commands (clone, `dvc checkout`, DVC start-up, hashing and saving) "
        "against the time inside them.",
        "",
        *_table(
            ["task s", "stage commands s", "outside s", "share", "clone s", "checkout s", "launch wall s", "serial s"],
            [
                [
                    f"{h['total_s']:.1f}",
                    f"{h['stage_s']:.1f}",
                    f"{outside:.1f}",
                    f"**{100 * h['share']:.1f}%**",
                    f"{h['workspace_s']:.1f}",
                    f"{h['checkout_s']:.1f}",
                    f"{h['launch_wall_s']:.1f}",
                    f"{h['serial_wall_s']:.1f}",
                ]
            ],
        ),
        "",
        f"Goal on this reduced run: {_verdict(h['share'] <= 0.10)}. The cost outside the stages is per task "
        f"(≈ {outside / max(1, h['tasks']):.1f} s here), so its share falls as stages grow from seconds (toy) to "
        "minutes and hours (paper suite on GPUs).",
    ]


def replace_section(report: str, section: str) -> str:
    """``report`` with the section that starts with ``section``'s heading replaced by it (appended when absent)."""
    head = section.splitlines()[0]
    if head not in report:
        return report.rstrip("\n") + ("\n\n" if report.strip() else "") + section
    before, after = report.split(head, 1)
    rest = re.search(r"^## ", after, flags=re.M)
    return before + section + ("\n" + after[rest.start() :] if rest else "")
