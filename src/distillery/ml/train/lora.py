"""Low-rank adapters (LoRA) through ``peft``, and merging them back into plain weights.

The adapters are injected into the encoder in place (no ``PeftModel`` wrapper), so
the classifier keeps its attributes; :func:`merge_lora_state` folds them into the
base weights, as ``peft``'s ``merge_and_unload`` does, so that a saved model is a
plain :class:`TextClassifier` whatever the strategy that sharded it.
"""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig, inject_adapter_in_model

from distillery.ml.models.modeling import TextClassifier
from distillery.ml.train.config import LoraOptions

logger = logging.getLogger(__name__)

ADAPTER = "default"
_LORA_A = f".lora_A.{ADAPTER}.weight"
_LORA_B = f".lora_B.{ADAPTER}.weight"
_BASE = ".base_layer."


def apply_lora(model: TextClassifier, options: LoraOptions) -> int:
    """Inject adapters into ``model.encoder``; only they and the head train.

    An adapter trains only if the layer it adapts was trainable, so
    ``freeze_layers`` and ``freeze_embeddings`` still hold.

    Args:
        model: The classifier, before any wrapping or sharding.
        options: Rank, alpha, dropout and target modules.

    Returns:
        The number of trainable parameters.

    Raises:
        ValueError: If no module matches ``target_modules``.
    """
    was_trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules or []) or None,
        bias="none",
    )
    inject_adapter_in_model(config, model.encoder, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        adapted = _adapted_weight(name)
        param.requires_grad_(adapted is not None and adapted in was_trainable)
    model.head.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d on %s: %d of %d parameters train (%.2f%%)",
        options.r,
        config.target_modules,
        trainable,
        total,
        100.0 * trainable / total,
    )
    return trainable


def _adapted_weight(name: str) -> str | None:
    """The pre-injection name of the weight an adapter parameter adapts, or None."""
    for suffix in (_LORA_A, _LORA_B):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".weight"
    return None


def merge_lora_state(
    state: dict[str, torch.Tensor], scaling: float
) -> dict[str, torch.Tensor]:
    """Fold adapters into their base weights: ``W + scaling * B @ A``.

    Args:
        state: A full state dict of a model with injected adapters.
        scaling: ``alpha / r``.

    Returns:
        The state dict of the plain model (adapter keys gone, ``base_layer``
        prefixes removed).
    """
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((_LORA_A, _LORA_B)):
            continue
        if _BASE not in key:
            merged[key] = value
            continue
        prefix, _, leaf = key.partition(_BASE)
        if leaf == "weight" and prefix + _LORA_A in state:
            lora_a = state[prefix + _LORA_A].float()  # (r, in)
            lora_b = state[prefix + _LORA_B].float()  # (out, r)
            delta = scaling * (lora_b @ lora_a)  # (out, in)
            merged[f"{prefix}.{leaf}"] = (value.float() + delta).to(value.dtype)
        else:
            merged[f"{prefix}.{leaf}"] = value
    return merged
