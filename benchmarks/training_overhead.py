"""Training overhead: the train stage's loop vs a bare PyTorch loop of the same shape.

Same model (the packaged teacher with a new head, frozen embeddings and first
``--freeze-layers`` blocks), same precision (``--precision``, default as the train
stage resolves ``auto``: bf16 autocast on CPUs with native bf16), same global batch
of 32, same batches (the stage's length-bucketed sampler), same data (the first rows of
``data/05_model_input/train`` from a previous ``kedro run``). Per-step throughput is
compared, so model loading, validation and checkpoints are left out of both sides;
the A/B runs are interleaved round by round. Each shape of the stage's loop is held
against the bare loop of the same shape: 1 rank × 2 threads against one process with 2
threads, 2 gloo ranks × 1 thread against a bare 2-process DDP loop (plain
``DistributedDataParallel``, ``torch.multiprocessing``, 1 thread each). Usage::

    .venv/bin/python benchmarks/training_overhead.py [--steps 20] [--rounds 3]

Prints a table and writes ``benchmarks/results/training_overhead.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _results import write_results

from distillery.ml.data.batches import (
    BucketedDistributedBatchSampler,
    PadCollator,
    TokenDataset,
)
from distillery.ml.models.modeling import TextClassifier
from distillery.ml.train.config import PRECISIONS, TrainConfig
from distillery.ml.train.launch import launch_training
from distillery.ml.train.strategies import resolve_precision, transformer_blocks

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
BATCH = 32


def bare_loop(  # noqa: PLR0913 - one benchmark arm's settings
    frame: pd.DataFrame,
    steps: int,
    threads: int,
    seed: int,
    frozen: int,
    precision: str,
    rank: int = 0,
    world_size: int = 1,
) -> list[float]:
    """A plain ~30-line PyTorch loop; returns samples/s of each step after the first.

    With ``world_size`` > 1 it runs as one rank of an initialised process group: the
    model is wrapped in plain ``DistributedDataParallel`` and the rank takes its slice
    of each global batch, so samples/s counts the global batch.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = TextClassifier.from_pretrained_encoder("builtin", LABELS, 0.1).train()
    model.encoder.embeddings.requires_grad_(False)
    for block in transformer_blocks(model.encoder)[:frozen]:
        block.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = (
        torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    )
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    dataset = TokenDataset(frame)
    sampler = BucketedDistributedBatchSampler(
        dataset.lengths, BATCH, num_replicas=world_size, rank=rank, seed=seed
    )
    sampler.set_epoch(0)
    collate = PadCollator()
    rates = []
    for step, rows in enumerate(sampler):
        if step > steps:
            break
        start = time.perf_counter()
        batch = collate([dataset[i] for i in rows])
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            logits = forward(batch["input_ids"], batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step > 0:  # the first step warms up allocators and thread pools
            rates.append(BATCH / (time.perf_counter() - start))
    return rates


def _bare_ddp_rank(  # noqa: PLR0913 - spawned with one arm's settings
    rank: int,
    world_size: int,
    port: int,
    arm: tuple[pd.DataFrame, int, int, int, str],
    results: mp.SimpleQueue,
) -> None:
    """One rank of the bare DDP loop; rank 0 puts its per-step rates on ``results``."""
    frame, steps, seed, frozen, precision = arm
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rates = bare_loop(frame, steps, 1, seed, frozen, precision, rank, world_size)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        results.put(rates)


def bare_ddp_loop(  # noqa: PLR0913 - one benchmark arm's settings
    frame: pd.DataFrame,
    steps: int,
    nproc: int,
    seed: int,
    frozen: int,
    precision: str,
) -> list[float]:
    """``nproc`` bare DDP ranks of 1 thread each on gloo; rank 0's samples/s per step."""
    with socket.socket() as probe:  # a free port on the loopback for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    arm = (frame, steps, seed, frozen, precision)
    mp.start_processes(
        _bare_ddp_rank,
        args=(nproc, port, arm, results),
        nprocs=nproc,
        start_method="spawn",
    )
    return results.get()


def stage_loop(  # noqa: PLR0913 - one benchmark arm's settings
    frame: pd.DataFrame,
    steps: int,
    nproc: int,
    threads: int,
    seed: int,
    frozen: int,
    precision: str,
) -> list[float]:
    """The train stage's loop through ``launch_training``; per-step samples/s."""
    config = TrainConfig(
        model_name_or_path="builtin",
        batch_size=BATCH,
        learning_rate=1e-4,
        max_steps=steps + 1,
        epochs=1,
        freeze_embeddings=True,
        freeze_layers=frozen,
        precision=precision,
        nproc=nproc,
        num_threads=threads,
        checkpoint_every_steps=None,
        patience=None,
        seed=seed,
        log_every_steps=1000,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = launch_training(config, frame, frame.head(BATCH), LABELS, tmp)
    return [r["samples_per_s"] for r in result.step_history[1:]]


def main() -> int:
    """Run the rounds, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--freeze-layers",
        type=int,
        default=2,
        help="blocks kept fixed besides the embeddings (conf/base's train default: 2)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="forward passes of every loop (auto: as the train stage resolves it)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/training_overhead.json")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    frame = pd.read_parquet(ROOT / "data/05_model_input/train").head(
        BATCH * (args.steps + 2)
    )
    runs = {
        "bare loop, 1 process x 2 threads": lambda s: bare_loop(
            frame, args.steps, 2, s, args.freeze_layers, precision
        ),
        "stage loop, 1 rank x 2 threads": lambda s: stage_loop(
            frame, args.steps, 1, 2, s, args.freeze_layers, precision
        ),
        "bare DDP loop, 2 processes x 1 thread": lambda s: bare_ddp_loop(
            frame, args.steps, 2, s, args.freeze_layers, precision
        ),
        "stage loop, 2 ranks x 1 thread": lambda s: stage_loop(
            frame, args.steps, 2, 1, s, args.freeze_layers, precision
        ),
    }
    # Each loop against the bare loop of its own shape, and all against 1 process.
    same_shape = {
        "bare loop, 1 process x 2 threads": "bare loop, 1 process x 2 threads",
        "stage loop, 1 rank x 2 threads": "bare loop, 1 process x 2 threads",
        "bare DDP loop, 2 processes x 1 thread": "bare DDP loop, 2 processes x 1 thread",
        "stage loop, 2 ranks x 1 thread": "bare DDP loop, 2 processes x 1 thread",
    }
    medians: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, run in runs.items():
            medians[name].append(statistics.median(run(42 + r)))
    bare = medians["bare loop, 1 process x 2 threads"]
    rows = []
    for name, values in medians.items():
        row = {
            "loop": name,
            "samples_per_s_median": statistics.median(values),
            "samples_per_s_min": min(values),
            "samples_per_s_max": max(values),
            "same_shape_bare": same_shape[name],
        }
        for key, reference in (
            ("vs_bare", bare),
            ("vs_same_shape_bare", medians[same_shape[name]]),
        ):
            ratios = [v / b for v, b in zip(values, reference, strict=True)]
            row |= {
                f"{key}_median": statistics.median(ratios),
                f"{key}_min": min(ratios),
                f"{key}_max": max(ratios),
            }
        rows.append(row)
    lines = [
        f"{'loop':<40}{'samples/s (min-max)':>26}{'vs 1-process bare':>22}"
        f"{'vs same-shape bare':>24}"
    ]
    for row in rows:
        lines.append(
            f"{row['loop']:<40}{row['samples_per_s_median']:>10.1f} "
            f"({row['samples_per_s_min']:.1f}-{row['samples_per_s_max']:.1f})"
            f"{row['vs_bare_median']:>10.2f}x ({row['vs_bare_min']:.2f}-{row['vs_bare_max']:.2f})"
            f"{row['vs_same_shape_bare_median']:>10.2f}x "
            f"({row['vs_same_shape_bare_min']:.2f}-{row['vs_same_shape_bare_max']:.2f})"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        args.out,
        ("torch", "transformers"),
        {
            "settings": vars(args) | {"batch": BATCH, "resolved_precision": precision},
            "target": "stage loop >= 0.95 x the bare loop of the same shape",
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
