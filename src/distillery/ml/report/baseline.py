"""Word + character TF-IDF with logistic regression: the classical baseline.

This is what a user gets in half a minute without distillery, so it is tuned, not a
straw man: word n-grams and ``char_wb`` n-grams side by side (sublinear tf, terms in
at least two documents), multinomial logistic regression with balanced class weights.
The n-gram ranges and ``C`` come from a small grid scored on the *validation* split
(:func:`fit_baseline`); the test split is never looked at here.

Persistence never pickles (project rule: no unpickling of files that could have
been tampered with, and ``skops`` is not available): :func:`save_baseline` writes
each vectorizer's vocabulary and hyper-parameters and the class names to JSON and
the idf, coefficients and intercepts to an ``.npz`` read with ``allow_pickle=False``;
:func:`load_baseline` rebuilds an equivalent fitted ``Pipeline`` from them.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import FeatureUnion, Pipeline

logger = logging.getLogger(__name__)

META_FILE = "baseline.json"
ARRAYS_FILE = "baseline.npz"
FORMAT_VERSION = 2

# Shared by both vectorizers; the n-gram ranges come from the grid.
VECTORIZER_PARAMS: dict[str, object] = {
    "sublinear_tf": True,
    "min_df": 2,
    "lowercase": True,
    "strip_accents": None,
    "norm": "l2",
    "smooth_idf": True,
    "dtype": "float64",
}
MAX_ITER = 2000  # lbfgs on ~30k tweets x ~300k features converges well within this


@dataclass(frozen=True)
class BaselineGrid:
    """The settings tried on the validation split (every combination).

    Attributes:
        word_ngrams: ``(min_n, max_n)`` ranges of word n-grams; ``None`` = no words.
        char_ngrams: ``(min_n, max_n)`` ranges of ``char_wb`` n-grams; ``None`` = none.
        C: Inverse regularisation strengths of the logistic regression.
    """

    word_ngrams: tuple[tuple[int, int] | None, ...] = ((1, 2),)
    char_ngrams: tuple[tuple[int, int] | None, ...] = ((2, 5),)
    C: tuple[float, ...] = (1.0, 4.0, 16.0)

    def __post_init__(self) -> None:
        for name in ("word_ngrams", "char_ngrams"):
            ranges = tuple(None if r is None else tuple(r) for r in getattr(self, name))
            if not ranges or any(
                r is not None and not 1 <= r[0] <= r[1] for r in ranges
            ):
                raise ValueError(f"baseline {name} must list (min_n, max_n) ranges")
            object.__setattr__(self, name, ranges)
        object.__setattr__(self, "C", tuple(float(c) for c in self.C))
        if not self.C or min(self.C) <= 0:
            raise ValueError(f"baseline C must list positive numbers, got {self.C}")
        if all(w is None and c is None for w, c in self._features()):
            raise ValueError("the baseline grid needs word or char n-grams")

    def _features(self) -> list[tuple[tuple[int, int] | None, ...]]:
        return [
            (w, c)
            for w, c in itertools.product(self.word_ngrams, self.char_ngrams)
            if w is not None or c is not None
        ]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> BaselineGrid:
        """Build from a parameters mapping (lists instead of tuples)."""
        return cls(**{k: tuple(v) for k, v in (values or {}).items()})


def _vectorizer(
    kind: str, ngram_range: Sequence[int], **overrides: object
) -> TfidfVectorizer:
    params = dict(VECTORIZER_PARAMS, **overrides)
    params["dtype"] = np.dtype(str(params["dtype"])).type
    if kind == "char":
        params["analyzer"] = "char_wb"
    return TfidfVectorizer(ngram_range=tuple(ngram_range), **params)


def _features(word: Sequence[int] | None, char: Sequence[int] | None) -> FeatureUnion:
    parts = [("word", _vectorizer("word", word))] if word is not None else []
    if char is not None:
        parts.append(("char", _vectorizer("char", char)))
    return FeatureUnion(parts)


def _classifier(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(
        C=c, class_weight="balanced", max_iter=MAX_ITER, random_state=seed
    )


def fit_baseline(  # noqa: PLR0917 - train, then validation, then how
    texts: Sequence[str],
    labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    grid: BaselineGrid | None = None,
    seed: int = 42,
) -> tuple[Pipeline, list[dict[str, Any]]]:
    """Fit the baseline on the training texts, choosing its settings on validation.

    Each n-gram combination is vectorized once and every ``C`` fitted on it; the
    setting with the best validation macro-F1 is kept (ties: the first tried).

    Args:
        texts: Training texts (already normalized).
        labels: One label per training text.
        val_texts: Validation texts, for the choice only.
        val_labels: Their labels.
        grid: The settings to try; default :class:`BaselineGrid`.
        seed: Random state for the classifier (lbfgs itself is deterministic).

    Returns:
        The fitted ``Pipeline`` (steps ``features`` and ``clf``) and one row per
        setting tried: ``word_ngrams``, ``char_ngrams``, ``C``, ``val_macro_f1``.

    Raises:
        ValueError: If lengths differ, fewer than two classes are present or the
            validation split is empty.
    """
    if len(texts) != len(labels) or len(val_texts) != len(val_labels):
        raise ValueError(
            f"{len(texts)} texts but {len(labels)} labels, {len(val_texts)} "
            f"validation texts but {len(val_labels)} labels"
        )
    if len(set(labels)) < 2:
        raise ValueError("the baseline needs at least two classes")
    if not val_texts:
        raise ValueError("the baseline is tuned on validation texts; none were given")
    grid = grid or BaselineGrid()
    tried: list[dict[str, Any]] = []
    best: tuple[float, Pipeline] | None = None
    for word, char in grid._features():
        features = _features(word, char)
        x_train = sp.csr_matrix(features.fit_transform(list(texts)))
        x_val = features.transform(list(val_texts))
        for c in grid.C:
            clf = _classifier(c, seed).fit(x_train, list(labels))
            score = float(
                f1_score(list(val_labels), clf.predict(x_val), average="macro")
            )
            tried.append(
                {
                    "word_ngrams": list(word) if word else None,
                    "char_ngrams": list(char) if char else None,
                    "C": c,
                    "val_macro_f1": score,
                }
            )
            logger.info("Baseline %s: validation macro-F1 %.4f", tried[-1], score)
            if best is None or score > best[0]:
                best = (score, Pipeline([("features", features), ("clf", clf)]))
    assert best is not None  # the grid is never empty (BaselineGrid checks)
    pipeline = best[1]
    logger.info(
        "Chose baseline %s (validation macro-F1 %.4f): %d features, classes %s",
        max(tried, key=lambda r: r["val_macro_f1"]),
        best[0],
        sum(
            len(v.vocabulary_)
            for _, v in pipeline.named_steps["features"].transformer_list
        ),
        list(pipeline.named_steps["clf"].classes_),
    )
    return pipeline, tried


def save_baseline(pipeline: Pipeline, path: str | Path) -> None:
    """Write a fitted baseline to ``path`` (a folder) as JSON + npz, no pickle.

    Args:
        pipeline: Pipeline returned by :func:`fit_baseline`.
        path: Output folder; created if missing.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clf: LogisticRegression = pipeline.named_steps["clf"]
    vectorizers = []
    arrays: dict[str, np.ndarray] = {
        "coef": clf.coef_,
        "intercept": clf.intercept_,
    }
    for name, tfidf in pipeline.named_steps["features"].transformer_list:
        terms = [""] * len(tfidf.vocabulary_)
        for term, index in tfidf.vocabulary_.items():
            terms[index] = term
        vectorizers.append(
            {
                "name": name,
                "ngram_range": list(tfidf.ngram_range),
                "terms": terms,  # index i of this block of features is terms[i]
            }
        )
        arrays[f"idf_{name}"] = tfidf.idf_
    meta = {
        "format_version": FORMAT_VERSION,
        "sklearn_version": sklearn.__version__,
        "vectorizer_params": VECTORIZER_PARAMS,
        "vectorizers": vectorizers,
        "C": clf.C,
        "classes": [str(c) for c in clf.classes_],
    }
    (path / META_FILE).write_text(json.dumps(meta, ensure_ascii=False))
    np.savez_compressed(path / ARRAYS_FILE, **arrays)
    logger.info(
        "Saved baseline (%d terms) to %s",
        sum(len(v["terms"]) for v in vectorizers),
        path,
    )


def load_baseline(path: str | Path) -> Pipeline:
    """Rebuild a fitted baseline written by :func:`save_baseline`.

    Args:
        path: Folder holding ``baseline.json`` and ``baseline.npz``.

    Returns:
        A ``Pipeline`` whose predictions equal the saved one's.

    Raises:
        ValueError: On an unknown format version or inconsistent arrays.
    """
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported baseline format {meta.get('format_version')}")
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    parts = []
    for spec in meta["vectorizers"]:
        terms: list[str] = spec["terms"]
        idf = arrays[f"idf_{spec['name']}"]
        if idf.shape != (len(terms),):
            raise ValueError(
                f"{spec['name']} idf {idf.shape} does not match its "
                f"{len(terms)}-term vocabulary"
            )
        tfidf = _vectorizer(
            spec["name"],
            spec["ngram_range"],
            **meta["vectorizer_params"],
            vocabulary={term: i for i, term in enumerate(terms)},
        )
        tfidf.idf_ = idf
        parts.append((spec["name"], tfidf))
    n_features = sum(len(t.vocabulary) for _, t in parts)
    coef, intercept = arrays["coef"], arrays["intercept"]
    if coef.shape[1] != n_features:
        raise ValueError(
            f"coefficients {coef.shape} do not match the {n_features} features"
        )
    clf = _classifier(float(meta["C"]), 0)
    clf.classes_ = np.asarray(meta["classes"], dtype=object)
    clf.coef_ = coef
    clf.intercept_ = intercept
    clf.n_features_in_ = n_features
    if meta.get("sklearn_version") != sklearn.__version__:
        logger.warning(
            "Baseline saved with scikit-learn %s, loaded with %s",
            meta.get("sklearn_version"),
            sklearn.__version__,
        )
    return Pipeline([("features", FeatureUnion(parts)), ("clf", clf)])


class BaselinePredictor:
    """:class:`~distillery.ml.inference.Predictor` for the TF-IDF baseline.

    Args:
        pipeline: Fitted pipeline (from :func:`fit_baseline` or
            :func:`load_baseline`).
        normalize: Optional text normalizer applied before vectorizing.
    """

    def __init__(
        self, pipeline: Pipeline, normalize: Callable[[str], str] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.normalize = normalize
        self._labels = [str(c) for c in pipeline.named_steps["clf"].classes_]

    @property
    def labels(self) -> list[str]:
        """Class names in column order (sorted, as scikit-learn orders them)."""
        return self._labels

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Return ``(N, C)`` float32 class probabilities.

        Args:
            texts: Raw texts (normalized by ``normalize`` if one was given).

        Returns:
            Probabilities in the order of ``texts`` and :attr:`labels`.
        """
        if not texts:
            return np.empty((0, len(self._labels)), dtype=np.float32)
        if self.normalize is not None:
            texts = [self.normalize(t) for t in texts]
        return self.pipeline.predict_proba(list(texts)).astype(np.float32)
