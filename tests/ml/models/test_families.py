"""TextClassifier over teachers of every family: pooling, padding, save/load, tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from distillery.ml.models.modeling import (
    TextClassifier,
    is_decoder,
    last_token_pool,
    load_tokenizer,
    resolve_pooling,
)

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["what a lovely flight", "rude", "the crew was late, my bag is lost"]
POOLING = {
    "bert": "mean",
    "roberta": "mean",
    "deberta-v2": "mean",
    "modernbert": "mean",
    "electra": "mean",
    "xlm-roberta": "mean",
    "qwen2": "last",
    "llama": "last",
    "mistral": "last",
    "gemma": "last",
}


@pytest.mark.parametrize("family", sorted(POOLING))
def test_every_family_classifies_pads_and_round_trips(
    family: str, tiny_family_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tiny_family_dir(family)
    tokenizer = load_tokenizer(str(folder))
    model = TextClassifier.from_pretrained_encoder(str(folder), LABELS).eval()
    assert model.pooling == POOLING[family]
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"

    padded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    alone = tokenizer(TEXTS[1:2], return_tensors="pt")
    with torch.no_grad():
        logits = model(padded["input_ids"], padded["attention_mask"])
        single = model(alone["input_ids"], alone["attention_mask"])
    assert logits.shape == (3, 3)
    # Padding changes nothing, whichever token the family pools.
    torch.testing.assert_close(logits[1], single[0], atol=1e-5, rtol=0)

    model.save(tmp_path / "saved")
    again = TextClassifier.load(tmp_path / "saved")
    assert again.pooling == model.pooling
    with torch.no_grad():
        torch.testing.assert_close(
            again(padded["input_ids"], padded["attention_mask"]), logits
        )


def test_a_decoder_gives_the_same_logits_left_or_right_padded(
    tiny_family_dir: Callable[[str], Path],
) -> None:
    folder = tiny_family_dir("qwen2")
    tokenizer = load_tokenizer(str(folder))
    model = TextClassifier.from_pretrained_encoder(str(folder), LABELS).eval()
    right = tokenizer(TEXTS, padding=True, return_tensors="pt")
    tokenizer.padding_side = "left"
    left = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert not torch.equal(left["input_ids"], right["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(
            model(left["input_ids"], left["attention_mask"]),
            model(right["input_ids"], right["attention_mask"]),
            atol=1e-5,
            rtol=0,
        )


def test_last_token_pool_picks_the_last_real_token_on_either_side() -> None:
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # (B, T, H)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pool(hidden, right).flatten().tolist() == [1.0, 7.0]
    assert last_token_pool(hidden, left).flatten().tolist() == [3.0, 7.0]


def test_pooling_can_be_overridden_and_is_checked(
    tiny_family_dir: Callable[[str], Path],
) -> None:
    folder = str(tiny_family_dir("qwen2"))
    model = TextClassifier.from_pretrained_encoder(folder, LABELS, pooling="mean")
    assert model.pooling == "mean"
    assert is_decoder(model.config)
    with pytest.raises(ValueError, match="pooling must be one of"):
        resolve_pooling("max", model.config)


def test_a_tokenizer_without_pad_pads_with_end_of_sequence(
    tiny_family_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    source = load_tokenizer(str(tiny_family_dir("llama")))
    bare = PreTrainedTokenizerFast(
        tokenizer_object=source.backend_tokenizer, eos_token=source.eos_token
    )
    assert bare.pad_token is None
    bare.save_pretrained(str(tmp_path / "tok"))
    tokenizer = load_tokenizer(str(tmp_path / "tok"))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"

    PreTrainedTokenizerFast(tokenizer_object=source.backend_tokenizer).save_pretrained(
        str(tmp_path / "none")
    )
    with pytest.raises(ValueError, match="neither a pad nor an end-of-sequence"):
        load_tokenizer(str(tmp_path / "none"))


def test_roberta_positions_start_after_the_pad_id(
    tiny_family_dir: Callable[[str], Path],
) -> None:
    model = TextClassifier.from_pretrained_encoder(
        str(tiny_family_dir("roberta")), LABELS
    )
    # 160 rows, numbered from pad id 1 + 1: 158 tokens fit.
    assert model.config.max_position_embeddings == 160
    assert model.max_positions == 158
    ids = torch.full((1, 158), 5)
    with torch.no_grad():
        assert model(ids, torch.ones_like(ids)).shape == (1, 3)
    qwen = TextClassifier.from_pretrained_encoder(str(tiny_family_dir("qwen2")), LABELS)
    assert qwen.max_positions == 256


def test_train_options_check_the_pooling() -> None:
    from distillery.ml.train.config import TrainConfig  # noqa: PLC0415

    assert TrainConfig(pooling="last").pooling == "last"
    with pytest.raises(ValueError, match="pooling must be one of"):
        TrainConfig(pooling="max")
