"""Project hooks: one run per project, a Dask client, per-stage wall times, checks."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from distillery.runlock import LOCK_FILE, RunLock, lock_disabled

logger = logging.getLogger(__name__)

DASK_TAG = "dask"
STAGE_TAGS = (
    "ingest",
    "validate",
    "monitor",
    "preprocess",
    "train",
    "evaluate",
    "compress",
    "promote",
)


class RunLockHook:
    """Refuse a second ``kedro run`` in the same project while one is running.

    The lock (:mod:`distillery.runlock`, ``data/.distillery.lock``) is taken before
    any other hook's ``before_pipeline_run`` (so no MLflow run starts) and dropped
    when the pipeline ends or fails; sessions that run nothing (``kedro viz``, a
    notebook, an Airflow task reading the catalog) never take it. Each Airflow task
    is one run and the DAG's tasks run one after another, so they take it in turn.
    ``DISTILLERY_RUN_LOCK=0`` turns it off.
    """

    def __init__(self) -> None:
        self._lock: RunLock | None = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Take the project lock.

        Raises:
            distillery.runlock.RunLockedError: another run holds it (names the lock
                file and the holder's pid).
        """
        # A previous run in this process ended (Airflow's `dags test` runs every
        # task in one process) even if a hook failed before this one released.
        self._release()
        if lock_disabled():
            logger.warning("Project run lock off (DISTILLERY_RUN_LOCK=0)")
            return
        lock = RunLock(Path(run_params["project_path"]) / LOCK_FILE)
        lock.acquire()
        self._lock = lock

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Drop the lock."""
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Drop the lock after a failure too."""
        self._release()


class DaskHook:
    """Start the configured Dask scheduler before the first ``dask``-tagged node runs.

    ``params:dask``: ``scheduler`` is ``distributed`` (a local cluster, one worker
    process per core, bound to 127.0.0.1), ``synchronous`` (single thread, for tests and
    debugging) or ``threads``; ``address`` (set it in ``conf/local``) connects to an
    existing cluster instead. Nothing starts for runs without Dask nodes.

    The process environment is restored when the cluster stops: Dask's nannies set
    ``distributed.nanny.pre-spawn-environ`` (``MALLOC_TRIM_THRESHOLD_=65536``,
    ``OMP_NUM_THREADS=1``...) in *this* process's environment before spawning their
    workers and leave it there, so every process started later inherited it. The
    training ranks did: glibc trimming the heap at 64 KiB kept them in the kernel
    about 45% of the time, and the teacher trained at ~95 samples/s after
    preprocessing against ~140 in a run of the train pipeline alone.
    """

    def __init__(self) -> None:
        self._options: dict[str, Any] = {}
        self._pending: set[str] = set()
        self._client: Any = None
        self._cluster: Any = None
        self._config: Any = None
        self._environ: dict[str, str] | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Remember ``params:dask`` (runtime ``--params`` included)."""
        self._options = dict(context.params.get("dask") or {})

    @hook_impl
    def before_pipeline_run(self, pipeline: Any) -> None:
        """Note which nodes need Dask, so the cluster can go once they are done."""
        self._pending = {n.name for n in pipeline.nodes if DASK_TAG in n.tags}

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        """Start the scheduler before the first Dask node; stop it after the last.

        A node's outputs are saved (and, for Dask, computed) after its
        ``after_node_run`` hooks, so the cluster is stopped only when the next
        non-Dask node starts: the training ranks then get the whole machine.
        """
        if DASK_TAG in node.tags:
            if self._client is None and self._config is None:
                self._start()
        elif not self._pending:
            self._stop()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        """Mark a Dask node done."""
        self._pending.discard(node.name)

    def _start(self) -> None:
        import dask  # noqa: PLC0415

        self._environ = dict(os.environ)

        address = self._options.get("address")
        scheduler = self._options.get("scheduler", "distributed")
        if address:
            from distributed import Client  # noqa: PLC0415

            self._client = Client(address)
            logger.info("Dask: connected to the cluster at %s", address)
        elif scheduler == "distributed":
            from distributed import Client, LocalCluster  # noqa: PLC0415

            workers = self._options.get("n_workers") or os.cpu_count() or 1
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=self._options.get("threads_per_worker", 1),
                processes=True,
                host="127.0.0.1",
                dashboard_address=self._options.get("dashboard_address", "127.0.0.1:0"),
                silence_logs=logging.WARNING,
            )
            self._client = Client(self._cluster)
            logger.info(
                "Dask: local cluster with %d workers, dashboard %s",
                workers,
                self._client.dashboard_link,
            )
        elif scheduler in ("synchronous", "threads", "processes"):
            self._config = dask.config.set(scheduler=scheduler)
            logger.info("Dask: %s scheduler", scheduler)
        else:
            raise ValueError(
                f"dask.scheduler must be distributed, synchronous, threads or processes; "
                f"got {scheduler!r}"
            )

    def _stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        if self._config is not None:
            self._config.__exit__(None, None, None)
        self._client = self._cluster = self._config = None
        if self._environ is not None:
            _restore_environ(self._environ)
            self._environ = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Shut the scheduler down."""
        self._stop()

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Shut the scheduler down after a failure too."""
        self._stop()


def _restore_environ(saved: dict[str, str]) -> None:
    """Make ``os.environ`` what it was when ``saved`` was taken."""
    changed = sorted(
        k for k in os.environ.keys() | saved.keys() if os.environ.get(k) != saved.get(k)
    )
    if changed:
        os.environ.clear()
        os.environ.update(saved)
        logger.info("Dask: restored %s in this process's environment", changed)


class StageTimerHook:
    """Wall time per stage, saving of outputs included, logged to MLflow as it grows.

    Dask nodes return lazy frames whose work happens when the catalog saves them, so a
    node's clock runs until its last output is saved. Totals are logged after every
    node rather than after the pipeline, because kedro-mlflow may end the MLflow run
    before other ``after_pipeline_run`` hooks are called.
    """

    def __init__(self) -> None:
        self.stage_seconds: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def _tick(self, node: Any) -> None:
        now = time.perf_counter()
        stage = next((t for t in STAGE_TAGS if t in node.tags), "other")
        self.stage_seconds[stage] = (
            self.stage_seconds.get(stage, 0.0) + now - self._last.get(node.name, now)
        )
        self._last[node.name] = now

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        """Start the node's clock."""
        self._last[node.name] = time.perf_counter()

    @hook_impl
    def after_dataset_saved(self, node: Any) -> None:
        """Count the time spent saving (computing, for Dask) an output."""
        if node is not None:
            self._tick(node)

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        """Count the node's own time, then log the running totals."""
        self._tick(node)
        self._log()

    def _log(self) -> None:
        import mlflow  # noqa: PLC0415

        if mlflow.active_run() is not None:
            mlflow.log_metrics(
                {f"wall_s.{k}": v for k, v in self.stage_seconds.items()}
                | {"wall_s.total": sum(self.stage_seconds.values())}
            )

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Log the per-stage wall times and start afresh."""
        if self.stage_seconds:
            self._log()
            logger.info(
                "Stage wall times (s): %s; total %.1f",
                ", ".join(f"{k}={v:.1f}" for k, v in self.stage_seconds.items()),
                sum(self.stage_seconds.values()),
            )
        self.stage_seconds = {}
        self._last = {}


class TrackingCheckHook:
    """Fail with a clear message when the MLflow server is unreachable, or goes away.

    At the start the check runs before kedro-mlflow's own set-up (``tryfirst``), which
    would otherwise retry for minutes and fail with a bare connection error. When the
    server dies during the run, kedro-mlflow's clean-up fails too (it cannot mark the
    run FAILED) and its connection error would end the run; this hook replaces that
    last error with one that says what happened and what is on disk.
    """

    timeout_s = 5.0

    def __init__(self) -> None:
        self._uri = ""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Probe ``server.mlflow_tracking_uri`` when it is an HTTP(S) server.

        Raises:
            RuntimeError: the server does not answer ``/health`` within 5 s.
        """
        try:
            server = (context.config_loader["mlflow"] or {}).get("server") or {}
        except MissingConfigException:  # no mlflow.yml: kedro-mlflow's defaults apply
            return
        uri = server.get("mlflow_tracking_uri") or os.environ.get(
            "MLFLOW_TRACKING_URI", ""
        )
        if not str(uri).startswith(("http://", "https://")):
            return
        self._uri = str(uri)
        exc = self._unreachable()
        if exc is not None:
            raise RuntimeError(
                f"MLflow tracking server {uri} is unreachable ({exc}). Start it, or set "
                "server.mlflow_tracking_uri in conf/local/mlflow.yml to a reachable "
                "server (the project default is sqlite:///mlflow.db). Nothing was run."
            ) from exc
        logger.info("MLflow tracking server %s is reachable", uri)

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Tag the run with its host and project; close the runs this project left open.

        A run whose process was killed, or whose tracking server died, stays RUNNING
        in MLflow. The project lock (:class:`RunLockHook`) means no other run of this
        project on this host is alive now, so such runs are marked FAILED, with a
        ``distillery.closed_by`` tag naming this run. With the lock off nothing is
        closed: another run may be alive.
        """
        import socket  # noqa: PLC0415

        import mlflow  # noqa: PLC0415

        run = mlflow.active_run()
        if run is None:
            return
        tags = {
            "distillery.host": socket.gethostname(),
            "distillery.project": str(Path(run_params["project_path"]).resolve()),
        }
        mlflow.set_tags(tags)
        if lock_disabled():
            return
        client = mlflow.MlflowClient()
        running = client.search_runs(
            [run.info.experiment_id],
            f"attributes.status = 'RUNNING' and "
            f"tags.`distillery.host` = '{tags['distillery.host']}'",
        )
        for orphan in running:
            project = orphan.data.tags.get("distillery.project")
            if (
                orphan.info.run_id == run.info.run_id
                or project != tags["distillery.project"]
            ):
                continue
            client.set_tag(orphan.info.run_id, "distillery.closed_by", run.info.run_id)
            client.set_terminated(orphan.info.run_id, "FAILED")
            logger.warning(
                "MLflow run %s of this project was left RUNNING by a run that did not "
                "end (killed, or its tracking server was lost); marked it FAILED",
                orphan.info.run_id,
            )

    @hook_impl(wrapper=True)
    def on_pipeline_error(self, error: Exception) -> Any:
        """Turn a clean-up that failed because the server is gone into a clear error.

        Raises:
            TrackingLostError: another ``on_pipeline_error`` hook (kedro-mlflow's)
                failed and the server no longer answers ``/health``.
        """
        import mlflow  # noqa: PLC0415
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        run = mlflow.active_run()  # local; kedro-mlflow's clean-up pops it
        run_id = run.info.run_id if run is not None else "of this run"
        try:
            return (yield)
        except (MlflowException, OSError) as hook_error:
            lost = self._unreachable() if self._uri else None
            if lost is None:
                raise
            raise TrackingLostError(
                f"MLflow tracking server {self._uri} stopped answering during the run "
                f"({lost}). The run failed with {type(error).__name__}: "
                f"{_shorten(str(error))}. Outputs saved before the failure are complete "
                f"on disk; MLflow run {run_id} could not be closed: the next run of "
                "this project marks it FAILED. Restart the server and run again (where Kedro lists nodes "
                "to resume from, --from-nodes skips the finished ones)."
            ) from hook_error

    def _unreachable(self) -> OSError | None:
        """The error of a ``GET /health`` on the server, or None if it answers."""
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        try:
            with urllib.request.urlopen(
                f"{self._uri.rstrip('/')}/health", timeout=self.timeout_s
            ):
                return None
        except (urllib.error.URLError, OSError) as exc:
            return exc


def _shorten(text: str, limit: int = 400) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[: limit - 3]}..."


class TrackingLostError(RuntimeError):
    """The MLflow tracking server went away during a ``kedro run``."""


class AirflowRunTagsHook:
    """Tag the MLflow run of an Airflow task with its DAG, DAG run and task ids.

    Each task of the scheduled DAG is its own Kedro session, hence its own MLflow run;
    the tags group one DAG run's records: ``tags."airflow.dag_run_id" = '<run id>'``.
    Airflow exports the ids as ``AIRFLOW_CTX_*`` variables while a task runs; outside
    Airflow there are none and nothing is tagged.
    """

    TAGS = {
        "airflow.dag_id": "AIRFLOW_CTX_DAG_ID",
        "airflow.dag_run_id": "AIRFLOW_CTX_DAG_RUN_ID",
        "airflow.task_id": "AIRFLOW_CTX_TASK_ID",
    }

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self) -> None:
        """Set the tags on the active run."""
        tags = {k: os.environ[v] for k, v in self.TAGS.items() if os.environ.get(v)}
        if not tags:
            return
        import mlflow  # noqa: PLC0415

        if mlflow.active_run() is not None:
            mlflow.set_tags(tags)
