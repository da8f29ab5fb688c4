"""Label-scarce distillation: what a transfer set of unlabelled texts buys the student.

The teacher is fine-tuned on 10% of the training labels (a seeded sample). Students
then distil from its soft targets alone (``kd_alpha: 1.0``: no label enters their
loss) in two arms that share that teacher:

- ``without``: the distillation set is as many training rows as the teacher saw;
- ``with``: the same, plus ``compress_options.transfer_set``: every training text
  written to a Parquet file without its label, which the teacher labels.

Everything else is the defaults (students chosen on validation) except the release's
F1 gate, lowered to 50% so that both arms register a student to compare. Both arms run
in one throw-away copy of the project (``kedro run``, then ``kedro run --from-nodes
compress.cache_teacher_logits_node``), so neither touches ``data/`` here. The registered
students of both arms predict the test split, and a paired bootstrap gives the
interval of their difference. Usage::

    .venv/bin/python benchmarks/transfer_set.py [--fraction 0.1] [--keep DIR]

Prints a table and writes ``benchmarks/results/transfer_set.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _results import write_results

from distillery.ml.metrics import paired_bootstrap
from distillery.ml.serve.serving import load_onnx_predictor

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
LAYERS = ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input")
LAYERS += ("06_models", "07_model_output", "08_reporting")


def _project(root: Path) -> Path:
    """The project's configuration in ``root`` with empty data layers."""
    project = root / "project"
    shutil.copytree(
        ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local")
    )
    (project / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)
    (project / "src").mkdir()  # kedro wants it; the package is installed
    for layer in LAYERS:
        (project / "data" / layer).mkdir(parents=True)
    return project


def _kedro(project: Path, log: Path, *args: str) -> float:
    """Run ``kedro run ARGS`` in ``project``; its wall time (raises on failure)."""
    started = time.time()
    done = subprocess.run(
        [KEDRO, "run", *args],
        cwd=project,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        check=False,
    )
    with log.open("a") as handle:
        handle.write(f"$ kedro run {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise RuntimeError(f"kedro run {' '.join(args)} failed; see {log}")
    return time.time() - started


def _arm(project: Path, name: str, out: Path) -> dict[str, Any]:
    """The arm's registered student (bundle copied to ``out/name``) and its scores."""
    reporting = project / "data" / "08_reporting"
    comparison = json.loads((reporting / "model_comparison.json").read_text())
    selected = json.loads(
        (project / "data/07_model_output/selected_student.json").read_text()
    )
    distill = json.loads((reporting / "distill_summary.json").read_text())
    test_f1 = {m["name"]: m["macro_f1"] for m in comparison["models"]}
    bundle = max((project / "data/06_models/student_onnx").iterdir()) / "student_onnx"
    shutil.copytree(bundle, out / name)
    return {
        "student": selected["name"],
        "student_val_macro_f1": selected["val_macro_f1"],
        "teacher_val_macro_f1": selected["teacher_val_macro_f1"],
        "student_test_macro_f1": test_f1[selected["name"]],
        "teacher_test_macro_f1": test_f1["teacher"],
        "baseline_all_labels_test_macro_f1": test_f1["baseline"],  # fit on every label
        "distillation_rows": distill.get("rows"),
        "transfer": distill.get("transfer"),
    }


def _paired(project: Path, bundles: Path) -> dict[str, float]:
    """Test macro-F1 of ``with`` minus ``without``, paired bootstrap (1,000 draws)."""
    test = pd.read_parquet(project / "data/05_model_input/test")
    labels = json.loads((project / "data/05_model_input/label_vocab.json").read_text())
    texts = test["text"].astype(str).tolist()
    predictions = {
        arm: load_onnx_predictor(bundles / arm, num_threads=2)
        .predict_proba(texts)
        .argmax(1)
        for arm in ("without", "with")
    }
    return paired_bootstrap(
        test["label"].to_numpy(),
        predictions["without"],
        predictions["with"],
        len(labels["labels"]),
        resamples=1000,
        seed=0,
    )


def main() -> int:
    """Run both arms, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled share")
    parser.add_argument("--keep", default=None, help="run in DIR and keep it")
    parser.add_argument("--out", default="benchmarks/results/transfer_set.json")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="distillery-transfer-"))
    project, log = _project(root), root / "kedro.log"
    walls = {
        "data": _kedro(project, log, "--to-nodes", "preprocess.tokenize_splits_node")
    }
    train = pd.read_parquet(project / "data/05_model_input/train", columns=["text"])
    labelled = math.ceil(args.fraction * len(train))
    transfer = root / "transfer.parquet"
    train[["text"]].to_parquet(transfer)  # the labels stay behind
    scarce = (
        f"train_options.max_train_samples={labelled},"
        f"compress_options.distill_samples={labelled},"
        "compress_options.distill.kd_alpha=1.0,"
        # both arms' students are compared, so neither run may stop at the F1 gate
        "compress_options.gates.min_f1_retained=0.5"
    )
    walls["without"] = _kedro(project, log, "--params", scarce)
    arms = {"without": _arm(project, "without", root / "bundles")}
    walls["with"] = _kedro(
        project,
        log,
        "--from-nodes",
        "compress.cache_teacher_logits_node",
        "--params",
        f"{scarce},compress_options.transfer_set.path={transfer}",
    )
    arms["with"] = _arm(project, "with", root / "bundles")
    difference = _paired(project, root / "bundles")
    _print(labelled, len(train), arms, difference)
    write_results(
        ROOT / args.out,
        ("torch", "onnxruntime", "transformers"),
        {
            "settings": vars(args)
            | {"labelled_rows": labelled, "train_rows": len(train)},
            "wall_s": walls,
            "arms": arms,
            "with_minus_without_test": difference,
        },
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _print(
    labelled: int, rows: int, arms: dict[str, Any], difference: dict[str, float]
) -> None:
    lines = [
        f"teacher on {labelled} of {rows} training labels; students see no label",
        f"{'arm':<10}{'teacher test':>14}{'student val':>13}{'student test':>14}",
    ]
    lines += [
        f"{name:<10}{a['teacher_test_macro_f1']:>14.4f}{a['student_val_macro_f1']:>13.4f}"
        f"{a['student_test_macro_f1']:>14.4f}"
        for name, a in arms.items()
    ]
    lines.append(
        f"with - without (test): {difference['difference']:+.4f}, "
        f"95% {difference['low']:+.4f} to {difference['high']:+.4f}"
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
