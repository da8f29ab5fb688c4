"""The ``python -m distillery.predict`` command line."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from distillery.checksums import write_manifest
from distillery.ml.compress.export import export_onnx
from distillery.ml.models.modeling import load_tokenizer
from distillery.ml.serve.explain import leave_one_out
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


def _run_cli(
    args: list[str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m distillery.predict ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "distillery.predict", *args],
        input=stdin,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_prints_label_and_probabilities(bundle: Path, tmp_path: Path) -> None:
    texts = ["great flight", "@delta lost my bag http://t.co/x"]
    result = _run_cli(["--model", str(bundle), *texts], tmp_path)

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


def test_cli_skips_a_bundle_altered_after_it_was_saved(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "student_onnx"
    intact = _versioned(root, "2024-01-01T00.00.00.000Z", bundle)
    altered = _versioned(root, "2024-05-01T00.00.00.000Z", bundle)
    write_manifest(intact)
    write_manifest(altered)
    graph = next(altered.glob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[:-10])

    assert find_latest_bundle(root) == intact
    assert f"skipping {altered}: {graph} does not match its sha256" in (
        capsys.readouterr().err
    )


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


def _expected(bundle: Path, texts: list[str]) -> tuple[list[str], np.ndarray]:
    proba = load_onnx_predictor(bundle).predict_proba(texts)
    return [LABELS[i] for i in proba.argmax(axis=1)], proba


def test_txt_input_to_csv_output_keeps_one_row_per_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1,100 lines: more than one predict chunk, a blank line and a CRLF line.
    texts = ["great flight", "", "lost my bag\r", *(f"late {i}" for i in range(1_097))]
    source = tmp_path / "texts.txt"
    source.write_bytes("".join(f"{t}\n" for t in texts).encode())
    output = tmp_path / "out.csv"

    assert (
        main(["--model", str(bundle), "--input", str(source), "-o", str(output)]) == 0
    )

    frame = pd.read_csv(output, keep_default_na=False)
    clean = [t.rstrip("\r") for t in texts]
    labels, proba = _expected(bundle, clean)
    assert list(frame.columns) == ["text", "label", *(f"prob_{n}" for n in LABELS)]
    assert frame["text"].tolist() == clean
    assert frame["label"].tolist() == labels
    np.testing.assert_allclose(frame.iloc[:, 2:].to_numpy(), proba, atol=1e-6)
    err = capsys.readouterr().err
    assert "1100/1100" in err  # the progress bar reached the end
    assert f"Wrote 1100 predictions to {output}" in err


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_table_input_reads_the_chosen_column(
    bundle: Path, tmp_path: Path, suffix: str
) -> None:
    texts = ["great flight", "@delta lost my bag http://t.co/x", ""]
    table = pd.DataFrame({"id": [3, 1, 2], "body": texts})
    source = tmp_path / f"in{suffix}"
    {
        ".csv": lambda: table.to_csv(source, index=False),
        ".parquet": lambda: table.to_parquet(source),
        ".jsonl": lambda: table.to_json(source, orient="records", lines=True),
    }[suffix]()
    output = tmp_path / "out.parquet"

    code = main(
        [
            "--model",
            str(bundle),
            "-i",
            str(source),
            "--column",
            "body",
            "--output",
            str(output),
            "--no-progress",
        ]
    )

    assert code == 0
    frame = pd.read_parquet(output)
    labels, proba = _expected(bundle, texts)
    assert frame["text"].tolist() == texts
    assert frame["label"].tolist() == labels
    np.testing.assert_allclose(frame.iloc[:, 2:].to_numpy(), proba, atol=1e-6)


def test_stdin_to_jsonl_with_a_progress_bar(bundle: Path, tmp_path: Path) -> None:
    texts = ["great flight", "never again", "ok"]
    output = tmp_path / "out.jsonl"
    result = _run_cli(
        ["--model", str(bundle), "--output", str(output)],
        tmp_path,
        stdin="".join(f"{t}\n" for t in texts),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Classifying" in result.stderr and "3/3" in result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == _expected(bundle, texts)[0]


def test_stdin_dash_prints_a_line_per_text(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("great flight\nok\n"))

    assert main(["--model", str(bundle), "--input", "-", "--json"]) == 0

    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in out if line.startswith("{")]
    assert [r["text"] for r in rows] == ["great flight", "ok"]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        pytest.param(
            None, ["-i", "{tmp}/nope.csv"], "no such input file: ", id="no-file"
        ),
        pytest.param(
            lambda d: pd.DataFrame({"body": ["a"]}).to_csv(d / "t.csv", index=False),
            ["-i", "{tmp}/t.csv"],
            "no column 'text' in .*t.csv; its columns are \\['body'\\] "
            "\\(choose one with --column\\)",
            id="no-column",
        ),
        pytest.param(
            lambda d: pd.DataFrame({"text": ["a", None, "b"]}).to_parquet(
                d / "t.parquet"
            ),
            ["-i", "{tmp}/t.parquet"],
            "1 missing or non-text value\\(s\\), rows \\[1\\]",
            id="null-cell",
        ),
        pytest.param(
            lambda d: (d / "t.xlsx").write_text("x"),
            ["-i", "{tmp}/t.xlsx"],
            "unsupported input .*t.xlsx: use one of .txt, .csv, .parquet, .jsonl",
            id="bad-extension",
        ),
        pytest.param(
            lambda d: (d / "t.txt").write_text("x\n"),
            ["-i", "{tmp}/t.txt", "--column", "body"],
            "--column applies to .csv, .parquet, .jsonl input",
            id="column-for-txt",
        ),
        pytest.param(
            None,
            ["hi", "-o", "{tmp}/out.xlsx"],
            "--output must end in",
            id="bad-output",
        ),
        pytest.param(
            None, ["hi", "-o", "{tmp}/no/out.csv"], "does not exist", id="no-out-dir"
        ),
        pytest.param(
            lambda d: (d / "t.txt").write_text("x\n"),
            ["hi", "-i", "{tmp}/t.txt"],
            "not both",
            id="texts-and-input",
        ),
    ],
)
def test_unreadable_input_exits_2_with_the_reason(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], Any] | None,
    args: list[str],
    message: str,
) -> None:
    if make is not None:
        make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(bundle), *(a.format(tmp=tmp_path) for a in args)])

    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_no_texts_from_a_terminal_is_a_usage_error(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(bundle)])

    assert exit_info.value.code == 2
    assert "pipe texts on stdin" in capsys.readouterr().err


def test_explain_prints_every_word_with_its_weight(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["the flight was great", "@delta lost my bag http://t.co/x"]
    assert main(["--model", str(bundle), "--explain", *texts]) == 0

    # Log lines may share stdout when another test configured logging in-process.
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.split("\t")[0] in LABELS or line.startswith("\twhy: ")
    ]
    assert len(lines) == 4  # a prediction line, then its why: line
    predictor = load_onnx_predictor(bundle)
    expected = leave_one_out(predictor, texts, normalize=predictor.encoder.normalize)
    for i, explanation in enumerate(expected):
        label, _, echoed = lines[2 * i].split("\t")
        assert (label, echoed) == (explanation.label, texts[i])
        why = lines[2 * i + 1].removeprefix("\twhy: ").split(" ")
        assert why == [
            f"{w}({v:+.3f})"
            for w, v in zip(explanation.words, explanation.weights, strict=True)
        ]
    assert expected[1].words[0] == "@user"  # weighed as the model reads the text


def test_explain_in_json_and_as_a_top_tokens_column(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--model", str(bundle), "--explain", "--json", "so very late"]) == 0
    (record,) = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{")
    ]
    assert [word for word, _ in record["explanation"]] == ["so", "very", "late"]

    source, output = tmp_path / "t.txt", tmp_path / "explained.parquet"
    source.write_text("great crew\nlost my bag again\n")
    assert (
        main(
            ["--model", str(bundle), "--explain", "-i", str(source), "-o", str(output)]
        )
        == 0
    )
    frame = pd.read_parquet(output)
    predictor = load_onnx_predictor(bundle)
    expected = leave_one_out(
        predictor,
        ["great crew", "lost my bag again"],
        normalize=predictor.encoder.normalize,
    )
    assert frame["top_tokens"].tolist() == [e.top_tokens(3) for e in expected]
    assert frame.columns[-1] == "top_tokens"
