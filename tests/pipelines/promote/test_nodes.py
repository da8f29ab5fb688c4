"""Promote options: which rows decide, and how far beyond the noise a gain must be."""

from __future__ import annotations

import pytest

from distillery.ml.train.options import options_from_params
from distillery.pipelines.promote.nodes import PromoteOptions


def test_the_default_decides_on_test_at_the_bootstraps_lower_bound() -> None:
    options = options_from_params(PromoteOptions, {}, "promote_options")
    assert options.split == "test"
    assert options.bootstrap == {"confidence": 0.95, "resamples": 1000, "seed": 0}


def test_no_confidence_compares_point_estimates() -> None:
    options = PromoteOptions(confidence=None, split="val")
    assert options.bootstrap is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"split": "train"}, "split must be one of"),
        ({"confidence": 1.5}, r"confidence must be in \(0, 1\)"),
        ({"resamples": 0}, "resamples must be >= 1"),
        ({"min_improvement": -0.01}, "min_improvement must be >= 0"),
        ({"min_gain": 0.01}, "min_gain"),
    ],
)
def test_bad_promote_options_name_the_key(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options_from_params(PromoteOptions, params, "promote_options")
