"""``compress_options`` as a typed, self-checking dataclass."""

from __future__ import annotations

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
        """Build from parameters; students become :class:`StudentRecipe`s.

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
