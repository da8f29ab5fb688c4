"""Data contracts and row rules (Great Expectations suites, one registry) and quarantine."""

from distillery.validation.errors import DataContractError

__all__ = ["DataContractError"]
