"""The registered pipelines: one Kedro namespace per stage, catalog names unchanged."""

import warnings
from graphlib import TopologicalSorter
from pathlib import Path

import pytest
import yaml
from kedro.pipeline import Pipeline

from distillery.hooks import STAGE_TAGS
from distillery.pipeline_registry import NAMESPACES, register_pipelines

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Pipeline]:
    # Kedro warns when another namespace interrupts one (a cycle between the Airflow
    # task groups); that is an error here.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Namespace .* is interrupted", UserWarning)
        return register_pipelines()


def test_every_node_runs_in_one_stage_namespace(pipelines) -> None:
    retrain = pipelines["retrain"]
    assert all(n.namespace in NAMESPACES for n in retrain.nodes)
    assert all(n.name == f"{n.namespace}.{n._name}" for n in retrain.nodes)
    groups = {g.name: set(g.dependencies) for g in retrain.group_nodes_by("namespace")}
    assert set(groups) == set(NAMESPACES)
    # Compress is split around evaluate (see pipelines/compress/pipeline.py).
    order = list(TopologicalSorter(groups).static_order())
    assert order.index("compress") < order.index("evaluate") < order.index("release")
    assert groups["monitor"] == {"validate"}
    assert groups["promote"] == {"preprocess", "release"}
    # A stage pipeline is its namespace(s): `kedro run --pipeline compress` runs both.
    assert {n.namespace for n in pipelines["compress"].nodes} == {"compress", "release"}
    for stage in ("ingest", "validate", "preprocess", "train", "evaluate", "promote"):
        assert {n.namespace for n in pipelines[stage].nodes} == {stage}


def test_namespaces_keep_catalog_and_parameter_names(pipelines) -> None:
    catalog = yaml.safe_load((CONF / "catalog.yml").read_text())
    params = {
        key
        for path in CONF.glob("parameters_*.yml")
        for key in yaml.safe_load(path.read_text())
    }
    names = pipelines["retrain"].datasets()
    datasets = {n for n in names if not n.startswith("params:")}
    # Every dataset is a catalog entry: none became a namespaced MemoryDataset.
    assert datasets <= set(catalog), datasets - set(catalog)
    used = {n.removeprefix("params:").split(".")[0] for n in names - datasets}
    assert used <= params, used - params


def test_every_node_keeps_one_stage_tag_for_the_wall_times(pipelines) -> None:
    for node in pipelines["retrain"].nodes:
        assert len(node.tags & set(STAGE_TAGS)) == 1, (node.name, node.tags)
    release = {n.name for n in pipelines["retrain"].nodes if n.namespace == "release"}
    compress = pipelines["retrain"].only_nodes_with_tags("compress")
    assert release < {n.name for n in compress.nodes}
