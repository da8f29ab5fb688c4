"""The distillation set: training rows (and dropped-word copies, and the texts of a
transfer set) labelled once by the teacher, so distillation never runs the teacher again.

The teacher is a ``TextClassifier`` or any predictor with ``logits(batch)`` (and
``logits_and_pooled(batch)`` for pooled targets): the ONNX Runtime predictors are a
layer up (:mod:`distillery.ml.serve`), so the caller opens one and passes it in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pandas as pd

from distillery.ml.compress.distill import (
    compute_logits,
    compute_logits_and_pooled,
    drop_words,
)
from distillery.ml.compress.export import with_pooled_output
from distillery.ml.compress.forms import TEACHER, onnx_file
from distillery.ml.compress.options import CompressOptions
from distillery.ml.data.batches import TEACHER_COLUMN, TEACHER_POOLED_COLUMN
from distillery.ml.data.text import retokenize_frame, truncating_encoder
from distillery.ml.data.transfer import TextCleaning, load_transfer_set
from distillery.ml.models.modeling import TextClassifier

logger = logging.getLogger(__name__)

# The column names the KD loop reads the cached targets from.
TEACHER_LOGITS = TEACHER_COLUMN
TEACHER_POOLED = TEACHER_POOLED_COLUMN  # with distill.kd_hidden_weight > 0
AUGMENTED = "augmented"  # with augment_copies > 0: the row is a dropped-word copy
TRANSFER = "transfer"  # with a transfer set: the row is one of its texts
UNLABELLED = -1  # a transfer row's label until the teacher's argmax replaces it


def distillation_rows(
    frame: pd.DataFrame,
    tokenizer: Any,
    options: CompressOptions,
    evaluation: Sequence[pd.DataFrame] = (),
    cleaning: TextCleaning | None = None,
) -> pd.DataFrame:
    """The rows the teacher labels for distillation.

    Args:
        frame: Tokenised training rows with ``text``, ``label`` and ``source_row``.
        tokenizer: The teacher's fast tokenizer, which tokenises the copies and the
            transfer texts.
        options: ``distill_samples``, ``seed``, the augmentation settings and the
            ``transfer_set``.
        evaluation: The validation and test rows (``text``), which a transfer set
            needs: its texts equal to one of theirs are dropped.
        cleaning: What the corpus's texts went through (default: the stages'
            defaults); the transfer texts get the same.

    Returns:
        A seeded sample of ``distill_samples`` rows (in ``source_row`` order) when
        that is fewer than all, else every row; then
        :func:`with_augmented_copies`; then, with a ``transfer_set``, the kept
        transfer texts (:func:`with_transfer_rows`) and the set's summary (file,
        sha256, counts) in ``attrs["transfer"]``, which Parquet keeps.

    Raises:
        FileNotFoundError, ValueError: a bad transfer-set file, or a transfer set
            without ``evaluation``
            (:func:`~distillery.ml.data.transfer.load_transfer_set`).
    """
    if options.distill_samples is not None and options.distill_samples < len(frame):
        frame = frame.sample(n=options.distill_samples, random_state=options.seed)
        frame = frame.sort_values("source_row").reset_index(drop=True)
    sample = frame
    frame = with_augmented_copies(
        frame,
        tokenizer,
        copies=options.augment_copies,
        rate=options.augment_word_dropout,
        seed=options.seed,
        max_length=options.max_length,
    )
    transfer = options.transfer_set
    if transfer is None:
        return frame
    texts, summary = load_transfer_set(
        transfer.path,
        transfer.text_column,
        transfer.max_rows,
        options.seed,
        cleaning or TextCleaning(),
        sample,
        evaluation,
    )
    frame = (
        with_transfer_rows(frame, texts, tokenizer, options.max_length)
        if len(texts)
        else frame.copy()  # never the caller's frame: its attrs change below
    )
    frame.attrs[TRANSFER] = summary
    return frame


def with_transfer_rows(
    frame: pd.DataFrame, transfer: pd.DataFrame, tokenizer: Any, max_length: int
) -> pd.DataFrame:
    """``frame`` followed by the transfer texts, tokenised as the training rows were.

    Args:
        frame: Tokenised distillation rows.
        transfer: ``text`` and ``source_row`` (negative) of the transfer texts.
        tokenizer: The teacher's fast tokenizer.
        max_length: Truncation length.

    Returns:
        ``frame`` with a ``transfer`` column (False), then the transfer rows (True;
        ``augmented`` False when that column exists) with label ``UNLABELLED`` until
        :func:`label_with_teacher` gives them the teacher's argmax.
    """
    rows = retokenize_frame(
        transfer[["text", "source_row"]].assign(label=UNLABELLED),
        truncating_encoder(tokenizer, max_length),
    )
    flags = {TRANSFER: True} | ({AUGMENTED: False} if AUGMENTED in frame else {})
    rows = rows.assign(**flags)[[*frame.columns, TRANSFER]]
    logger.info("Distillation set: %d rows + %d transfer texts", len(frame), len(rows))
    return pd.concat([frame.assign(**{TRANSFER: False}), rows], ignore_index=True)


def with_augmented_copies(
    frame: pd.DataFrame,
    tokenizer: Any,
    *,
    copies: int,
    rate: float,
    seed: int,
    max_length: int,
) -> pd.DataFrame:
    """``frame`` and ``copies`` copies of its rows with words dropped.

    The teacher labels the copies like the rest, so the student sees more of the
    teacher's function than the training texts alone show.

    Args:
        frame: Tokenised rows with ``text``.
        tokenizer: The teacher's fast tokenizer; it tokenises the copies.
        copies: How many copies of every row (0: ``frame`` is returned as is).
        rate: Probability that a word is dropped (:func:`drop_words`).
        seed: Copy ``k`` (from 1) drops words with seed ``seed + k``.
        max_length: Truncation length of the copies.

    Returns:
        ``frame`` with an ``augmented`` column (False), followed by the copies
        (True), each keeping its row's other columns (label, ``source_row``).
    """
    if not copies:
        return frame
    encoder = truncating_encoder(tokenizer, max_length)
    texts = frame["text"].astype(str).tolist()
    dropped = [
        retokenize_frame(
            frame.assign(
                text=drop_words(texts, rate, seed + index), **{AUGMENTED: True}
            ),
            encoder,
        )
        for index in range(1, copies + 1)
    ]
    logger.info(
        "Distillation set: %d rows + %d with words dropped (rate %.2f)",
        len(frame),
        len(frame) * copies,
        rate,
    )
    return pd.concat([frame.assign(**{AUGMENTED: False}), *dropped], ignore_index=True)


def teacher_graph(
    teacher_onnx: dict[str, bytes], source: str, *, pooled: bool
) -> bytes:
    """The ONNX teacher that computes the cached targets.

    Args:
        teacher_onnx: The teacher's ONNX files by name
            (:func:`~distillery.ml.compress.forms.onnx_file`).
        source: ``onnx-fp32`` or ``onnx-int8``.
        pooled: Whether the graph must also output the pooled embedding.

    Returns:
        The serialised graph; with ``pooled``, one with an extra ``pooled`` output so
        one session run gives the logits and the embedding.
    """
    data = teacher_onnx[onnx_file(TEACHER, source)]
    if not pooled:
        return data
    return with_pooled_output(onnx.load_from_string(data)).SerializeToString()


def label_with_teacher(
    teacher: TextClassifier | Any,
    frame: pd.DataFrame,
    *,
    batch_size: int,
    pooled: bool,
    source: str = "torch",
) -> pd.DataFrame:
    """``frame`` with the teacher's logits (and pooled embeddings) per row.

    Args:
        teacher: The teacher in PyTorch, or a predictor of its ONNX graph
            (:func:`~distillery.ml.compress.distill.compute_logits`).
        frame: Tokenised rows with ``label``.
        batch_size: Rows per forward pass.
        pooled: Also cache the pooled embedding (``teacher_pooled``).
        source: What ``teacher`` is, for the log.

    Returns:
        A copy of ``frame`` with ``teacher_logits`` (and ``teacher_pooled``); rows of
        a transfer set (``transfer`` True) get the teacher's argmax as their label.
    """
    if pooled:
        logits, embeddings = compute_logits_and_pooled(teacher, frame, batch_size)
        columns = {TEACHER_POOLED: list(embeddings)}
    else:
        logits, columns = compute_logits(teacher, frame, batch_size), {}
    predicted, labels = logits.argmax(1), frame["label"].to_numpy()
    unlabelled = (
        frame[TRANSFER].to_numpy(dtype=bool)
        if TRANSFER in frame
        else np.zeros(len(frame), dtype=bool)
    )
    # Pseudo-labels say nothing of the teacher: only labelled rows are counted.
    right = predicted[~unlabelled] == labels[~unlabelled]
    logger.info(
        "Cached teacher logits (%s) for %d rows, %d of them unlabelled transfer "
        "texts (teacher train accuracy %.3f on the %d labelled rows)",
        source,
        len(frame),
        int(unlabelled.sum()),
        float(right.mean()) if len(right) else float("nan"),
        len(right),
    )
    if unlabelled.any():
        columns["label"] = np.where(unlabelled, predicted, labels).astype(labels.dtype)
    return frame.assign(**{TEACHER_LOGITS: list(logits)}, **columns)
