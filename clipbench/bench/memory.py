"""(e) Peak memory of extraction at two dataset sizes, each in its own process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from clipbench import features
from clipbench.bench.instruments import random_backbone

REPO_ROOT = Path(__file__).resolve().parents[2]


def memory_child() -> None:
    """Entry point of the memory subprocess: ``-c`` argv = image_dir, n_images, batch_size; prints JSON."""
    image_dir, n, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    bb = random_backbone("clipbench-toy-vit", "toy_vit")
    paths = sorted(p.name for p in image_dir.glob("*.jpg"))[:n]
    counter = features.EncodeCounter()
    start = time.perf_counter()
    features.encode_paths(bb, image_dir, paths, batch, counter=counter)
    print(
        json.dumps(
            {
                "images": len(paths),
                "decoded": counter.decoded,
                "seconds": time.perf_counter() - start,
                "peak_rss_mb": _own_peak_mb(),
            }
        )
    )


def _own_peak_mb() -> float:
    """This process's peak resident memory since its ``exec``.

    Linux's ``ru_maxrss`` of an exec'd child starts at the parent's RSS at fork, so ``VmHWM`` (the high-water
    mark of the process's own address space) is read where ``/proc`` has it.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(image_dir: Path, sizes: tuple[int, ...], batch_size: int = 64) -> list[dict]:
    """Peak resident memory of extraction over the first ``n`` images, one fresh process per size."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    rows = []
    for n in sizes:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from clipbench.bench.memory import memory_child; memory_child()",
                str(image_dir),
                str(n),
                str(batch_size),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory subprocess failed:\n{proc.stderr[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        from PIL import Image

        w, h = Image.open(image_dir / "img_00000.jpg").size
        rows.append({**row, "decoded_if_held_mb": n * w * h * 3 / 2**20})
    return rows
