"""ONNX Runtime fusions: every ONNX form with and without the SkipLayerNormalization fusion.

The project opens every ONNX file through ``distillery.ml.compress.export.ort_session``,
which keeps ONNX Runtime from fusing residual ``Add`` + ``LayerNormalization`` into
``SkipLayerNormalization`` at load time (``UNFUSED_ORT_OPTIMIZERS``); the files are
written without that fusion too. A default ``InferenceSession`` (what a user opens
without us) fuses it back. This script loads the ONNX forms of the last ``kedro run``
(teacher and students, fp32 and int8) and, for each, opens both sessions with the same
thread count, then measures side by side:

- agreement of the two sessions' predictions on the test split, and their largest
  probability difference;
- batch-1 latency through the same ``OnnxPredictor`` (normalisation and tokenisation
  included): ``--rounds`` interleaved rounds of ``--repeats`` calls per session, the
  p50 of each round, then the median and min-max over rounds;
- the int8 forms' session call alone by sequence length (``LENGTHS`` consecutive
  token ids of the test tweets, no tokenisation): where the time goes as texts get
  longer.

Usage::

    .venv/bin/python benchmarks/ort_fusions.py [--threads 1] [--rounds 5] [--repeats 100]

Prints a table and writes ``benchmarks/results/ort_fusions.json``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from _results import write_results
from model_compression import _latest, _one_run, interleaved_p50, latency_arguments

from distillery.datasets import BinaryDictDataset, ClassifierDataset
from distillery.ml.compress.export import UNFUSED_ORT_OPTIMIZERS, ort_session
from distillery.ml.data.text import normalize_text
from distillery.ml.serve.inference import OnnxPredictor

ROOT = Path(__file__).resolve().parents[1]
FORMS = {".onnx": "onnx-fp32", ".int8.onnx": "onnx-int8"}
SIDES = ("ours", "default")  # the project's session, a default one
LENGTHS = (2, 16, 32, 64)  # tokens, [CLS] and [SEP] included


def _p50_by_length(
    session: ort.InferenceSession, repeats: int, ids: np.ndarray
) -> dict[int, float]:
    """p50 ms of one ``session.run`` on a batch of one row of each length; call ``i``
    takes the ``i``-th window of that length from ``ids`` (real token ids in order)."""
    out = {}
    for length in LENGTHS:
        rows = ids[: len(ids) // length * length].reshape(-1, length)
        mask = np.ones((1, length), dtype=np.int64)
        for row in rows[:20]:
            session.run(["logits"], {"input_ids": row[None], "attention_mask": mask})
        times = []
        for i in range(repeats):
            feed = {"input_ids": rows[i % len(rows)][None], "attention_mask": mask}
            start = time.perf_counter_ns()
            session.run(["logits"], feed)
            times.append((time.perf_counter_ns() - start) / 1e6)
        out[length] = statistics.median(times)
    return out


def _fused_ops(path: Path, threads: int, unfused: tuple[str, ...]) -> int:
    """SkipLayerNormalization nodes in the graph the session runs (after its fusions)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort_session(path, threads, options, unfused=unfused)
        graph = onnx.load(options.optimized_model_filepath).graph
    return sum(node.op_type == "SkipLayerNormalization" for node in graph.node)


def _table(
    rows: list[dict[str, Any]],
    ratios: dict[str, float],
    by_length: dict[str, dict[int, float]],
) -> list[str]:
    """The printed table: one line per form, then the ratios and lengths."""
    lines = [
        f"{'model':<28}{'SkipLN nodes':>14}{'agree':>8}{'max dp':>9}"
        f"{'default ms':>12}{'ours ms':>9}{'speed-up (min-max)':>22}",
    ]
    for row in rows:
        nodes = row["skip_layer_norm_nodes"]
        lines.append(
            f"{row['model']:<28}{nodes['default']:>7} -> {nodes['ours']:<4}"
            f"{row['agreement']:>8.2%}{row['max_abs_prob_diff']:>9.1e}"
            f"{row['p50_ms_default_session']:>12.3f}{row['p50_ms_ours']:>9.3f}"
            f"{row['speedup_median']:>9.2f}x ({row['speedup_min']:.2f}-"
            f"{row['speedup_max']:.2f})"
        )
    lines += [f"{name}: {ratio:.1f}x" for name, ratio in ratios.items()]
    lines.append("session call only, p50 ms by tokens: " + ", ".join(map(str, LENGTHS)))
    lines += [
        f"  {name:<40}" + "".join(f"{ms:>8.3f}" for ms in times.values())
        for name, times in by_length.items()
    ]
    return lines


def main() -> int:
    """Run the benchmark, print the table, write JSON."""
    args = latency_arguments(
        __doc__.splitlines()[0], "benchmarks/results/ort_fusions.json"
    )
    texts = pd.read_parquet(ROOT / "data/05_model_input/test")["text"].astype(str)
    texts = texts.tolist()

    with tempfile.TemporaryDirectory() as tmp:
        versions: dict[str, str] = {}
        files = _latest(BinaryDictDataset, "data/06_models/teacher_onnx", versions) | {
            f"student-{k}": v
            for k, v in _latest(
                BinaryDictDataset, "data/06_models/student_onnx_exports", versions
            ).items()
        }
        # The teacher's tokenizer, which every form (students too) takes.
        tok = _latest(ClassifierDataset, "data/06_models/teacher", versions).tokenizer
        run_version = _one_run(versions)
        predictors: dict[str, tuple[OnnxPredictor, OnnxPredictor]] = {}
        fused_nodes: dict[str, dict[str, int]] = {}
        for name, data in sorted(files.items()):
            suffix = next(
                (s for s in (".int8.onnx", ".onnx") if name.endswith(s)), None
            )
            if suffix is None:
                continue
            path = Path(tmp) / name
            path.write_bytes(data)
            key = f"{name.removesuffix(suffix)}-{FORMS[suffix]}"
            ours = OnnxPredictor(
                path, tok, num_threads=args.threads, normalize=normalize_text
            )
            # What a user opens without us: every ONNX Runtime optimizer on.
            default = OnnxPredictor(
                path,
                tok,
                num_threads=args.threads,
                normalize=normalize_text,
                unfused=(),
            )
            predictors[key] = (ours, default)
            fused_nodes[key] = {
                "ours": _fused_ops(path, args.threads, UNFUSED_ORT_OPTIMIZERS),
                "default": _fused_ops(path, args.threads, ()),
            }
        quality = {}
        for key, (ours, default) in predictors.items():
            a, b = ours.predict_proba(texts), default.predict_proba(texts)
            quality[key] = {
                "agreement": float((a.argmax(1) == b.argmax(1)).mean()),
                "max_abs_prob_diff": float(np.abs(a - b).max()),
            }
        p50 = interleaved_p50(
            {
                f"{key} ({side})": predictor
                for key, pair in predictors.items()
                for side, predictor in zip(SIDES, pair, strict=True)
            },
            texts,
            args.rounds,
            args.repeats,
        )
        rounds = {
            key: {side: p50[f"{key} ({side})"] for side in SIDES} for key in predictors
        }

        # The test tweets' token ids end to end: windows of real ids (a repeated id
        # hid the cost of the 4-bit embedding lookup, which depends on the rows read).
        first = next(iter(predictors.values()))[0]
        ids = np.concatenate([first.encoder([t])["input_ids"][0] for t in texts])
        by_length = {
            f"{key} ({side})": _p50_by_length(predictor.session, args.repeats, ids)
            for key, pair in predictors.items()
            if key.endswith("int8")
            for side, predictor in zip(SIDES, pair, strict=True)
        }

    rows = []
    for key, times in rounds.items():
        speedup = [d / o for o, d in zip(times["ours"], times["default"], strict=True)]
        rows.append(
            {
                "model": key,
                "skip_layer_norm_nodes": fused_nodes[key],
                **quality[key],
                "p50_ms_default_session": statistics.median(times["default"]),
                "p50_ms_ours": statistics.median(times["ours"]),
                "speedup_median": statistics.median(speedup),
                "speedup_min": min(speedup),
                "speedup_max": max(speedup),
                "p50_ms_rounds": times,
            }
        )
    # The registered student's form against both teacher peers, each in either session.
    student = next(k for k in rounds if k.startswith("student-") and "int8" in k)
    ratios = {}
    for peer in ("teacher-onnx-fp32", "teacher-onnx-int8"):
        for side in ("default", "ours"):
            per_round = [
                p / s
                for p, s in zip(
                    rounds[peer][side], rounds[student]["ours"], strict=True
                )
            ]
            ratios[f"{student} vs {peer} ({side} session)"] = statistics.median(
                per_round
            )

    lines = _table(rows, ratios, by_length)
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        ROOT / args.out,
        ("onnxruntime", "onnx", "tokenizers"),
        {
            "settings": vars(args),
            "unfused": list(UNFUSED_ORT_OPTIMIZERS),
            "kedro_run_version": run_version,
            "test_rows": len(texts),
            "rows": rows,
            "student_int8_latency_ratios": ratios,
            "session_p50_ms_by_tokens": by_length,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
