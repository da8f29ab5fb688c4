"""Serving bundle round-trip, MLflow pyfunc logging/registration and model serving."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from distillery.ml.compress.export import export_onnx
from distillery.ml.data.text import normalize_text
from distillery.ml.models.modeling import load_tokenizer
from distillery.ml.serve.explain import leave_one_out
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.registry import promote_if_better
from distillery.ml.serve.serving import (
    CONFIG_FILE,
    MODEL_FILE,
    PYFUNC_CODE,
    DistilleryOnnxModel,
    load_onnx_predictor,
    log_and_register,
    save_onnx_bundle,
    texts_from_input,
)

LABELS = ["negative", "neutral", "positive"]
# Non-default tokens: the test sees whether the bundle's own options are applied.
NORMALIZE = {"user_token": "@someone", "url_token": "URL"}
RAW_TEXTS = [
    "@united great flight!! http://t.co/abc",
    "my   bag is lost again @delta",
    "ok",
    "",
]
PROB_COLUMNS = [f"prob_{label}" for label in LABELS]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("builtin")


@pytest.fixture(scope="module")
def onnx_path(
    tiny_classifier: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A 1-layer, 32-wide classifier over the teacher's vocabulary, exported."""
    model = tiny_classifier(LABELS, shape="teacher")
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "student.onnx")


@pytest.fixture(scope="module")
def bundle(
    onnx_path: Path, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    options = {**NORMALIZE, "seed": 7}  # extra preprocess keys are ignored
    return save_onnx_bundle(
        onnx_path, tokenizer, tmp_path_factory.mktemp("bundle") / "b", options
    )


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway SQLite tracking store + registry; yields an experiment id.

    The previous tracking URI is restored; the active experiment is left alone
    (``mlflow.set_experiment`` would also set ``MLFLOW_EXPERIMENT_ID``).
    """
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # The module global, not get_tracking_uri(): None means "read the environment",
    # and restoring a resolved default would pin it for later tests.
    previous_uri = getattr(tracking_utils, "_tracking_uri", mlflow.get_tracking_uri())
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow.create_experiment(
            "serving-test", artifact_location=(root / "artifacts").as_uri()
        )
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def test_bundle_is_self_contained(bundle: Path) -> None:
    config = json.loads((bundle / CONFIG_FILE).read_text())
    assert config["labels"] == LABELS
    assert config["max_length"] == 128
    assert config["normalize"] == NORMALIZE
    assert {MODEL_FILE, "tokenizer.json", CONFIG_FILE} <= {
        p.name for p in bundle.iterdir()
    }


def test_bundle_predicts_like_onnx_predictor_on_normalized_text(
    bundle: Path, onnx_path: Path, tokenizer: Any
) -> None:
    reference = OnnxPredictor(onnx_path, tokenizer)
    normalized = [normalize_text(t, **NORMALIZE) for t in RAW_TEXTS]

    predictor = load_onnx_predictor(bundle)
    got = predictor.predict_proba(RAW_TEXTS)

    assert predictor.labels == LABELS
    np.testing.assert_allclose(got, reference.predict_proba(normalized), atol=1e-6)
    # Without the normaliser the mentions and URLs tokenize differently.
    assert np.abs(got[:2] - reference.predict_proba(RAW_TEXTS[:2])).max() > 1e-6


def test_save_bundle_rejects_non_string_normalize_option(
    onnx_path: Path, tokenizer: Any, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="must be strings"):
        save_onnx_bundle(onnx_path, tokenizer, tmp_path, {"user_token": None})


def test_load_onnx_predictor_rejects_incomplete_folder(tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a serving bundle"):
        load_onnx_predictor(tmp_path)


def test_texts_from_input_accepts_the_pyfunc_input_forms() -> None:
    expected = ["a", "b"]
    assert texts_from_input(pd.DataFrame({"id": [1, 2], "text": expected})) == expected
    assert texts_from_input(pd.Series(expected)) == expected
    assert texts_from_input(expected) == expected
    assert texts_from_input([{"text": "a"}, {"text": "b"}]) == expected
    assert texts_from_input({"text": expected}) == expected
    assert texts_from_input("a") == ["a"]
    with pytest.raises(ValueError, match="'text' column"):
        texts_from_input(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(ValueError, match="must be strings"):
        texts_from_input(["a", None])


def test_pyfunc_predict_before_load_context_fails() -> None:
    with pytest.raises(RuntimeError, match="load_context"):
        DistilleryOnnxModel().predict(None, pd.DataFrame({"text": ["x"]}))


def test_log_and_register_serves_raw_text_through_pyfunc(
    bundle: Path, tracking: str
) -> None:
    name = "distillery-student-once"
    with mlflow.start_run(experiment_id=tracking) as run:
        result = log_and_register(bundle, name, tags={"source": "test", "n": 3})

    assert result["version"] == 1
    assert result["alias"] == "challenger"
    assert result["model_uri"] == f"models:/{name}/1"
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, "challenger")
    assert int(version.version) == 1
    assert version.tags == {"source": "test", "n": "3"}
    artifacts = [f.path for f in client.list_artifacts(run.info.run_id, "student")]
    assert artifacts == ["student/model.onnx"]
    requirements = Path(
        mlflow.artifacts.download_artifacts(f"{result['model_uri']}/requirements.txt")
    ).read_text()
    assert "onnxruntime==" in requirements
    assert "pandas==" in requirements

    model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    out = model.predict(pd.DataFrame({"text": RAW_TEXTS}))

    assert list(out.columns) == ["label", *PROB_COLUMNS]
    assert len(out) == len(RAW_TEXTS)
    np.testing.assert_allclose(out[PROB_COLUMNS].sum(axis=1), 1.0, atol=1e-5)
    expected = load_onnx_predictor(bundle).predict_proba(RAW_TEXTS)
    np.testing.assert_allclose(out[PROB_COLUMNS].to_numpy(), expected, atol=1e-6)
    assert out["label"].tolist() == [LABELS[i] for i in expected.argmax(axis=1)]


def test_logged_model_is_code_and_files_without_a_pickle(
    bundle: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "distillery-student-code"
    with mlflow.start_run(experiment_id=tracking):
        result = log_and_register(bundle, name)
    folder = Path(mlflow.artifacts.download_artifacts(result["model_uri"]))
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"][
        "python_function"
    ]

    assert PYFUNC_CODE.name in files
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "python_model" not in flavor
    pickles = [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    assert pickles == []
    for path in folder.rglob("*"):  # no pickle stream under another name either
        if path.is_file():
            assert not path.read_bytes()[:2].startswith(b"\x80"), path
    # MLflow refuses any pickled pyfunc with this switch off; ours still loads.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    out = mlflow.pyfunc.load_model(result["model_uri"]).predict(
        pd.DataFrame({"text": RAW_TEXTS})
    )
    expected = load_onnx_predictor(bundle).predict_proba(RAW_TEXTS)
    np.testing.assert_allclose(out[PROB_COLUMNS].to_numpy(), expected, atol=1e-6)


@pytest.fixture(scope="module")
def served_pyfunc(bundle: Path, tracking: str) -> mlflow.pyfunc.PyFuncModel:
    """The registered student loaded back through ``mlflow.pyfunc.load_model``."""
    name = "distillery-student-edges"
    with mlflow.start_run(experiment_id=tracking):
        log_and_register(bundle, name)
    return mlflow.pyfunc.load_model(f"models:/{name}@challenger")


@pytest.mark.parametrize(
    ("texts", "rows"),
    [
        pytest.param([""], 1, id="empty-text"),
        pytest.param(["lost my bag " * 87_382], 1, id="1MB-text"),  # 1,048,584 chars
        pytest.param(
            [f"flight {i} @u http://t.co/{i}" for i in range(10_000)],
            10_000,
            id="10k-rows",
        ),
        pytest.param([], 0, id="no-rows"),
    ],
)
def test_pyfunc_answers_edge_inputs_with_a_result(
    served_pyfunc: mlflow.pyfunc.PyFuncModel, texts: list[str], rows: int
) -> None:
    out = served_pyfunc.predict(pd.DataFrame({"text": pd.Series(texts, dtype=object)}))

    assert list(out.columns) == ["label", *PROB_COLUMNS]
    assert len(out) == rows
    assert set(out["label"]) <= set(LABELS)
    np.testing.assert_allclose(out[PROB_COLUMNS].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param([None], r"texts must be strings; rows \[0\]", id="None"),
        pytest.param(["ok", None], r"texts must be strings; rows \[1\]", id="None-2nd"),
        pytest.param([3.5], "Can not safely convert float64", id="float"),
        pytest.param([7], "Can not safely convert int64", id="int"),
    ],
)
def test_pyfunc_rejects_non_strings_with_a_clear_error(
    served_pyfunc: mlflow.pyfunc.PyFuncModel, values: list[Any], message: str
) -> None:
    # A number is refused by the signature (string column), a None by the model.
    with pytest.raises(MlflowException, match=message):
        served_pyfunc.predict(pd.DataFrame({"text": values}))


def test_pyfunc_explains_its_answers_when_asked(
    served_pyfunc: mlflow.pyfunc.PyFuncModel, bundle: Path
) -> None:
    texts = ["@united great flight!! http://t.co/abc", "my bag is lost again"]
    frame = pd.DataFrame({"text": texts})
    plain = served_pyfunc.predict(frame)
    explained = served_pyfunc.predict(frame, params={"explain": True})

    assert "top_tokens" not in plain.columns
    pd.testing.assert_frame_equal(explained.drop(columns="top_tokens"), plain)
    predictor = load_onnx_predictor(bundle)
    expected = leave_one_out(predictor, texts, normalize=predictor.encoder.normalize)
    assert explained["top_tokens"].tolist() == [e.top_tokens(3) for e in expected]
    # Each cell names words of the text as the model read it, with signed weights.
    words = explained["top_tokens"][0].split()
    assert 1 <= len(words) <= 3
    assert all(w.rsplit(":", 1)[0] in expected[0].words for w in words)


def test_pyfunc_without_a_text_column_names_the_missing_input(
    served_pyfunc: mlflow.pyfunc.PyFuncModel,
) -> None:
    with pytest.raises(MlflowException, match=r"missing inputs \['text'\]"):
        served_pyfunc.predict(pd.DataFrame({"comment": ["great"]}))


def test_registering_twice_moves_the_alias(bundle: Path, tracking: str) -> None:
    name = "distillery-student-twice"
    with mlflow.start_run(experiment_id=tracking):
        first = log_and_register(bundle, name)
    # The second call resumes a finished run by id (no run active).
    with mlflow.start_run(experiment_id=tracking) as run:
        pass
    second = log_and_register(bundle, name, run_id=run.info.run_id)

    assert (first["version"], second["version"]) == (1, 2)
    client = MlflowClient()
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 2
    aliases = client.get_registered_model(name).aliases
    assert {alias: int(v) for alias, v in aliases.items()} == {"challenger": 2}
    assert mlflow.active_run() is None


def test_log_and_register_needs_a_run(bundle: Path, tracking: str) -> None:
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_and_register(bundle, "distillery-student-norun")
    with (
        mlflow.start_run(experiment_id=tracking),
        pytest.raises(ValueError, match="differs"),
    ):
        log_and_register(bundle, "distillery-student-norun", run_id="0" * 32)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post_json(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_mlflow_models_serve_answers_invocations(
    bundle: Path, tracking: str, tmp_path: Path
) -> None:
    name = "distillery-student-served"
    with mlflow.start_run(experiment_id=tracking):
        log_and_register(bundle, name)
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        # The server is started as `bash -c "exec uvicorn ..."`: uvicorn must be on
        # PATH, i.e. the virtual environment's bin folder.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_path = tmp_path / "serve.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{name}@challenger",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        # Own session: the mlflow CLI and the uvicorn it spawns share one group.
        server = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    pytest.fail(f"server exited early:\n{log_path.read_text()}")
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"no /ping within 60 s:\n{log_path.read_text()}")
                time.sleep(0.5)

            records = _post_json(
                f"{base}/invocations", {"dataframe_records": [{"text": "great flight"}]}
            )
            inputs = _post_json(f"{base}/invocations", {"inputs": ["a", "@b http://c"]})
            edges = ["", "lost my bag " * 87_382, *(f"t {i}" for i in range(9_998))]
            # dataframe_split keeps texts as Python strings; "inputs" would build a
            # fixed-width array (10,000 x 1 MB) and turn a null into "None".
            split = {"columns": ["text"], "data": [[t] for t in edges]}
            batch = _post_json(f"{base}/invocations", {"dataframe_split": split})
            with pytest.raises(urllib.error.HTTPError) as refused:
                nulls = [{"text": "ok"}, {"text": None}]
                _post_json(f"{base}/invocations", {"dataframe_records": nulls})
            error = json.loads(refused.value.read())
            alive = _post_json(f"{base}/invocations", {"inputs": ["still here"]})
        finally:
            _stop(server)

    (row,) = records["predictions"]
    assert row["label"] in LABELS
    assert sum(row[c] for c in PROB_COLUMNS) == pytest.approx(1.0, abs=1e-5)
    assert [r["label"] in LABELS for r in inputs["predictions"]] == [True, True]
    # An empty text, a 1 MB text and 10,000 rows in one request: one answer each.
    assert len(batch["predictions"]) == 10_000
    assert {r["label"] for r in batch["predictions"]} <= set(LABELS)
    # A None is a client error with the reason, and the server keeps serving.
    assert refused.value.code == 400
    assert "texts must be strings; rows [1]" in error["message"]
    assert alive["predictions"][0]["label"] in LABELS


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group, then kill it if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The CLI is gone; make sure no worker of its group survives it.
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def _rotated_copy(bundle: Path, folder: Path) -> Path:
    """The same graph with its label names rotated: its answer for a text is the next
    label after the bundle's."""
    shutil.copytree(bundle, folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["labels"] = config["labels"][1:] + config["labels"][:1]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder


def _predicted_ids(bundle: Path, texts: list[str]) -> list[int]:
    predicted = load_onnx_predictor(bundle).predict_proba(
        [normalize_text(t, **NORMALIZE) for t in texts]
    )
    return predicted.argmax(axis=1).tolist()


BOOTSTRAP = {"confidence": 0.95, "resamples": 500, "seed": 0}


def test_champion_moves_only_to_a_better_challenger(
    bundle: Path, tracking: str, tmp_path: Path
) -> None:
    name = "distillery-student-promotion"
    texts = [*RAW_TEXTS, "lovely crew", "never again", "fine I guess", "late"] * 3
    # Gold labels = what the bundle predicts, so it is right on every row ...
    gold = _predicted_ids(bundle, texts)
    # ... and the same graph with its label names rotated is wrong on every row.
    worse = _rotated_copy(bundle, tmp_path / "worse")

    def register(folder: Path) -> int:
        with mlflow.start_run(experiment_id=tracking):
            return log_and_register(folder, name)["version"]

    def promote(version: int) -> dict[str, Any]:
        return promote_if_better(
            name, version, "champion", texts, gold, LABELS, bootstrap=BOOTSTRAP
        )

    first = promote(register(worse))  # no champion yet: promoted whatever it scores
    assert first["promoted"] and first["champion"] is None
    assert first["challenger"]["accuracy"] == 0.0
    assert first["interval"] is None

    better = promote(register(bundle))
    assert better["promoted"] and better["champion"]["version"] == 1
    assert better["challenger"]["accuracy"] == 1.0
    assert better["challenger"]["macro_f1"] > first["challenger"]["macro_f1"]
    assert better["interval"]["low"] > 0  # far beyond the noise

    again = promote(register(worse))  # worse than the champion: the alias stays
    assert not again["promoted"] and again["champion"]["version"] == 2
    client = MlflowClient()
    assert int(client.get_model_version_by_alias(name, "champion").version) == 2
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 3


def test_a_challenger_ahead_within_the_noise_stays_a_challenger(
    bundle: Path, tracking: str, tmp_path: Path
) -> None:
    name = "distillery-student-noise"
    texts = [*RAW_TEXTS, "lovely crew", "never again", "fine I guess", "late"] * 5
    ids = _predicted_ids(bundle, texts)
    # The rotated champion answers (id + 1) mod 3 on every text: each row is right
    # for exactly one of the two models, the challenger on two more rows than it.
    half = len(texts) // 2 + 1
    gold = ids[:half] + [(i + 1) % len(LABELS) for i in ids[half:]]
    champion = _rotated_copy(bundle, tmp_path / "champion")
    with mlflow.start_run(experiment_id=tracking):
        log_and_register(champion, name)
        challenger = log_and_register(bundle, name)["version"]
    MlflowClient().set_registered_model_alias(name, "champion", "1")

    def promote(bootstrap: dict[str, Any] | None) -> dict[str, Any]:
        return promote_if_better(
            name, challenger, "champion", texts, gold, LABELS, bootstrap=bootstrap
        )

    held = promote(BOOTSTRAP)
    gain = held["challenger"]["macro_f1"] - held["champion"]["macro_f1"]
    assert gain > 0  # ahead on the point estimate ...
    assert (
        held["interval"]["low"] < 0 < held["interval"]["high"]
    )  # ... not beyond noise
    assert not held["promoted"] and "lower bound" in held["reason"]
    assert int(MlflowClient().get_model_version_by_alias(name, "champion").version) == 1

    # Comparing point estimates alone (confidence: null) promotes it.
    assert promote(None)["promoted"]
