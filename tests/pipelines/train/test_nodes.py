"""train_teacher on a tiny BERT with the real tokenizer: outputs, metrics, resume."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from distillery.ml.data.text import tokenize_partition
from distillery.pipelines.train.nodes import split_train_options, train_teacher

TEXTS = {
    "negative": ["awful delays again", "worst flight ever", "lost my bag, terrible"],
    "positive": ["great crew, thanks", "lovely smooth flight", "best service ever"],
}


def _split(n: int) -> pd.DataFrame:
    rows = [
        {"text": f"{t} {i}", "label": label, "source_row": i}
        for i in range(n)
        for label, texts in TEXTS.items()
        for t in texts[i % 3 : i % 3 + 1]
    ]
    frame = pd.DataFrame(rows)
    return tokenize_partition(frame, "builtin", 32, {"negative": 0, "positive": 1})


def test_train_teacher_returns_model_curves_and_resumes(
    tiny_teacher_dir: Path,
    tmp_path: Path,
    tiny_train_options: Callable[..., dict[str, Any]],
) -> None:
    train, val = _split(16), _split(4)
    options = tiny_train_options(
        tiny_teacher_dir,
        tmp_path / "work",
        dropout=0.0,
        nproc=1,
        checkpoint_every_steps=2,
    )
    vocab = {"labels": ["negative", "positive"]}

    artifact, metrics, summary, figure = train_teacher(train, val, vocab, options)

    assert artifact.labels == ["negative", "positive"]
    batch = artifact.tokenizer(["great crew"], return_tensors="pt")
    with torch.no_grad():
        logits = artifact.model.eval()(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (1, 2)
    steps = [r["step"] for r in metrics["train_loss"]]
    assert (
        steps == list(range(1, len(steps) + 1)) and len(steps) == 8
    )  # 32 rows / 8, 2 epochs
    assert [r["step"] for r in metrics["val_macro_f1"]] == [1, 2]
    assert summary["resumed_from_step"] is None
    assert figure.axes

    # Same options, same data: the rerun resumes from the last checkpoint.
    again, _, summary2, _ = train_teacher(train, val, vocab, options)
    assert summary2["resumed_from_step"] == 8
    for name, tensor in artifact.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name


def test_train_options_need_a_workdir_and_known_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workdir"):
        split_train_options({"batch_size": 8})
    with pytest.raises(ValueError, match="lerning_rate"):
        split_train_options({"lerning_rate": 1e-3, "workdir": str(tmp_path)})
