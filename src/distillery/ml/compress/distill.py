"""Distillation helpers: cached teacher logits, student recipes and backbones.

The training loop itself is :mod:`distillery.ml.train.loop` (``loss="kd"``); this module
prepares what it needs.

A student starts either from the teacher itself (its layers, width and vocabulary
sliced, see :mod:`distillery.ml.compress.student`), which needs a BERT-shaped teacher,
or from another BERT-shaped backbone (by default the packaged MiniLM) with its own
tokenizer. Distillation only needs the teacher's logits per text, so the second way
crosses tokenizers and architectures: any teacher gets a small BERT student.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from distillery.ml.compress.export import (
    DEFAULT_EMBEDDING_BLOCK_SIZE,
    check_block_size,
)
from distillery.ml.compress.student import build_student, rank_hidden_dims
from distillery.ml.compress.vocab import prune_vocabulary, used_token_ids
from distillery.ml.data.batches import PadCollator, TokenDataset
from distillery.ml.data.text import load_encoder, retokenize_frame
from distillery.ml.models.modeling import BUILTIN_TEACHER, TextClassifier
from distillery.ml.train.options import options_from_params

logger = logging.getLogger(__name__)


@torch.no_grad()
def compute_logits(
    model: TextClassifier | Any, frame: pd.DataFrame, batch_size: int = 128
) -> np.ndarray:
    """Logits for every row of a tokenised frame, in the frame's order.

    Rows are batched by length (sorted), so padding is minimal: on tweets this is
    several times faster than batching in random order.

    Args:
        model: A ``TextClassifier``, or a predictor with ``logits(batch)`` and
            ``labels`` (e.g. :class:`~distillery.ml.inference.OnnxPredictor`).
        frame: Rows with ``input_ids`` and ``attention_mask``.
        batch_size: Rows per forward pass.

    Returns:
        ``(N, C)`` float32 logits.
    """
    if isinstance(model, torch.nn.Module):
        model = model.eval()

        def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
            return model(batch["input_ids"], batch["attention_mask"]).float().numpy()

    else:

        def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
            return model.logits(
                {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
            )

    return _by_length(forward, frame, batch_size, len(model.labels))


@torch.no_grad()
def compute_logits_and_pooled(
    model: TextClassifier | Any, frame: pd.DataFrame, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C)`` and pooled embeddings ``(N, H)`` for every row of a tokenised
    frame, in the frame's order, one forward pass per batch.

    Args:
        model: A ``TextClassifier``, or an
            :class:`~distillery.ml.serve.inference.OnnxPredictor` of a graph with a
            ``pooled`` output (:func:`~distillery.ml.compress.export.with_pooled_output`).
        frame: Rows with ``input_ids`` and ``attention_mask``.
        batch_size: Rows per forward pass.
    """
    classes = len(model.labels)
    if isinstance(model, torch.nn.Module):
        model = model.eval()
        width = classes + model.config.hidden_size

        def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
            pooled, _ = model.encode(batch["input_ids"], batch["attention_mask"])
            return torch.cat([model.head(pooled), pooled], dim=1).float().numpy()

    else:
        metadata = model.session.get_modelmeta().custom_metadata_map
        width = classes + int(metadata["hidden_size"])  # export_onnx stores it

        def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
            return model.logits_and_pooled(
                {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
            )

    both = _by_length(forward, frame, batch_size, width)
    return both[:, :classes], both[:, classes:]


def _by_length(
    forward: Callable[[dict[str, torch.Tensor]], np.ndarray],
    frame: pd.DataFrame,
    batch_size: int,
    width: int,
) -> np.ndarray:
    """``(N, width)``: ``forward`` over the frame's rows in length-sorted batches,
    rows in the frame's order."""
    dataset = TokenDataset(frame)
    order = np.argsort(dataset.lengths, kind="stable")
    collate = PadCollator()
    out = np.empty((len(dataset), width), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = forward(collate([dataset[int(i)] for i in rows]))
    return out


def drop_words(texts: Sequence[str], rate: float, seed: int) -> list[str]:
    """Each text with every whitespace-separated word dropped with probability
    ``rate``; at least one word stays, and a one-word text is returned as it is.

    A cheap augmentation for distillation: the teacher labels the shortened texts, so
    the student sees more of the teacher's function than the training texts alone
    show (a TinyBERT-style transfer set, without a generator model).
    """
    if not 0 <= rate < 1:
        raise ValueError(f"word dropout must be in [0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        words = text.split()
        keep = rng.random(len(words)) >= rate
        if len(words) < 2:  # noqa: PLR2004 - nothing to drop from one word
            out.append(text)
            continue
        if not keep.any():
            keep[rng.integers(len(words))] = True
        out.append(" ".join(w for w, k in zip(words, keep, strict=True) if k))
    return out


# Model types whose parameter layout build_student slices (encoder.layer.N.attention...).
BERT_SHAPED = ("bert",)
SLICE_TEACHER = "teacher"
STUDENT_BACKBONES = ("auto", SLICE_TEACHER, BUILTIN_TEACHER)  # or a model folder / id


def is_bert_shaped(config: Any) -> bool:
    """Whether a student can be sliced out of a model with this config."""
    return getattr(config, "model_type", None) in BERT_SHAPED


def resolve_student_backbone(backbone: str, teacher_config: Any) -> str:
    """Where the students start: ``teacher`` (sliced from it) or a model to load.

    Args:
        backbone: ``auto`` (the teacher when it is BERT-shaped, else ``builtin``),
            ``teacher``, ``builtin`` or a folder / hub id of a BERT-shaped encoder.
        teacher_config: The teacher encoder's config.

    Returns:
        ``"teacher"``, or the name or path of the backbone to load.

    Raises:
        ValueError: if ``backbone`` is empty, or ``teacher`` is asked of a teacher
            that is not BERT-shaped.
    """
    if not backbone:
        raise ValueError(
            f"compress_options.student_backbone must be one of {STUDENT_BACKBONES} "
            "or a model folder"
        )
    shaped = is_bert_shaped(teacher_config)
    if backbone == "auto":
        return SLICE_TEACHER if shaped else BUILTIN_TEACHER
    if backbone == SLICE_TEACHER and not shaped:
        raise ValueError(
            "compress_options.student_backbone 'teacher' slices students out of the "
            f"teacher, which needs one of the model types {BERT_SHAPED}; this "
            f"teacher is {getattr(teacher_config, 'model_type', None)!r}. Use 'auto' "
            "or 'builtin'."
        )
    return backbone


def load_student_backbone(backbone: str, labels: list[str]) -> TextClassifier:
    """A pretrained BERT-shaped encoder with a new head, for students to be cut from.

    Raises:
        ValueError: if the backbone is not BERT-shaped.
    """
    model = TextClassifier.from_pretrained_encoder(backbone, labels, pooling="mean")
    if not is_bert_shaped(model.config):
        raise ValueError(
            f"student backbone {backbone} is a {model.config.model_type!r} model; "
            f"students are cut from one of {BERT_SHAPED}"
        )
    return model.eval()


def tokenize_for_students(
    frame: pd.DataFrame, backbone: str, max_length: int
) -> pd.DataFrame:
    """``frame`` as the students read it.

    Args:
        frame: Rows with ``text``, tokenised by the teacher's tokenizer.
        backbone: Where the students start (:func:`resolve_student_backbone`).
        max_length: Truncation length of the students' tokenizer.

    Returns:
        ``frame`` itself when the students are sliced from the teacher (same
        tokenizer), else a copy with ``input_ids`` and ``attention_mask`` redone
        from ``text`` by the backbone's tokenizer; every other column is kept.
    """
    if backbone == SLICE_TEACHER:
        return frame
    return retokenize_frame(frame, load_encoder(backbone, max_length))


@dataclass(frozen=True)
class StudentRecipe:
    """One student variant to build, distil and export.

    Attributes:
        name: short id used in file names, tables and MLflow (e.g. ``L2-H256``).
        num_layers: transformer layers kept.
        layer_selection: teacher layers to copy (0-based); None = evenly spaced.
        hidden_size: width; None = the teacher's.
        intermediate_size: FFN width; None = the teacher's ratio.
        num_heads: attention heads; None = keep the teacher's head size.
        embedding_bits: 8 or 4 bits for the ONNX word embeddings.
        embedding_block_size: values per scale of 4-bit word embeddings (16 to 256).
        distill: TrainConfig overrides for this variant only.
    """

    name: str
    num_layers: int
    layer_selection: tuple[int, ...] | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    embedding_bits: int = 8
    embedding_block_size: int = DEFAULT_EMBEDDING_BLOCK_SIZE
    distill: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(
                f"student name {self.name!r} must be letters, digits, - or _"
            )
        if self.num_layers < 1:
            raise ValueError(f"student {self.name}: num_layers must be >= 1")
        if self.embedding_bits not in (4, 8):
            raise ValueError(f"student {self.name}: embedding_bits must be 4 or 8")
        try:
            check_block_size(self.embedding_block_size)
        except ValueError as error:
            raise ValueError(f"student {self.name}: {error}") from None
        if self.layer_selection is not None:
            object.__setattr__(self, "layer_selection", tuple(self.layer_selection))

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> StudentRecipe:
        """Build from one entry of ``compress_options.students``; unknown keys are errors."""
        return options_from_params(cls, params, "compress_options.students entry")


def make_student(
    teacher: TextClassifier,
    recipe: StudentRecipe,
    keep_ids: list[int],
    unk_id: int,
    *,
    sample: pd.DataFrame,
    max_length: int,
) -> TextClassifier:
    """Prune the teacher's vocabulary, then cut it to the recipe's depth and width.

    Args:
        teacher: fine-tuned teacher, or the backbone the students start from
            (:func:`load_student_backbone`).
        recipe: the variant.
        keep_ids: tokenizer ids kept (from :func:`vocabulary_to_keep`).
        unk_id: id of ``[UNK]``.
        sample: a few hundred tokenised training rows; rank hidden coordinates for
            narrower students by their activations.
        max_length: longest input; position embeddings beyond it are dropped.

    Returns:
        The initial student (before distillation).
    """
    pruned = prune_vocabulary(teacher, keep_ids, unk_id)
    hidden_dims = None
    if (
        recipe.hidden_size is not None
        and recipe.hidden_size < teacher.config.hidden_size
    ):
        batch = PadCollator()([TokenDataset(sample)[i] for i in range(len(sample))])
        hidden_dims = rank_hidden_dims(
            teacher, batch["input_ids"], batch["attention_mask"]
        )
    return build_student(
        pruned,
        recipe.num_layers,
        layer_selection=list(recipe.layer_selection)
        if recipe.layer_selection
        else None,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_heads=recipe.num_heads,
        max_position_embeddings=max_length,
        hidden_dims=hidden_dims,
    )


def vocabulary_to_keep(
    token_id_lists: pd.Series, tokenizer: Any, min_count: int
) -> list[int]:
    """Ids seen at least ``min_count`` times in the training split, plus special tokens."""
    keep = used_token_ids(
        (list(ids) for ids in token_id_lists), tokenizer.all_special_ids, min_count
    )
    logger.info(
        "Vocabulary pruning keeps %d of %d token ids (min_count %d)",
        len(keep),
        tokenizer.vocab_size,
        min_count,
    )
    return keep
