"""Are the student's word attributions faithful, and does it decide for its teacher's
reasons?

On a seeded sample of the last ``kedro run``'s test split (``--texts``, default 1,000):

- faithfulness of leave-one-out weights, for the registered ONNX student and the ONNX
  Runtime fp32 teacher: the probability drop when the top-k words are removed against
  k random words (k = 1..5), as areas under the curves, with a 95% bootstrap interval
  of the difference over texts;
- student-teacher agreement: the rank correlation of the two models' word weights
  toward the teacher's answer, and the share of the teacher's top-3 words among the
  student's;
- integrated gradients (Captum) of the PyTorch teacher on ``--ig-texts`` of them:
  their deletion curve on the same teacher, and their agreement with the teacher's
  leave-one-out weights (two methods, one model).

Usage::

    .venv/bin/python benchmarks/explain.py [--texts 1000] [--ig-texts 100]

Prints a table and writes ``benchmarks/results/explain.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import write_results
from kedro.io.core import Version

from distillery.datasets import BinaryDictDataset, ClassifierDataset
from distillery.ml.serve.explain import (
    attribution_agreement,
    deletion_curve,
    integrated_gradients,
    leave_one_out,
)
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.serving import load_onnx_predictor
from distillery.predict import find_latest_bundle

ROOT = Path(__file__).resolve().parents[1]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--ig-texts", type=int, default=100)
    parser.add_argument("--max-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/explain.json"))
    return parser.parse_args()


def main() -> int:  # noqa: PLR0914 - one table's worth of measurements
    """Explain, measure, print the table, write JSON."""
    args = _arguments()
    bundle = find_latest_bundle(ROOT / "data/06_models/student_onnx")
    if bundle is None:
        sys.exit("no student bundle: run `kedro run` first")
    test = pd.read_parquet(ROOT / "data/05_model_input/test")
    rng = np.random.default_rng(args.seed)
    texts = test["text"].to_numpy()[rng.permutation(len(test))[: args.texts]].tolist()
    teacher_onnx = BinaryDictDataset(
        str(ROOT / "data/06_models/teacher_onnx"), version=Version(None, None)
    )
    teacher = ClassifierDataset(
        str(ROOT / "data/06_models/teacher"), version=Version(None, None)
    ).load()
    student = load_onnx_predictor(bundle, num_threads=args.threads)
    normalize = student.encoder.normalize
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.onnx"
        path.write_bytes(teacher_onnx.load()["teacher.onnx"])
        teacher_rt = OnnxPredictor(path, teacher.tokenizer, num_threads=args.threads)
        start = time.perf_counter()
        by_student = leave_one_out(student, texts, normalize=normalize)
        student_s = time.perf_counter() - start
        by_teacher = leave_one_out(teacher_rt, texts, normalize=normalize)
        toward_teacher = leave_one_out(
            student,
            texts,
            normalize=normalize,
            targets=[student.labels.index(e.label) for e in by_teacher],
        )
        curves = {
            "student": deletion_curve(
                student, by_student, max_k=args.max_k, seed=args.seed
            ),
            "teacher": deletion_curve(
                teacher_rt, by_teacher, max_k=args.max_k, seed=args.seed
            ),
        }
        subset = texts[: args.ig_texts]
        start = time.perf_counter()
        ig = integrated_gradients(
            teacher.model, teacher.tokenizer, subset, normalize=normalize
        )
        ig_s = time.perf_counter() - start
        curves["teacher, integrated gradients"] = deletion_curve(
            teacher_rt, ig, max_k=args.max_k, seed=args.seed
        )
        ig_vs_loo = attribution_agreement(by_teacher[: args.ig_texts], ig, k=3)
    agreement = attribution_agreement(by_teacher, toward_teacher, k=3)
    lines = [
        f"{len(texts)} test texts ({len(subset)} for integrated gradients)",
        f"{'explained model':<34}{'deletion AUC':>14}{'random':>10}{'gain (95%)':>26}",
    ]
    for name, c in curves.items():
        lines.append(
            f"{name:<34}{c['attributed_auc']:>14.4f}{c['random_auc']:>10.4f}"
            f"{c['auc_gain']:>10.4f} ({c['auc_gain_low']:.4f}-{c['auc_gain_high']:.4f})"
        )
    lines.append(
        f"student vs teacher: spearman {agreement['spearman']:.3f}, "
        f"top-3 overlap {agreement['top_k_overlap']:.3f} ({agreement['texts']} texts)"
    )
    lines.append(
        f"teacher, integrated gradients vs leave-one-out: spearman "
        f"{ig_vs_loo['spearman']:.3f}, top-3 overlap {ig_vs_loo['top_k_overlap']:.3f}"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        args.out,
        ("torch", "onnxruntime", "captum", "scipy"),
        {
            "settings": vars(args),
            "student_bundle": str(bundle),
            "teacher_version": teacher_onnx.resolve_load_version(),
            "texts": len(texts),
            "deletion": curves,
            "student_teacher_agreement": agreement,
            "answers_agree": float(
                np.mean(
                    [
                        a.label == b.label
                        for a, b in zip(by_teacher, by_student, strict=True)
                    ]
                )
            ),
            "teacher_ig_vs_leave_one_out": ig_vs_loo,
            "seconds": {
                "student_leave_one_out": student_s,
                "teacher_integrated_gradients": ig_s,
            },
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
