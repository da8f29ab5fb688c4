"""Vocabulary pruning: exact logits on kept ids, [UNK] for the rest, save/load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from distillery.ml.compress.vocab import (
    ID_MAP_DTYPE,
    build_id_map,
    prune_vocabulary,
    used_token_ids,
)
from distillery.ml.models.modeling import TextClassifier

PAD, UNK, CLS, SEP = 0, 1, 2, 3
SPECIALS = [PAD, UNK, CLS, SEP]


@pytest.fixture
def model(tiny_classifier: Callable[..., TextClassifier]) -> TextClassifier:
    return tiny_classifier(["a", "b", "c"])


@pytest.fixture
def corpus() -> list[list[int]]:
    """Tokenized texts using ids 10..39 (twice) and 40 (once)."""
    body = [[CLS, *range(i, i + 5), SEP] for i in range(10, 40, 5)]
    return body + body + [[CLS, 40, SEP]]


def _logits(model: TextClassifier, input_ids: torch.Tensor) -> torch.Tensor:
    attention_mask = (input_ids != PAD).long()
    with torch.no_grad():
        return model(input_ids, attention_mask)


def test_used_token_ids_counts_and_keeps_specials(corpus: list[list[int]]) -> None:
    once = used_token_ids(corpus, special_ids=[*SPECIALS, 4], min_count=1)
    twice = used_token_ids(corpus, special_ids=SPECIALS, min_count=2)
    assert once == [0, 1, 2, 3, 4, *range(10, 41)]
    assert twice == [0, 1, 2, 3, *range(10, 40)]  # 40 occurs once


@pytest.mark.parametrize("min_count", [0, -1])
def test_used_token_ids_rejects_min_count_below_one(min_count: int) -> None:
    with pytest.raises(ValueError, match="min_count"):
        used_token_ids([[1, 2]], [0], min_count=min_count)


def test_pruned_model_gives_identical_logits_on_kept_ids(
    model: TextClassifier, corpus: list[list[int]]
) -> None:
    keep = used_token_ids(corpus, SPECIALS)
    pruned = prune_vocabulary(model, keep, unk_id=UNK)
    assert pruned.config.vocab_size == len(keep)
    assert pruned.encoder.embeddings.word_embeddings.weight.shape == (len(keep), 32)
    assert pruned.id_map.dtype == ID_MAP_DTYPE and pruned.id_map.shape == (100,)
    input_ids = torch.tensor([[CLS, 10, 22, 35, 40, SEP], [CLS, 11, 12, SEP, PAD, PAD]])
    assert torch.equal(_logits(pruned, input_ids), _logits(model, input_ids))
    assert model.id_map is None  # the input model is not modified


def test_dropped_ids_behave_like_unk(model: TextClassifier, corpus) -> None:
    pruned = prune_vocabulary(model, used_token_ids(corpus, SPECIALS), unk_id=UNK)
    with_oov = torch.tensor([[CLS, 10, 77, 95, SEP]])  # 77 and 95 were never seen
    as_unk = torch.tensor([[CLS, 10, UNK, UNK, SEP]])
    assert torch.equal(_logits(pruned, with_oov), _logits(model, as_unk))
    assert int(pruned.id_map[77]) == int(pruned.id_map[UNK])


def test_pruned_model_round_trips_through_save_load(
    model: TextClassifier, corpus, tmp_path: Path
) -> None:
    pruned = prune_vocabulary(model, used_token_ids(corpus, SPECIALS), unk_id=UNK)
    pruned.save(tmp_path / "pruned")
    loaded = TextClassifier.load(tmp_path / "pruned")
    assert torch.equal(loaded.id_map, pruned.id_map)
    input_ids = torch.tensor([[CLS, 10, 77, 39, SEP]])
    assert torch.equal(_logits(loaded, input_ids), _logits(pruned, input_ids))


def test_pruning_twice_equals_pruning_once(model: TextClassifier) -> None:
    wide = prune_vocabulary(model, [*SPECIALS, *range(10, 60)], unk_id=UNK)
    narrow_keep = [*SPECIALS, *range(20, 30)]
    twice = prune_vocabulary(wide, narrow_keep, unk_id=UNK)
    once = prune_vocabulary(model, narrow_keep, unk_id=UNK)
    assert torch.equal(twice.id_map, once.id_map)
    input_ids = torch.tensor([[CLS, 25, 15, 70, SEP]])
    assert torch.equal(_logits(twice, input_ids), _logits(once, input_ids))


def test_build_id_map_adds_unk_and_rejects_out_of_range_ids() -> None:
    id_map = build_id_map([0, 5, 7], unk_id=3, vocab_size=10)
    assert id_map.tolist() == [0, 1, 1, 1, 1, 2, 1, 3, 1, 1]
    with pytest.raises(ValueError, match="kept ids"):
        build_id_map([0, 10], unk_id=1, vocab_size=10)
