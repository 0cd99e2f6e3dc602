"""The callable submitit runs for a task: requeued as it is when SLURM preempts it or it runs out of time."""

from __future__ import annotations

import submitit

from clipbench.launch.task import TaskSpec, run_task


class Job(submitit.helpers.Checkpointable):
    """``run_task`` as a submitit ``Checkpointable``: a requeued task starts again in a fresh workspace."""

    def __call__(self, spec: TaskSpec) -> dict:
        return run_task(spec)
