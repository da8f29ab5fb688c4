"""Evaluate nodes: the TF-IDF baseline, then every model form side by side in one run."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from distillery.ml.data.text import normalize_text
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.report.baseline import (
    BaselineGrid,
    BaselinePredictor,
    fit_baseline,
    save_baseline,
)
from distillery.ml.report.evaluation import ModelEvaluation, evaluate_predictor
from distillery.ml.report.reporting import (
    comparison_table_markdown,
    confusion_matrices_figure,
    tradeoff_figure,
)
from distillery.ml.serve.inference import OnnxPredictor, TorchPredictor
from distillery.ml.serve.latency import artifact_size_bytes
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics, metric_key

logger = logging.getLogger(__name__)

TEACHER = "teacher"  # the fine-tuned teacher in PyTorch, eager fp32
# Ratios are taken against what a user deploys without distillery: the teacher in ONNX
# Runtime fp32, graph-optimised; the quantisation-only recipe (ONNX Runtime int8) and
# eager PyTorch are secondary references.
REFERENCE = f"{TEACHER}-onnx-fp32"
SECONDARY_REFERENCES = (f"{TEACHER}-onnx-int8", TEACHER)


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


def _size_of_saved(save: Any, tokenizer: Any = None) -> int:
    """Bytes on disk of what ``save`` writes, plus the tokenizer's files if given:
    a deployable artifact needs both."""
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp) / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(Path(tmp) / "tokenizer")
        return artifact_size_bytes(tmp)


def _onnx_predictor(  # noqa: PLR0917 - partial() fills all but the threads
    path: Path,
    tokenizer: Any,
    labels: list[str],
    max_length: int,
    normalize: Callable[[str], str],
    threads: int,
) -> OnnxPredictor:
    return OnnxPredictor(
        path, tokenizer, labels, max_length, num_threads=threads, normalize=normalize
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
    scoring_threads = options.scoring_threads or len(os.sched_getaffinity(0))
    test = model_input_test
    if options.max_test_rows is not None and options.max_test_rows < len(test):
        test = test.sample(n=options.max_test_rows, random_state=options.seed)
    texts, y_true = _labelled_texts(test, label_vocab["labels"])
    normalize = partial(
        normalize_text, user_token=options.user_token, url_token=options.url_token
    )
    tokenizer = teacher_model.tokenizer
    tokenizer_bytes = _size_of_saved(lambda p: None, tokenizer)
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
        scoring_threads=scoring_threads,
    )
    results: list[ModelEvaluation] = []

    def add(
        name: str,
        family: str,
        form: str,
        predictor: Callable[[int], Any],
        size: int,
    ) -> None:
        """``predictor(threads)`` builds the model's predictor for that many
        threads: one is timed with ``num_threads``; a second scores the test split
        when ``scoring_threads`` differs."""
        logger.info("Evaluating %s (%s)", name, form)
        timed = predictor(options.num_threads)
        same = scoring_threads == options.num_threads
        scorer = timed if same else predictor(scoring_threads)
        results.append(
            evaluate(name, family, form, timed, size_bytes=size, scorer=scorer)
        )

    def add_onnx(
        name: str, family: str, files: dict[str, bytes], artifact: ClassifierArtifact
    ) -> None:
        # A student may have its own tokenizer (one cut from another backbone).
        own = artifact.tokenizer
        own_bytes = (
            tokenizer_bytes if own is tokenizer else _size_of_saved(lambda p: None, own)
        )
        with tempfile.TemporaryDirectory() as tmp:
            for suffix, form in ((".onnx", "onnx-fp32"), (".int8.onnx", "onnx-int8")):
                path = Path(tmp) / f"{name}{suffix}"
                path.write_bytes(files[path.name])
                predictor = partial(
                    _onnx_predictor,
                    path,
                    own,
                    label_vocab["labels"],
                    options.max_length,
                    normalize,
                )
                size = path.stat().st_size + own_bytes
                add(f"{name}-{form}", family, form, predictor, size)

    teacher = teacher_model.model.eval()
    add(
        TEACHER,
        "teacher",
        "torch-fp32",
        lambda threads: TorchPredictor(
            teacher,
            tokenizer,
            options.max_length,
            num_threads=threads,
            normalize=normalize,
        ),
        _size_of_saved(teacher.save, tokenizer),
    )
    add_onnx(TEACHER, "teacher", teacher_onnx, teacher_model)
    add(
        "baseline",
        "baseline",
        "sklearn",
        lambda _: BaselinePredictor(baseline_model, normalize=normalize),
        _size_of_saved(lambda p: save_baseline(baseline_model, p)),
    )
    for name, student in distilled_students.items():
        add_onnx(name, "student", student_onnx, student)
    return [r.to_dict() for r in results]


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
