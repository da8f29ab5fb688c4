"""Every model form measured side by side: the teacher, the baseline, each student.

The forms: the teacher in eager PyTorch, the teacher in ONNX Runtime fp32
(graph-optimised) and int8 (quantisation only), the tuned TF-IDF baseline, and each
student in ONNX Runtime fp32 and int8. All go through
:func:`~distillery.ml.report.evaluation.evaluate_predictor` with one
:class:`Measurement`: the same texts, normalisation, tokenisation and threads.
Sizes are the deployable artifact on disk, tokenizer files included.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from distillery.ml.compress.forms import ONNX_FORMS, TEACHER, onnx_file
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.report.baseline import BaselinePredictor, save_baseline
from distillery.ml.report.evaluation import evaluate_predictor
from distillery.ml.report.model_evaluation import ModelEvaluation
from distillery.ml.serve.inference import OnnxPredictor, Predictor, TorchPredictor
from distillery.ml.serve.latency import artifact_size_bytes

logger = logging.getLogger(__name__)

# Ratios are taken against what a user deploys without distillery: the teacher in ONNX
# Runtime fp32, graph-optimised; the quantisation-only recipe (ONNX Runtime int8) and
# eager PyTorch are secondary references.
REFERENCE = f"{TEACHER}-onnx-fp32"
SECONDARY_REFERENCES = (f"{TEACHER}-onnx-int8", TEACHER)

PredictorFactory = Callable[[int], Predictor]  # intra-op threads -> predictor


def saved_size_bytes(
    save: Callable[[Path], object] | None = None, tokenizer: Any = None
) -> int:
    """Bytes on disk of what ``save`` writes plus the tokenizer's files, if given.

    A deployable artifact needs both, so sizes compared across forms count both.

    Args:
        save: Writes the model to the path it is given (a folder or file that does
            not exist yet); ``None`` counts the tokenizer alone.
        tokenizer: Anything with ``save_pretrained(folder)``, or ``None``.

    Returns:
        Total bytes of every file written.
    """
    with tempfile.TemporaryDirectory() as tmp:
        if save is not None:
            save(Path(tmp) / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(Path(tmp) / "tokenizer")
        return artifact_size_bytes(tmp)


@dataclass(frozen=True)
class Measurement:
    """How every form is measured: the same texts, preprocessing and threads.

    Attributes:
        texts: Raw test texts; also the batch-1 latency texts.
        y_true: Gold label names, one per text.
        labels: Label vocabulary, the row/column order of every confusion matrix.
        num_threads: Intra-op threads every form is timed with.
        scoring_threads: Threads of the predictor that scores the test split.
        latency_repeats: Timed batch-1 calls.
        warmup: Untimed batch-1 calls first.
        throughput_batches: Timed batches of 32 texts.
        max_length: Longest tokenised input of the neural forms.
        normalize: The training data's text normaliser, applied to every input.
    """

    texts: list[str]
    y_true: list[str]
    labels: list[str]
    num_threads: int
    scoring_threads: int
    latency_repeats: int
    warmup: int
    throughput_batches: int
    max_length: int
    normalize: Callable[[str], str]

    def evaluate(
        self,
        name: str,
        family: str,
        form: str,
        predictor: PredictorFactory,
        size_bytes: int,
    ) -> ModelEvaluation:
        """Evaluate one form: timed with ``num_threads``, scored with ``scoring_threads``.

        Args:
            name: Unique model name.
            family: ``"baseline"``, ``"teacher"`` or ``"student"``.
            form: Runtime and precision, e.g. ``"onnx-int8"``.
            predictor: Builds the form's predictor for a thread count; called a
                second time for the scorer only when the two counts differ.
            size_bytes: Deployable size on disk.

        Returns:
            The evaluation.

        Raises:
            ValueError: As :func:`evaluate_predictor` raises it.
        """
        logger.info("Evaluating %s (%s)", name, form)
        timed = predictor(self.num_threads)
        same = self.scoring_threads == self.num_threads
        scorer = timed if same else predictor(self.scoring_threads)
        return evaluate_predictor(
            name,
            family,
            form,
            timed,
            texts=self.texts,
            y_true=self.y_true,
            size_bytes=size_bytes,
            labels=self.labels,
            latency_texts=self.texts,
            num_threads=self.num_threads,
            latency_repeats=self.latency_repeats,
            warmup=self.warmup,
            throughput_batches=self.throughput_batches,
            scoring_threads=self.scoring_threads,
            scorer=scorer,
        )


def evaluate_onnx_forms(
    measurement: Measurement,
    name: str,
    family: str,
    files: Mapping[str, bytes],
    tokenizer: Any,
    tokenizer_bytes: int,
) -> list[ModelEvaluation]:
    """Evaluate a model's ONNX Runtime fp32 and int8 forms.

    Args:
        measurement: How to measure.
        name: The model's name; the forms are ``<name>-onnx-fp32`` and
            ``<name>-onnx-int8``.
        family: ``"teacher"`` or ``"student"``.
        files: ONNX files by file name; must hold ``<name>.onnx`` and
            ``<name>.int8.onnx``.
        tokenizer: The model's fast tokenizer.
        tokenizer_bytes: Size on disk of the tokenizer's files, added to each form's.

    Returns:
        The fp32 evaluation, then the int8 one.

    Raises:
        KeyError: If a form's file is missing from ``files``.
    """
    evaluations = []
    with tempfile.TemporaryDirectory() as tmp:
        for form in ONNX_FORMS:
            path = Path(tmp) / onnx_file(name, form)
            path.write_bytes(files[path.name])
            predictor = partial(_onnx_predictor, measurement, path, tokenizer)
            size = path.stat().st_size + tokenizer_bytes
            evaluations.append(
                measurement.evaluate(f"{name}-{form}", family, form, predictor, size)
            )
    return evaluations


def evaluate_model_forms(
    measurement: Measurement,
    *,
    teacher: ClassifierArtifact,
    teacher_onnx: Mapping[str, bytes],
    baseline_model: Any,
    students: Mapping[str, ClassifierArtifact],
    student_onnx: Mapping[str, bytes],
) -> list[ModelEvaluation]:
    """Evaluate every form: the teacher's three, the baseline, each student's two.

    Args:
        measurement: How to measure.
        teacher: The fine-tuned teacher and its tokenizer; its model is put in
            eval mode.
        teacher_onnx: ``teacher.onnx`` and ``teacher.int8.onnx`` by file name.
        baseline_model: The fitted TF-IDF baseline pipeline.
        students: Student artifacts by name (a student may bring its own
            tokenizer).
        student_onnx: ``<name>.onnx`` and ``<name>.int8.onnx`` of every student.

    Returns:
        ``teacher`` (torch-fp32), ``teacher-onnx-fp32``, ``teacher-onnx-int8``,
        ``baseline`` (sklearn), then ``<student>-onnx-fp32`` and
        ``<student>-onnx-int8`` per student in ``students`` order.

    Raises:
        KeyError: If an ONNX file is missing.
    """
    tokenizer = teacher.tokenizer
    tokenizer_bytes = saved_size_bytes(tokenizer=tokenizer)
    model = teacher.model.eval()
    torch_teacher = partial(_torch_predictor, measurement, model, tokenizer)
    size = saved_size_bytes(model.save, tokenizer)
    evaluations = [
        measurement.evaluate(TEACHER, "teacher", "torch-fp32", torch_teacher, size),
        *evaluate_onnx_forms(
            measurement, TEACHER, "teacher", teacher_onnx, tokenizer, tokenizer_bytes
        ),
        _evaluate_baseline(measurement, baseline_model),
    ]
    for name, student in students.items():
        own = student.tokenizer
        own_bytes = (
            tokenizer_bytes if own is tokenizer else saved_size_bytes(tokenizer=own)
        )
        evaluations += evaluate_onnx_forms(
            measurement, name, "student", student_onnx, own, own_bytes
        )
    return evaluations


def _evaluate_baseline(
    measurement: Measurement, baseline_model: Any
) -> ModelEvaluation:
    """The TF-IDF baseline: no thread setting of its own, threadpoolctl bounds it."""
    size = saved_size_bytes(lambda path: save_baseline(baseline_model, path))
    return measurement.evaluate(
        "baseline",
        "baseline",
        "sklearn",
        lambda _: BaselinePredictor(baseline_model, normalize=measurement.normalize),
        size,
    )


def _torch_predictor(
    measurement: Measurement, model: Any, tokenizer: Any, threads: int
) -> TorchPredictor:
    """The eager PyTorch predictor of ``model`` for ``threads`` threads."""
    return TorchPredictor(
        model,
        tokenizer,
        measurement.max_length,
        num_threads=threads,
        normalize=measurement.normalize,
    )


def _onnx_predictor(
    measurement: Measurement, path: Path, tokenizer: Any, threads: int
) -> OnnxPredictor:
    """The ONNX Runtime predictor of the graph at ``path`` for ``threads`` threads."""
    return OnnxPredictor(
        path,
        tokenizer,
        measurement.labels,
        measurement.max_length,
        num_threads=threads,
        normalize=measurement.normalize,
    )
