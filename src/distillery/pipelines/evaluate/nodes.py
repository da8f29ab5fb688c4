"""Evaluate nodes: the TF-IDF baseline, then every model form side by side in one run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from distillery.ml.data.text import normalize_text
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.report.baseline import BaselineGrid, fit_baseline
from distillery.ml.report.comparison import (
    REFERENCE,
    SECONDARY_REFERENCES,
    Measurement,
    evaluate_model_forms,
)
from distillery.ml.report.evaluation import ModelEvaluation
from distillery.ml.report.reporting import (
    comparison_table_markdown,
    confusion_matrices_figure,
    tradeoff_figure,
)
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics, metric_key


@dataclass(frozen=True)
class EvaluateOptions:
    """``params:evaluate_options``."""

    num_threads: int = 1
    scoring_threads: int | None = None
    latency_repeats: int = 200
    warmup: int = 20
    throughput_batches: int = 20
    max_test_rows: int | None = None
    max_length: int = 128
    seed: int = 42
    user_token: str = "@user"
    url_token: str = "http"
    baseline: BaselineGrid = BaselineGrid()

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, BaselineGrid):
            object.__setattr__(self, "baseline", BaselineGrid.from_dict(self.baseline))
        if self.num_threads < 1:
            raise ValueError("evaluate_options.num_threads must be >= 1")
        if self.scoring_threads is not None and self.scoring_threads < 1:
            raise ValueError("evaluate_options.scoring_threads must be >= 1 or null")
        if self.latency_repeats < 1 or self.warmup < 0:
            raise ValueError("evaluate_options.latency_repeats >= 1 and warmup >= 0")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EvaluateOptions:
        """Build from parameters, rejecting unknown keys."""
        return options_from_params(cls, params, "evaluate_options")


def _labelled_texts(
    frame: pd.DataFrame, labels: list[str]
) -> tuple[list[str], list[str]]:
    """Texts and gold label names of a model-input frame."""
    return frame["text"].astype(str).tolist(), [labels[int(i)] for i in frame["label"]]


def fit_baseline_model(
    model_input_train: pd.DataFrame,
    model_input_val: pd.DataFrame,
    label_vocab: dict[str, Any],
    evaluate_options: dict,
) -> tuple[Any, list[dict[str, Any]]]:
    """Word + char TF-IDF and logistic regression on the teacher's training split,
    its n-gram ranges and ``C`` chosen on the validation split.

    Returns:
        The fitted baseline and the validation score of every setting tried.
    """
    options = EvaluateOptions.from_params(evaluate_options)
    labels = label_vocab["labels"]
    return fit_baseline(
        *_labelled_texts(model_input_train, labels),
        *_labelled_texts(model_input_val, labels),
        grid=options.baseline,
        seed=options.seed,
    )


def evaluate_models(  # noqa: PLR0917 - every model form, then the data
    baseline_model: Any,
    teacher_model: ClassifierArtifact,
    teacher_onnx: dict[str, bytes],
    distilled_students: dict[str, ClassifierArtifact],
    student_onnx: dict[str, bytes],
    model_input_test: pd.DataFrame,
    label_vocab: dict[str, Any],
    evaluate_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """Measure every model form on the test split with the same code, rows and threads.

    The forms: the teacher in eager PyTorch, the teacher in ONNX Runtime fp32
    (graph-optimised) and int8 (quantisation only), the tuned TF-IDF baseline, and
    each student in ONNX Runtime fp32 and int8. Sizes are the deployable artifact
    on disk, tokenizer files included; latency is batch 1 over real test texts,
    normalisation and tokenisation included, with ``num_threads`` for every form.
    The test split's predictions (quality only, which the thread count does not
    change) come from a second predictor of the same model with ``scoring_threads``.

    Returns:
        One :class:`ModelEvaluation` dict per model form, teacher first.
    """
    options = EvaluateOptions.from_params(evaluate_options)
    test = model_input_test
    if options.max_test_rows is not None and options.max_test_rows < len(test):
        test = test.sample(n=options.max_test_rows, random_state=options.seed)
    texts, y_true = _labelled_texts(test, label_vocab["labels"])
    measurement = Measurement(
        texts=texts,
        y_true=y_true,
        labels=label_vocab["labels"],
        num_threads=options.num_threads,
        # Quality does not depend on the thread count: score with every core.
        scoring_threads=options.scoring_threads or len(os.sched_getaffinity(0)),
        latency_repeats=options.latency_repeats,
        warmup=options.warmup,
        throughput_batches=options.throughput_batches,
        max_length=options.max_length,
        normalize=partial(
            normalize_text, user_token=options.user_token, url_token=options.url_token
        ),
    )
    evaluations = evaluate_model_forms(
        measurement,
        teacher=teacher_model,
        teacher_onnx=teacher_onnx,
        baseline_model=baseline_model,
        students=distilled_students,
        student_onnx=student_onnx,
    )
    return [e.to_dict() for e in evaluations]


def report_models(
    model_evaluations: list[dict[str, Any]], label_vocab: dict[str, Any]
) -> tuple[dict[str, Any], str, Figure, Figure, dict[str, Any]]:
    """The comparison table (JSON, Markdown), confusion matrices, trade-off plot, metrics."""
    evaluations = [ModelEvaluation.from_dict(e) for e in model_evaluations]
    markdown = comparison_table_markdown(evaluations, REFERENCE, SECONDARY_REFERENCES)
    confusion = confusion_matrices_figure(evaluations, label_vocab["labels"])
    tradeoff = tradeoff_figure(evaluations, REFERENCE)
    metrics: dict[str, float] = {}
    for e in evaluations:
        metrics |= {
            metric_key(e.name, "macro_f1"): e.macro_f1,
            metric_key(e.name, "accuracy"): e.accuracy,
            metric_key(e.name, "size_mb"): e.size_bytes / 1e6,
            metric_key(e.name, "latency_p50_ms"): e.latency_p50_ms,
            metric_key(e.name, "latency_p95_ms"): e.latency_p95_ms,
            metric_key(e.name, "throughput_per_s"): e.throughput_per_s,
        }
    table = {
        "reference": REFERENCE,
        "secondary_references": list(SECONDARY_REFERENCES),
        "models": model_evaluations,
    }
    return table, markdown, confusion, tradeoff, as_metrics(metrics)
