"""The ``python -m distillery.predict`` command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distillery.ml.compress.export import export_onnx
from distillery.ml.models.modeling import load_tokenizer
from distillery.ml.serve.serving import load_onnx_predictor, save_onnx_bundle
from distillery.predict import find_latest_bundle, format_prediction, main

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def bundle(
    tiny_classifier: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A serving bundle around a 1-layer, 32-wide classifier."""
    model = tiny_classifier(LABELS, shape="teacher")
    root = tmp_path_factory.mktemp("predict")
    onnx_path = export_onnx(model, root / "student.onnx", max_length=64)
    return save_onnx_bundle(
        onnx_path,
        load_tokenizer("builtin"),
        root / "bundle",
        {"user_token": "@user", "url_token": "http"},
    )


def _versioned(root: Path, version: str, bundle: Path | None) -> Path:
    """Lay out ``root/<version>/student_onnx`` like Kedro's versioned dataset."""
    target = root / version / root.name
    if bundle is None:
        target.mkdir(parents=True)  # an interrupted write: no serving.json
    else:
        shutil.copytree(bundle, target)
    return target


def test_cli_prints_label_and_probabilities(bundle: Path, tmp_path: Path) -> None:
    texts = ["great flight", "@delta lost my bag http://t.co/x"]
    result = subprocess.run(
        [sys.executable, "-m", "distillery.predict", "--model", str(bundle), *texts],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(texts)
    expected = load_onnx_predictor(bundle).predict_proba(texts)
    for line, text, proba in zip(lines, texts, expected, strict=True):
        label, shown, echoed = line.split("\t")
        assert label == LABELS[int(proba.argmax())]
        assert echoed == text
        probs = dict(item.split("=") for item in shown.split(" "))
        assert list(probs) == LABELS
        np.testing.assert_allclose([float(p) for p in probs.values()], proba, atol=1e-4)


def test_cli_without_model_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["great flight"])

    assert exit_info.value.code == 2
    assert "run `kedro run` first" in capsys.readouterr().err


def test_cli_missing_model_message_from_a_subprocess(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distillery.predict", "--model", "nowhere", "hi"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "no model bundle found at nowhere" in result.stderr
    assert "run `kedro run` first" in result.stderr


def test_cli_default_model_is_newest_complete_version(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "data" / "06_models" / "student_onnx"
    _versioned(root, "2024-01-01T00.00.00.000Z", bundle)
    newest = _versioned(root, "2024-05-01T00.00.00.000Z", bundle)
    _versioned(root, "2024-06-01T00.00.00.000Z", None)
    monkeypatch.chdir(tmp_path)

    assert find_latest_bundle(Path("data/06_models/student_onnx")).resolve() == newest
    assert main(["--json", "--threads", "2", "great flight", "ok"]) == 0

    # Log lines may share stdout when another test configured logging in-process.
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in out if line.startswith("{")]
    assert [r["text"] for r in rows] == ["great flight", "ok"]
    for row in rows:
        assert list(row["probabilities"]) == LABELS
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_find_latest_bundle_accepts_a_bundle_or_nothing(
    bundle: Path, tmp_path: Path
) -> None:
    assert find_latest_bundle(bundle) == bundle
    assert find_latest_bundle(tmp_path / "missing") is None
    assert find_latest_bundle(tmp_path) is None


def test_cli_rejects_zero_threads(bundle: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(bundle), "--threads", "0", "hi"])
    assert exit_info.value.code == 2


def test_format_prediction_picks_the_most_probable_label() -> None:
    line = format_prediction("t", LABELS, [0.1, 0.2, 0.7], as_json=False)
    assert line == "positive\tnegative=0.1000 neutral=0.2000 positive=0.7000\tt"
