"""The teacher in the runtime that computes its cached distillation targets: PyTorch,
or ONNX Runtime over one of its exported graphs held in memory (catalog bytes); and
the released student beside its ONNX teacher, for the release's audits."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from distillery.ml.compress.forms import TEACHER, onnx_file
from distillery.ml.compress.teacher_cache import teacher_graph
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.serving import load_onnx_predictor


@contextmanager
def onnx_predictor(
    graph: bytes, file_name: str, tokenizer: Any, *, num_threads: int
) -> Iterator[OnnxPredictor]:
    """An ONNX Runtime predictor of a graph held in memory, while the block runs.

    Args:
        graph: The serialised ONNX graph (with its metadata: labels, max_length).
        file_name: The name it is written under (it shows in logs).
        tokenizer: The model's fast tokenizer.
        num_threads: ONNX Runtime intra-op threads.

    Yields:
        The predictor; its temporary file is removed afterwards.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_bytes(graph)
        yield OnnxPredictor(path, tokenizer, num_threads=num_threads)


@contextmanager
def teacher_runtime(
    source: str,
    teacher: ClassifierArtifact,
    teacher_onnx: dict[str, bytes],
    *,
    pooled: bool,
) -> Iterator[TextClassifier | OnnxPredictor]:
    """The teacher that :func:`~distillery.ml.compress.teacher_cache.label_with_teacher`
    runs, while the block runs.

    Args:
        source: ``torch``, ``onnx-fp32`` or ``onnx-int8``
            (:meth:`~distillery.ml.compress.options.CompressOptions.logits_source_for`).
        teacher: The fine-tuned teacher in PyTorch and its tokenizer.
        teacher_onnx: Its ONNX files by name; unused for ``torch``.
        pooled: Whether the ONNX graph must also output the pooled embedding.

    Yields:
        The PyTorch model, or an ONNX Runtime predictor using as many threads as
        PyTorch does.
    """
    if source == "torch":
        yield teacher.model
        return
    with onnx_predictor(
        teacher_graph(teacher_onnx, source, pooled=pooled),
        onnx_file(TEACHER, source),
        teacher.tokenizer,
        num_threads=torch.get_num_threads(),
    ) as predictor:
        yield predictor


@contextmanager
def release_predictors(
    bundle: str | Path,
    teacher_onnx: dict[str, bytes],
    tokenizer: Any,
    *,
    num_threads: int,
) -> Iterator[tuple[OnnxPredictor, OnnxPredictor]]:
    """The released student (its serving bundle) and the ONNX Runtime fp32 teacher.

    The student normalises raw text itself; the teacher reads texts as given, so give
    it normalised ones.

    Args:
        bundle: The student's serving bundle folder.
        teacher_onnx: The teacher's ONNX files (``teacher.onnx`` is the fp32 one).
        tokenizer: The teacher's fast tokenizer.
        num_threads: ONNX Runtime intra-op threads of each.

    Yields:
        ``(student, teacher)``.
    """
    name = onnx_file(TEACHER, "onnx-fp32")
    student = load_onnx_predictor(bundle, num_threads=num_threads)
    with onnx_predictor(
        teacher_onnx[name], name, tokenizer, num_threads=num_threads
    ) as teacher:
        yield student, teacher
