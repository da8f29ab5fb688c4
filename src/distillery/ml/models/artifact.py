"""A trained classifier with its tokenizer: what the catalog stores, versions and logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from distillery.ml.models.modeling import TextClassifier


@dataclass
class ClassifierArtifact:
    """A :class:`TextClassifier` and the fast tokenizer that feeds it.

    On disk: one folder with the encoder config, ``classifier.json`` (labels, dropout),
    ``model.safetensors`` and the tokenizer files — self-contained, loadable offline.
    """

    model: TextClassifier
    tokenizer: Any  # transformers PreTrainedTokenizerFast

    @property
    def labels(self) -> list[str]:
        """The label vocabulary; a label's id is its index."""
        return self.model.labels

    def save(self, path: str | Path) -> None:
        """Write weights (safetensors), configs and tokenizer files to ``path``."""
        self.model.save(path)
        self.tokenizer.save_pretrained(str(path))

    @classmethod
    def load(cls, path: str | Path) -> ClassifierArtifact:
        """Read a folder written by :meth:`save` (no pickle involved)."""
        return cls(TextClassifier.load(path), AutoTokenizer.from_pretrained(str(path)))
