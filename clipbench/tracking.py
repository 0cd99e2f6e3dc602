"""MLflow tracking: the only module that imports mlflow.

Layout:

* one experiment per protocol (``<prefix>/<protocol>``);
* one **parent run** per (method, backbone, protocol, method config), named ``<method> · <backbone>``, holding
  the protocol table's numbers for that row as consistently named metrics (``<dataset or average>/<setting>``,
  e.g. ``average/H``, ``dtd/acc_16shot``; the same names for every method, so the UI's compare view and
  parallel-coordinates plot line methods up), method/backbone/protocol as params (the method config, whose
  keys differ between methods, is the ``config.json`` artifact and the ``config_hash`` tag), completeness
  counts as tags, and the protocol's tables and plots as artifacts;
* one **child run** per result cell (method, backbone, protocol, source, dataset, shots, seed), nested under
  its parent (``mlflow.parentRunId``), with the cell's metrics (``acc`` or ``base``/``new``) and the method
  config as params.

Every run carries lineage tags (git commit, DVC stage, split hash, feature key, config hash, package versions).
Logging is idempotent: a child is keyed by the cell's evaluation keys and a parent by its group and config
hash, so re-logging the same results creates nothing; new results update the parent's metrics in place.
Parents of an older method config stay, tagged ``clipbench.current = false``. A logging run killed half-way is
completed by the next one: a parent's content tag and a child's key are written last, and a child created but
never filled (tagged ``clipbench.pending = true``) is deleted.

A store that cannot be reached costs seconds, not minutes: before MLflow is touched, an http(s) URI's host
is probed with a TCP connection (``timeout_s``; through the proxy when one applies) and a sqlite or file
store's directory is created and test-written; while logging, MLflow's own HTTP timeout and retries are
bounded by ``timeout_s`` and ``retries`` (environment variables set for the call, restored afterwards; other
URI schemes are not probed). Any failure is one :class:`TrackingUnavailableWarning` naming the URI, the
error and how to retry, and the summary says ``status: unavailable``; results stay in the result files.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from clipbench.errors import ClipbenchWarning
from clipbench.protocols import get_protocol

KEY_TAG = "clipbench.eval_key"
PARENT_TAG = "clipbench.parent"
GROUP_TAG = "clipbench.group"
CONTENT_TAG = "clipbench.content"
CURRENT_TAG = "clipbench.current"
PENDING_TAG = "clipbench.pending"  # a child run created but not yet logged (set false with its metrics)
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
CELL_KEYS = ["protocol", "method", "backbone", "source", "dataset", "shots", "seed"]


def _flatten(prefix: str, obj: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(obj)[:6000]
    return out


def parent_metrics(entries: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(protocol, method, backbone): {"<column>/<setting>": value}}`` of the complete table entries; the
    protocol names the setting (:meth:`~clipbench.protocols.base.Protocol.run_metric`)."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for e in entries[entries.status == "ok"].to_dict("records"):
        setting = get_protocol(e["protocol"]).run_metric(e["shots"], e["metric"])
        out.setdefault((e["protocol"], e["method"], e["backbone"]), {})[f"{e['column']}/{setting}"] = float(e["mean"])
    return out


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store live next to the database (``mlartifacts/``); servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()


class TrackingUnavailableWarning(ClipbenchWarning):
    """The tracking store could not be reached or written; every result is still in the result files."""


# A stage whose output did not change is not re-run by a plain `dvc repro`: force this one stage only
# (`-f` alone would also force every upstream stage).
RETRY_COMMAND = "dvc repro -s -f track"


def log_results(
    results: pd.DataFrame,
    *,
    uri: str,
    experiment_prefix: str,
    configs: dict[tuple[str, str], dict],
    lineage: dict[str, str],
    entries: pd.DataFrame | None = None,
    artifacts: dict[str, list[Path]] | None = None,
    timeout_s: float = 5.0,
    retries: int = 2,
) -> dict[str, Any]:
    """Log parents and children for ``results`` (see the module docstring); never raises on store failures.

    ``configs``: (protocol, method) -> the method's plain config under that protocol (its runs' params)."""
    error = probe(uri, timeout_s)
    if error is not None:
        return _unavailable(uri, error)
    try:
        with _bounded_http(timeout_s, retries):
            return _log(results, uri, experiment_prefix, configs, lineage, entries, artifacts)
    except Exception as exc:  # noqa: BLE001 - any store failure must leave the pipeline's results intact
        return _unavailable(uri, f"{type(exc).__name__}: {exc}")


def _log(
    results: pd.DataFrame,
    uri: str,
    experiment_prefix: str,
    configs: dict[tuple[str, str], dict],
    lineage: dict[str, str],
    entries: pd.DataFrame | None,
    artifacts: dict[str, list[Path]] | None,
) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    metrics = parent_metrics(entries) if entries is not None else {}
    summary = {
        "status": "ok",
        "uri": uri,
        "created": 0,
        "already_logged": 0,
        "parents_created": 0,
        "parents_updated": 0,
        "parents_unchanged": 0,
    }
    for (protocol, method, backbone), g in results.groupby(["protocol", "method", "backbone"], sort=True):
        exp_id = _experiment(client, f"{experiment_prefix}/{protocol}", uri)
        parent, state = _parent(
            client,
            exp_id,
            g,
            protocol,
            method,
            backbone,
            configs.get((protocol, method), {}),
            lineage,
            metrics.get((protocol, method, backbone), {}),
            (artifacts or {}).get(protocol, []),
        )
        summary[f"parents_{state}"] += 1
        created, skipped = _children(client, exp_id, parent, g, configs.get((protocol, method), {}), lineage)
        summary["created"] += created
        summary["already_logged"] += skipped
    return summary


def _unavailable(uri: str, error: str) -> dict[str, Any]:
    """Warn once, on one line, and return the summary ``track`` records."""
    error = " ".join(error.split())[:500]
    warnings.warn(
        f"MLflow tracking at {uri!r} is unavailable ({error}); results are still in reports/ "
        f"(results.parquet and the tables); start the server or fix tracking.uri in params.yaml, then "
        f"run `{RETRY_COMMAND}`",
        TrackingUnavailableWarning,
        stacklevel=3,
    )
    return {"status": "unavailable", "uri": uri, "error": error, "retry": RETRY_COMMAND}


def probe(uri: str, timeout_s: float) -> str | None:
    """Why the store at ``uri`` cannot be used (``None`` if it looks usable or its scheme is not probed)."""
    parts = urlsplit(uri)
    try:
        if parts.scheme in ("http", "https"):
            _connect(parts.scheme, parts.hostname or "", parts.port, timeout_s)
        elif parts.scheme == "sqlite":
            _sqlite_writable(uri)
        elif parts.scheme == "file" or len(parts.scheme) <= 1:  # file:// URI, plain or drive-letter path
            _dir_writable(Path(parts.path if parts.scheme == "file" else uri))
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _connect(scheme: str, host: str, port: int | None, timeout_s: float) -> None:
    """Open and close a TCP connection to the server, or to the proxy that requests would use for it."""
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        target = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = target.hostname or "", target.port or 8080
    with socket.create_connection((host, port or (443 if scheme == "https" else 80)), timeout=timeout_s):
        pass


def _sqlite_writable(uri: str) -> None:
    path = uri[len("sqlite:///") :].split("?")[0] if uri.startswith("sqlite:///") else ""
    if path in ("", ":memory:"):
        return
    db = Path(path)
    _dir_writable(db.parent)
    if db.exists():
        with open(db, "ab"):  # appends nothing; fails on a read-only database
            pass


def _dir_writable(directory: Path) -> None:
    """Create ``directory`` if needed and write (then delete) a file in it, as the store and its artifacts will."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
        pass


@contextmanager
def _bounded_http(timeout_s: float, retries: int) -> Iterator[None]:
    """Bound MLflow's per-request timeout and retries (its defaults add up to minutes) for one call; each retry's
    log line is held back (a failure that outlasts them is the one warning)."""
    values = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    saved = {name: os.environ.get(name) for name in values}
    retry_log = logging.getLogger("urllib3.connectionpool")
    level = retry_log.level
    os.environ.update(values)
    retry_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retry_log.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _experiment(client: Any, name: str, uri: str) -> str:
    """Find or create the experiment; it is marked as model training (the UI then opens on its runs table)."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_root(uri))
    if exp is None or exp.tags.get(KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(exp_id, KIND_TAG, MODEL_TRAINING)
    return exp_id


def _runs_by_tag(client: Any, exp_id: str, tag: str, value: str | None = None) -> dict[str, Any]:
    """Runs of ``exp_id`` that carry ``tag`` (optionally = ``value``), keyed by the tag's value (all pages)."""
    found, token = {}, None
    query = f"tags.`{tag}` = '{value}'" if value is not None else f"tags.`{tag}` LIKE '%'"
    while True:
        page = client.search_runs([exp_id], filter_string=query, max_results=1000, page_token=token)
        found.update({r.data.tags[tag]: r for r in page})
        token = page.token
        if not token:
            return found


def _content_key(g: pd.DataFrame, metrics: dict[str, float], files: list[Path]) -> str:
    digest = hashlib.sha256()
    for key in sorted(set(g.eval_key)):
        digest.update(key.encode())
    for name, value in sorted(metrics.items()):
        digest.update(f"{name}={value!r}".encode())
    for path in sorted(files):
        digest.update(Path(path).name.encode() + (Path(path).read_bytes() if Path(path).is_file() else b""))
    return digest.hexdigest()[:16]


def _parent(
    client: Any,
    exp_id: str,
    g: pd.DataFrame,
    protocol: str,
    method: str,
    backbone: str,
    config: dict,
    lineage: dict[str, str],
    metrics: dict[str, float],
    files: list[Path],
) -> tuple[str, str]:
    """Find or create the parent run of one (method, backbone, protocol, config); return (run id, what happened)."""
    from mlflow.entities import Metric, Param, RunTag

    group = f"{protocol}/{method}/{backbone}"
    config_hash = str(g.config_hash.iloc[0])
    key = f"{group}/{config_hash}"
    content = _content_key(g, metrics, files)
    counts = g.status.value_counts().to_dict()
    tags = {
        "method": method,
        "backbone": backbone,
        "protocol": protocol,
        "config_hash": config_hash,
        "clipbench.role": "parent",
        GROUP_TAG: group,
        PARENT_TAG: key,
        CONTENT_TAG: content,
        CURRENT_TAG: "true",
        "cells": str(g.groupby(CELL_KEYS).ngroups),
        **{f"results.{s}": str(n) for s, n in sorted(counts.items())},
        "split_hashes": ",".join(sorted(set(g.split_hash.astype(str))))[:5000],
        "feature_keys": ",".join(sorted(set(g.feature_key.astype(str))))[:5000],
        **lineage,
        "dvc_stage": f"evaluate@{backbone}-{method}",
        "mlflow.runName": f"{method} · {backbone}",
    }
    existing = _runs_by_tag(client, exp_id, PARENT_TAG, key).get(key)
    if existing is not None and existing.data.tags.get(CONTENT_TAG) == content:
        return existing.info.run_id, "unchanged"
    pending = {k: v for k, v in tags.items() if k != CONTENT_TAG}  # the content tag is set last (commit marker)
    if existing is None:
        run_id, state = client.create_run(exp_id, tags=pending).info.run_id, "created"
    else:
        run_id, state = existing.info.run_id, "updated"
    params = {"method": method, "backbone": backbone, "protocol": protocol}  # same values on every attempt
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    client.log_dict(run_id, {"method": method, "config": config}, "config.json")
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())],
        tags=[RunTag(k, str(v)) for k, v in pending.items()],
    )
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path), artifact_path="plots" if Path(path).suffix == ".png" else "tables")
    client.set_terminated(run_id)
    _mark_current(client, exp_id, group, key)
    client.set_tag(run_id, CONTENT_TAG, content)  # a parent interrupted before this line is redone next time
    return run_id, state


def _mark_current(client: Any, exp_id: str, group: str, key: str) -> None:
    """Only the parent of the current config is ``clipbench.current = true`` within its group."""
    token = None
    while True:
        page = client.search_runs(
            [exp_id], filter_string=f"tags.`{GROUP_TAG}` = '{group}'", max_results=1000, page_token=token
        )
        for run in page:
            current = "true" if run.data.tags.get(PARENT_TAG) == key else "false"
            if run.data.tags.get(CURRENT_TAG) != current:
                client.set_tag(run.info.run_id, CURRENT_TAG, current)
        token = page.token
        if not token:
            return


def _delete_pending(client: Any, exp_id: str) -> None:
    """Delete child runs an interrupted logging run created but never filled (``clipbench.pending = true``)."""
    while True:
        page = client.search_runs([exp_id], filter_string=f"tags.`{PENDING_TAG}` = 'true'", max_results=1000)
        for run in page:
            client.delete_run(run.info.run_id)
        if not page.token:
            return


def _cell_runs(g: pd.DataFrame) -> Iterable[tuple[tuple, pd.DataFrame]]:
    return g.groupby(CELL_KEYS, sort=True)


def _children(
    client: Any, exp_id: str, parent: str, g: pd.DataFrame, config: dict, lineage: dict[str, str]
) -> tuple[int, int]:
    """One child run per cell of ``g`` not logged yet; return (created, already logged)."""
    from mlflow.entities import Metric, Param, RunTag

    _delete_pending(client, exp_id)
    known = _runs_by_tag(client, exp_id, KEY_TAG)
    created = skipped = 0
    for (protocol, method, backbone, source, dataset, shots, seed), cell in _cell_runs(g):
        cell_key = "-".join(sorted(cell.eval_key))
        if cell_key in known:  # logged before; runs from before parents existed are attached now
            old = known[cell_key]
            if old.data.tags.get("mlflow.parentRunId") != parent:
                client.log_batch(
                    old.info.run_id, tags=[RunTag("mlflow.parentRunId", parent), RunTag("clipbench.role", "cell")]
                )
            skipped += 1
            continue
        tags = {
            "method": method,
            "backbone": backbone,
            "protocol": protocol,
            "source": source,
            "dataset": dataset,
            "shots": str(shots),
            "seed": str(seed),
            "clipbench.role": "cell",
            "mlflow.parentRunId": parent,
            "split_hash": cell.split_hash.iloc[0],
            "config_hash": cell.config_hash.iloc[0],
            "feature_key": cell.feature_key.iloc[0],
            "train_key": cell.train_key.iloc[0],
            "status": ",".join(sorted(set(cell.status))),
            **lineage,
            "dvc_stage": f"evaluate@{backbone}-{method}",
            "mlflow.runName": f"{method}/{backbone}/{source}->{dataset}/{shots}shot/seed{seed}",
        }
        run = client.create_run(exp_id, tags={**tags, PENDING_TAG: "true"})
        params = _flatten("", {"method": method, "shots": int(shots), "seed": int(seed), "config": config}, {})
        metrics = [Metric(m, float(v), 0, 0) for m, v in zip(cell.metric, cell.value, strict=True) if not math.isnan(v)]
        final = {**tags, KEY_TAG: cell_key, PENDING_TAG: "false"}  # one batch: the key only with the metrics
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in final.items()],
        )
        client.set_terminated(run.info.run_id)
        created += 1
    return created, skipped


def search_runs(uri: str, experiment: str) -> pd.DataFrame:
    """The runs of one experiment as a DataFrame (``tags.*``, ``params.*``, ``metrics.*`` columns)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])
