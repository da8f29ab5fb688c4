"""The distillation set: sampled rows, dropped-word copies, cached teacher targets."""

from __future__ import annotations

import logging
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


TRANSFER = ["thanks for the smooth flight", "ok", "my bag is lost", "rude staff"]


def test_transfer_texts_follow_the_training_rows_tokenised_alike(
    tweets: pd.DataFrame, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer("builtin")
    path = tmp_path / "unlabelled.txt"
    path.write_text("\n".join(TRANSFER))
    val = pd.DataFrame({"text": ["my bag is lost"]})
    options = _options(
        augment_copies=1,
        augment_word_dropout=0.5,
        transfer_set={"path": str(path)},
    )
    with pytest.raises(ValueError, match="needs the validation and test rows"):
        distillation_rows(tweets, tokenizer, options)

    out = distillation_rows(tweets, tokenizer, options, [val])

    n = 2 * len(tweets)  # the training rows and their dropped-word copies
    assert out["transfer"].tolist() == [False] * n + [True]
    copies = [False] * len(tweets) + [True] * len(tweets)
    assert out["augmented"].tolist() == [*copies, False]
    rows = out.iloc[n:].reset_index(drop=True)
    # "ok" and "rude staff" are training texts, "my bag is lost" a validation one.
    assert rows["text"].tolist() == [TRANSFER[0]]
    assert rows["source_row"].tolist() == [-1]
    assert rows["label"].tolist() == [-1]  # until the teacher labels it
    expected = tokenize_partition(
        pd.DataFrame({"text": [TRANSFER[0]], "label": "0", "source_row": -1}),
        "builtin",
        16,
        {"0": 0},
    )
    assert rows["input_ids"].iloc[0].tolist() == expected["input_ids"].iloc[0].tolist()
    assert rows["attention_mask"].iloc[0].tolist() == (
        expected["attention_mask"].iloc[0].tolist()
    )
    assert out.attrs["transfer"]["counts"] == {
        "rows_in": 4,
        "kept": 1,
        "dropped_blank": 0,
        "dropped_eval_overlap": 1,
        "dropped_train_overlap": 2,
        "dropped_duplicate": 0,
    }
    assert "transfer" not in tweets.attrs


def test_only_sampled_training_rows_count_as_already_present(tmp_path: Path) -> None:
    texts = [f"text number {i}" for i in range(6)]
    rows = pd.DataFrame({"text": texts, "label": "0", "source_row": range(6)})
    train = tokenize_partition(rows, "builtin", 16, {"0": 0})
    path = tmp_path / "unlabelled.txt"
    path.write_text("\n".join(texts))  # the training texts, without their labels
    options = _options(distill_samples=2, transfer_set={"path": str(path)})

    out = distillation_rows(train, load_tokenizer("builtin"), options, [train.head(0)])

    sampled = out.loc[~out["transfer"], "text"].tolist()
    assert len(sampled) == 2
    assert sorted(out.loc[out["transfer"], "text"]) == sorted(set(texts) - set(sampled))
    assert out.attrs["transfer"]["counts"]["dropped_train_overlap"] == 2


def test_transfer_rows_get_the_teachers_argmax_and_training_rows_keep_theirs(
    toy_teacher: TextClassifier,
    make_frame: Callable[..., pd.DataFrame],
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = make_frame(8, seed=0)
    transfer = np.array([False] * 5 + [True] * 3)
    frame = frame.assign(
        label=np.where(transfer, -1, frame["label"]), transfer=transfer
    )

    with caplog.at_level(logging.INFO, "distillery.ml.compress.teacher_cache"):
        out = label_with_teacher(toy_teacher, frame, batch_size=4, pooled=False)

    predicted = np.stack(out["teacher_logits"]).argmax(1)
    # The teacher's train accuracy is measured on the labelled rows only.
    right = (predicted[:5] == frame["label"].to_numpy()[:5]).mean()
    assert f"train accuracy {right:.3f} on the 5 labelled rows" in caplog.text
    assert out["label"].tolist()[:5] == frame["label"].tolist()[:5]
    assert out["label"].tolist()[5:] == predicted[5:].tolist()
    assert out["label"].dtype == frame["label"].dtype
    assert (frame["label"].iloc[5:] == -1).all()  # the input is untouched
