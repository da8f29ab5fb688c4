"""What may each model leak about its training rows? A membership-inference audit.

A loss-threshold attack on the last ``kedro run``'s models: the registered ONNX
student, the ONNX Runtime fp32 teacher and the tuned TF-IDF baseline, each scored on
the same ``--rows`` training rows (members: every model was fit on the training
split) and as many test rows (non-members). For each: the attack's ROC AUC (0.5: no
better than chance) with a 95% bootstrap interval, the membership advantage (best
TPR - FPR), the TPR at a 1% FPR and the mean losses.

Usage::

    .venv/bin/python benchmarks/privacy.py [--rows 3000]

Prints a table and writes ``benchmarks/results/privacy.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _results import write_results
from kedro.io.core import Version
from sklearn.metrics import roc_auc_score

from distillery.datasets import BaselineDataset, BinaryDictDataset, ClassifierDataset
from distillery.ml.report.baseline import BaselinePredictor
from distillery.ml.report.privacy import label_losses, membership_audit
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.serving import load_onnx_predictor
from distillery.predict import find_latest_bundle

ROOT = Path(__file__).resolve().parents[1]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/privacy.json"))
    return parser.parse_args()


def _auc_interval(
    members: np.ndarray, nonmembers: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    """95% interval of the attack's AUC, each group resampled with replacement."""
    rng = np.random.default_rng(seed)
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    aucs = []
    for _ in range(resamples):
        a = members[rng.integers(0, len(members), len(members))]
        b = nonmembers[rng.integers(0, len(nonmembers), len(nonmembers))]
        aucs.append(roc_auc_score(truth, -np.r_[a, b]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def _rows(split: str, rows: int, seed: int) -> tuple[list, list]:
    frame = pd.read_parquet(ROOT / "data/05_model_input" / split)
    frame = frame.sample(n=min(rows, len(frame)), random_state=seed)
    return frame["text"].tolist(), frame["label"].tolist()


def main() -> int:
    """Score both groups with every model, print the table, write JSON."""
    args = _arguments()
    bundle = find_latest_bundle(ROOT / "data/06_models/student_onnx")
    if bundle is None:
        sys.exit("no student bundle: run `kedro run` first")
    student = load_onnx_predictor(bundle, num_threads=args.threads)
    labels = student.labels
    members = _rows("train", args.rows, args.seed)
    nonmembers = _rows("test", len(members[0]), args.seed)
    teacher_onnx = BinaryDictDataset(
        str(ROOT / "data/06_models/teacher_onnx"), version=Version(None, None)
    )
    teacher = ClassifierDataset(
        str(ROOT / "data/06_models/teacher"), version=Version(None, None)
    ).load()
    baseline = BaselinePredictor(
        BaselineDataset(
            str(ROOT / "data/06_models/baseline"), version=Version(None, None)
        ).load()
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.onnx"
        path.write_bytes(teacher_onnx.load()["teacher.onnx"])
        models = {
            "student (registered, ONNX int8)": student,
            "teacher (ONNX fp32)": OnnxPredictor(
                path, teacher.tokenizer, num_threads=args.threads
            ),
            "tuned TF-IDF baseline": baseline,
        }
        for name, model in models.items():
            # The baseline orders its classes by name; map the label ids to its order.
            order = [model.labels.index(label) for label in labels]
            member_losses = label_losses(
                model, members[0], [order[i] for i in members[1]]
            )
            nonmember_losses = label_losses(
                model, nonmembers[0], [order[i] for i in nonmembers[1]]
            )
            audit = membership_audit(member_losses, nonmember_losses)
            audit["auc_low"], audit["auc_high"] = _auc_interval(
                member_losses, nonmember_losses, args.resamples, args.seed
            )
            results[name] = audit
    lines = [
        f"{len(members[0])} training rows (members) and {len(nonmembers[0])} test rows",
        f"{'model':<34}{'AUC (95%)':>22}{'advantage':>11}{'TPR@1%FPR':>11}"
        f"{'loss train/test':>18}",
    ]
    for name, a in results.items():
        lines.append(
            f"{name:<34}{a['auc']:>8.3f} ({a['auc_low']:.3f}-{a['auc_high']:.3f})"
            f"{a['advantage']:>11.3f}{a['tpr_at_1pct_fpr']:>11.3f}"
            f"{a['member_loss']:>9.3f}/{a['nonmember_loss']:.3f}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        args.out,
        ("torch", "onnxruntime", "scikit-learn"),
        {
            "settings": vars(args),
            "attack": "loss threshold (Yeom et al., 2018)",
            "student_bundle": str(bundle),
            "teacher_version": teacher_onnx.resolve_load_version(),
            "models": results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
