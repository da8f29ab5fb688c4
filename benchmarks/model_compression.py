"""Compression benchmark: the registered student against what a user has without us.

Loads what the last ``kedro run`` produced (latest versions in ``data/06_models``) and,
in one process with a fixed thread count, measures side by side:

- the fine-tuned teacher in eager PyTorch (secondary reference);
- the teacher in ONNX Runtime fp32, graph-optimised (the reference: what one deploys);
- the teacher in ONNX Runtime dynamic int8, per channel (quantisation only);
- the tuned word + char TF-IDF baseline;
- every student in ONNX Runtime fp32 and int8.

For each: macro-F1 on the test split (the evaluate stage's code path), size on disk of
the deployable artifact (tokenizer files included), batch-1 latency (normalisation and
tokenisation included: ``--rounds`` interleaved rounds of ``--repeats`` calls per
model, so background load hits every model alike; the p50 of each round, then the
median and min-max over rounds) and batch-32 throughput. Ratios are computed round by
round against each reference (same round, same load) and the median is reported.
Usage::

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
from distillery.ml.data.text import normalize_text
from distillery.ml.report.baseline import BaselinePredictor, save_baseline
from distillery.ml.report.evaluation import evaluate_predictor
from distillery.ml.serve.inference import OnnxPredictor, Predictor, TorchPredictor
from distillery.ml.serve.latency import artifact_size_bytes, measure_latency

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "teacher-onnx-fp32"
PEER = "teacher-onnx-int8"
EAGER = "teacher"
# Issue targets for the registered student (and the baseline margin on macro-F1).
TARGETS = {
    "f1_retained_vs_teacher": 0.99,
    "latency_ratio_vs_teacher-onnx-fp32": 15.0,
    "latency_ratio_vs_teacher-onnx-int8": 5.0,
    "size_ratio_vs_teacher-onnx-int8": 7.0,
    "macro_f1_over_baseline": 0.03,
    # Not a student target: the quantisation-only peer must stay a fair reference.
    "teacher_int8_agreement": 0.97,
}


def _latest(dataset_cls: type, path: str, versions: dict[str, str]):  # noqa: ANN202
    """The latest version of a versioned Kedro dataset; its version goes in ``versions``."""
    from kedro.io.core import Version  # noqa: PLC0415

    dataset = dataset_cls(str(ROOT / path), version=Version(None, None))
    versions[path] = dataset.resolve_load_version()
    return dataset.load()


def _one_run(versions: dict[str, str]) -> str:
    """Every compared model must come from the same ``kedro run`` (one save version)."""
    distinct = set(versions.values())
    if len(distinct) != 1:
        raise SystemExit(
            f"the models come from different runs: {versions}; rerun `kedro run`"
        )
    return distinct.pop()


def _saved_size(save) -> int:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp))
        return artifact_size_bytes(tmp)


def build_models(
    threads: int, tmp: Path, labels: list[str], versions: dict[str, str]
) -> dict[str, tuple[str, object, int]]:
    """name -> (form, predictor, deployable size in bytes), teacher first."""
    teacher = _latest(ClassifierDataset, "data/06_models/teacher", versions)
    teacher_onnx = _latest(BinaryDictDataset, "data/06_models/teacher_onnx", versions)
    student_onnx = _latest(
        BinaryDictDataset, "data/06_models/student_onnx_exports", versions
    )
    baseline = _latest(BaselineDataset, "data/06_models/baseline", versions)
    # A student with its own backbone (e.g. under a non-BERT teacher) has its own
    # tokenizer: its ONNX forms are read and sized with it.
    students = _latest(ClassifierDictDataset, "data/06_models/students", versions)
    tok = teacher.tokenizer
    tokenizer_bytes = _saved_size(tok.save_pretrained)
    models: dict[str, tuple[str, object, int]] = {
        EAGER: (
            "torch-fp32",
            TorchPredictor(
                teacher.model.eval(), tok, num_threads=threads, normalize=normalize_text
            ),
            _saved_size(teacher.model.save) + tokenizer_bytes,
        ),
    }

    def add_onnx(files: dict[str, bytes]) -> None:
        """``<name>.onnx`` and ``<name>.int8.onnx`` for every name in the folder."""
        for name in sorted({f.partition(".")[0] for f in files}):
            own = students[name].tokenizer if name in students else tok
            own_bytes = (
                tokenizer_bytes if own is tok else _saved_size(own.save_pretrained)
            )
            for suffix, form in ((".onnx", "onnx-fp32"), (".int8.onnx", "onnx-int8")):
                path = tmp / f"{name}{suffix}"
                path.write_bytes(files[path.name])
                predictor = OnnxPredictor(
                    path, own, labels, num_threads=threads, normalize=normalize_text
                )
                size = len(files[path.name]) + own_bytes
                models[f"{name}-{form}"] = (form, predictor, size)

    add_onnx(teacher_onnx)
    models["baseline"] = (
        "sklearn",
        BaselinePredictor(baseline, normalize=normalize_text),
        _saved_size(lambda p: save_baseline(baseline, p)),
    )
    add_onnx(student_onnx)
    return models


def latency_arguments(description: str, out: str) -> argparse.Namespace:
    """The command line of a side-by-side latency benchmark: threads, interleaved
    rounds, calls per round and output file (relative to the root)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", default=out, help="from the root")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    return args


def interleaved_p50(
    predictors: dict[str, Predictor], texts: list[str], rounds: int, repeats: int
) -> dict[str, list[float]]:
    """Batch-1 p50 ms of every predictor in each of ``rounds`` rounds; within a round
    the predictors run one after the other on the same window of ``repeats`` texts
    (after 20 warm-up calls), so background load hits them alike."""
    p50: dict[str, list[float]] = {name: [] for name in predictors}
    for r in range(rounds):
        offset = r * repeats
        window = (texts[offset:] + texts[:offset])[: repeats + 20]
        for name, predictor in predictors.items():
            p50[name].append(
                measure_latency(predictor, window, warmup=20, repeats=repeats)["p50_ms"]
            )
    return p50


def main() -> int:
    """Run the benchmark, print the table, write JSON."""
    args = latency_arguments(
        __doc__.splitlines()[0], "benchmarks/results/compression.json"
    )
    torch.set_num_threads(args.threads)
    test = pd.read_parquet(ROOT / "data/05_model_input/test")
    labels = json.loads((ROOT / "data/05_model_input/label_vocab.json").read_text())[
        "labels"
    ]
    texts = test["text"].astype(str).tolist()
    y_true = [labels[int(i)] for i in test["label"]]

    with tempfile.TemporaryDirectory() as tmp:
        versions: dict[str, str] = {}
        models = build_models(args.threads, Path(tmp), labels, versions)
        run_version = _one_run(versions)
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
        # How often quantisation alone changes the teacher's answer on the test rows.
        agreement = float(
            (
                models[REFERENCE][1].predict_proba(texts).argmax(1)
                == models[PEER][1].predict_proba(texts).argmax(1)
            ).mean()
        )
        rounds = interleaved_p50(
            {name: predictor for name, (_, predictor, _) in models.items()},
            texts,
            args.rounds,
            args.repeats,
        )

    rows = []
    for name, (form, _, size) in models.items():
        row = {
            "model": name,
            "form": form,
            "macro_f1": quality[name].macro_f1,
            "f1_retained_vs_teacher": quality[name].macro_f1 / quality[EAGER].macro_f1,
            "size_mb": size / 1e6,
            "p50_ms_median": statistics.median(rounds[name]),
            "p50_ms_min": min(rounds[name]),
            "p50_ms_max": max(rounds[name]),
            "throughput_per_s": quality[name].throughput_per_s,
        }
        for ref in (REFERENCE, PEER, EAGER):
            per_round = [t / m for t, m in zip(rounds[ref], rounds[name], strict=True)]
            row[f"size_ratio_vs_{ref}"] = quality[ref].size_bytes / size
            row[f"latency_ratio_vs_{ref}"] = statistics.median(per_round)
            row[f"latency_ratio_vs_{ref}_min"] = min(per_round)
            row[f"latency_ratio_vs_{ref}_max"] = max(per_round)
        rows.append(row)

    header = (
        f"{'model':<20}{'form':<11}{'macro-F1':>9}{'kept':>7}{'MB':>8}"
        f"{'p50 ms (min-max)':>20}"
        + "".join(f"{'vs ' + r:>22}" for r in (REFERENCE, PEER, EAGER))
    )
    lines = [
        header,
        " " * 55 + "smaller / faster (min-max) against each reference",
        "-" * len(header),
    ]
    for row in rows:
        cells = "".join(
            f"{row[f'size_ratio_vs_{r}']:>6.1f}x /{row[f'latency_ratio_vs_{r}']:>5.1f}x"
            f" ({row[f'latency_ratio_vs_{r}_min']:.1f}-"
            f"{row[f'latency_ratio_vs_{r}_max']:.1f})"
            for r in (REFERENCE, PEER, EAGER)
        )
        lines.append(
            f"{row['model']:<20}{row['form']:<11}{row['macro_f1']:>9.4f}"
            f"{row['f1_retained_vs_teacher']:>7.3f}{row['size_mb']:>8.2f}"
            f"{row['p50_ms_median']:>8.2f} ({row['p50_ms_min']:.2f}-"
            f"{row['p50_ms_max']:.2f})  {cells}"
        )
    lines.append(
        f"teacher ONNX int8 predicts what ONNX fp32 predicts on {agreement:.2%} of "
        f"{len(texts)} test texts (target >= {TARGETS['teacher_int8_agreement']:.0%})"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        ROOT / args.out,
        ("torch", "onnxruntime", "transformers", "scikit-learn"),
        {
            "settings": vars(args),
            "targets": TARGETS,
            "kedro_run_version": run_version,  # every model compared comes from it
            "registered": _registered(),
            "test_rows": len(texts),
            "teacher_int8_agreement": agreement,
            "rows": rows,
        },
    )
    return 0


def _registered() -> str | None:
    """The student form the last run selected (chosen on validation), if any."""
    path = ROOT / "data/07_model_output/selected_student.json"
    return json.loads(path.read_text())["name"] if path.exists() else None


if __name__ == "__main__":
    raise SystemExit(main())
