"""Run the miniature paper-shaped suite (clipbench.miniature) in a temporary folder; used by gpu_check.sh."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from clipbench import miniature  # noqa: E402

from coop_fixtures import write_coop_root  # noqa: E402

GPU = (["imagenet", "caltech101", "eurosat"], ["imagenetv2", "imagenet_sketch"])
CPU = (["eurosat"], [])  # what the slow test runs: ViT-B/16 costs seconds per pass on a CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cpu-size", action="store_true", help="EuroSAT only (the slow test's size)")
    args = parser.parse_args()
    sources, targets = CPU if args.cpu_size else GPU
    with tempfile.TemporaryDirectory(prefix="clipbench-miniature-") as tmp:
        data_root = write_coop_root(Path(tmp) / "coop")
        out = miniature.run(Path(tmp) / "work", data_root, sources, targets, device=args.device)
    print(f"device {out['device']}: {out['results']} evaluation cells; sources {sources}, targets {targets}")
    for kind, seconds in out["seconds"].items():
        print(f"{kind:28} {seconds:7.1f} s")


if __name__ == "__main__":
    main()
