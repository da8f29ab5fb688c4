"""TF-IDF + logistic regression baseline: learns, round-trips without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline

from distillery.ml.report.baseline import (
    ARRAYS_FILE,
    META_FILE,
    BaselineGrid,
    BaselinePredictor,
    fit_baseline,
    load_baseline,
    save_baseline,
)
from distillery.ml.serve.inference import Predictor, predict_labels

WORDS = {
    "negative": ["awful", "broken", "late", "refund", "worst"],
    "neutral": ["delivery", "tuesday", "box", "order", "store"],
    "positive": ["great", "love", "perfect", "happy", "best"],
}


def make_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts whose words mostly come from their label's list, plus shared noise."""
    rng = np.random.default_rng(seed)
    names = sorted(WORDS)
    texts, labels = [], []
    for i in range(n):
        label = names[i % 3]
        words = list(rng.choice(WORDS[label], size=3)) + list(
            rng.choice(["the", "a", "it"], size=2)
        )
        texts.append(" ".join(rng.permutation(words)))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    return make_corpus(90, seed=0)


GRID = BaselineGrid(word_ngrams=[[1, 2], None], char_ngrams=[[2, 4], None], C=[0.01, 4])


@pytest.fixture(scope="module")
def fitted(corpus) -> tuple[Pipeline, list[dict]]:
    return fit_baseline(*corpus, *make_corpus(30, seed=5), grid=GRID, seed=0)


@pytest.fixture(scope="module")
def pipeline(fitted) -> Pipeline:
    return fitted[0]


def test_every_setting_is_scored_on_validation_and_the_best_kept(fitted) -> None:
    pipeline, tried = fitted
    # (words, chars), (words only), (chars only) x 2 values of C; (None, None) skipped.
    assert len(tried) == 6
    assert {(str(r["word_ngrams"]), str(r["char_ngrams"])) for r in tried} == {
        ("[1, 2]", "[2, 4]"),
        ("[1, 2]", "None"),
        ("None", "[2, 4]"),
    }
    best = max(tried, key=lambda r: r["val_macro_f1"])
    assert pipeline.named_steps["clf"].C == best["C"]
    names = [n for n, _ in pipeline.named_steps["features"].transformer_list]
    assert names == [k for k in ("word", "char") if best[f"{k}_ngrams"]]
    # The kept pipeline is the one that scored best on the validation texts.
    val_texts, val_labels = make_corpus(30, seed=5)
    assert best["val_macro_f1"] == f1_score(
        val_labels, pipeline.predict(val_texts), average="macro"
    )
    assert best["val_macro_f1"] > 0.9


def test_baseline_learns_a_separable_corpus(pipeline: Pipeline) -> None:
    texts, labels = make_corpus(30, seed=1)
    predictor = BaselinePredictor(pipeline)
    assert isinstance(predictor, Predictor)
    assert predictor.labels == ["negative", "neutral", "positive"]
    proba = predictor.predict_proba(texts)
    assert proba.shape == (30, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert predict_labels(predictor, texts) == labels


def test_word_and_char_ngrams_with_min_df(corpus) -> None:
    grid = BaselineGrid(word_ngrams=[[1, 2]], char_ngrams=[[2, 4]], C=[4])
    pipeline, _ = fit_baseline(*corpus, *make_corpus(9, seed=6), grid=grid, seed=0)
    word, char = (v for _, v in pipeline.named_steps["features"].transformer_list)
    assert any(" " in term for term in word.vocabulary_)  # word bigrams
    assert all(len(term) > 1 for term in word.vocabulary_)  # default token pattern
    assert char.analyzer == "char_wb"
    assert {len(t) for t in char.vocabulary_} == {2, 3, 4}


def test_save_load_round_trip_gives_identical_predictions(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    save_baseline(pipeline, tmp_path / "baseline")
    assert sorted(p.name for p in (tmp_path / "baseline").iterdir()) == sorted(
        [ARRAYS_FILE, META_FILE]
    )
    loaded = load_baseline(tmp_path / "baseline")
    texts, _ = make_corpus(40, seed=2)
    texts += ["completely unseen words", ""]
    np.testing.assert_array_equal(
        loaded.predict_proba(texts), pipeline.predict_proba(texts)
    )
    assert list(loaded.predict(texts)) == list(pipeline.predict(texts))


def test_saved_arrays_load_without_pickle(pipeline: Pipeline, tmp_path: Path) -> None:
    save_baseline(pipeline, tmp_path)
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)


def test_load_rejects_inconsistent_files(pipeline: Pipeline, tmp_path: Path) -> None:
    save_baseline(pipeline, tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    cut = [v | {"terms": v["terms"][:-1]} for v in meta["vectorizers"]]
    (tmp_path / META_FILE).write_text(json.dumps(meta | {"vectorizers": cut}))
    with pytest.raises(ValueError, match="vocabulary"):
        load_baseline(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(ValueError, match="format"):
        load_baseline(tmp_path)


def test_normalize_and_empty_input(pipeline: Pipeline) -> None:
    predictor = BaselinePredictor(pipeline, normalize=str.lower)
    plain = BaselinePredictor(pipeline)
    np.testing.assert_array_equal(
        predictor.predict_proba(["GREAT LOVE"]), plain.predict_proba(["great love"])
    )
    assert predictor.predict_proba([]).shape == (0, 3)


@pytest.mark.parametrize(
    ("texts", "labels", "val", "message"),
    [
        (["a b", "c d"], ["x"], ["a"], "labels"),
        (["a b", "c d"], ["x", "x"], ["a"], "two classes"),
        (["a b", "c d"], ["x", "y"], [], "validation"),
    ],
)
def test_fit_rejects_bad_input(
    texts: list[str], labels: list[str], val: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_baseline(texts, labels, val, ["x"] * len(val), seed=0)


@pytest.mark.parametrize(
    "values",
    [
        {"C": [0]},
        {"word_ngrams": [[2, 1]]},
        {"word_ngrams": [None], "char_ngrams": [None]},
    ],
)
def test_grid_rejects_nonsense(values: dict) -> None:
    with pytest.raises(ValueError, match="baseline"):
        BaselineGrid.from_dict(values)
