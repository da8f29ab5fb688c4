"""PyTorch dynamic int8 quantization of a ``TextClassifier`` (reference path).

The shipped artefact is the ONNX Runtime int8 model (:mod:`distillery.ml.compress.export`);
this module gives the same compression inside PyTorch, to compare against it and to
serve where ONNX Runtime is not available.

* **API**: ``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear`` (int8 weights,
  activations quantized per batch). torch 2.13 marks ``torch.ao.quantization`` as
  deprecated in favour of ``torchao.quantization.quantize_``, but torchao 0.18's
  ``Int8DynamicActivationInt8WeightConfig`` has no fast eager CPU kernel: on the
  MiniLM teacher it ran ~12x *slower* than fp32 at batch 1, while ``torch.ao``'s
  fbgemm kernels run ~1.8x faster. We keep ``torch.ao`` (silencing its deprecation
  warnings here, on purpose) until that changes; the call is isolated in
  :func:`quantize_dynamic_int8`.
* **Saving**: quantized modules hold packed parameters that safetensors cannot
  store, and loading pickles is against project rules. The fp32 model is saved with
  :meth:`TextClassifier.save` and re-quantized at load time
  (:func:`load_quantized`); quantization is deterministic, so the result is the
  same model. Its size is measured by serializing the state dict to memory
  (:func:`quantized_size_bytes`).
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from distillery.ml.models.modeling import TextClassifier

logger = logging.getLogger(__name__)


def quantize_dynamic_int8(model: TextClassifier) -> TextClassifier:
    """Return a copy of ``model`` with every ``nn.Linear`` as a dynamic int8 layer.

    Embeddings, LayerNorms and the ``id_map`` stay as they are; ``forward`` and
    ``encode`` keep their signatures. The copy is in eval mode and runs on CPU only.

    Args:
        model: fp32 classifier; not modified.

    Returns:
        The quantized classifier.
    """
    quantized = copy.deepcopy(model).cpu().eval()  # the kernels are CPU-only
    with warnings.catch_warnings():
        # Deprecated, but still the fastest eager CPU int8 path (module docstring).
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        torch.ao.quantization.quantize_dynamic(
            quantized, {nn.Linear}, dtype=torch.qint8, inplace=True
        )
    logger.info(
        "Dynamically quantized %d Linear layers to int8",
        sum(isinstance(m, nn.Linear) for m in model.modules()),
    )
    return quantized.eval()


def quantized_size_bytes(model: nn.Module) -> int:
    """Size of ``model``'s state dict serialized with ``torch.save`` (in memory).

    Args:
        model: Any module, quantized or not.

    Returns:
        Number of bytes ``torch.save(model.state_dict())`` writes.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def load_quantized(path: str | Path) -> TextClassifier:
    """Load an fp32 classifier saved with :meth:`TextClassifier.save` and quantize it.

    Args:
        path: Folder written by ``TextClassifier.save``.

    Returns:
        The dynamic int8 classifier, as :func:`quantize_dynamic_int8` returns it.
    """
    return quantize_dynamic_int8(TextClassifier.load(path))
