"""The evaluation record: its checks and its JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from distillery.ml.report.model_evaluation import ModelEvaluation


def _record(**overrides: Any) -> ModelEvaluation:
    """A valid two-label evaluation of ten texts, with ``overrides`` applied."""
    fields = {
        "name": "x",
        "family": "student",
        "form": "onnx-int8",
        "accuracy": 0.9,
        "macro_f1": 0.9,
        "per_class": {},
        "confusion": [[5, 0], [0, 5]],
        "size_bytes": 10,
        "latency_p50_ms": 1.0,
        "latency_p95_ms": 1.5,
        "throughput_per_s": 100.0,
        "num_threads": 1,
        "n_test": 10,
    }
    return ModelEvaluation(**{**fields, **overrides})


def test_model_evaluation_checks_its_confusion_matrix() -> None:
    with pytest.raises(ValueError, match="n_test"):
        _record(n_test=5)
    with pytest.raises(ValueError, match="square"):
        _record(confusion=[[5, 0, 0], [0, 5, 0]])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"macro_f1": 1.5}, "macro_f1 must be in"),
        ({"size_bytes": 0}, "size_bytes must be > 0"),
        ({"throughput_per_s": float("inf")}, "throughput_per_s must be > 0"),
        ({"latency_p95_ms": 0.5}, "below latency_p50_ms"),
    ],
)
def test_model_evaluation_rejects_out_of_range_values(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _record(**overrides)


def test_from_dict_ignores_unknown_keys_and_restores_types() -> None:
    data = json.loads(json.dumps(_record(extra={"labels": ["a", "b"]}).to_dict()))
    data["size_bytes"] = 10.0  # e.g. read back from a YAML or CSV
    data["unknown"] = "ignored"
    restored = ModelEvaluation.from_dict(data)
    assert restored == _record(extra={"labels": ["a", "b"]})
    assert isinstance(restored.size_bytes, int)


def test_from_dict_defaults_a_missing_extra() -> None:
    data = _record().to_dict()
    del data["extra"]
    assert ModelEvaluation.from_dict(data).extra == {}
