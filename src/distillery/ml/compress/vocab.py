"""Vocabulary pruning: keep only the embedding rows a corpus actually uses.

The word-embedding matrix dominates a small student's size (30522 x 384 floats for
MiniLM against ~1.8M parameters per layer). Pruning it to the token ids seen in the
training corpus keeps the teacher's tokenizer unchanged: the model stores an ``id_map``
``(V_orig,)`` that sends each tokenizer id to its new row, and every id that was not
kept to the new row of ``[UNK]``.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from distillery.ml.models.modeling import TextClassifier

logger = logging.getLogger(__name__)

# int32 halves the map's size against int64 (30522 ids: 122 KB vs 244 KB) and is
# accepted both by torch's embedding lookup and by ONNX Gather as indices.
ID_MAP_DTYPE = torch.int32


def used_token_ids(
    token_id_lists: Iterable[Sequence[int]],
    special_ids: Iterable[int],
    min_count: int = 1,
) -> list[int]:
    """Token ids that occur at least ``min_count`` times, plus the special ids.

    Args:
        token_id_lists: Tokenized texts (e.g. ``tokenizer(texts)["input_ids"]``).
        special_ids: Ids that must always survive (``[PAD]``, ``[UNK]``, ``[CLS]``,
            ``[SEP]``, ``[MASK]``), whether or not they occur.
        min_count: Minimum number of occurrences over the whole corpus.

    Returns:
        Sorted, unique ids.

    Raises:
        ValueError: If ``min_count`` is below 1 or an id is negative.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts: Counter[int] = Counter()
    for ids in token_id_lists:
        counts.update(int(i) for i in ids)
    keep = {i for i, n in counts.items() if n >= min_count}
    keep.update(int(i) for i in special_ids)
    if keep and min(keep) < 0:
        raise ValueError(f"token ids must be non-negative, got {min(keep)}")
    logger.info(
        "%d distinct token ids seen, %d kept (min_count=%d, specials included)",
        len(counts),
        len(keep),
        min_count,
    )
    return sorted(keep)


def build_id_map(keep_ids: Sequence[int], unk_id: int, vocab_size: int) -> torch.Tensor:
    """Map every original id to its row in the pruned matrix (``[UNK]``'s if dropped).

    Args:
        keep_ids: Original ids to keep; ``unk_id`` is added if missing.
        unk_id: Original id of ``[UNK]``.
        vocab_size: Size of the original vocabulary.

    Returns:
        ``(vocab_size,)`` tensor of dtype :data:`ID_MAP_DTYPE`.

    Raises:
        ValueError: If an id is outside ``[0, vocab_size)``.
    """
    kept = sorted(set(int(i) for i in keep_ids) | {int(unk_id)})
    if kept[0] < 0 or kept[-1] >= vocab_size:
        raise ValueError(
            f"kept ids must lie in [0, {vocab_size}); got range [{kept[0]}, {kept[-1]}]"
        )
    kept_t = torch.tensor(kept, dtype=torch.long)
    new_unk = int(torch.searchsorted(kept_t, torch.tensor(unk_id)))
    id_map = torch.full((vocab_size,), new_unk, dtype=torch.long)
    id_map[kept_t] = torch.arange(len(kept))
    return id_map.to(ID_MAP_DTYPE)


def prune_vocabulary(
    model: TextClassifier, keep_ids: Sequence[int], unk_id: int
) -> TextClassifier:
    """Return a copy of ``model`` whose word embeddings hold only ``keep_ids``.

    ``keep_ids`` and ``unk_id`` are ids of the original tokenizer. If ``model`` is
    already pruned, the maps compose (a dropped id stays dropped; ids to keep must
    have survived the earlier pruning or they fall back to ``[UNK]``).

    Args:
        model: Classifier to prune; not modified.
        keep_ids: Original token ids whose embeddings are kept (specials included).
        unk_id: Original id of ``[UNK]``; always kept.

    Returns:
        A new ``TextClassifier`` with ``config.vocab_size == len(kept)`` and an
        ``id_map`` buffer, giving identical logits on kept ids.

    Raises:
        ValueError: If an id is outside the tokenizer's vocabulary.
    """
    old_map = model.id_map
    orig_vocab = model.config.vocab_size if old_map is None else old_map.numel()
    id_map = build_id_map(keep_ids, unk_id, orig_vocab)  # (V_orig,) -> new rows
    kept_orig = sorted(set(int(i) for i in keep_ids) | {int(unk_id)})
    rows = torch.tensor(kept_orig, dtype=torch.long)  # new row r <- original id
    if old_map is not None:
        rows = old_map[rows].long()  # original id -> row of the current matrix

    encoder = copy.deepcopy(model.encoder)
    old_emb = encoder.get_input_embeddings()
    weight = old_emb.weight.detach()[rows].clone()  # (V_new, H)
    pad_id = encoder.config.pad_token_id
    # padding_idx only freezes that row's gradient; never point it at [UNK]'s row.
    new_pad = int(id_map[pad_id]) if pad_id in kept_orig else None
    new_emb = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=new_pad)
    with torch.no_grad():
        new_emb.weight.copy_(weight)
    encoder.set_input_embeddings(new_emb)
    encoder.config.vocab_size = weight.shape[0]
    encoder.config.pad_token_id = new_pad

    pruned = TextClassifier(encoder, model.labels, model.dropout_p, id_map=id_map)
    pruned.head.load_state_dict(model.head.state_dict())
    pruned.train(model.training)
    logger.info(
        "Pruned vocabulary %d -> %d rows (unk %d -> %d)",
        orig_vocab,
        weight.shape[0],
        unk_id,
        int(id_map[unk_id]),
    )
    return pruned
