"""A classifier's ONNX forms as served: exported, then scored in ONNX Runtime.

The student is chosen on these validation scores, never on test.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from distillery.ml.compress.export import DEFAULT_EMBEDDING_BLOCK_SIZE
from distillery.ml.compress.forms import (
    ONNX_FORMS,
    export_forms,
    onnx_file,
    read_onnx_files,
)
from distillery.ml.compress.options import CompressOptions
from distillery.ml.metrics import classification_metrics
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.serve.inference import OnnxPredictor

logger = logging.getLogger(__name__)


def score_forms(
    name: str, artifact: ClassifierArtifact, folder: Path, validation: pd.DataFrame
) -> dict[str, Any]:
    """Score the fp32 and int8 ONNX forms of one model on validation texts.

    Args:
        name: The model's name in the file names
            (:func:`~distillery.ml.compress.forms.onnx_file`).
        artifact: The classifier the forms were exported from (labels, tokenizer).
        folder: Where both forms are.
        validation: Rows with ``text`` and ``label``.

    Returns:
        ``int8_agreement`` (how often int8 predicts what fp32 predicts),
        ``val_rows`` and ``val_macro_f1`` per form.
    """
    texts = validation["text"].astype(str).tolist()
    gold = validation["label"].to_numpy()
    predicted = {
        form: OnnxPredictor(
            folder / onnx_file(name, form),
            artifact.tokenizer,
            num_threads=torch.get_num_threads(),
        )
        .predict_proba(texts)
        .argmax(1)
        for form in ONNX_FORMS
    }
    return {
        "int8_agreement": float(
            np.mean(predicted["onnx-fp32"] == predicted["onnx-int8"])
        ),
        "val_rows": len(texts),
        "val_macro_f1": {
            form: classification_metrics(gold, pred, artifact.labels)["macro_f1"]
            for form, pred in predicted.items()
        },
    }


def export_scored_forms(
    name: str,
    artifact: ClassifierArtifact,
    max_length: int,
    validation: pd.DataFrame,
    tolerance: float,
    *,
    embedding_bits: int = 8,
    embedding_block_size: int = DEFAULT_EMBEDDING_BLOCK_SIZE,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Export one classifier as ONNX fp32 (parity-checked) and int8, and score both.

    Args:
        name: The model's name in file names and logs.
        artifact: The classifier and its tokenizer.
        max_length: Longest input the graphs take.
        validation: Tokenised rows with ``text`` and ``label``: the parity check
            runs on the first of them, the scores on all.
        tolerance: Largest acceptable absolute logit difference fp32 vs PyTorch.
        embedding_bits: 8 or 4 bits for the int8 graph's word embeddings.
        embedding_block_size: Values per scale of 4-bit word embeddings.

    Returns:
        ``{"<name>.onnx": bytes, "<name>.int8.onnx": bytes}`` and the report:
        ``parity_max_abs_diff``, :func:`score_forms`' scores and the sizes.

    Raises:
        RuntimeError: if the fp32 graph differs from PyTorch by more than
            ``tolerance``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        diff, sizes = export_forms(
            name,
            artifact,
            folder,
            max_length,
            validation,
            tolerance,
            embedding_bits=embedding_bits,
            embedding_block_size=embedding_block_size,
        )
        scores = score_forms(name, artifact, folder, validation)
        files = read_onnx_files(folder)
    report = {"parity_max_abs_diff": diff} | scores | sizes
    logger.info(
        "Exported %s: parity %.2e, int8 agrees with fp32 on %.2f%% of %d "
        "validation texts, validation macro-F1 %s",
        name,
        diff,
        100 * report["int8_agreement"],
        report["val_rows"],
        {k: round(v, 4) for k, v in report["val_macro_f1"].items()},
    )
    return files, report


def export_student_forms(
    students: dict[str, ClassifierArtifact],
    validation: pd.DataFrame,
    options: CompressOptions,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """:func:`export_scored_forms` for every student, with its recipe's settings.

    Args:
        students: The distilled students by name.
        validation: Validation rows tokenised for the students.
        options: The compress options: each student's recipe (its ``max_length``
            and embedding settings) and the parity tolerance.

    Returns:
        Every student's files, sorted by name, and a report per student.

    Raises:
        RuntimeError: if an fp32 export differs from PyTorch by more than the
            tolerance.
    """
    recipes = {r.name: r for r in options.students}
    files: dict[str, bytes] = {}
    report: dict[str, Any] = {}
    for name, artifact in students.items():
        files_of, report[name] = export_scored_forms(
            name,
            artifact,
            options.train_config(recipes[name]).max_length,
            validation,
            options.parity_tolerance,
            embedding_bits=recipes[name].embedding_bits,
            embedding_block_size=recipes[name].embedding_block_size,
        )
        files |= files_of
    return dict(sorted(files.items())), report
