"""Student variants: which recipe keeps the most of the teacher, on validation only.

Loads what the last ``kedro run`` produced (the fine-tuned teacher, the distillation
rows with cached teacher logits, the validation split) and, for each variant below,
runs the compress stage's own code: build the student (pruned vocabulary, kept layers,
sliced width), distil it with the train stage's loop, export ONNX fp32 and int8, score
both on the whole validation split. Latency is batch 1, 1 thread, tokenisation
included, over the same validation texts for every variant, interleaved round by
round. The test split is not read.

Usage::

    .venv/bin/python benchmarks/student_variants.py [--variants default epochs-3 ...]

Prints a table and writes ``benchmarks/results/student_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _results import write_results
from kedro.config import OmegaConfigLoader
from kedro.io.core import Version

from distillery.datasets import BinaryDictDataset, ClassifierDataset
from distillery.ml.compress.teacher_cache import TEACHER_POOLED
from distillery.ml.data.text import normalize_text
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.latency import measure_latency
from distillery.pipelines.compress.nodes import (
    cache_teacher_logits,
    distill_students,
    export_students,
)

ROOT = Path(__file__).resolve().parents[1]
# name -> (recipe changes, distillation changes, other compress_options changes)
# against the default student: the first of conf/base's `compress_options.students`.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}, {}),
    "epochs-3": ({}, {"epochs": 3, "patience": 2}, {}),
    "kd-only": ({}, {"kd_alpha": 1.0}, {}),
    "kd-0p9": ({}, {"kd_alpha": 0.9}, {}),
    "kd-only-epochs-3": ({}, {"kd_alpha": 1.0, "epochs": 3, "patience": 2}, {}),
    "kd-T1": ({}, {"kd_temperature": 1.0}, {}),
    "lr-1e-3": ({}, {"learning_rate": 1.0e-3}, {}),
    "lr-2e-3": ({}, {"learning_rate": 2.0e-3}, {}),
    "lr-1e-3-epochs-3": ({}, {"learning_rate": 1.0e-3, "epochs": 3, "patience": 2}, {}),
    "L3-H256": ({"num_layers": 3}, {}, {}),
    "L2-H320": ({"hidden_size": 320, "intermediate_size": 640}, {}, {}),
    "L2-H256-FFN1024": ({"intermediate_size": 1024}, {}, {}),
    # Representation distillation on top of the logits (distill.kd_hidden_weight).
    "hidden-0p3": ({}, {"kd_hidden_weight": 0.3}, {}),
    "hidden-1": ({}, {"kd_hidden_weight": 1.0}, {}),
    "logits-only": ({}, {"kd_hidden_weight": 0.0}, {}),
    "hidden-2": ({}, {"kd_hidden_weight": 2.0}, {}),
    # Which teacher layers the 2-layer student starts from (default 0 and 5).
    "layers-4-5": ({"layer_selection": [4, 5]}, {}, {}),
    "layers-1-5": ({"layer_selection": [1, 5]}, {}, {}),
    "layers-2-5": ({"layer_selection": [2, 5]}, {}, {}),
    # A larger transfer set: each training text again with words dropped, labelled by
    # the teacher (compress_options.augment_copies), over 2 epochs or 1 (same steps).
    "augment-1": ({}, {}, {"augment_copies": 1}),
    "augment-1-epochs-1": ({}, {"epochs": 1}, {"augment_copies": 1}),
    "augment-1-drop-0p2": ({}, {}, {"augment_copies": 1, "augment_word_dropout": 0.2}),
    # Smaller files: fewer 4-bit embedding scales, fewer rare token ids kept (the
    # default before 2026-12-04 was blocks of 32 and vocab_min_count 2).
    "blocks-32-min-count-2": ({"embedding_block_size": 32}, {}, {"vocab_min_count": 2}),
    "blocks-128": ({"embedding_block_size": 128}, {}, {"vocab_min_count": 2}),
    "blocks-128-min-count-3": (
        {"embedding_block_size": 128},
        {},
        {"vocab_min_count": 3},
    ),
    "blocks-128-min-count-4": (
        {"embedding_block_size": 128},
        {},
        {"vocab_min_count": 4},
    ),
    # Distillation's forward passes in fp32 or bf16 autocast (distill.precision;
    # the default, auto, is bf16 on CPUs with native bf16).
    "precision-fp32": ({}, {"precision": "fp32"}, {}),
    "precision-bf16": ({}, {"precision": "bf16"}, {}),
}


def _parameters() -> dict[str, Any]:
    loader = OmegaConfigLoader(
        str(ROOT / "conf"), base_env="base", default_run_env="local"
    )
    return loader["parameters"]


def _cached_rows(
    teacher: Any, run_rows: pd.DataFrame, options: dict[str, Any], cache: dict
) -> pd.DataFrame:
    """The distillation rows a variant needs: the run's own (cached teacher logits)
    unless it asks for more of the cache node (dropped-word copies, or pooled
    embeddings the run did not cache); then the node runs again on the run's
    training split with the run's ONNX teacher, once per setting."""
    pooled = float(options["distill"].get("kd_hidden_weight") or 0) > 0
    copies = options.get("augment_copies", 0)
    if not copies and (not pooled or TEACHER_POOLED in run_rows.columns):
        return run_rows
    key = (copies, options.get("augment_word_dropout"), pooled)
    if key not in cache:
        version = Version(None, None)
        teacher_onnx = BinaryDictDataset(
            str(ROOT / "data/06_models/teacher_onnx"), version=version
        ).load()
        report = json.loads(
            (ROOT / "data/08_reporting/teacher_export_report.json").read_text()
        )
        train = pd.read_parquet(ROOT / "data/05_model_input/train")
        start = time.perf_counter()
        cache[key] = cache_teacher_logits(teacher, teacher_onnx, report, train, options)
        sys.stdout.write(
            f"cached teacher outputs for {len(cache[key])} rows {key} in "
            f"{time.perf_counter() - start:.0f} s\n"
        )
    return cache[key]


def _arguments() -> argparse.Namespace:
    """The command line: variants, latency rounds, output file, seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/student_variants.json")
    parser.add_argument(
        "--seed", type=int, default=None, help="distillation seed (default: the run's)"
    )
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(
            f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}"
        )
    return args


def main() -> int:
    """Distil, export and score every chosen variant; print the table, write JSON."""
    args = _arguments()
    logging.basicConfig(level=logging.WARNING)
    teacher_ds = ClassifierDataset(
        str(ROOT / "data/06_models/teacher"), version=Version(None, None)
    )
    teacher = teacher_ds.load()
    distill_train = pd.read_parquet(ROOT / "data/05_model_input/distill_train.parquet")
    val = pd.read_parquet(ROOT / "data/05_model_input/val")
    summary = json.loads(
        (ROOT / "data/08_reporting/teacher_train_summary.json").read_text()
    )
    teacher_val_f1 = summary["best_val_macro_f1"]
    base = _parameters()["compress_options"]
    if args.seed is not None:
        base = base | {"seed": args.seed}
    cache: dict = {}
    rows: list[dict[str, Any]] = []
    predictors: dict[str, OnnxPredictor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            recipe_change, distill_change, option_change = VARIANTS[variant]
            recipe = base["students"][0] | recipe_change | {"name": variant}
            options = (
                base
                | option_change
                | {
                    "students": [recipe],
                    "distill": base["distill"] | distill_change,
                    "workdir": str(Path(tmp) / "work"),
                }
            )
            rows_for_variant = _cached_rows(teacher, distill_train, options, cache)
            start = time.perf_counter()
            students, _, trained = distill_students(
                teacher, rows_for_variant, val, options
            )
            files, report = export_students(students, val, options)
            wall = time.perf_counter() - start
            path = Path(tmp) / f"{variant}.int8.onnx"
            path.write_bytes(files[path.name])
            predictors[variant] = OnnxPredictor(
                path, teacher.tokenizer, num_threads=1, normalize=normalize_text
            )
            info = trained["students"][variant]
            f1 = report[variant]["val_macro_f1"]
            rows.append(
                {
                    "variant": variant,
                    "recipe": recipe,
                    "distill": distill_change,
                    "options": option_change,
                    "distill_rows": len(rows_for_variant),
                    "parameters": info["parameters"],
                    "best_epoch": info["best_epoch"],
                    "val_macro_f1_torch": info["best_val_macro_f1"],
                    "val_macro_f1_onnx_fp32": f1["onnx-fp32"],
                    "val_macro_f1_onnx_int8": f1["onnx-int8"],
                    "f1_retained_int8": f1["onnx-int8"] / teacher_val_f1,
                    "int8_mb": len(files[path.name]) / 1e6,
                    "distill_and_export_s": wall,
                }
            )
            sys.stdout.write(f"{variant}: {rows[-1]}\n")
            sys.stdout.flush()
        texts = val["text"].astype(str).tolist()
        rounds: dict[str, list[float]] = {v: [] for v in predictors}
        for r in range(args.rounds):
            window = texts[r * args.repeats :][: args.repeats + 20]
            for variant, predictor in predictors.items():
                rounds[variant].append(
                    measure_latency(predictor, window, warmup=20, repeats=args.repeats)[
                        "p50_ms"
                    ]
                )
    for row in rows:
        row["p50_ms_median"] = statistics.median(rounds[row["variant"]])

    header = (
        f"{'variant':<18}{'params':>10}{'epoch':>6}{'val F1 int8':>12}{'kept':>7}"
        f"{'int8 MB':>9}{'p50 ms':>8}{'time s':>8}"
    )
    lines = [f"teacher validation macro-F1 {teacher_val_f1:.4f}", header]
    lines += [
        f"{r['variant']:<18}{r['parameters']:>10}{r['best_epoch']:>6}"
        f"{r['val_macro_f1_onnx_int8']:>12.4f}{r['f1_retained_int8']:>7.3f}"
        f"{r['int8_mb']:>9.2f}{r['p50_ms_median']:>8.2f}"
        f"{r['distill_and_export_s']:>8.0f}"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        ROOT / args.out,
        ("torch", "onnxruntime", "transformers"),
        {
            "settings": vars(args),
            "teacher_version": teacher_ds.resolve_load_version(),
            "teacher_val_macro_f1": teacher_val_f1,
            "run_distill_rows": len(distill_train),
            "val_rows": len(val),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
