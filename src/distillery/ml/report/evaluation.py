"""One evaluation path for every model form.

The TF-IDF baseline, the teacher, each student and each quantized form (torch or
ONNX Runtime) are all evaluated by :func:`evaluate_predictor` through
``Predictor.predict_proba`` on raw texts, so quality, latency and throughput are
measured the same way for all of them: tokenization included, same thread count,
same texts.

The record it returns, :class:`ModelEvaluation`, lives in
:mod:`distillery.ml.report.model_evaluation`; the release gates and model selection
that compare records (:func:`check_gates`, :func:`select_best`) in
:mod:`distillery.ml.report.gates`. Both are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from distillery.ml.metrics import classification_metrics
from distillery.ml.report.gates import (
    GateError,
    Gates,
    check_gates,
    ratios,
    select_best,
)
from distillery.ml.report.model_evaluation import ModelEvaluation
from distillery.ml.serve.inference import Predictor
from distillery.ml.serve.latency import measure_latency, measure_throughput

__all__ = [
    "PREDICT_CHUNK_SIZE",
    "THROUGHPUT_BATCH_SIZE",
    "GateError",
    "Gates",
    "ModelEvaluation",
    "check_gates",
    "evaluate_predictor",
    "ratios",
    "select_best",
]

logger = logging.getLogger(__name__)

THROUGHPUT_BATCH_SIZE = 32  # texts per call when measuring throughput
PREDICT_CHUNK_SIZE = 256  # texts per predict_proba call over the test set


def evaluate_predictor(  # noqa: PLR0917 - the agreed call shape: what, then data
    name: str,
    family: str,
    form: str,
    predictor: Predictor,
    texts: list[str],
    y_true: Sequence[str],
    size_bytes: int,
    *,
    latency_texts: list[str],
    num_threads: int,
    labels: list[str] | None = None,
    latency_repeats: int = 200,
    warmup: int = 20,
    throughput_batches: int = 20,
    predict_chunk_size: int = PREDICT_CHUNK_SIZE,
    extra: Mapping[str, Any] | None = None,
    scorer: Predictor | None = None,
    scoring_threads: int | None = None,
) -> ModelEvaluation:
    """Evaluate any model form the same way: quality, confusion, latency, throughput.

    torch's intra-op thread count and every BLAS/OpenMP pool (threadpoolctl) are set
    to ``num_threads`` while this runs and restored afterwards, so torch, ONNX
    Runtime (whose sessions are built with their own count, checked here) and the
    scikit-learn baseline are timed with the same number of threads.

    Args:
        name: Unique model name.
        family: ``"baseline"``, ``"teacher"`` or ``"student"``.
        form: Runtime and precision, e.g. ``"onnx-int8"``.
        predictor: The model behind the :class:`Predictor` interface.
        texts: Test texts (raw, as a caller would send them).
        y_true: Gold label *names* (strings), one per text. Names, not ids,
            because the baseline orders its classes alphabetically while the
            neural models keep the label vocabulary's order.
        size_bytes: Artifact size on disk (see ``latency.artifact_size_bytes``).
        latency_texts: Real texts sent one at a time for the latency percentiles.
        num_threads: Intra-op threads for every runtime.
        labels: Label order for ``per_class`` and ``confusion``; default
            ``predictor.labels``. Pass the vocabulary so every model's confusion
            matrix has the same rows. Must hold the same names as the predictor's.
        latency_repeats: Timed batch-1 calls.
        warmup: Untimed batch-1 calls first.
        throughput_batches: Timed batches of 32 test texts (cycled if too few).
        predict_chunk_size: Texts per ``predict_proba`` call over the test set.
        extra: Additional JSON-serializable facts stored in ``extra``.
        scorer: The same model behind a predictor built for ``scoring_threads``;
            if given, it predicts the test texts (quality does not depend on the
            thread count) while ``predictor`` is timed with ``num_threads``.
        scoring_threads: Threads for the quality pass; default ``num_threads``.

    Returns:
        The evaluation; ``extra`` also holds ``labels``, ``latency_mean_ms``,
        ``latency_repeats``, ``scoring_threads``, ``warmup`` and
        ``throughput_batch_size``.

    Raises:
        ValueError: On empty or mismatched inputs, unknown labels, or a predictor
            pinned to a different thread count than ``num_threads``.
    """
    scoring_threads = num_threads if scoring_threads is None else scoring_threads
    scorer = predictor if scorer is None else scorer
    scoring = _Scoring(scorer, scoring_threads, predict_chunk_size)
    timing = _Timing(num_threads, warmup, latency_repeats, throughput_batches)
    _check_settings(texts, y_true, latency_texts, size_bytes, scoring, timing)
    labels = _label_order(name, predictor, labels, scoring, timing)
    quality = scoring.quality(texts, y_true, labels)
    speed, latency_mean_ms = timing.measure(predictor, latency_texts, texts)
    evaluation = ModelEvaluation(
        name=name,
        family=family,
        form=form,
        size_bytes=int(size_bytes),
        **quality,
        **speed,
        extra=_facts(labels, latency_mean_ms, timing, scoring, extra),
    )
    _log_evaluation(evaluation)
    return evaluation


@dataclass(frozen=True)
class _Scoring:
    """How the test split is predicted: the model, its threads, texts per call."""

    scorer: Predictor
    threads: int
    chunk_size: int

    def quality(
        self, texts: list[str], y_true: Sequence[str], labels: list[str]
    ) -> dict[str, Any]:
        """The quality fields of :class:`ModelEvaluation`, labels in ``labels`` order."""
        # Column j of predict_proba is label column_to_label[j] in `labels` order.
        column_to_label = _label_ids(list(self.scorer.labels), labels, "predictor")
        true_ids = _label_ids(list(y_true), labels, "y_true")
        chunk = self.chunk_size
        with _pinned_threads(self.threads):
            predicted = np.concatenate(
                [
                    self.scorer.predict_proba(texts[i : i + chunk]).argmax(axis=1)
                    for i in range(0, len(texts), chunk)
                ]
            )
        pred_ids = column_to_label[predicted]
        metrics = classification_metrics(true_ids, pred_ids, labels)
        confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(confusion, (true_ids, pred_ids), 1)
        return {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "per_class": metrics["per_class"],
            "confusion": confusion.tolist(),
            "n_test": len(texts),
        }


@dataclass(frozen=True)
class _Timing:
    """How the timed predictor runs: threads, untimed and timed calls, batches."""

    threads: int
    warmup: int
    repeats: int
    batches: int

    def measure(
        self, predictor: Predictor, latency_texts: list[str], texts: list[str]
    ) -> tuple[dict[str, Any], float]:
        """The speed fields of :class:`ModelEvaluation`, and the mean latency."""
        with _pinned_threads(self.threads):
            latency = measure_latency(
                predictor,
                list(latency_texts),
                batch_size=1,
                warmup=self.warmup,
                repeats=self.repeats,
            )
            throughput = measure_throughput(
                predictor,
                _cycle(list(texts), self.batches * THROUGHPUT_BATCH_SIZE),
                batch_size=THROUGHPUT_BATCH_SIZE,
            )
        speed = {
            "latency_p50_ms": latency["p50_ms"],
            "latency_p95_ms": latency["p95_ms"],
            "throughput_per_s": throughput,
            "num_threads": self.threads,
        }
        return speed, latency["mean_ms"]


def _check_settings(  # noqa: PLR0917 - mirrors evaluate_predictor's arguments
    texts: list[str],
    y_true: Sequence[str],
    latency_texts: list[str],
    size_bytes: int,
    scoring: _Scoring,
    timing: _Timing,
) -> None:
    """Reject empty or mismatched texts, counts below 1 and a non-positive size."""
    if not texts or len(texts) != len(y_true):
        raise ValueError(
            f"need non-empty texts with one label each, got {len(texts)} texts and "
            f"{len(y_true)} labels"
        )
    if not latency_texts:
        raise ValueError("latency_texts must not be empty")
    if timing.threads < 1 or timing.batches < 1 or scoring.chunk_size < 1:
        raise ValueError(
            "num_threads, throughput_batches and predict_chunk_size must be >= 1, "
            f"got {timing.threads}, {timing.batches}, {scoring.chunk_size}"
        )
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be > 0, got {size_bytes}")
    if scoring.threads < 1:
        raise ValueError(f"scoring_threads must be >= 1, got {scoring.threads}")


def _label_order(
    name: str,
    predictor: Predictor,
    labels: list[str] | None,
    scoring: _Scoring,
    timing: _Timing,
) -> list[str]:
    """The label order of the evaluation, once both models are checked against it."""
    for role, model, threads in (
        ("predictor", predictor, timing.threads),
        ("scorer", scoring.scorer, scoring.threads),
    ):
        pinned = getattr(model, "num_threads", None)
        if pinned is not None and pinned != threads:
            raise ValueError(
                f"{name}: {role} runs with {pinned} threads but the evaluation uses "
                f"{threads}; build it with num_threads={threads}"
            )
    scorer = scoring.scorer
    if list(scorer.labels) != list(predictor.labels):
        raise ValueError(
            f"{name}: scorer's labels {scorer.labels} differ from the predictor's "
            f"{predictor.labels}"
        )
    columns = list(predictor.labels)
    labels = list(columns if labels is None else labels)
    if sorted(labels) != sorted(columns) or len(set(labels)) != len(labels):
        raise ValueError(f"{name}: labels {labels} differ from predictor's {columns}")
    return labels


def _label_ids(values: Sequence[str], labels: list[str], what: str) -> np.ndarray:
    """Ids of ``values`` in ``labels`` order; unknown names raise ``ValueError``."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise ValueError(f"{what} has labels {unknown} not in {labels}")
    return np.asarray([index[v] for v in values], dtype=np.int64)


def _cycle(texts: list[str], count: int) -> list[str]:
    """The first ``count`` texts of ``texts`` repeated as often as needed."""
    return [texts[i % len(texts)] for i in range(count)]


@contextlib.contextmanager
def _pinned_threads(count: int) -> Iterator[None]:
    """Run torch and every BLAS/OpenMP pool with ``count`` threads; restore torch's."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(count)
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(previous)


def _facts(
    labels: list[str],
    latency_mean_ms: float,
    timing: _Timing,
    scoring: _Scoring,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``ModelEvaluation.extra``: how the numbers were measured, then the caller's."""
    return {
        "labels": labels,
        "latency_mean_ms": latency_mean_ms,
        "latency_repeats": timing.repeats,
        "scoring_threads": scoring.threads,
        "warmup": timing.warmup,
        "throughput_batch_size": THROUGHPUT_BATCH_SIZE,
        **dict(extra or {}),
    }


def _log_evaluation(evaluation: ModelEvaluation) -> None:
    """One log line with the headline numbers of ``evaluation``."""
    logger.info(
        "Evaluated %s (%s): macro-F1 %.4f, accuracy %.4f, %.2f MB, p50 %.2f ms, "
        "p95 %.2f ms, %.0f texts/s, %d threads",
        evaluation.name,
        evaluation.form,
        evaluation.macro_f1,
        evaluation.accuracy,
        evaluation.size_bytes / 1e6,
        evaluation.latency_p50_ms,
        evaluation.latency_p95_ms,
        evaluation.throughput_per_s,
        evaluation.num_threads,
    )
