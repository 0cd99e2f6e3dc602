"""What to launch: the stale stages of a DVC project, their waves, and tasks that group short stages.

A wave holds stages whose upstream stages are all done (in an earlier wave, or already up to date); the stages
before ``train`` form one wave when they are all short (they are cheap and chained), ``train`` and ``evaluate``
follow. Stages left to the main workspace's final ``dvc repro`` (:data:`FINAL`) are never launched.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clipbench.errors import ClipbenchError

FINAL = ("aggregate", "track")  # cheap, read every result, and track is the only MLflow writer: run in main
FANNED = ("train", "evaluate")  # stage kinds launched wave by wave (everything else is the preparation wave)


def kind(stage: str) -> str:
    """``train`` for ``train@toy_vit-zeroshot-toy_objects``."""
    return stage.split("@", 1)[0]


def stage_graph(root: Path) -> dict[str, tuple[str, ...]]:
    """Every stage of the project at ``root`` -> the stages it depends on (DVC's own graph of ``dvc.yaml``)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        # ``name``, not ``addressing``: the latter is relative to the current directory ("../x/dvc.yaml:code")
        return {s.name: tuple(sorted(u.name for u in graph.successors(s))) for s in graph.nodes}


def stale_stages(root: Path, env: Mapping[str, str] | None = None) -> set[str]:
    """The stages ``dvc status`` reports as changed in the workspace at ``root``."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ClipbenchError(f"dvc status failed in {root}: {proc.stderr.strip()[-500:]}")
    return set(json.loads(proc.stdout.strip().splitlines()[-1] or "{}"))


def to_run(graph: Mapping[str, tuple[str, ...]], stale: set[str]) -> list[str]:
    """The stale stages and everything downstream of them, minus :data:`FINAL`, in topological order."""
    order = topological(graph)
    chosen: set[str] = set()
    for stage in order:
        if stage in stale or any(u in chosen for u in graph[stage]):
            chosen.add(stage)
    return [s for s in order if s in chosen and kind(s) not in FINAL]


def topological(graph: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Stages ordered so that each comes after its upstream stages (ties by name, so the order is stable)."""
    depth: dict[str, int] = {}

    def level(stage: str) -> int:
        if stage not in depth:
            depth[stage] = 1 + max((level(u) for u in graph[stage]), default=-1)
        return depth[stage]

    return sorted(graph, key=lambda s: (level(s), s))


@dataclass(frozen=True)
class Task:
    """Stages run one after the other by one job (in topological order)."""

    stages: tuple[str, ...]
    seconds: float  # estimated compute time

    @property
    def name(self) -> str:
        head = self.stages[0].replace("@", "-")
        return head if len(self.stages) == 1 else f"{head}+{len(self.stages) - 1}"


def waves(stages: list[str], estimate: Mapping[str, float], short_s: float, slots: int) -> list[list[Task]]:
    """The launch waves of ``stages`` (topologically ordered): preparation, then each of :data:`FANNED`.

    The preparation stages form a single task when every one is shorter than ``short_s``, else one wave per
    dependency level; each other wave packs its short stages into tasks (:func:`pack`).
    """
    prep = [s for s in stages if kind(s) not in FANNED]
    out: list[list[Task]] = []
    if prep and all(estimate[s] < short_s for s in prep):
        out.append([Task(tuple(prep), sum(estimate[s] for s in prep))])
    elif prep:
        out.extend(pack(level, estimate, short_s, slots) for level in _levels(prep, stages))
    for fanned in FANNED:
        wave = [s for s in stages if kind(s) == fanned]
        if wave:
            out.append(pack(wave, estimate, short_s, slots))
    return out


def _levels(subset: list[str], order: list[str]) -> list[list[str]]:
    """``subset`` cut into dependency levels by stage kind, in pipeline order (download, split, extract...)."""
    kinds = list(dict.fromkeys(kind(s) for s in order if s in subset))
    return [[s for s in subset if kind(s) == k] for k in kinds]


def pack(stages: list[str], estimate: Mapping[str, float], short_s: float, slots: int) -> list[Task]:
    """One task per stage of at least ``short_s``; the short ones share tasks of at most ``short_s`` in all,
    but in no fewer tasks than there are free slots (so grouping never idles a slot)."""
    long = [Task((s,), estimate[s]) for s in stages if estimate[s] >= short_s]
    short = sorted((s for s in stages if estimate[s] < short_s), key=lambda s: (-estimate[s], s))
    if not short:
        return long
    total = sum(estimate[s] for s in short)
    bins = min(len(short), max(math.ceil(total / short_s) if short_s > 0 else len(short), slots - len(long), 1))
    groups: list[list[str]] = [[] for _ in range(bins)]
    load = [0.0] * bins
    for stage in short:  # longest first onto the least loaded task
        i = load.index(min(load))
        groups[i].append(stage)
        load[i] += estimate[stage]
    rank = {s: i for i, s in enumerate(stages)}
    tasks = [Task(tuple(sorted(g, key=rank.__getitem__)), load[i]) for i, g in enumerate(groups)]
    return long + tasks
