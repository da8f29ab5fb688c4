"""evaluate: validation scores of the whole set, whatever the batching."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F

from distillery.ml.data.batches import PadCollator
from distillery.ml.metrics import classification_metrics
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.evaluation import evaluate
from distillery.ml.train.inputs import prepare_data
from distillery.ml.train.model_factory import build_model

if TYPE_CHECKING:
    from conftest import Splits


def test_scores_are_those_of_every_row_scored_alone(
    base_config: TrainConfig, splits: Splits
) -> None:
    torch.manual_seed(0)
    model = build_model(base_config, splits.labels, None)
    data = prepare_data(
        base_config, splits.train, splits.val, splits.labels, None, 0, 1
    )
    val_set = data.val_set
    model.eval()
    collate = PadCollator(base_config.pad_token_id)
    with torch.no_grad():
        rows = [collate([val_set[i]]) for i in range(len(val_set))]  # no padding
        logits = torch.cat([model(r["input_ids"], r["attention_mask"]) for r in rows])
    labels = torch.from_numpy(val_set.labels)
    metrics = classification_metrics(
        val_set.labels, logits.argmax(1).numpy(), splits.labels
    )
    model.train()
    for batch_size in (4, 64):
        config = replace(base_config, eval_batch_size=batch_size)
        scores = evaluate(
            model,
            val_set,
            labels=splits.labels,
            config=config,
            device=torch.device("cpu"),
            rank=0,
            world_size=1,
        )
        assert model.training  # left as the loop needs it
        assert scores["val_loss"] == pytest.approx(
            float(F.cross_entropy(logits, labels)), abs=1e-5
        )
        assert scores["val_accuracy"] == metrics["accuracy"]
        assert scores["val_macro_f1"] == metrics["macro_f1"]
