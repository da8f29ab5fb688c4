"""Normalisation, hash splits, duplicate marking and tokenisation of partitions."""

import pandas as pd
import pytest

from distillery.ml.data.text import (
    assign_split,
    encode_partition,
    load_encoder,
    mark_duplicates_partition,
    normalize_partition,
    normalize_text,
    retokenize_frame,
    split_fractions,
    text_hash,
    tokenize_partition,
)

FRACTIONS = (0.8, 0.1, 0.1)


def test_normalize_replaces_users_urls_and_whitespace() -> None:
    text = "  @VirginAmerica  see https://t.co/x1 and www.example.com\n now  "
    assert normalize_text(text) == "@user see http and http now"


def test_email_addresses_are_not_user_mentions() -> None:
    assert normalize_text("mail me at a@b.com") == "mail me at a@b.com"


def test_split_depends_only_on_text_and_seed() -> None:
    texts = [f"tweet number {i}" for i in range(2000)]
    before = {t: assign_split(text_hash(t, 7), FRACTIONS) for t in texts[:1000]}
    # The corpus grows: earlier rows keep their split.
    after = {t: assign_split(text_hash(t, 7), FRACTIONS) for t in texts}
    assert all(after[t] == s for t, s in before.items())
    shares = pd.Series(list(after.values())).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.04)
    assert shares["val"] == pytest.approx(0.1, abs=0.03)
    # Another seed gives another split.
    other = [assign_split(text_hash(t, 8), FRACTIONS) for t in texts]
    assert other != list(after.values())


def test_split_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_fractions(0.8, 0.3, 0.1)


def test_duplicates_keep_the_first_row_and_point_to_it() -> None:
    frame = pd.DataFrame(
        {
            "text": ["@a hi", "x", "@b  hi"],
            "label": ["p", "n", "p"],
            "source_row": [10, 11, 12],
        }
    )
    normalized = normalize_partition(frame, 1, FRACTIONS, "@user", "http")
    marked = mark_duplicates_partition(normalized.iloc[::-1])

    by_row = marked.set_index("source_row")
    assert not by_row.loc[10, "is_duplicate"]
    assert by_row.loc[12, "is_duplicate"]
    assert by_row.loc[12, "duplicate_of"] == 10
    assert not by_row.loc[11, "is_duplicate"]
    # Same normalised text, same split.
    assert by_row.loc[10, "split"] == by_row.loc[12, "split"]


def test_tokenize_partition_with_the_packaged_teacher_tokenizer() -> None:
    frame = pd.DataFrame(
        {"text": ["hello world", "an unusually long text " * 20], "label": ["b", "a"]}
    ).assign(source_row=[0, 1])

    out = tokenize_partition(frame, "builtin", 16, {"a": 0, "b": 1})

    ids = out["input_ids"].tolist()
    assert ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP]
    assert len(ids[1]) == 16  # truncated to max_length
    assert out["label"].tolist() == [1, 0]
    assert [len(m) for m in out["attention_mask"].tolist()] == [len(i) for i in ids]


def test_tokenize_rejects_labels_outside_the_vocabulary() -> None:
    frame = pd.DataFrame({"text": ["x"], "label": ["zz"], "source_row": [0]})
    with pytest.raises(ValueError, match="zz"):
        tokenize_partition(frame, "builtin", 16, {"a": 0})


def test_encoder_gives_what_the_transformers_tokenizer_call_gives() -> None:
    import pickle  # noqa: PLC0415

    from distillery.ml.models.modeling import load_tokenizer  # noqa: PLC0415

    texts = ["hello world", "", "[CLS] not special [SEP]", "long text " * 40, "é😀"]
    frame = pd.DataFrame(
        {"text": texts, "label": ["a"] * 5, "source_row": range(5)}
    ).astype({"text": "string"})
    expected = load_tokenizer("builtin")(texts, truncation=True, max_length=16)
    # Chunks of 2 rows: the chunk boundaries must not show in the output; the pickled
    # copy is what Dask workers receive.
    encoder = pickle.loads(pickle.dumps(load_encoder("builtin", 16)))

    out = encode_partition(frame, encoder, {"a": 0}, chunk_rows=2)

    assert [ids.tolist() for ids in out["input_ids"]] == expected["input_ids"]
    assert [m.tolist() for m in out["attention_mask"]] == expected["attention_mask"]
    assert out["input_ids"].map(lambda ids: ids.dtype).eq("int32").all()
    assert out["attention_mask"].map(lambda m: m.dtype).eq("int8").all()


def test_encode_partition_rejects_labels_outside_the_vocabulary() -> None:
    frame = pd.DataFrame(
        {"text": ["x", "y"], "label": ["a", "zz"], "source_row": [0, 1]}
    )
    with pytest.raises(ValueError, match="zz"):
        encode_partition(frame, load_encoder("builtin", 16), {"a": 0})


def test_a_frame_is_retokenized_from_its_text_and_keeps_other_columns(
    tiny_family_dir,
) -> None:
    texts = ["what a lovely flight", "rude crew"]
    frame = tokenize_partition(
        pd.DataFrame({"text": texts, "label": ["a", "b"], "source_row": [4, 7]}),
        str(tiny_family_dir("qwen2")),
        16,
        {"a": 0, "b": 1},
    ).assign(teacher_logits=[[0.5, -0.5], [-1.0, 1.0]])

    out = retokenize_frame(frame, load_encoder("builtin", 16))

    expected = tokenize_partition(
        frame.assign(label=["a", "b"]), "builtin", 16, {"a": 0, "b": 1}
    )
    assert [ids.tolist() for ids in out["input_ids"]] == [
        ids.tolist() for ids in expected["input_ids"]
    ]
    assert out["input_ids"].iloc[0].tolist() != frame["input_ids"].iloc[0].tolist()
    assert [len(m) for m in out["attention_mask"]] == [
        len(ids) for ids in out["input_ids"]
    ]
    for column in ("label", "text", "source_row", "teacher_logits"):
        assert out[column].tolist() == frame[column].tolist()
    with pytest.raises(ValueError, match="text column"):
        retokenize_frame(frame.drop(columns="text"), load_encoder("builtin", 16))
