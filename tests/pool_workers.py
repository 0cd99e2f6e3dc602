"""Functions the ``gpus`` executor tests send to spawned workers (a light module: each worker imports it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from clipbench.errors import ConfigError
from clipbench.runtime import RuntimeConfig


def probe(out: Path, item: int) -> None:
    """Record, from inside a worker, the device each ``runtime.device`` resolves to there; log one line."""
    devices = {name: str(RuntimeConfig(device=name).torch_device()) for name in ("auto", "cuda", "cpu")}
    logging.getLogger("clipbench.test").warning("probe %d", item)
    (out / f"{item}.json").write_text(json.dumps(devices))


def fail_on_one(item: int) -> None:
    if item == 1:
        raise ConfigError(f"cell {item} cannot be computed")
