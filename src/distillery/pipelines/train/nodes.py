"""Train node: launches the DDP ranks (torch elastic) and hands rank 0's model on."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.report.plots import learning_curve
from distillery.ml.train.config import RankZeroElsewhere, TrainConfig, TrainResult
from distillery.ml.train.launch import launch_training
from distillery.tracking import active_run_id

logger = logging.getLogger(__name__)

WORKDIR_KEY = "workdir"


def split_train_options(train_options: dict[str, Any]) -> tuple[TrainConfig, Path]:
    """``params:train_options`` = TrainConfig fields + ``workdir`` (checkpoints, launch files).

    Raises:
        ValueError: unknown or invalid options (the message names them).
    """
    options = dict(train_options)
    workdir = options.pop(WORKDIR_KEY, None)
    if not workdir:
        raise ValueError("train_options.workdir must name a folder for checkpoints")
    return TrainConfig.from_dict(options), Path(workdir)


def history_metrics(result: TrainResult) -> dict[str, list[dict[str, float]]]:
    """Per-step and per-epoch curves in ``MlflowMetricsHistoryDataset`` form."""
    curves: dict[str, list[dict[str, float]]] = {
        "train_loss": [
            {"step": int(r["step"]), "value": r["train_loss"]}
            for r in result.step_history
        ],
        "lr": [{"step": int(r["step"]), "value": r["lr"]} for r in result.step_history],
    }
    for key in ("val_loss", "val_accuracy", "val_macro_f1"):
        curves[key] = [
            {"step": int(r["epoch"]), "value": r[key]} for r in result.epoch_history
        ]
    summary = {
        "best_val_macro_f1": result.best_val_macro_f1,
        "samples_per_s": result.samples_per_s,
        "wall_s": result.wall_s,
        "train_samples": result.train_samples,
        "world_size": result.world_size,
    }
    curves |= {k: [{"step": 0, "value": float(v)}] for k, v in summary.items()}
    return {k: v for k, v in curves.items() if v}


def train_teacher(
    model_input_train: pd.DataFrame,
    model_input_val: pd.DataFrame,
    label_vocab: dict[str, Any],
    train_options: dict[str, Any],
    validation_summary: dict[str, Any] | None = None,
) -> tuple[ClassifierArtifact, dict[str, Any], dict[str, Any], Figure]:
    """Fine-tune the pretrained encoder on ``nproc`` × ``nnodes`` ranks.

    A rerun with the same options and data resumes from the latest checkpoint in
    ``workdir``; changed options start afresh (the log says which).
    ``validation_summary`` (corpus hash and data profile) is copied into the JSON
    summary under ``data``: the scheduled retraining measures drift from it.

    Returns:
        The fine-tuned teacher (best validation epoch), its MLflow metric curves, a
        JSON summary and the learning-curve figure.

    Raises:
        RankZeroElsewhere: on a machine that did not host global rank 0 in a
            multi-node run, after its ranks finished: ``kedro run`` exits 0 there and
            saves nothing (the machine that hosted rank 0 saves the teacher).
        distillery.ml.training.TrainingFailedError: a rank failed (names rank and cause).
    """
    config, workdir = split_train_options(train_options)
    labels = list(label_vocab["labels"])
    result = launch_training(
        config, model_input_train, model_input_val, labels, workdir
    )
    if result is None:
        logger.info(
            "This machine's ranks finished. Global rank 0 ran on another machine, "
            "which saves the teacher and logs the run to MLflow; nothing to save here, "
            "so this run stops now with exit status 0."
        )
        raise RankZeroElsewhere
    logger.info(
        "Teacher: best validation macro-F1 %.4f at epoch %d; %.1f samples/s on %d rank(s)"
        "%s",
        result.best_val_macro_f1,
        result.best_epoch,
        result.samples_per_s,
        result.world_size,
        f"; resumed from step {result.resumed_from_step}"
        if result.resumed_from_step is not None
        else "",
    )
    artifact = ClassifierArtifact(
        TextClassifier.load(result.model_dir), load_tokenizer(config.model_name_or_path)
    )
    summary = asdict(result) | {
        "config": config.to_dict(),
        "run_id": active_run_id(),
        # The data this teacher saw: scheduled retraining measures drift from it.
        "data": {k: (validation_summary or {}).get(k) for k in ("sha256", "profile")},
    }
    figure = learning_curve(
        result.step_history, result.epoch_history, "teacher fine-tuning"
    )
    return artifact, history_metrics(result), summary, figure
