"""``compress_options`` as a typed, self-checking dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.ml.compress.distill import StudentRecipe, resolve_student_backbone
from distillery.ml.compress.forms import TEACHER
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.options import check_keys

LOGITS_SOURCES = ("auto", "torch", "onnx-fp32", "onnx-int8")


@dataclass(frozen=True)
class TransferSet:
    """``compress_options.transfer_set``: unlabelled in-domain texts that the teacher
    labels with soft targets for the students (:mod:`distillery.ml.data.transfer`).

    Attributes:
        path: A CSV, Parquet, JSONL or TXT file (by suffix; TXT holds one text a line).
        text_column: The column holding the texts; not read for TXT.
        max_rows: A seeded sample of this many rows (``compress_options.seed``);
            None = every row.
    """

    path: str
    text_column: str = "text"
    max_rows: int | None = None

    def __post_init__(self) -> None:
        for name in ("path", "text_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"compress_options.transfer_set.{name} must be a non-empty "
                    f"string, got {value!r}"
                )
        rows = self.max_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int)):
            raise ValueError(
                "compress_options.transfer_set.max_rows must be an integer or null, "
                f"got {rows!r}"
            )
        if rows is not None and rows < 1:
            raise ValueError(
                f"compress_options.transfer_set.max_rows must be >= 1, got {rows}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> TransferSet | None:
        """Build from the ``transfer_set`` mapping; ``None`` (unset) stays ``None``.

        Raises:
            ValueError: not a mapping, an unknown key (named), no ``path``, or a
                value out of range.
        """
        if params is None:
            return None
        if not isinstance(params, Mapping):
            raise ValueError(
                "compress_options.transfer_set must be a mapping with path (and "
                f"text_column, max_rows) or null, got {params!r}"
            )
        check_keys(cls, params, "compress_options.transfer_set")
        if "path" not in params:
            raise ValueError("compress_options.transfer_set needs a path")
        return cls(**params)


@dataclass(frozen=True)
class CompressOptions:
    """``params:compress_options``."""

    students: tuple[StudentRecipe, ...]
    distill: dict[str, Any]
    workdir: str
    gates: dict[str, float]
    registry: dict[str, str]
    vocab_min_count: int = 3
    distill_samples: int | None = None
    logits_batch_size: int = 128
    logits_source: str = "auto"
    min_int8_agreement: float = 0.99
    teacher_check_rows: int = 1024
    parity_tolerance: float = 1e-4
    seed: int = 42
    student_backbone: str = "auto"
    augment_copies: int = 0
    augment_word_dropout: float = 0.1
    transfer_set: TransferSet | None = None

    def __post_init__(self) -> None:
        if not self.students:
            raise ValueError("compress_options.students must list at least one student")
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"compress_options.students names must be unique: {names}")
        if self.vocab_min_count < 1:
            raise ValueError("compress_options.vocab_min_count must be >= 1")
        if self.distill_samples is not None and self.distill_samples < 1:
            raise ValueError("compress_options.distill_samples must be >= 1 or null")
        if self.logits_source not in LOGITS_SOURCES:
            raise ValueError(
                f"compress_options.logits_source must be one of {LOGITS_SOURCES}, "
                f"got {self.logits_source!r}"
            )
        if self.augment_copies < 0 or not 0 < self.augment_word_dropout < 1:
            raise ValueError(
                "compress_options.augment_copies must be >= 0 and "
                "augment_word_dropout in (0, 1)"
            )
        if not 0 < self.min_int8_agreement <= 1 or self.teacher_check_rows < 1:
            raise ValueError(
                "compress_options.min_int8_agreement must be in (0, 1] and "
                "teacher_check_rows >= 1"
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CompressOptions:
        """Build from parameters; students become :class:`StudentRecipe`s and
        ``transfer_set`` a :class:`TransferSet`.

        Args:
            params: ``compress_options`` as the parameters file holds it.

        Returns:
            The checked options.

        Raises:
            ValueError: on an unknown key or a value out of range.
        """
        check_keys(cls, params, "compress_options")
        params = dict(params)
        params["students"] = tuple(
            StudentRecipe.from_dict(s) for s in params["students"]
        )
        params["transfer_set"] = TransferSet.from_params(params.get("transfer_set"))
        return cls(**params)

    @property
    def max_length(self) -> int:
        """The shared ``distill.max_length``: what the teacher and students read."""
        return int(self.distill["max_length"])

    @property
    def caches_pooled(self) -> bool:
        """Whether distillation's representation term (``kd_hidden_weight``) needs
        the teacher's pooled embeddings cached beside its logits."""
        return float(self.distill.get("kd_hidden_weight") or 0) > 0

    def train_config(self, recipe: StudentRecipe) -> TrainConfig:
        """The KD TrainConfig of one student: shared ``distill`` + the recipe's overrides."""
        options = {"loss": "kd", "seed": self.seed} | self.distill | recipe.distill
        options.setdefault(
            "checkpoint_dir", str(Path(self.workdir) / recipe.name / "checkpoints")
        )
        return TrainConfig.from_dict(options)

    def student_backbone_for(self, teacher: ClassifierArtifact) -> str:
        """``teacher`` (students sliced from it) or the backbone they start from."""
        return resolve_student_backbone(self.student_backbone, teacher.model.config)

    def logits_source_for(self, teacher_export_report: dict[str, Any]) -> str:
        """Which teacher computes the cached logits.

        ``auto`` picks the int8 ONNX teacher when it agrees with fp32 on at least
        ``min_int8_agreement`` of the checked rows (it is several times faster on a
        CPU), else the fp32 one; any other setting is taken as it is.

        Args:
            teacher_export_report: ``{"teacher": report}`` of the teacher's export,
                read only for ``auto``.

        Returns:
            ``torch``, ``onnx-fp32`` or ``onnx-int8``.
        """
        if self.logits_source != "auto":
            return self.logits_source
        agreement = teacher_export_report[TEACHER]["int8_agreement"]
        return "onnx-int8" if agreement >= self.min_int8_agreement else "onnx-fp32"
