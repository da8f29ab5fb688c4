"""Text normalisation, hash-based split assignment and tokenisation of frame partitions.

Pure pandas functions: the preprocess pipeline maps them over Dask partitions, and the
benchmarks run the very same functions single-process.
"""

from __future__ import annotations

import copy
import hashlib
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_URL = re.compile(r"(?:https?://|www\.)\S+", flags=re.IGNORECASE)
_USER = re.compile(r"(?<![\w@])@\w+")
_SPACE = re.compile(r"\s+")

# Token columns hold one numpy array per row (object dtype). The catalog gives Dask the
# full Parquet schema (list<int32>, list<int8>) so nothing is inferred from samples;
# pandas' own Arrow list dtype is avoided because pandas cannot read its metadata back.
SPLITS = ("train", "val", "test")


def normalize_text(
    text: str, user_token: str = "@user", url_token: str = "http"
) -> str:
    """Replace URLs and user mentions by placeholders and collapse whitespace.

    The placeholders follow the TweetEval convention (``@user``, ``http``) so that the
    many tweet-trained encoders see what they were trained on.
    """
    text = _URL.sub(url_token, text)
    text = _USER.sub(user_token, text)
    return _SPACE.sub(" ", text).strip()


def text_hash(text: str, seed: int) -> int:
    """A stable 63-bit hash of ``text`` salted with ``seed`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{seed}\x1f{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def assign_split(hash_value: int, fractions: tuple[float, float, float]) -> str:
    """Map a hash to train/val/test by where it falls in [0, 1).

    A row's split depends only on its own normalised text and the seed, so adding rows
    to the corpus never moves an existing row to another split; since the hash is
    independent of the label, every class is split in the same proportions (in
    expectation), which is what stratification asks for.
    """
    position = hash_value / float(1 << 63)
    if position < fractions[0]:
        return SPLITS[0]
    if position < fractions[0] + fractions[1]:
        return SPLITS[1]
    return SPLITS[2]


def normalize_partition(
    frame: pd.DataFrame,
    seed: int,
    fractions: tuple[float, float, float],
    user_token: str,
    url_token: str,
) -> pd.DataFrame:
    """Normalise texts and add ``text_hash`` and ``split`` to one partition."""
    texts = [normalize_text(t, user_token, url_token) for t in frame["text"]]
    hashes = [text_hash(t, seed) for t in texts]
    return pd.DataFrame(
        {
            "text": pd.Series(texts, index=frame.index, dtype="string"),
            "label": frame["label"].astype("string"),
            "source_row": frame["source_row"].astype("int64"),
            "text_hash": pd.Series(hashes, index=frame.index, dtype="int64"),
            "split": pd.Series(
                [assign_split(h, fractions) for h in hashes],
                index=frame.index,
                dtype="string",
            ),
        }
    )


def mark_duplicates_partition(frame: pd.DataFrame) -> pd.DataFrame:
    """Flag exact duplicates inside a partition holding every copy of its texts.

    The caller shuffles on ``text_hash`` first so all copies of a text meet in one
    partition. The first occurrence (lowest ``source_row``) is kept; the others get
    ``is_duplicate`` and the ``duplicate_of`` row they repeat.
    """
    frame = frame.sort_values("source_row", kind="stable")
    first = frame.groupby("text", sort=False)["source_row"].transform("min")
    return frame.assign(
        is_duplicate=frame["source_row"] != first,
        duplicate_of=first.astype("int64"),
    )


# Rows per call into the Rust tokenizer. Its per-row scratch (tokens, offsets, word
# ids: ~8 KB a row) is freed after each chunk, so memory stays bounded whatever the
# partition size; 4096 rows still give its thread pool enough work per call.
TOKENIZE_CHUNK_ROWS = 4096


@lru_cache(maxsize=4)
def _tokenizer(model_name_or_path: str):  # noqa: ANN202 - transformers fast tokenizer
    # One tokenizer per process, loaded on first use.
    from distillery.ml.models.modeling import load_tokenizer  # noqa: PLC0415

    return load_tokenizer(model_name_or_path)


def truncating_encoder(tokenizer: Any, max_length: int) -> Tokenizer:
    """A copy of a Rust tokenizer set up as ``tokenizer(texts, truncation=True,
    max_length=max_length)`` sets it: truncation longest-first (on the tokenizer's
    ``truncation_side``), no padding, special tokens added.

    Args:
        tokenizer: A transformers fast tokenizer (its ``backend_tokenizer`` is used)
            or a ``tokenizers.Tokenizer``; it is copied, never reconfigured in place.
        max_length: Maximum number of tokens, special tokens included.
    """
    encoder = copy.deepcopy(getattr(tokenizer, "backend_tokenizer", tokenizer))
    encoder.no_padding()
    encoder.enable_truncation(
        max_length,
        stride=0,
        strategy="longest_first",
        direction=getattr(tokenizer, "truncation_side", "right"),
    )
    encoder.encode_special_tokens = bool(
        getattr(tokenizer, "split_special_tokens", False)
    )
    return encoder


@lru_cache(maxsize=4)
def load_encoder(model_name_or_path: str, max_length: int) -> Tokenizer:
    """The teacher's Rust tokenizer as :func:`truncating_encoder` sets it up.

    It is a plain ``tokenizers.Tokenizer``: it pickles (~0.5 MB), so a Dask graph can
    carry it to workers that then need neither transformers nor torch.
    """
    return truncating_encoder(_tokenizer(model_name_or_path), max_length)


def encode_partition(
    frame: pd.DataFrame,
    encoder: Tokenizer,
    label_to_id: dict[str, int],
    chunk_rows: int = TOKENIZE_CHUNK_ROWS,
) -> pd.DataFrame:
    """Tokenise one partition with an encoder from :func:`load_encoder`.

    Calls the Rust tokenizer directly, ``chunk_rows`` texts at a time, and keeps only
    the ids: transformers' wrapper would build a dict of Python lists per row first,
    which cost more CPU than the tokenizer itself and ~8 KB of memory per row.

    Returns:
        ``input_ids`` (int32) and ``attention_mask`` (int8) arrays per row, ``label``
        as the integer id, plus ``text`` and ``source_row`` for evaluation and lineage.

    Raises:
        ValueError: a label is not in ``label_to_id``.
    """
    labels = frame["label"].map(label_to_id)
    if labels.isna().any():
        missing = sorted(set(frame.loc[labels.isna(), "label"]))
        raise ValueError(
            f"labels {missing} are not in the label vocabulary {list(label_to_id)}"
        )
    return pd.DataFrame(
        _token_columns(frame, encoder, chunk_rows)
        | {
            "label": labels.astype("int64"),
            "text": frame["text"].astype("string"),
            "source_row": frame["source_row"].astype("int64"),
        }
    )


def _token_columns(
    frame: pd.DataFrame, encoder: Tokenizer, chunk_rows: int
) -> dict[str, pd.Series]:
    """``input_ids`` (int32) and ``attention_mask`` (int8) arrays for ``frame.text``."""
    texts = [str(t) for t in frame["text"]]
    input_ids: list[np.ndarray] = []
    for start in range(0, len(texts), chunk_rows):
        input_ids.extend(
            np.array(encoding.ids, dtype=np.int32)
            for encoding in encoder.encode_batch_fast(texts[start : start + chunk_rows])
        )
    return {
        "input_ids": pd.Series(input_ids, index=frame.index, dtype=object),
        # Without padding every token is attended to.
        "attention_mask": pd.Series(
            [np.ones(len(ids), dtype=np.int8) for ids in input_ids],
            index=frame.index,
            dtype=object,
        ),
    }


def retokenize_frame(
    frame: pd.DataFrame,
    encoder: Tokenizer,
    chunk_rows: int = TOKENIZE_CHUNK_ROWS,
) -> pd.DataFrame:
    """``frame`` with ``input_ids`` and ``attention_mask`` redone from its ``text``.

    A student with its own tokenizer learns from rows the teacher's tokenizer
    prepared: the texts (already normalised) stay, every other column (label,
    cached teacher logits, lineage) is kept as it is.

    Args:
        frame: A tokenised frame (:func:`encode_partition`), with ``text``.
        encoder: The new tokenizer, from :func:`load_encoder`.
        chunk_rows: Texts per call into the Rust tokenizer.

    Raises:
        ValueError: if ``frame`` has no ``text`` column.
    """
    if "text" not in frame.columns:
        raise ValueError("retokenizing needs the frame's text column")
    return frame.assign(**_token_columns(frame, encoder, chunk_rows))


def tokenize_partition(
    frame: pd.DataFrame,
    model_name_or_path: str,
    max_length: int,
    label_to_id: dict[str, int],
) -> pd.DataFrame:
    """Tokenise one partition with the teacher's fast tokenizer (no padding).

    Returns:
        ``input_ids`` and ``attention_mask`` as arrays per row (written as Arrow list
        columns), ``label`` as the integer id, plus ``text`` and ``source_row``.

    Raises:
        ValueError: a label is not in ``label_to_id``.
    """
    return encode_partition(
        frame, load_encoder(model_name_or_path, max_length), label_to_id
    )


def empty_tokenized_frame() -> pd.DataFrame:
    """The schema of :func:`tokenize_partition`'s output (Dask ``meta``)."""
    return pd.DataFrame(
        {
            "input_ids": pd.Series([], dtype=object),
            "attention_mask": pd.Series([], dtype=object),
            "label": pd.Series([], dtype="int64"),
            "text": pd.Series([], dtype="string"),
            "source_row": pd.Series([], dtype="int64"),
        }
    )


def split_fractions(
    train: float, val: float, test: float
) -> tuple[float, float, float]:
    """Check split fractions sum to 1 and are positive; return them as a tuple.

    Raises:
        ValueError: when they do not.
    """
    fractions = (float(train), float(val), float(test))
    if min(fractions) <= 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"split fractions must be positive and sum to 1, got {fractions}"
        )
    return fractions
