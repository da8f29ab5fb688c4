"""The ONNX forms a classifier ships in: fp32 (graph-optimised, parity-checked) and
ONNX Runtime dynamic int8, and the file names that tie them together.

Scoring the forms needs ONNX Runtime predictors, which live a layer up
(:mod:`distillery.ml.serve.form_scores`); this module only writes and checks them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from distillery.ml.compress.export import (
    DEFAULT_EMBEDDING_BLOCK_SIZE,
    check_parity,
    export_onnx,
    optimize_onnx,
    quantize_onnx,
)
from distillery.ml.data.batches import PadCollator, TokenDataset
from distillery.ml.models.artifact import ClassifierArtifact

logger = logging.getLogger(__name__)

TEACHER = "teacher"  # the fine-tuned teacher's name in file names and reports
ONNX_FORMS = ("onnx-fp32", "onnx-int8")


def onnx_file(name: str, form: str) -> str:
    """The file name of one form of a model.

    Args:
        name: The model's name (``teacher`` or a student recipe's name).
        form: ``onnx-fp32`` or ``onnx-int8``.

    Returns:
        ``<name>.onnx`` (fp32, graph-optimised) or ``<name>.int8.onnx``.
    """
    return f"{name}{'.int8' if form == 'onnx-int8' else ''}.onnx"


def validation_batches(
    frame: pd.DataFrame, size: int = 64, count: int = 4
) -> list[dict[str, torch.Tensor]]:
    """Padded batches of the first ``size * count`` rows, for parity checks.

    Args:
        frame: Tokenised rows (``input_ids``, ``attention_mask``).
        size: Rows per batch.
        count: Most batches returned.

    Returns:
        Batches with ``input_ids`` and ``attention_mask`` tensors ``(B, T)``.
    """
    dataset = TokenDataset(frame.head(size * count))
    collate = PadCollator()
    batches = []
    for start in range(0, len(dataset), size):
        batch = collate(
            [dataset[i] for i in range(start, min(start + size, len(dataset)))]
        )
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask")})
    return batches


def export_forms(
    name: str,
    artifact: ClassifierArtifact,
    folder: Path,
    max_length: int,
    validation: pd.DataFrame,
    tolerance: float,
    *,
    embedding_bits: int = 8,
    embedding_block_size: int = DEFAULT_EMBEDDING_BLOCK_SIZE,
) -> tuple[float, dict[str, int]]:
    """Write ``<name>.onnx`` (fp32, graph-optimised) and ``<name>.int8.onnx``.

    Args:
        name: The model's name in the file names.
        artifact: The classifier and its tokenizer.
        folder: Where the two files are written.
        max_length: Longest input the graph takes.
        validation: Tokenised rows the fp32 graph is compared with PyTorch on.
        tolerance: Largest acceptable absolute logit difference.
        embedding_bits: 8 or 4 bits for the int8 graph's word embeddings.
        embedding_block_size: Values per scale of 4-bit word embeddings.

    Returns:
        The largest absolute logit difference between fp32 ONNX and PyTorch, and
        :func:`~distillery.ml.compress.export.quantize_onnx`'s sizes.

    Raises:
        RuntimeError: if the fp32 graph differs from PyTorch by more than
            ``tolerance``; the int8 graph is then not written.
    """
    raw = export_onnx(
        artifact.model, folder / f"{name}.raw.onnx", max_length=max_length
    )
    fp32 = optimize_onnx(raw, folder / onnx_file(name, "onnx-fp32"))
    raw.unlink()
    diff = check_parity(artifact.model, fp32, validation_batches(validation))
    if diff > tolerance:
        raise RuntimeError(
            f"ONNX export of {name} differs from PyTorch by {diff:.2e} "
            f"(> {tolerance:.0e}); not exporting it"
        )
    sizes = quantize_onnx(
        fp32,
        folder / onnx_file(name, "onnx-int8"),
        optimize=False,
        embedding_bits=embedding_bits,
        embedding_block_size=embedding_block_size,
    )
    return diff, sizes


def read_onnx_files(folder: Path) -> dict[str, bytes]:
    """Every ``*.onnx`` file of ``folder`` by file name, in name order.

    Args:
        folder: The folder :func:`export_forms` wrote to.

    Returns:
        File name -> contents.
    """
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.onnx"))}
