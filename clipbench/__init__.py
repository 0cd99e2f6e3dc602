"""clipbench: a reproducible benchmark of few-shot CLIP adaptation methods.

The library is importable and configuration-free: registries of methods, datasets and backbones, the
protocol logic and one ``run`` function per pipeline stage (``clipbench.pipeline``). ``params.yaml`` is read
only by :func:`clipbench.config.load_suite`, called at the stage and CLI boundary.
"""

__version__ = "0.1.0"
