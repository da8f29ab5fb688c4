"""The student's ONNX graph choices, each measured both ways on the last run's student.

Takes the distilled students of the last ``kedro run`` (PyTorch, ``data/06_models/
students``) and exports each one's int8 form as the compress stage does (export,
graph optimisation, ONNX Runtime int8 with the recipe's embedding bits and blocks),
four ways:

- the attention mask: handed to the encoder ready-made (the project's export for
  BERT-like families) or built by transformers' mask builder (``additive_mask=False``);
- the 4-bit word embeddings: unpacked by standard ops (the project's) or read by ONNX
  Runtime's ``GatherBlockQuantized`` contrib op (``unpack_4bit=False``).

For each: node count, file size, agreement with the project's form and with the int8
file the run itself wrote (predictions on the test split, largest probability
difference), and batch-1 latency through ``OnnxPredictor`` (normalisation and
tokenisation included; ``--rounds`` interleaved rounds of ``--repeats`` calls, the
p50 of each round, the median and min-max over rounds, and the speed-up of the
project's form round by round). Usage::

    .venv/bin/python benchmarks/student_graph.py [--threads 1] [--rounds 5] [--repeats 100]

Prints a table and writes ``benchmarks/results/student_graph.json``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from _results import write_results
from model_compression import _latest, _one_run, interleaved_p50, latency_arguments
from student_variants import _parameters

from distillery.datasets import BinaryDictDataset, ClassifierDictDataset
from distillery.ml.compress.distill import StudentRecipe
from distillery.ml.compress.export import (
    export_onnx,
    optimize_onnx,
    quantize_onnx,
    read_metadata,
)
from distillery.ml.data.text import normalize_text
from distillery.ml.models.modeling import TextClassifier
from distillery.ml.serve.inference import OnnxPredictor

ROOT = Path(__file__).resolve().parents[1]
# name -> (additive mask ready-made, 4-bit embeddings unpacked); the first is ours.
GRAPHS = {
    "project": (True, True),
    "mask built by transformers": (False, True),
    "GatherBlockQuantized": (True, False),
    "both as before": (False, False),
}


def _int8(
    model: TextClassifier, folder: Path, recipe: StudentRecipe, max_length: int
) -> dict[str, Path]:
    """The int8 file of ``model`` for every graph in :data:`GRAPHS`."""
    files = {}
    for graph, (additive_mask, unpack) in GRAPHS.items():
        stem = folder / graph.replace(" ", "_")
        raw = export_onnx(
            model,
            stem.with_suffix(".raw.onnx"),
            max_length=max_length,
            additive_mask=additive_mask,
        )
        fp32 = optimize_onnx(raw, stem.with_suffix(".onnx"))
        files[graph] = stem.with_suffix(".int8.onnx")
        quantize_onnx(
            fp32,
            files[graph],
            optimize=False,
            embedding_bits=recipe.embedding_bits,
            embedding_block_size=recipe.embedding_block_size,
            unpack_4bit=unpack,
        )
    return files


def main() -> int:  # noqa: PLR0914 - one table from several measurements
    """Export, compare and time every graph; print the table, write JSON."""
    args = latency_arguments(
        __doc__.splitlines()[0], "benchmarks/results/student_graph.json"
    )
    test = pd.read_parquet(ROOT / "data/05_model_input/test")
    texts = test["text"].astype(str).tolist()
    recipes = {
        r["name"]: StudentRecipe.from_dict(r)
        for r in _parameters()["compress_options"]["students"]
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        versions: dict[str, str] = {}
        students = _latest(ClassifierDictDataset, "data/06_models/students", versions)
        exports = _latest(
            BinaryDictDataset, "data/06_models/student_onnx_exports", versions
        )
        run_version = _one_run(versions)
        for name, artifact in sorted(students.items()):
            folder = Path(tmp) / name
            folder.mkdir()
            run_file = folder / "run.int8.onnx"
            run_file.write_bytes(exports[f"{name}.int8.onnx"])
            max_length = int(read_metadata(run_file)["max_length"])
            files = _int8(artifact.model, folder, recipes[name], max_length)
            predictors = {
                graph: OnnxPredictor(
                    path,
                    artifact.tokenizer,
                    num_threads=args.threads,
                    normalize=normalize_text,
                )
                for graph, path in files.items()
            }
            ours = predictors["project"].predict_proba(texts)
            run = OnnxPredictor(
                run_file,
                artifact.tokenizer,
                num_threads=args.threads,
                normalize=normalize_text,
            ).predict_proba(texts)
            rounds = interleaved_p50(predictors, texts, args.rounds, args.repeats)
            for graph, predictor in predictors.items():
                proba = predictor.predict_proba(texts)
                speedup = [
                    t / o for t, o in zip(rounds[graph], rounds["project"], strict=True)
                ]
                rows.append(
                    {
                        "student": name,
                        "graph": graph,
                        "additive_mask": GRAPHS[graph][0],
                        "unpack_4bit": GRAPHS[graph][1],
                        "nodes": len(onnx.load(str(files[graph])).graph.node),
                        "size_bytes": files[graph].stat().st_size,
                        "agreement_with_project": float(
                            (proba.argmax(1) == ours.argmax(1)).mean()
                        ),
                        "max_abs_prob_diff_vs_project": float(
                            np.abs(proba - ours).max()
                        ),
                        "max_abs_prob_diff_vs_run_file": float(
                            np.abs(proba - run).max()
                        ),
                        "p50_ms": statistics.median(rounds[graph]),
                        "p50_ms_rounds": rounds[graph],
                        "project_speedup_median": statistics.median(speedup),
                        "project_speedup_min": min(speedup),
                        "project_speedup_max": max(speedup),
                    }
                )
    lines = [
        f"{'student':10} {'graph':28} {'nodes':>5} {'MB':>6} {'agree':>8} "
        f"{'max dp':>8} {'vs run':>8} {'p50 ms':>7}  project faster by (min-max)",
    ]
    lines += [
        f"{r['student']:10} {r['graph']:28} {r['nodes']:5d} "
        f"{r['size_bytes'] / 1e6:6.2f} {r['agreement_with_project']:8.2%} "
        f"{r['max_abs_prob_diff_vs_project']:8.1e} "
        f"{r['max_abs_prob_diff_vs_run_file']:8.1e} {r['p50_ms']:7.3f}  "
        f"{r['project_speedup_median']:.2f}x "
        f"({r['project_speedup_min']:.2f}-{r['project_speedup_max']:.2f})"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        ROOT / args.out,
        ["onnxruntime", "onnx", "torch", "transformers"],
        {
            "settings": vars(args),
            "kedro_run_version": run_version,
            "test_rows": len(texts),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
