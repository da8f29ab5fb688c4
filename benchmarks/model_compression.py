"""Compression benchmark: the fp32 teacher vs every compressed form, side by side.

Loads what the last ``kedro run`` produced (latest versions in ``data/06_models``) and,
in one process with a fixed thread count, measures for each model form:

- macro-F1 on the test split (the evaluate stage's code path);
- size on disk of the saved artifact;
- batch-1 latency (normalisation and tokenisation included): ``--rounds`` interleaved
  rounds of ``--repeats`` calls per model, so background load hits every model alike;
  the p50 of each round, then the median and min-max over rounds;
- batch-32 throughput.

Ratios against the teacher are computed round by round (same round, same load) and the
median is reported. Usage::

    .venv/bin/python benchmarks/model_compression.py [--threads 1] [--rounds 5] [--repeats 100]

Prints a table and writes ``benchmarks/results/compression.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from _results import write_results

from distillery.datasets import (
    BaselineDataset,
    BinaryDictDataset,
    ClassifierDataset,
    ClassifierDictDataset,
)
from distillery.ml.baseline import BaselinePredictor, save_baseline
from distillery.ml.evaluation import evaluate_predictor
from distillery.ml.inference import OnnxPredictor, TorchPredictor
from distillery.ml.latency import artifact_size_bytes, measure_latency
from distillery.ml.quantize import quantize_dynamic_int8, quantized_size_bytes
from distillery.ml.text import normalize_text

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"f1_retained": 0.99, "size_ratio": 20.0, "latency_ratio": 15.0}


def _latest(dataset_cls: type, path: str):  # noqa: ANN202 - a Kedro dataset
    from kedro.io.core import Version  # noqa: PLC0415

    return dataset_cls(str(ROOT / path), version=Version(None, None)).load()


def _saved_size(save) -> int:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp))
        return artifact_size_bytes(tmp)


def build_models(threads: int, tmp: Path) -> dict[str, tuple[str, object, int]]:
    """name -> (form, predictor, size in bytes), teacher first."""
    teacher = _latest(ClassifierDataset, "data/06_models/teacher")
    students = _latest(ClassifierDictDataset, "data/06_models/students")
    onnx = _latest(BinaryDictDataset, "data/06_models/student_onnx_exports")
    baseline = _latest(BaselineDataset, "data/06_models/baseline")
    tok = teacher.tokenizer
    torch_predictor = partial(
        TorchPredictor, tokenizer=tok, num_threads=threads, normalize=normalize_text
    )
    models: dict[str, tuple[str, object, int]] = {
        "teacher": (
            "torch-fp32",
            torch_predictor(teacher.model.eval()),
            _saved_size(teacher.model.save),
        ),
    }
    teacher_int8 = quantize_dynamic_int8(teacher.model)
    models["teacher-int8"] = (
        "torch-int8",
        torch_predictor(teacher_int8),
        quantized_size_bytes(teacher_int8),
    )
    models["baseline"] = (
        "sklearn",
        BaselinePredictor(baseline, normalize=normalize_text),
        _saved_size(lambda p: save_baseline(baseline, p)),
    )
    for name, artifact in students.items():
        models[name] = (
            "torch-fp32",
            torch_predictor(artifact.model.eval()),
            _saved_size(artifact.model.save),
        )
        for suffix, form in ((".onnx", "onnx-fp32"), (".int8.onnx", "onnx-int8")):
            path = tmp / f"{name}{suffix}"
            path.write_bytes(onnx[path.name])
            predictor = OnnxPredictor(
                path, tok, num_threads=threads, normalize=normalize_text
            )
            models[f"{name}-{form}"] = (form, predictor, path.stat().st_size)
    return models


def main() -> int:
    """Run the benchmark, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/compression.json")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    test = pd.read_parquet(ROOT / "data/05_model_input/test")
    labels = json.loads((ROOT / "data/05_model_input/label_vocab.json").read_text())[
        "labels"
    ]
    texts = test["text"].astype(str).tolist()
    y_true = [labels[int(i)] for i in test["label"]]

    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args.threads, Path(tmp))
        quality = {
            name: evaluate_predictor(
                name,
                "bench",
                form,
                predictor,
                texts,
                y_true,
                size,
                labels=labels,
                latency_texts=texts[:50],
                num_threads=args.threads,
                latency_repeats=5,
                warmup=2,
            )
            for name, (form, predictor, size) in models.items()
        }
        rounds: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.rounds):
            offset = r * args.repeats
            window = (texts[offset:] + texts[:offset])[: args.repeats + 20]
            for name, (_, predictor, _) in models.items():
                rounds[name].append(
                    measure_latency(predictor, window, warmup=20, repeats=args.repeats)[
                        "p50_ms"
                    ]
                )

    teacher = quality["teacher"]
    rows = []
    for name, (form, _, size) in models.items():
        latency_ratios = [
            t / m for t, m in zip(rounds["teacher"], rounds[name], strict=True)
        ]
        rows.append(
            {
                "model": name,
                "form": form,
                "macro_f1": quality[name].macro_f1,
                "f1_retained": quality[name].macro_f1 / teacher.macro_f1,
                "size_mb": size / 1e6,
                "size_ratio": quality["teacher"].size_bytes / size,
                "p50_ms_median": statistics.median(rounds[name]),
                "p50_ms_min": min(rounds[name]),
                "p50_ms_max": max(rounds[name]),
                "latency_ratio_median": statistics.median(latency_ratios),
                "latency_ratio_min": min(latency_ratios),
                "latency_ratio_max": max(latency_ratios),
                "throughput_per_s": quality[name].throughput_per_s,
            }
        )

    header = f"{'model':<22}{'form':<11}{'macro-F1':>9}{'kept':>7}{'MB':>8}{'smaller':>9}{'p50 ms (min-max)':>22}{'faster (min-max)':>22}{'/s b32':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['model']:<22}{row['form']:<11}{row['macro_f1']:>9.4f}{row['f1_retained']:>7.3f}"
            f"{row['size_mb']:>8.2f}{row['size_ratio']:>8.1f}x"
            f"{row['p50_ms_median']:>8.2f} ({row['p50_ms_min']:.2f}-{row['p50_ms_max']:.2f})"
            f"{row['latency_ratio_median']:>8.1f}x ({row['latency_ratio_min']:.1f}-{row['latency_ratio_max']:.1f})"
            f"{row['throughput_per_s']:>8.0f}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        args.out,
        ("torch", "onnxruntime", "transformers", "scikit-learn"),
        {
            "settings": vars(args),
            "targets": TARGETS,
            "test_rows": len(texts),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
