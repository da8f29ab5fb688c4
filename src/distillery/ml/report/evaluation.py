"""One evaluation path for every model form, release gates and model selection.

The TF-IDF baseline, the teacher, each student and each quantized form (torch or
ONNX Runtime) are all evaluated by :func:`evaluate_predictor` through
``Predictor.predict_proba`` on raw texts, so quality, latency and throughput are
measured the same way for all of them: tokenization included, same thread count,
same texts.

:func:`check_gates` and :func:`select_best` then compare candidates with a
reference (usually the fp32 teacher) on retained macro-F1, size and latency.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from distillery.ml.metrics import classification_metrics
from distillery.ml.serve.inference import Predictor
from distillery.ml.serve.latency import measure_latency, measure_throughput

logger = logging.getLogger(__name__)

THROUGHPUT_BATCH_SIZE = 32  # texts per call when measuring throughput
PREDICT_CHUNK_SIZE = 256  # texts per predict_proba call over the test set


class GateError(RuntimeError):
    """No candidate passed the release gates; the message tabulates why.

    Attributes:
        missed: Candidate name -> the gates it missed (as :func:`check_gates`
            words them).
    """

    def __init__(self, message: str, missed: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.missed = missed


@dataclass
class ModelEvaluation:
    """Quality, size and speed of one model form on the test split.

    Attributes:
        name: Unique model name, e.g. ``"student-l2-onnx-int8"``.
        family: ``"baseline"``, ``"teacher"`` or ``"student"``.
        form: Runtime and precision, e.g. ``"sklearn"``, ``"torch-fp32"``,
            ``"torch-int8"``, ``"onnx-fp32"``, ``"onnx-int8"``.
        accuracy: Test accuracy.
        macro_f1: Test macro-F1 over every label.
        per_class: ``{label: {"precision", "recall", "f1", "support"}}`` in label
            order.
        confusion: Counts; row = true label, column = predicted label, both in
            label order (``extra["labels"]`` when set by :func:`evaluate_predictor`).
        size_bytes: Artifact size on disk.
        latency_p50_ms: Median latency of one text (batch 1).
        latency_p95_ms: 95th percentile latency of one text.
        throughput_per_s: Texts per second at batch 32.
        num_threads: Intra-op threads the timings used.
        n_test: Number of test texts.
        extra: Anything else worth keeping (JSON-serializable).

    Raises:
        ValueError: If a value is out of range or ``confusion`` does not match
            ``n_test``.
    """

    name: str
    family: str
    form: str
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    size_bytes: int
    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float
    num_threads: int
    n_test: int
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.family or not self.form:
            raise ValueError("name, family and form must be non-empty")
        for key in ("accuracy", "macro_f1"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.name}: {key} must be in [0, 1], got {value}")
        positive = ("size_bytes", "latency_p50_ms", "throughput_per_s", "num_threads")
        for key in positive:
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{self.name}: {key} must be > 0, got {value}")
        if self.latency_p95_ms < self.latency_p50_ms:
            raise ValueError(
                f"{self.name}: latency_p95_ms {self.latency_p95_ms} is below "
                f"latency_p50_ms {self.latency_p50_ms}"
            )
        if self.n_test < 1:
            raise ValueError(f"{self.name}: n_test must be >= 1, got {self.n_test}")
        size = len(self.confusion)
        if size == 0 or any(len(row) != size for row in self.confusion):
            raise ValueError(f"{self.name}: confusion must be a non-empty square")
        total = sum(sum(row) for row in self.confusion)
        if total != self.n_test:
            raise ValueError(
                f"{self.name}: confusion counts {total} texts, n_test is {self.n_test}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEvaluation:
        """Rebuild an evaluation written by :meth:`to_dict`.

        Args:
            data: The mapping; unknown keys are ignored, ``extra`` may be absent.

        Returns:
            The evaluation.

        Raises:
            ValueError: If a required field is missing or a value is invalid.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n != "extra"]
        if missing:
            raise ValueError(f"ModelEvaluation is missing fields {missing}")
        kwargs = {n: data[n] for n in names if n in data}
        kwargs["confusion"] = [[int(c) for c in row] for row in data["confusion"]]
        kwargs["per_class"] = {k: dict(v) for k, v in data["per_class"].items()}
        kwargs["size_bytes"] = int(data["size_bytes"])
        kwargs["num_threads"] = int(data["num_threads"])
        kwargs["n_test"] = int(data["n_test"])
        kwargs["extra"] = dict(data.get("extra") or {})
        return cls(**kwargs)


def _label_ids(values: Sequence[str], labels: list[str], what: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise ValueError(f"{what} has labels {unknown} not in {labels}")
    return np.asarray([index[v] for v in values], dtype=np.int64)


def _cycle(texts: list[str], count: int) -> list[str]:
    """The first ``count`` texts of ``texts`` repeated as often as needed."""
    return [texts[i % len(texts)] for i in range(count)]


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
    if not texts or len(texts) != len(y_true):
        raise ValueError(
            f"need non-empty texts with one label each, got {len(texts)} texts and "
            f"{len(y_true)} labels"
        )
    if not latency_texts:
        raise ValueError("latency_texts must not be empty")
    if num_threads < 1 or throughput_batches < 1 or predict_chunk_size < 1:
        raise ValueError(
            "num_threads, throughput_batches and predict_chunk_size must be >= 1, "
            f"got {num_threads}, {throughput_batches}, {predict_chunk_size}"
        )
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be > 0, got {size_bytes}")
    scoring_threads = num_threads if scoring_threads is None else scoring_threads
    if scoring_threads < 1:
        raise ValueError(f"scoring_threads must be >= 1, got {scoring_threads}")
    scorer = predictor if scorer is None else scorer
    for role, model, threads in (
        ("predictor", predictor, num_threads),
        ("scorer", scorer, scoring_threads),
    ):
        pinned = getattr(model, "num_threads", None)
        if pinned is not None and pinned != threads:
            raise ValueError(
                f"{name}: {role} runs with {pinned} threads but the evaluation uses "
                f"{threads}; build it with num_threads={threads}"
            )
    if list(scorer.labels) != list(predictor.labels):
        raise ValueError(
            f"{name}: scorer's labels {scorer.labels} differ from the predictor's "
            f"{predictor.labels}"
        )
    columns = list(predictor.labels)
    labels = list(columns if labels is None else labels)
    if sorted(labels) != sorted(columns) or len(set(labels)) != len(labels):
        raise ValueError(f"{name}: labels {labels} differ from predictor's {columns}")
    # Column j of predict_proba is label column_to_label[j] in `labels` order.
    column_to_label = _label_ids(columns, labels, "predictor")
    true_ids = _label_ids(list(y_true), labels, "y_true")

    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(scoring_threads)
        with threadpool_limits(limits=scoring_threads):
            predicted = np.concatenate(
                [
                    scorer.predict_proba(texts[i : i + predict_chunk_size]).argmax(
                        axis=1
                    )
                    for i in range(0, len(texts), predict_chunk_size)
                ]
            )
        torch.set_num_threads(num_threads)
        with threadpool_limits(limits=num_threads):
            latency = measure_latency(
                predictor,
                list(latency_texts),
                batch_size=1,
                warmup=warmup,
                repeats=latency_repeats,
            )
            throughput = measure_throughput(
                predictor,
                _cycle(list(texts), throughput_batches * THROUGHPUT_BATCH_SIZE),
                batch_size=THROUGHPUT_BATCH_SIZE,
            )
    finally:
        torch.set_num_threads(previous_threads)

    pred_ids = column_to_label[predicted]
    metrics = classification_metrics(true_ids, pred_ids, labels)
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (true_ids, pred_ids), 1)
    evaluation = ModelEvaluation(
        name=name,
        family=family,
        form=form,
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        per_class=metrics["per_class"],
        confusion=confusion.tolist(),
        size_bytes=int(size_bytes),
        latency_p50_ms=latency["p50_ms"],
        latency_p95_ms=latency["p95_ms"],
        throughput_per_s=throughput,
        num_threads=num_threads,
        n_test=len(texts),
        extra={
            "labels": labels,
            "latency_mean_ms": latency["mean_ms"],
            "latency_repeats": latency_repeats,
            "scoring_threads": scoring_threads,
            "warmup": warmup,
            "throughput_batch_size": THROUGHPUT_BATCH_SIZE,
            **dict(extra or {}),
        },
    )
    logger.info(
        "Evaluated %s (%s): macro-F1 %.4f, accuracy %.4f, %.2f MB, p50 %.2f ms, "
        "p95 %.2f ms, %.0f texts/s, %d threads",
        name,
        form,
        evaluation.macro_f1,
        evaluation.accuracy,
        size_bytes / 1e6,
        evaluation.latency_p50_ms,
        evaluation.latency_p95_ms,
        throughput,
        num_threads,
    )
    return evaluation


def ratios(
    candidate: ModelEvaluation,
    reference: ModelEvaluation,
    *,
    f1: float | None = None,
    reference_f1: float | None = None,
) -> dict[str, float]:
    """How a candidate compares with a reference; above 1 favours the candidate.

    Args:
        candidate: The compressed model.
        reference: What it replaces (usually the fp32 teacher).
        f1: The candidate's macro-F1 to use instead of its (test) evaluation's, e.g.
            its validation score when choosing.
        reference_f1: Likewise for the reference.

    Returns:
        ``f1_retained`` (candidate / reference macro-F1), ``size_ratio`` (reference
        / candidate size), ``latency_ratio`` (reference / candidate p50) and
        ``throughput_ratio`` (candidate / reference throughput).

    Raises:
        ValueError: If the reference's macro-F1 is 0.
    """
    f1 = candidate.macro_f1 if f1 is None else f1
    reference_f1 = reference.macro_f1 if reference_f1 is None else reference_f1
    if reference_f1 <= 0:
        raise ValueError(f"reference {reference.name} has macro-F1 0; nothing to keep")
    return {
        "f1_retained": f1 / reference_f1,
        "size_ratio": reference.size_bytes / candidate.size_bytes,
        "latency_ratio": reference.latency_p50_ms / candidate.latency_p50_ms,
        "throughput_ratio": candidate.throughput_per_s / reference.throughput_per_s,
    }


@dataclass(frozen=True)
class Gates:
    """Release gates a candidate must pass against the reference.

    Attributes:
        min_f1_retained: Lowest acceptable candidate / reference macro-F1.
        min_size_ratio: Lowest acceptable reference / candidate size.
        min_latency_ratio: Lowest acceptable reference / candidate p50 latency.

    Raises:
        ValueError: If a threshold is not a positive finite number, or
            ``min_f1_retained`` exceeds 1.
    """

    min_f1_retained: float = 0.97
    min_size_ratio: float = 4.0
    min_latency_ratio: float = 2.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"Gates.{f.name} must be a number, got {value!r}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Gates.{f.name} must be > 0 and finite, got {value}")
        if self.min_f1_retained > 1:
            raise ValueError(
                f"Gates.min_f1_retained must be <= 1, got {self.min_f1_retained}"
            )


_GATE_CHECKS = (  # (ratio key, Gates attribute, digits shown)
    ("f1_retained", "min_f1_retained", 3),
    ("size_ratio", "min_size_ratio", 2),
    ("latency_ratio", "min_latency_ratio", 2),
)


def check_gates(
    candidate: ModelEvaluation,
    reference: ModelEvaluation,
    gates: Gates,
    **f1s: float | None,
) -> list[str]:
    """The gates a candidate misses, each with its numbers.

    Args:
        candidate: The compressed model.
        reference: What it replaces.
        gates: The thresholds.
        **f1s: ``f1`` and ``reference_f1`` overrides, as :func:`ratios` takes them.

    Returns:
        One entry per missed gate, e.g. ``"f1_retained 0.962 < 0.970"``; empty if
        the candidate passes.
    """
    values = ratios(candidate, reference, **f1s)
    missed = []
    for key, attribute, digits in _GATE_CHECKS:
        threshold = getattr(gates, attribute)
        if values[key] < threshold:
            missed.append(f"{key} {values[key]:.{digits}f} < {threshold:.{digits}f}")
    return missed


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def select_best(
    candidates: list[ModelEvaluation],
    reference: ModelEvaluation,
    gates: Gates,
    val_f1: Mapping[str, float] | None = None,
    reference_val_f1: float | None = None,
) -> ModelEvaluation:
    """The passing candidate with the highest macro-F1 (ties: the smaller one).

    Args:
        candidates: Evaluations to choose from.
        reference: What the chosen model replaces.
        gates: The thresholds.
        val_f1: Validation macro-F1 by candidate name. When given, the choice and the
            F1 gate use it (with ``reference_val_f1``) instead of the evaluations'
            test scores, which are then only reported.
        reference_val_f1: The reference's validation macro-F1.

    Returns:
        The chosen candidate.

    Raises:
        ValueError: If ``candidates`` is empty.
        GateError: If no candidate passes; the message has one row per candidate
            with its ratios and missed gates.
    """
    if not candidates:
        raise ValueError("select_best needs at least one candidate")
    if (val_f1 is None) != (reference_val_f1 is None):
        raise ValueError("give val_f1 and reference_val_f1 together")

    def f1s(c: ModelEvaluation) -> dict[str, float | None]:
        if val_f1 is None:
            return {}
        if c.name not in val_f1:
            raise ValueError(f"no validation macro-F1 for candidate {c.name}")
        return {"f1": val_f1[c.name], "reference_f1": reference_val_f1}

    def score(c: ModelEvaluation) -> float:
        return c.macro_f1 if val_f1 is None else val_f1[c.name]

    missed = {c.name: check_gates(c, reference, gates, **f1s(c)) for c in candidates}
    passing = [c for c in candidates if not missed[c.name]]
    if passing:
        best = max(passing, key=lambda c: (score(c), -c.size_bytes))
        logger.info(
            "Selected %s (%s): %s macro-F1 %.4f, %s",
            best.name,
            best.form,
            "test" if val_f1 is None else "validation",
            score(best),
            {k: round(v, 3) for k, v in ratios(best, reference, **f1s(best)).items()},
        )
        return best
    rows = []
    for c in candidates:
        values = ratios(c, reference, **f1s(c))
        rows.append(
            [
                c.name,
                c.form,
                f"{values['f1_retained']:.3f}",
                f"{values['size_ratio']:.2f}",
                f"{values['latency_ratio']:.2f}",
                "; ".join(missed[c.name]),
            ]
        )
    header = ["model", "form", "f1_retained", "size_ratio", "latency_ratio", "missed"]
    message = (
        f"no candidate passed the gates against {reference.name!r} "
        f"(min f1_retained {gates.min_f1_retained:.3f}, min size_ratio "
        f"{gates.min_size_ratio:.2f}, min latency_ratio "
        f"{gates.min_latency_ratio:.2f}):\n{_plain_table(header, rows)}"
    )
    raise GateError(message, missed)
