"""The Dask hook's local cluster leaves the process as it found it."""

from __future__ import annotations

import os

import pytest
from kedro.pipeline import Pipeline, node

from distillery.hooks import DASK_TAG, DaskHook


def _noop() -> int:
    return 1


def test_the_local_cluster_leaves_the_environment_as_it_found_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Processes started after preprocessing (the training ranks) inherit this
    # environment; Dask's nannies set these variables in it to spawn their workers.
    for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")  # set before: Dask keeps it, so do we
    before = dict(os.environ)
    dask_node = node(_noop, None, "x", name="tokenize", tags=[DASK_TAG])
    train_node = node(_noop, None, "y", name="train")
    hook = DaskHook()
    hook._options = {"n_workers": 1, "threads_per_worker": 1}

    hook.before_pipeline_run(Pipeline([dask_node, train_node]))
    hook.before_node_run(dask_node)
    during = dict(os.environ)
    hook.after_node_run(dask_node)
    hook.before_node_run(train_node)  # the cluster stops here

    assert during.get("MALLOC_TRIM_THRESHOLD_") == "65536"
    assert during.get("OMP_NUM_THREADS") == "1"
    assert during.get("MKL_NUM_THREADS") == "2"
    assert hook._cluster is None
    assert dict(os.environ) == before
