"""The error a broken data contract raises: it names the file, the column and the rule."""

from __future__ import annotations


class DataContractError(ValueError):
    """Input data broke a contract rule; the run must stop.

    Args:
        file: the source the data came from (path or URI).
        column: the column the rule is about (``"<table>"`` for whole-table rules).
        rule: the registry name of the broken rule.
        detail: what was found, in words.
    """

    def __init__(self, file: str, column: str, rule: str, detail: str) -> None:
        self.file = file
        self.column = column
        self.rule = rule
        self.detail = detail
        super().__init__(
            f"Data contract failed: file '{file}', column '{column}', "
            f"rule '{rule}': {detail}"
        )
