"""The distillation set: sampled rows, dropped-word copies, cached teacher targets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from distillery.ml.compress.distill import compute_logits
from distillery.ml.compress.export import export_onnx
from distillery.ml.compress.options import CompressOptions
from distillery.ml.compress.teacher_cache import (
    distillation_rows,
    label_with_teacher,
    teacher_graph,
    with_augmented_copies,
)
from distillery.ml.data.text import tokenize_partition
from distillery.ml.models.modeling import TextClassifier, load_tokenizer

TEXTS = ["awful late flight today", "great kind crew thanks", "rude staff", "ok"]


@pytest.fixture(scope="module")
def tweets() -> pd.DataFrame:
    rows = [
        {"text": text, "label": str(i % 2), "source_row": i}
        for i, text in enumerate(TEXTS * 3)
    ]
    return tokenize_partition(pd.DataFrame(rows), "builtin", 16, {"0": 0, "1": 1})


def _options(**change: object) -> CompressOptions:
    params = {
        "students": [{"name": "s", "num_layers": 1}],
        "distill": {"max_length": 16},
        "workdir": "unused",
        "gates": {},
        "registry": {},
    }
    return CompressOptions.from_params(params | change)


def test_a_sample_is_seeded_and_kept_in_source_order(tweets: pd.DataFrame) -> None:
    sample = distillation_rows(tweets, None, _options(distill_samples=5, seed=3))
    assert len(sample) == 5
    assert sample["source_row"].is_monotonic_increasing
    assert sample.index.tolist() == list(range(5))
    again = distillation_rows(tweets, None, _options(distill_samples=5, seed=3))
    assert sample["source_row"].tolist() == again["source_row"].tolist()
    everything = distillation_rows(tweets, None, _options(distill_samples=100))
    assert everything is tweets


def test_copies_drop_words_and_are_tokenised_again(tweets: pd.DataFrame) -> None:
    tokenizer = load_tokenizer("builtin")
    assert (
        with_augmented_copies(
            tweets, tokenizer, copies=0, rate=0.5, seed=0, max_length=16
        )
        is tweets
    )
    out = with_augmented_copies(
        tweets, tokenizer, copies=2, rate=0.5, seed=0, max_length=16
    )
    n = len(tweets)
    assert out["augmented"].tolist() == [False] * n + [True] * (2 * n)
    for rows in (out.iloc[n : 2 * n], out.iloc[2 * n :]):
        copy = rows.reset_index(drop=True)
        assert copy[["label", "source_row"]].equals(tweets[["label", "source_row"]])
        retokenised = tokenize_partition(
            copy[["text", "source_row"]].assign(label="0"), "builtin", 16, {"0": 0}
        )
        assert [ids.tolist() for ids in copy["input_ids"]] == [
            ids.tolist() for ids in retokenised["input_ids"]
        ]
    # Copy k drops words with its own seed: the two copies differ.
    assert out["text"].iloc[n : 2 * n].tolist() != out["text"].iloc[2 * n :].tolist()


@pytest.fixture(scope="module")
def toy_teacher(tiny_classifier: Callable[..., TextClassifier]) -> TextClassifier:
    return tiny_classifier(["neg", "neu", "pos"])


def test_the_teacher_labels_every_row_without_touching_the_input(
    toy_teacher: TextClassifier, make_frame: Callable[..., pd.DataFrame]
) -> None:
    frame = make_frame(10, seed=0)
    columns = list(frame.columns)
    logits_only = label_with_teacher(toy_teacher, frame, batch_size=4, pooled=False)
    assert list(frame.columns) == columns
    assert "teacher_pooled" not in logits_only
    np.testing.assert_allclose(
        np.stack(logits_only["teacher_logits"]),
        compute_logits(toy_teacher, frame),
        atol=1e-6,
    )
    both = label_with_teacher(toy_teacher, frame, batch_size=4, pooled=True)
    np.testing.assert_allclose(
        np.stack(both["teacher_logits"]),
        np.stack(logits_only["teacher_logits"]),
        atol=1e-6,
    )
    assert np.stack(both["teacher_pooled"]).shape == (10, 32)


def test_the_teacher_graph_is_picked_by_form_and_gains_a_pooled_output(
    toy_teacher: TextClassifier, tmp_path: Path
) -> None:
    graph = export_onnx(toy_teacher, tmp_path / "t.onnx", max_length=32).read_bytes()
    files = {"teacher.onnx": graph, "teacher.int8.onnx": b"int8"}
    assert teacher_graph(files, "onnx-int8", pooled=False) == b"int8"
    assert teacher_graph(files, "onnx-fp32", pooled=False) == graph
    pooled = onnx.load_from_string(teacher_graph(files, "onnx-fp32", pooled=True))
    assert [o.name for o in pooled.graph.output] == ["logits", "pooled"]
