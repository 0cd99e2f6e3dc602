"""Linear probe CLIP (CoOp ``lpclip/linear_probe.py``, following CLIP paper App. A3; spec §6.2).

Multinomial L2 logistic regression (scikit-learn L-BFGS, ``max_iter=1000``, with intercept) on raw,
unnormalised projected embeddings of the test-transform view. The inverse regularisation ``C`` is selected on
the few-shot validation set: a coarse grid ``{1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6}``, then 8 bisection steps in
log10 space on ``[C_peak/10, C_peak*10]`` keeping the better end (ties keep the left end).

Deviations from the reference: the few-shot subsets are the shared CoOp/Dassl manifests (spec §4.1) rather
than lpclip's own numpy sampling (§4.2); ImageNet validation comes from train (§8 item 13). ``selection:
full_val`` selects C on the source dataset's whole validation split instead (:mod:`clipbench.selection`). The probe is
class-specific: new classes (base-to-new) and cross-dataset targets report "n/a"; on a target whose classes
are a subset of the training classes (ImageNet-A/R), logits are restricted to those classes by class id.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from clipbench.devices import host_float, to_host
from clipbench.methods.base import EvalTarget, FitTask, Method, MethodConfig, train_class_index
from clipbench.methods.work import FP32, Arch, CellShape

if TYPE_CHECKING:  # scikit-learn is imported where it fits (seconds of start-up for every suite load otherwise)
    from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class LinearProbeConfig(MethodConfig):
    coarse_grid: tuple[float, ...] = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # lpclip's coarse C values
    bisection_steps: int = 8  # log10-space refinement steps around the coarse peak
    max_iter: int = 1000  # L-BFGS iterations (lpclip)

    def validate(self, where: str) -> None:
        from clipbench.errors import ConfigError

        if not self.coarse_grid or any(c <= 0 for c in self.coarse_grid):
            raise ConfigError(f"{where}.coarse_grid: needs positive C values, got {self.coarse_grid}")


class LinearProbe(Method):
    """Logistic regression on frozen CLIP features with C chosen on the few-shot validation set."""

    name = "linear_probe"
    Config = LinearProbeConfig
    smoke = {"bisection_steps": 2}  # tiny-run overrides (tests, bench): see Method.smoke

    @classmethod
    def state_bytes(cls, config: MethodConfig, cell: CellShape, arch: Arch) -> int:
        return FP32 * cell.classes * (arch.embed_dim + 1)

    class_specific = True
    host_fit = True  # scikit-learn's L-BFGS, as lpclip; the probe's logits are computed on the device
    selection = "C by coarse grid + log-space bisection on the few-shot validation set (min(K,4)/class)"

    @classmethod
    def selects(cls, config: LinearProbeConfig) -> str:
        return "C"

    def __init__(self, config: LinearProbeConfig) -> None:
        super().__init__(config)
        self.coef: torch.Tensor | None = None
        self.intercept: torch.Tensor | None = None
        self.C = float("nan")
        self._fits: dict[float, LogisticRegression] = {}

    def _fit_c(self, c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=c, max_iter=self.config.max_iter, solver="lbfgs")
        # Multi-threaded BLAS on these small matrices is 20-50x slower than one thread (measured here).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            # K-shot training sets have more classes than half their samples by design (1-shot: one per class)
            warnings.filterwarnings("ignore", "The number of unique classes is greater than 50%", UserWarning)
            return clf.fit(x, y)

    def _val_acc(self, c: float, task: FitTask) -> float:
        """Validation accuracy at ``c``; each C is fitted once per task (the bisection revisits its ends)."""
        if c not in self._fits:
            self._fits[c] = self._fit_c(c, to_host(task.train.plain).numpy(), to_host(task.train.labels).numpy())
        val_x, val_y = to_host(task.val.plain).numpy(), to_host(task.val.labels).numpy()
        return float((self._fits[c].predict(val_x) == val_y).mean())

    def search_c(self, task: FitTask) -> float:
        """lpclip's coarse grid then bisection, on the validation set only."""
        accs = [self._val_acc(c, task) for c in self.config.coarse_grid]
        peak = self.config.coarse_grid[int(np.argmax(accs))]
        left, right = math.log10(peak) - 1, math.log10(peak) + 1
        best = math.log10(peak)
        for _ in range(self.config.bisection_steps):
            acc_left, acc_right = self._val_acc(10**left, task), self._val_acc(10**right, task)
            mid = (left + right) / 2
            if acc_left >= acc_right:
                best, right = left, mid
            else:
                best, left = right, mid
        return 10**best

    def fit(self, task: FitTask) -> dict[str, float | int]:
        self._fits = {}
        self.C = self.search_c(task)
        self._val_acc(self.C, task)
        clf = self._fits.pop(self.C)
        self._fits = {}
        coef = np.zeros((len(task.space), clf.coef_.shape[1]), np.float32)
        intercept = np.full(len(task.space), -np.inf, np.float32)  # classes absent from training never win
        coef[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_])
        intercept[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else [-clf.intercept_[0], clf.intercept_[0]]
        self.coef, self.intercept = torch.from_numpy(coef), torch.from_numpy(intercept)
        return {
            "C": self.C,
            "steps": int(clf.n_iter_.max()),  # lbfgs iterations of the selected fit
            "trainable_params": int(clf.coef_.size + clf.intercept_.size),
        }

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        rows = train_class_index(target)
        return x.float() @ self.coef[rows].T + self.intercept[rows]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"coef": self.coef, "intercept": self.intercept, "C": torch.tensor([self.C])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.coef, self.intercept, self.C = state["coef"], state["intercept"], host_float(state["C"])
