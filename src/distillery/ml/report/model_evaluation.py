"""The record of one model form's evaluation: quality, size and speed on the test split.

:class:`ModelEvaluation` is what :func:`distillery.ml.report.evaluation.evaluate_predictor`
returns, what the gates compare and what the reports render; it round-trips through
JSON (:meth:`ModelEvaluation.to_dict`, :meth:`ModelEvaluation.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
