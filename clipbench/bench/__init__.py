"""``clipbench bench``: how close a run sits to the compute floor, measured side by side on one machine.

One module per measurement (every figure of a report comes from one call of :func:`run_bench`):

* (a) :mod:`.encodes`: image-encoder inputs of a reduced toy suite (extract, then train and evaluate every
  frozen-encoder method) against the unique images x views it needs, counted by a hook on the image tower itself;
* (b) :mod:`.throughput`: extraction throughput against a raw ``encode_image`` loop over pre-decoded tensors;
* (c) :mod:`.training`: ProLIP and CLIP-Adapter (the method classes) training on cached features against the same
  training re-encoding its images every step;
* (d) :mod:`.dvc_overhead`: DVC bookkeeping as a share of a ``dvc repro`` of the reduced toy suite, and a no-op
  ``dvc repro``;
* (e) :mod:`.memory`: peak memory of extraction at two dataset sizes, each in its own process;
* (f) :mod:`.gpu_hours`: GPU-hours of the paper suite (``configs/paper.yaml``) from measured FLOPs
  (:mod:`clipbench.compute_plan`).
* (g) :mod:`.gate_power` (``clipbench bench --gate``, run on its own): planted bugs caught or missed by
  ``clipbench check``, and a clean re-run that must pass.

:mod:`.runner` runs them all; :mod:`.report` writes ``reports/bench.md``. Models are random-initialised: encoder
cost does not depend on the weights.
"""

from clipbench.bench.report import render
from clipbench.bench.runner import run_bench
from clipbench.bench.sizes import FULL, QUICK, BenchSize

__all__ = ["FULL", "QUICK", "BenchSize", "render", "run_bench"]
