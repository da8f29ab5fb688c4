"""Evaluate nodes: the TF-IDF baseline, then every model form side by side in one run."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from distillery.ml.artifact import ClassifierArtifact
from distillery.ml.baseline import BaselinePredictor, fit_baseline, save_baseline
from distillery.ml.evaluation import ModelEvaluation, evaluate_predictor
from distillery.ml.inference import OnnxPredictor, TorchPredictor
from distillery.ml.latency import artifact_size_bytes
from distillery.ml.options import options_from_params
from distillery.ml.quantize import quantize_dynamic_int8, quantized_size_bytes
from distillery.ml.reporting import (
    comparison_table_markdown,
    confusion_matrices_figure,
    tradeoff_figure,
)
from distillery.ml.text import normalize_text
from distillery.tracking import as_metrics, metric_key

logger = logging.getLogger(__name__)

REFERENCE = "teacher"


@dataclass(frozen=True)
class EvaluateOptions:
    """``params:evaluate_options``."""

    num_threads: int = 1
    latency_repeats: int = 200
    warmup: int = 20
    throughput_batches: int = 20
    max_test_rows: int | None = None
    max_length: int = 128
    seed: int = 42
    user_token: str = "@user"
    url_token: str = "http"

    def __post_init__(self) -> None:
        if self.num_threads < 1:
            raise ValueError("evaluate_options.num_threads must be >= 1")
        if self.latency_repeats < 1 or self.warmup < 0:
            raise ValueError("evaluate_options.latency_repeats >= 1 and warmup >= 0")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EvaluateOptions:
        """Build from parameters, rejecting unknown keys."""
        return options_from_params(cls, params, "evaluate_options")


def _labelled_texts(
    frame: pd.DataFrame, labels: list[str]
) -> tuple[list[str], list[str]]:
    return frame["text"].astype(str).tolist(), [labels[int(i)] for i in frame["label"]]


def fit_baseline_model(
    model_input_train: pd.DataFrame, label_vocab: dict[str, Any], evaluate_options: dict
) -> Any:
    """TF-IDF + logistic regression on the same training split as the teacher."""
    options = EvaluateOptions.from_params(evaluate_options)
    texts, labels = _labelled_texts(model_input_train, label_vocab["labels"])
    return fit_baseline(texts, labels, options.seed)


def _size_of_saved(save: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp))
        return artifact_size_bytes(tmp)


def evaluate_models(
    baseline_model: Any,
    teacher_model: ClassifierArtifact,
    distilled_students: dict[str, ClassifierArtifact],
    student_onnx: dict[str, bytes],
    model_input_test: pd.DataFrame,
    label_vocab: dict[str, Any],
    evaluate_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """Measure every model form on the test split with the same code and threads.

    Sizes are the saved artifact on disk (weights; the shared tokenizer is left out);
    latency is batch 1 over real test texts, normalisation and tokenisation included.

    Returns:
        One :class:`ModelEvaluation` dict per model form, teacher first.
    """
    options = EvaluateOptions.from_params(evaluate_options)
    test = model_input_test
    if options.max_test_rows is not None and options.max_test_rows < len(test):
        test = test.sample(n=options.max_test_rows, random_state=options.seed)
    texts, y_true = _labelled_texts(test, label_vocab["labels"])
    normalize = partial(
        normalize_text, user_token=options.user_token, url_token=options.url_token
    )
    tokenizer = teacher_model.tokenizer
    evaluate = partial(
        evaluate_predictor,
        texts=texts,
        y_true=y_true,
        labels=label_vocab["labels"],
        latency_texts=texts,
        num_threads=options.num_threads,
        latency_repeats=options.latency_repeats,
        warmup=options.warmup,
        throughput_batches=options.throughput_batches,
    )
    torch_predictor = partial(
        TorchPredictor,
        tokenizer=tokenizer,
        max_length=options.max_length,
        num_threads=options.num_threads,
        normalize=normalize,
    )
    results: list[ModelEvaluation] = []

    def add(name: str, family: str, form: str, predictor: Any, size: int) -> None:
        logger.info("Evaluating %s (%s)", name, form)
        results.append(evaluate(name, family, form, predictor, size_bytes=size))
        logger.info(
            "%s: macro-F1 %.4f, %.2f MB, p50 %.2f ms",
            name,
            results[-1].macro_f1,
            size / 1e6,
            results[-1].latency_p50_ms,
        )

    teacher = teacher_model.model.eval()
    add(
        REFERENCE,
        "teacher",
        "torch-fp32",
        torch_predictor(teacher),
        _size_of_saved(teacher.save),
    )
    teacher_int8 = quantize_dynamic_int8(teacher)
    add(
        "teacher-int8",
        "teacher",
        "torch-int8",
        torch_predictor(teacher_int8),
        quantized_size_bytes(teacher_int8),
    )
    add(
        "baseline",
        "baseline",
        "sklearn",
        BaselinePredictor(baseline_model, normalize=normalize),
        _size_of_saved(lambda p: save_baseline(baseline_model, p)),
    )
    for name, artifact in distilled_students.items():
        student = artifact.model.eval()
        add(
            name,
            "student",
            "torch-fp32",
            torch_predictor(student),
            _size_of_saved(student.save),
        )
        student_int8 = quantize_dynamic_int8(student)
        add(
            f"{name}-int8",
            "student",
            "torch-int8",
            torch_predictor(student_int8),
            quantized_size_bytes(student_int8),
        )
        with tempfile.TemporaryDirectory() as tmp:
            for suffix, form in ((".onnx", "onnx-fp32"), (".int8.onnx", "onnx-int8")):
                path = Path(tmp) / f"{name}{suffix}"
                path.write_bytes(student_onnx[path.name])
                predictor = OnnxPredictor(
                    path,
                    tokenizer,
                    artifact.labels,
                    options.max_length,
                    num_threads=options.num_threads,
                    normalize=normalize,
                )
                add(f"{name}-{form}", "student", form, predictor, path.stat().st_size)
    return [r.to_dict() for r in results]


def report_models(
    model_evaluations: list[dict[str, Any]], label_vocab: dict[str, Any]
) -> tuple[dict[str, Any], str, Figure, Figure, dict[str, Any]]:
    """The comparison table (JSON, Markdown), confusion matrices, trade-off plot, metrics."""
    evaluations = [ModelEvaluation.from_dict(e) for e in model_evaluations]
    markdown = comparison_table_markdown(evaluations, REFERENCE)
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
    table = {"reference": REFERENCE, "models": model_evaluations}
    return table, markdown, confusion, tradeoff, as_metrics(metrics)
