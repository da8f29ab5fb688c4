"""Two ONNX classifiers on the same rows: macro-F1, the share of the teacher's kept,
and their difference, with paired bootstrap intervals.

How much of a difference between two students (or two runs) is the split's sampling
noise? Both models and the teacher predict the same rows of the last ``kedro run``'s
validation or test split (batches of 64, 2 threads); each resample draws rows with
replacement and scores all three on the same draw, so the interval of a difference
is paired.

Usage::

    .venv/bin/python benchmarks/paired_bootstrap.py A.onnx B.onnx [--split test] [--resamples 1000]

``A`` and ``B`` are ONNX files written by this project (a registered student's
``model.onnx``, e.g. from the MLflow artifact store of an earlier run), each read with
the tokenizer of its bundle (the teacher's when it has none); the teacher is the run's
ONNX fp32 teacher. Prints a table and writes
``benchmarks/results/paired_bootstrap_<split>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _results import write_results
from kedro.io.core import Version
from sklearn.metrics import f1_score

from distillery.datasets import BinaryDictDataset, ClassifierDataset
from distillery.ml.data.text import normalize_text
from distillery.ml.models.modeling import load_tokenizer
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.serving import TOKENIZER_FILE

ROOT = Path(__file__).resolve().parents[1]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="first model (ONNX)")
    parser.add_argument("b", type=Path, help="second model (ONNX)")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    return parser.parse_args()


def _tokenizer(onnx_path: Path, teacher_tokenizer: Any) -> Any:
    """The tokenizer of a serving bundle (beside its ``model.onnx``): a student with its
    own backbone has its own; else the run's teacher's."""
    if (onnx_path.parent / TOKENIZER_FILE).exists():
        return load_tokenizer(str(onnx_path.parent))
    return teacher_tokenizer


def _interval(values: np.ndarray) -> dict[str, float]:
    low, median, high = np.percentile(values, [2.5, 50, 97.5])
    return {"median": float(median), "low_2.5": float(low), "high_97.5": float(high)}


def main() -> int:
    """Predict, resample, print the table, write JSON."""
    args = _arguments()
    rows = pd.read_parquet(ROOT / "data/05_model_input" / args.split)
    texts = rows["text"].astype(str).tolist()
    labels = json.loads((ROOT / "data/05_model_input/label_vocab.json").read_text())
    truth = rows["label"].to_numpy()
    teacher_onnx = BinaryDictDataset(
        str(ROOT / "data/06_models/teacher_onnx"), version=Version(None, None)
    )
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher.onnx"
        teacher.write_bytes(teacher_onnx.load()["teacher.onnx"])
        files = {"teacher": teacher, "a": args.a, "b": args.b}
        teacher_tokenizer = (
            ClassifierDataset(
                str(ROOT / "data/06_models/teacher"), version=Version(None, None)
            )
            .load()
            .tokenizer
        )
        predictions = {
            name: OnnxPredictor(
                path,
                _tokenizer(path, teacher_tokenizer),
                labels["labels"],
                num_threads=2,
                normalize=normalize_text,
                batch_size=64,
            )
            .predict_proba(texts)
            .argmax(1)
            for name, path in files.items()
        }

    def scores(index: np.ndarray) -> dict[str, float]:
        f1 = {
            n: f1_score(truth[index], p[index], average="macro")
            for n, p in predictions.items()
        }
        return {
            "a": f1["a"],
            "b": f1["b"],
            "a_kept": f1["a"] / f1["teacher"],
            "b_kept": f1["b"] / f1["teacher"],
            "b_minus_a": f1["b"] - f1["a"],
        }

    full = scores(np.arange(len(truth)))
    rng = np.random.default_rng(args.seed)
    draws = [
        scores(rng.integers(0, len(truth), len(truth))) for _ in range(args.resamples)
    ]
    result = {
        key: {"value": full[key]} | _interval(np.array([d[key] for d in draws]))
        for key in full
    }
    lines = [f"{args.split}: {len(truth)} rows, {args.resamples} paired resamples"]
    lines += [
        f"{key:<10}{r['value']:>9.4f}   95% {r['low_2.5']:.4f} to {r['high_97.5']:.4f}"
        for key, r in result.items()
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        ROOT / (args.out or f"benchmarks/results/paired_bootstrap_{args.split}.json"),
        ("onnxruntime", "scikit-learn"),
        {
            "settings": {k: str(v) for k, v in vars(args).items()},
            "teacher_version": teacher_onnx.resolve_load_version(),
            "rows": len(truth),
            "results": result,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
