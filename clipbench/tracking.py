"""MLflow tracking: the only module that imports mlflow.

One experiment per protocol (``<prefix>/<protocol>``) and one run per result cell (method, backbone,
protocol, source, dataset, shots, seed) holding the cell's metrics (``acc`` or ``base``/``new``), the method's
resolved config as params, and lineage tags. Logging is idempotent: a run is keyed by the cell's evaluation
key, so re-logging the same results creates nothing new. A tracking store that cannot be reached is reported
once as a warning; results stay in the result files either way.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)
KEY_TAG = "clipbench.eval_key"


def _flatten(prefix: str, obj: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(obj)[:6000]
    return out


def _cell_runs(results: pd.DataFrame) -> Iterable[tuple[tuple, pd.DataFrame]]:
    keys = ["protocol", "method", "backbone", "source", "dataset", "shots", "seed"]
    return results.groupby(keys, sort=True)


def log_results(results: pd.DataFrame, *, uri: str, experiment_prefix: str, configs: dict[str, dict],
                lineage: dict[str, str]) -> dict[str, Any]:
    """Log every cell of ``results`` as an MLflow run; return a summary (never raises on store failures)."""
    try:
        import mlflow
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        created, skipped = 0, 0
        for (protocol, method, backbone, source, dataset, shots, seed), g in _cell_runs(results):
            exp_id = _experiment(client, f"{experiment_prefix}/{protocol}")
            cell_key = "-".join(sorted(g.eval_key))
            if _exists(client, exp_id, cell_key):
                skipped += 1
                continue
            tags = {"method": method, "backbone": backbone, "protocol": protocol, "source": source,
                    "dataset": dataset, "shots": str(shots), "seed": str(seed), KEY_TAG: cell_key,
                    "split_hash": g.split_hash.iloc[0], "config_hash": g.config_hash.iloc[0],
                    "feature_key": g.feature_key.iloc[0], "status": ",".join(sorted(set(g.status))), **lineage,
                    "mlflow.runName": f"{method}/{backbone}/{source}->{dataset}/{shots}shot/seed{seed}"}
            run = client.create_run(exp_id, tags=tags)
            params = _flatten("", {"method": method, "shots": int(shots), "seed": int(seed),
                                   "config": configs.get(method, {})}, {})
            metrics = [Metric(m, float(v), 0, 0) for m, v in zip(g.metric, g.value, strict=True) if not math.isnan(v)]
            client.log_batch(run.info.run_id, metrics=metrics,
                             params=[Param(k, v) for k, v in params.items()],
                             tags=[RunTag(k, str(v)) for k, v in tags.items()])
            client.set_terminated(run.info.run_id)
            created += 1
        return {"status": "ok", "uri": uri, "created": created, "already_logged": skipped}
    except Exception as exc:  # noqa: BLE001 - any store failure must leave the pipeline's results intact
        message = f"MLflow tracking at {uri!r} failed ({type(exc).__name__}: {exc}); results are still in reports/"
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        return {"status": "unavailable", "uri": uri, "error": f"{type(exc).__name__}: {exc}"}


def _experiment(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def _exists(client: Any, exp_id: str, key: str) -> bool:
    found = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
    return len(found) > 0


def search_runs(uri: str, experiment: str) -> pd.DataFrame:
    """The runs of one experiment as a DataFrame (``tags.*``, ``params.*``, ``metrics.*`` columns)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])
