"""One prediction interface for every model form (torch, ONNX, TF-IDF baseline).

Evaluation, the MLflow pyfunc and the CLI all call ``Predictor.predict_proba`` on
raw (already normalized) texts, so tokenization, batching and thread settings live
in exactly one place and are part of every latency measurement.

Tokenization uses the teacher's fast tokenizer through its Rust backend
(``tokenizers.Tokenizer``) with truncation to ``max_length`` and padding to the
longest text of each batch. It yields the same ids as calling the transformers
wrapper, at roughly a third of the per-call overhead (~0.04 ms against ~0.1 ms for
one tweet), which matters for a student that runs in about a millisecond.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tokenizers import Tokenizer

from distillery.ml.data.text import truncating_encoder
from distillery.ml.models.modeling import TextClassifier

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64


@runtime_checkable
class Predictor(Protocol):
    """Anything that maps texts to class probabilities."""

    @property
    def labels(self) -> list[str]:
        """Class names, in the column order of :meth:`predict_proba`."""
        ...

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Return ``(N, C)`` float32 probabilities (rows sum to 1) for ``texts``."""
        ...


def predict_labels(predictor: Predictor, texts: list[str]) -> list[str]:
    """Most probable label per text.

    Args:
        predictor: Any :class:`Predictor`.
        texts: Texts to classify.

    Returns:
        One label per text.
    """
    proba = predictor.predict_proba(texts)  # (N, C)
    return [predictor.labels[i] for i in proba.argmax(axis=1)]


class TextEncoder:
    """Batch tokenizer: truncation to ``max_length``, padding to the batch's longest.

    Args:
        tokenizer: A transformers fast tokenizer (its ``backend_tokenizer`` is used)
            or a ``tokenizers.Tokenizer``. It is copied, never reconfigured in place.
        max_length: Maximum number of tokens, special tokens included.
        normalize: Optional text normalizer applied before tokenization.

    Raises:
        ValueError: If ``max_length`` is below 2 or the tokenizer has no pad token.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not isinstance(backend, Tokenizer):
            raise TypeError(
                f"expected a fast tokenizer, got {type(tokenizer).__name__}; "
                "load it with use_fast=True"
            )
        pad_token = getattr(tokenizer, "pad_token", None) or "[PAD]"
        pad_id = backend.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"tokenizer has no pad token {pad_token!r}")
        # Truncated exactly as the training data was (distillery.ml.data.text).
        self._unpadded = truncating_encoder(tokenizer, max_length)
        self._backend = copy.deepcopy(self._unpadded)
        # No fixed length: tokenizer.json files often pin padding to max_length.
        self._backend.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self.max_length = max_length
        self.normalize = normalize

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenize ``texts`` into int64 ``input_ids`` and ``attention_mask`` ``(B, T)``."""
        if self.normalize is not None:
            texts = [self.normalize(t) for t in texts]
        encodings = self._backend.encode_batch(list(texts))
        return {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray(
                [e.attention_mask for e in encodings], dtype=np.int64
            ),
        }

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts after truncation (used to batch texts of similar length)."""
        if self.normalize is not None:
            texts = [self.normalize(t) for t in texts]
        return [len(e.ids) for e in self._unpadded.encode_batch(list(texts))]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits, in float32."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted.astype(np.float32))
    return exp / exp.sum(axis=1, keepdims=True)


class _BatchedPredictor:
    """Shared batching: length-sorted chunks keep padding (and latency) low."""

    def __init__(
        self, encoder: TextEncoder, labels: list[str], batch_size: int
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.encoder = encoder
        self._labels = list(labels)
        self.batch_size = batch_size

    @property
    def labels(self) -> list[str]:
        """Class names, in column order."""
        return self._labels

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """``(B, C)`` float32 logits of a tokenised batch (``input_ids``,
        ``attention_mask``: int64 ``(B, T)``)."""
        raise NotImplementedError

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Return ``(N, C)`` float32 class probabilities.

        Args:
            texts: Raw texts (normalized by ``normalize`` if one was given).

        Returns:
            Probabilities in the order of ``texts`` and :attr:`labels`.
        """
        texts = list(texts)
        out = np.empty((len(texts), len(self._labels)), dtype=np.float32)
        if len(texts) <= self.batch_size:
            if texts:
                out[:] = softmax(self.logits(self.encoder(texts)))
            return out
        order = np.argsort(self.encoder.lengths(texts), kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.encoder([texts[i] for i in idx])
            out[idx] = softmax(self.logits(batch))
        return out


class TorchPredictor(_BatchedPredictor):
    """Predictor for a PyTorch ``TextClassifier`` (fp32 or dynamically quantized).

    Args:
        model: The classifier; put in eval mode.
        tokenizer: The teacher's fast tokenizer.
        max_length: Truncation length.
        num_threads: torch intra-op threads. torch's setting is process-wide, so it
            is (re)applied at each call; ``None`` leaves it alone.
        normalize: Optional text normalizer.
        batch_size: Texts per forward pass.
    """

    def __init__(
        self,
        model: TextClassifier,
        tokenizer: Any,
        max_length: int = 128,
        *,
        num_threads: int | None = None,
        normalize: Callable[[str], str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(
            TextEncoder(tokenizer, max_length, normalize), model.labels, batch_size
        )
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.num_threads = num_threads

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        with torch.inference_mode():
            logits = self.model(
                torch.from_numpy(batch["input_ids"]).to(self.device),
                torch.from_numpy(batch["attention_mask"]).to(self.device),
            )  # (B, C)
        return logits.float().cpu().numpy()


class OnnxPredictor(_BatchedPredictor):
    """Predictor for an ONNX file written by :func:`distillery.ml.export.export_onnx`.

    Args:
        onnx_path: The ``.onnx`` file (fp32 or quantized).
        tokenizer: The teacher's fast tokenizer.
        labels: Class names; default the ``labels`` stored in the file's metadata.
        max_length: Truncation length; default the ``max_length`` stored in the file.
        num_threads: ONNX Runtime intra-op threads (fixed per session).
        normalize: Optional text normalizer.
        batch_size: Texts per session run.
        unfused: Graph optimizers the session keeps off; ``None`` = the project's
            (:data:`distillery.ml.compress.export.UNFUSED_ORT_OPTIMIZERS`), ``()`` =
            a default ONNX Runtime session, for comparisons.

    Raises:
        ValueError: If labels or max_length are neither given nor in the metadata.
    """

    def __init__(
        self,
        onnx_path: str | Path,
        tokenizer: Any,
        labels: list[str] | None = None,
        max_length: int | None = None,
        *,
        num_threads: int = 1,
        normalize: Callable[[str], str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        unfused: Sequence[str] | None = None,
    ) -> None:
        from distillery.ml.compress.export import (  # noqa: PLC0415
            UNFUSED_ORT_OPTIMIZERS,
            ort_session,
            read_metadata,
        )

        metadata = read_metadata(onnx_path)
        if labels is None:
            if "labels" not in metadata:
                raise ValueError(f"{onnx_path} stores no labels; pass labels=")
            labels = _json_labels(metadata["labels"])
        if max_length is None:
            if "max_length" not in metadata:
                raise ValueError(f"{onnx_path} stores no max_length; pass max_length=")
            max_length = int(metadata["max_length"])
        super().__init__(
            TextEncoder(tokenizer, max_length, normalize), labels, batch_size
        )
        self.session = ort_session(
            onnx_path,
            num_threads,
            unfused=UNFUSED_ORT_OPTIMIZERS if unfused is None else unfused,
        )
        self.num_threads = num_threads
        logger.info("Loaded ONNX predictor %s (%d threads)", onnx_path, num_threads)

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self.session.run(["logits"], batch)  # (B, C)
        return logits

    def logits_and_pooled(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """``(B, C + H)``: logits, then the pooled embedding the head reads; needs a
        graph with a ``pooled`` output
        (:func:`distillery.ml.compress.export.with_pooled_output`)."""
        return np.concatenate(self.session.run(["logits", "pooled"], batch), axis=1)


def _json_labels(text: str) -> list[str]:
    """Parse the JSON list of label names stored in ONNX metadata."""
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a JSON list of strings, got {text!r}")
    return value
