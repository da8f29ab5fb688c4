"""Memory and speed of the training strategies: DDP, FSDP2, FSDP2 + activation
checkpointing, LoRA.

Every rank builds a randomly initialised BERT-shaped classifier (BERT-large by
default: 24 blocks of width 1024, ~335M parameters), hands it to the training
library's :class:`~distillery.ml.train.strategies.Strategy` exactly as the train
stage does (wrap or shard, AdamW over the trainable parameters, accumulation
context, gradient clipping) and runs a few optimizer steps on random tokens. Each
rank reports its peak resident memory (``ru_maxrss``: it includes building the
full model before sharding) and, on CUDA, its peak allocated device memory.
Throughput counts the steps after the first. Usage::

    .venv/bin/python benchmarks/memory.py                      # CPU, 2 gloo ranks
    .venv/bin/python benchmarks/memory.py --preset tiny --steps 2 --out /tmp/m.json
    .venv/bin/python benchmarks/memory.py --device cuda --nproc 8 \\
        --strategies ddp fsdp --batch-size 64 --out benchmarks/results/gpu_train.json

Prints a table and writes ``benchmarks/results/memory.json``. On CUDA, ``mfu`` is
model FLOPs (6 x parameters x tokens a second; 4 x for LoRA's frozen weights, which
get no weight gradient) over the GPU's bf16 dense peak.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import socket
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _results import write_results
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
SHAPES = {
    # hidden, layers, heads, intermediate
    "bert-large": (1024, 24, 16, 4096),
    "bert-base": (768, 12, 12, 3072),
    "tiny": (32, 2, 2, 37),
}
VARIANTS = {
    "ddp": {"strategy": "ddp"},
    "fsdp": {"strategy": "fsdp"},
    "fsdp+ac": {"strategy": "fsdp", "activation_checkpointing": True},
    "lora": {"strategy": "ddp", "lora": {"r": 8, "alpha": 16.0}},
}
# bf16 dense tensor-core peak, TFLOP/s, by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}

logger = logging.getLogger("memory")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _rank(job: dict[str, Any]) -> dict[str, Any]:
    """One rank: build, prepare with the strategy, train ``steps`` steps, measure."""
    from transformers import BertConfig, BertModel  # noqa: PLC0415

    from distillery.ml.models.modeling import TextClassifier  # noqa: PLC0415
    from distillery.ml.train.config import TrainConfig  # noqa: PLC0415
    from distillery.ml.train.loop import (  # noqa: PLC0415
        _build_optimizer,
        _resolve_device,
    )
    from distillery.ml.train.strategies import make_strategy  # noqa: PLC0415

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    config = TrainConfig.from_dict(job["config"])
    device = _resolve_device(config.device, int(os.environ["LOCAL_RANK"]))
    torch.set_num_threads(config.num_threads)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    hidden, layers, heads, intermediate = SHAPES[job["preset"]]
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=512,
        ),
        add_pooling_layer=False,
    )
    model = TextClassifier(encoder, LABELS, 0.1).train().to(device)
    params = sum(p.numel() for p in model.parameters())
    strategy = make_strategy(config, device, rank, world)
    wrapped = strategy.prepare(model)
    # A sharded parameter (DTensor) reports its global size.
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    optimizer = _build_optimizer(wrapped, config.learning_rate, config.weight_decay)
    per_rank = config.batch_size // world
    generator = torch.Generator().manual_seed(rank)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else None
    times = []
    for _ in range(job["steps"]):
        ids = torch.randint(1000, 30000, (per_rank, job["seq"]), generator=generator)
        labels = torch.randint(0, len(LABELS), (per_rank,), generator=generator)
        ids, labels = ids.to(device), labels.to(device)
        start = time.perf_counter()
        with strategy.no_sync(True), autocast or torch.autocast("cpu", enabled=False):
            logits = wrapped(ids, torch.ones_like(ids))  # (b, C)
            torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        strategy.clip_grad_norm(config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    result = {
        "rank": rank,
        "peak_rss_gib": _peak_rss_gib(),
        "step_s": times,
        "params": params,
        "trainable_params": trainable,
    }
    if device.type == "cuda":
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu"] = torch.cuda.get_device_name()
    return result


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Launch ``args.nproc`` ranks for one variant; summarise them."""
    from distillery.ml.train.config import TrainConfig  # noqa: PLC0415

    config = replace(
        TrainConfig(
            batch_size=args.batch_size,
            nproc=args.nproc,
            device=args.device,
            num_threads=max(1, (os.cpu_count() or 1) // args.nproc),
            learning_rate=1e-5,
        ),
        **VARIANTS[name],
    )
    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=args.nproc,
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        run_id=uuid.uuid4().hex,
        max_restarts=0,
        start_method="spawn",
    )
    job = {
        "config": config.to_dict(),
        "preset": args.preset,
        "steps": args.steps,
        "seq": args.seq,
    }
    ranks = elastic_launch(launch, _rank)(job)
    ranks = [ranks[r] for r in sorted(ranks)]
    timed = [max(r["step_s"][i] for r in ranks) for i in range(1, args.steps)]
    step_s = sum(timed) / len(timed) if timed else max(r["step_s"][0] for r in ranks)
    first = ranks[0]
    row = {
        "variant": name,
        "settings": VARIANTS[name],
        "params": first["params"],
        "trainable_params": first["trainable_params"],
        "trainable_share": first["trainable_params"] / first["params"],
        "peak_rss_gib_per_rank": [round(r["peak_rss_gib"], 3) for r in ranks],
        "peak_rss_gib": round(max(r["peak_rss_gib"] for r in ranks), 3),
        "step_s": round(step_s, 3),
        "samples_per_s": round(args.batch_size / step_s, 3),
    }
    if "peak_cuda_gib" in first:
        row["gpu"] = first["gpu"]
        row["peak_cuda_gib"] = round(max(r["peak_cuda_gib"] for r in ranks), 3)
        row["mfu"] = _mfu(row, args)
    return row


def _mfu(row: dict[str, Any], args: argparse.Namespace) -> float | None:
    """Model FLOPs utilisation over all GPUs, or None for an unknown GPU."""
    peak = args.peak_tflops or next(
        (v for k, v in PEAK_TFLOPS.items() if k in row["gpu"]), None
    )
    if peak is None:
        return None
    frozen = row["params"] - row["trainable_params"]
    flops_per_token = 6 * row["trainable_params"] + 4 * frozen
    tokens_per_s = row["samples_per_s"] * args.seq
    return round(flops_per_token * tokens_per_s / (peak * 1e12 * args.nproc), 4)


def _targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, against DDP's peak per rank."""
    ddp = rows.get("ddp")
    out: dict[str, Any] = {}
    if ddp is None:
        return out
    for name, limit in (("fsdp", 0.6), ("fsdp+ac", 0.6), ("lora", 0.5)):
        if name in rows:
            ratio = rows[name]["peak_rss_gib"] / ddp["peak_rss_gib"]
            out[f"{name}_peak_vs_ddp"] = {
                "ratio": round(ratio, 3),
                "target": limit,
                "met": ratio <= limit,
            }
    if "lora" in rows:
        share = rows["lora"]["trainable_share"]
        out["lora_trainable_share"] = {
            "share": round(share, 5),
            "target": 0.01,
            "met": share <= 0.01,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(SHAPES), default="bert-large")
    parser.add_argument("--strategies", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="global, per step")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--peak-tflops", type=float, help="per GPU, for MFU")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/memory.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variants = args.strategies or list(VARIANTS)
    rows = {}
    for name in variants:
        rows[name] = run_variant(name, args)
        logger.info("%s: %s", name, rows[name])
    header = f"{'variant':<9} {'params':>8} {'trainable':>9} {'peak GiB/rank':>13} "
    header += f"{'samples/s':>9}"
    if args.device == "cuda":
        header += f" {'cuda GiB':>8} {'MFU':>6}"
    lines = [header]
    for row in rows.values():
        line = (
            f"{row['variant']:<9} {row['params'] / 1e6:>7.1f}M "
            f"{100 * row['trainable_share']:>8.2f}% {row['peak_rss_gib']:>13.2f} "
            f"{row['samples_per_s']:>9.2f}"
        )
        if args.device == "cuda":
            mfu = row.get("mfu")
            line += f" {row['peak_cuda_gib']:>8.2f} "
            line += f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%':>6}"
        lines.append(line)
    targets = _targets(rows)
    sys.stdout.write("\n".join(lines) + "\n")
    for name, target in targets.items():
        sys.stdout.write(f"{name}: {target}\n")
    settings = {
        "preset": args.preset,
        "shape": dict(
            zip(
                ("hidden", "layers", "heads", "intermediate"),
                SHAPES[args.preset],
                strict=True,
            )
        ),
        "nproc": args.nproc,
        "global_batch": args.batch_size,
        "seq": args.seq,
        "steps": args.steps,
        "device": args.device,
        "optimizer": "AdamW fp32"
        + (" (bf16 autocast)" if args.device == "cuda" else ""),
    }
    path = write_results(
        args.out,
        ("torch", "transformers", "peft"),
        {"settings": settings, "rows": list(rows.values()), "targets": targets},
    )
    logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
