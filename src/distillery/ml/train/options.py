"""Typed options from parameter dictionaries: unknown keys are errors, not surprises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def check_keys(cls: type, params: Mapping[str, Any], section: str) -> None:
    """Reject keys that are not fields of the dataclass ``cls``.

    Raises:
        ValueError: naming the section, the unknown keys and the allowed ones.
    """
    allowed = {f.name for f in fields(cls)}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"unknown {section} key(s): {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def options_from_params(cls: type[T], params: Mapping[str, Any], section: str) -> T:
    """Build the frozen options dataclass ``cls`` from a parameters section.

    Raises:
        ValueError: unknown keys, or a value the dataclass's own checks reject.
    """
    check_keys(cls, params, section)
    return cls(**params)
