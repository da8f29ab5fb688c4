"""Lazy preprocessing steps: normalise and flag duplicates, tokenise splits, count them."""

from collections.abc import Iterator

import dask
import dask.dataframe as dd
import pandas as pd
import pytest

from distillery.ml.data.splits import encode_splits, normalize_frame, split_summary

FRACTIONS = (0.6, 0.2, 0.2)


def _validated() -> pd.DataFrame:
    texts = [f"tweet {i} about cars http://t.co/{i}" for i in range(30)]
    texts += ["@someone same text", "@other  same   text"]  # duplicates once normalised
    labels = ["pos" if i % 3 else "neg" for i in range(30)] + ["pos", "pos"]
    return pd.DataFrame(
        {"text": texts, "label": labels, "source_row": range(len(texts))}
    ).astype({"text": "string", "label": "string"})


def _normalized(npartitions: int = 3) -> dd.DataFrame:
    frame = dd.from_pandas(_validated(), npartitions=2)
    return normalize_frame(frame, 3, FRACTIONS, "@user", "http", npartitions)


@pytest.fixture(autouse=True)
def _synchronous() -> Iterator[None]:
    with dask.config.set(scheduler="synchronous"):
        yield


def test_normalize_flags_the_later_copy_and_keeps_every_row() -> None:
    lazy = _normalized()
    rows = lazy.compute().sort_values("source_row").reset_index(drop=True)

    assert lazy.npartitions == 3
    assert rows["source_row"].tolist() == list(range(32))
    assert rows.loc[
        rows["is_duplicate"], ["source_row", "duplicate_of"]
    ].values.tolist() == [[31, 30]]
    assert rows.loc[0, "text"] == "tweet 0 about cars http"
    assert set(rows["split"]) <= {"train", "val", "test"}


def test_normalize_rejects_zero_partitions() -> None:
    with pytest.raises(ValueError, match="npartitions must be >= 1"):
        normalize_frame(
            dd.from_pandas(_validated(), npartitions=1), 3, FRACTIONS, "", "", 0
        )


def test_encode_splits_tokenises_the_kept_rows_of_each_split() -> None:
    normalized = _normalized()
    kept = normalized.compute().query("~is_duplicate")

    frames = [
        f.compute() for f in encode_splits(normalized, ["neg", "pos"], "builtin", 16)
    ]

    for split, frame in zip(("train", "val", "test"), frames, strict=True):
        expected = kept[kept["split"] == split]
        assert sorted(frame["source_row"]) == sorted(expected["source_row"])
    rows = pd.concat(frames)
    assert len(rows) == 31 and set(rows["label"]) == {0, 1}
    assert all(len(ids) <= 16 and ids[0] == 101 for ids in rows["input_ids"])


def test_encode_splits_rejects_a_label_outside_the_vocabulary() -> None:
    (train, *_) = encode_splits(_normalized(), ["pos"], "builtin", 16)
    with pytest.raises(ValueError, match="not in the label vocabulary"):
        train.compute()


def test_summary_counts_duplicates_split_sizes_and_balance() -> None:
    normalized = _normalized()
    kept = normalized.compute().query("~is_duplicate")

    duplicates, summary = split_summary(normalized)

    assert duplicates.columns.tolist() == [
        "source_row",
        "duplicate_of",
        "text",
        "label",
        "split",
    ]
    assert duplicates[["source_row", "duplicate_of"]].values.tolist() == [[31, 30]]
    assert summary["duplicates"] == 1
    assert summary["split_sizes"] == {
        s: int((kept["split"] == s).sum()) for s in ("train", "val", "test")
    }
    assert sum(summary["split_sizes"].values()) == 31
    for split, balance in summary["class_balance"].items():
        rows = kept[kept["split"] == split]
        assert balance == rows["label"].value_counts().sort_index().to_dict()


def test_summary_needs_a_normalized_frame() -> None:
    with pytest.raises(KeyError):
        split_summary(dd.from_pandas(_validated(), npartitions=1))
