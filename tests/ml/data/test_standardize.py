"""The standard frame: column mapping, ftfy repair, labels as text, seeded samples."""

import pandas as pd
import pytest

from distillery.ml.data.standardize import label_text, sample_frame, standardize_frame


@pytest.mark.parametrize(
    ("value", "text"), [(1, "1"), (1.0, "1"), ("1", "1"), (2.5, "2.5"), ("pos", "pos")]
)
def test_labels_become_text(value: object, text: str) -> None:
    assert label_text(value) == text


def test_columns_are_mapped_texts_repaired_and_rows_numbered() -> None:
    raw = pd.DataFrame(
        {"review": ["sch\u00c3\u00b6n", "meh", None], "stars": [5.0, 1.0, None]}
    )
    before = raw.copy()

    frame, repaired = standardize_frame(raw, "review", "stars")

    assert list(frame.columns) == ["text", "label", "source_row"]
    assert frame["text"].tolist()[:2] == ["sch\u00f6n", "meh"]
    assert frame["label"].tolist()[:2] == ["5", "1"]
    assert frame["text"].isna().tolist() == [False, False, True]
    assert frame["label"].isna().tolist() == [False, False, True]
    assert frame["source_row"].tolist() == [0, 1, 2]
    assert frame.dtypes.astype(str).tolist() == ["string", "string", "int64"]
    assert repaired == 1
    pd.testing.assert_frame_equal(raw, before)  # the raw frame is untouched


def test_label_map_applies_to_labels_of_any_type_and_keeps_unmapped() -> None:
    raw = pd.DataFrame({"t": ["a", "b", "c"], "l": [5, 1, 3]})

    frame, _ = standardize_frame(raw, "t", "l", {5: "positive", "1": "negative"})

    assert frame["label"].tolist() == ["positive", "negative", "3"]


def test_a_missing_column_is_named() -> None:
    raw = pd.DataFrame({"review": ["a"], "stars": ["5"]})
    with pytest.raises(ValueError, match=r"\['rating'\] are not in the frame"):
        standardize_frame(raw, "review", "rating")


def test_sample_is_seeded_and_in_source_order() -> None:
    frame, _ = standardize_frame(
        pd.DataFrame({"t": [f"x{i}" for i in range(20)], "l": ["a"] * 20}), "t", "l"
    )

    first = sample_frame(frame, 5, seed=3)
    again = sample_frame(frame, 5, seed=3)

    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 5 and first["source_row"].is_monotonic_increasing
    assert first.index.tolist() == list(range(5))
    assert sample_frame(frame, None, seed=3) is frame
    assert sample_frame(frame, 20, seed=3) is frame


def test_sample_rejects_fewer_than_one_row() -> None:
    frame = pd.DataFrame({"text": ["a"], "label": ["b"], "source_row": [0]})
    with pytest.raises(ValueError, match="sample rows must be >= 1"):
        sample_frame(frame, 0, seed=1)
