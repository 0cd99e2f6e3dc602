"""``clipbench launch``: the stale DVC stages fanned out as SLURM (or local) job arrays through submitit.

:mod:`~clipbench.launch.dag` reads what is stale and cuts it into waves of tasks, :mod:`~clipbench.launch.task`
runs one task (one or a few stages) in a throwaway clone sharing the DVC cache and the cell store, and
:mod:`~clipbench.launch.launcher` submits the waves, waits on each task's own completion marker and reports.
The main workspace's ``dvc repro`` then restores every launched stage from DVC's run-cache (docs/design.md,
"Cluster").
"""
