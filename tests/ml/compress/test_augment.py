"""Dropped-word copies of training texts (the distillation transfer set)."""

from __future__ import annotations

import pytest

from distillery.ml.compress.distill import drop_words

TEXTS = [
    "I don't want either! that was the worst game of the season",
    "love it",
    "ok",
    "",
]


def test_drop_words_keeps_order_and_at_least_one_word() -> None:
    out = drop_words(TEXTS * 50, rate=0.5, seed=0)
    assert len(out) == 200
    for original, shorter in zip(TEXTS * 50, out, strict=True):
        words = original.split()
        kept = shorter.split()
        assert len(kept) >= min(1, len(words))
        # A subsequence of the original words, in order.
        it = iter(words)
        assert all(word in it for word in kept)
    long_copies = out[0::4]
    assert any(len(c.split()) < len(TEXTS[0].split()) for c in long_copies)
    assert out[2::4] == ["ok"] * 50 and out[3::4] == [""] * 50  # nothing to drop


def test_drop_words_is_seeded_and_rate_zero_changes_nothing() -> None:
    assert drop_words(TEXTS, 0.3, seed=1) == drop_words(TEXTS, 0.3, seed=1)
    assert drop_words(TEXTS * 20, 0.3, seed=1) != drop_words(TEXTS * 20, 0.3, seed=2)
    assert drop_words(TEXTS, 0.0, seed=1) == [" ".join(t.split()) for t in TEXTS]
    with pytest.raises(ValueError, match=r"word dropout must be in \[0, 1\)"):
        drop_words(TEXTS, 1.0, seed=1)
