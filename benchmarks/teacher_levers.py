"""The large teacher's cost levers: what each buys in training speed, and what it costs.

Each arm fine-tunes the MPNet teacher (``teacher_model: mpnet-base``) through the
train stage's own loop (``launch_training``) for the same optimizer steps on the same
training rows, then scores the same validation rows. The reference arm is
``conf/large``'s setting (bf16 autocast, embeddings and the first 4 of 12 blocks
frozen, length-bucketed batches); every other arm changes one lever:

- all blocks trained, or 8 frozen;
- LoRA (rank 8 on the attention projections q, k, v, o; head trained);
- fp32 instead of bf16;
- batches drawn without length bucketing (padded to the longest in a random batch);
- a 64-token maximum length instead of the corpus's own.

A short run's validation macro-F1 is noisy and below a full epoch's: it tells a lever
that loses much from one that does not, not the last point. Needs ``data/05_model_input``
from a ``kedro run --env large`` (MPNet's tokens). Usage::

    .venv/bin/python benchmarks/teacher_levers.py [--steps 40] [--val-rows 1000]

Prints a table and writes ``benchmarks/results/teacher_levers.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from _results import write_results

from distillery.ml.train.config import LoraOptions, TrainConfig
from distillery.ml.train.launch import launch_training

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
LARGE = {  # conf/large's train options that the arms share or change
    "model_name_or_path": "mpnet-base",
    "learning_rate": 5e-5,
    "freeze_embeddings": True,
    "freeze_layers": 4,
    "precision": "bf16",
}
ARMS: dict[str, dict[str, Any]] = {
    "conf/large: 4 blocks frozen, bf16, bucketed": {},
    "all 12 blocks trained": {"freeze_layers": 0},
    "8 blocks frozen": {"freeze_layers": 8},
    "LoRA r8 on q, k, v, o": {
        "freeze_layers": 0,
        "lora": LoraOptions(r=8, alpha=16.0, target_modules=("q", "k", "v", "o")),
    },
    "fp32": {"precision": "fp32"},
    "no length bucketing": {"bucket_multiplier": 1},
    "max_length 64": {"max_length": 64},
}


def truncated(frame: pd.DataFrame, max_length: int) -> pd.DataFrame:
    """Rows cut to ``max_length`` tokens, each keeping its closing special token."""

    def cut(ids: Any) -> list[int]:
        ids = list(ids)
        return ids if len(ids) <= max_length else [*ids[: max_length - 1], ids[-1]]

    out = frame.copy()
    out["input_ids"] = [cut(x) for x in frame["input_ids"]]
    out["attention_mask"] = [[1] * len(x) for x in out["input_ids"]]
    return out


def run_arm(
    changes: dict[str, Any],
    train: pd.DataFrame,
    val: pd.DataFrame,
    labels: list[str],
    steps: int,
) -> dict[str, Any]:
    """One arm through the stage's loop: samples/s, validation macro-F1, wall time."""
    settings = LARGE | changes
    if "max_length" in changes:
        train, val = (truncated(f, changes["max_length"]) for f in (train, val))
    config = TrainConfig(
        **settings,
        batch_size=BATCH,
        epochs=1,
        max_steps=steps,
        checkpoint_every_steps=None,
        patience=None,
        seed=42,
        log_every_steps=1000,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = launch_training(config, train, val, labels, tmp)
    rates = [r["samples_per_s"] for r in result.step_history[1:]]
    return {
        "changes": {k: str(v) for k, v in changes.items()},
        "train_samples_per_s_median": statistics.median(rates),
        "val_macro_f1": result.best_val_macro_f1,
        "wall_s": result.wall_s,
        "precision": result.precision,
    }


def main() -> int:
    """Run every arm, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per arm")
    parser.add_argument("--val-rows", type=int, default=1000)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/teacher_levers.json")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model_input = ROOT / "data/05_model_input"
    labels = json.loads((model_input / "label_vocab.json").read_text())["labels"]
    train = pd.read_parquet(model_input / "train").sample(
        n=BATCH * args.steps, random_state=0
    )
    val = pd.read_parquet(model_input / "val").sample(n=args.val_rows, random_state=0)
    arms = {
        name: run_arm(changes, train, val, labels, args.steps)
        for name, changes in ARMS.items()
    }
    reference = arms[next(iter(ARMS))]
    for arm in arms.values():
        arm["speed_vs_conf_large"] = (
            arm["train_samples_per_s_median"] / reference["train_samples_per_s_median"]
        )
    lines = [f"{'arm':<46}{'samples/s':>10}{'vs large':>10}{'val F1':>9}"]
    lines += [
        f"{name:<46}{a['train_samples_per_s_median']:>10.1f}"
        f"{a['speed_vs_conf_large']:>9.2f}x{a['val_macro_f1']:>9.4f}"
        for name, a in arms.items()
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    write_results(
        Path(args.out),
        ("torch", "transformers", "peft"),
        {
            "settings": vars(args) | {"batch_size": BATCH, "shared": LARGE},
            "arms": arms,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
