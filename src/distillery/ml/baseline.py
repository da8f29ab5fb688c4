"""TF-IDF + logistic regression baseline, with pickle-free persistence.

The baseline is the bar every neural model must clear (and the fallback if none
does): word unigrams and bigrams, sublinear term frequency, terms seen in at least
two documents, multinomial logistic regression (lbfgs, L2, ``C=1``).

Persistence never pickles (project rule: no unpickling of files that could have
been tampered with, and ``skops`` is not available): :func:`save_baseline` writes
the vocabulary, hyper-parameters and class names to JSON and the idf, coefficients
and intercepts to an ``.npz`` read with ``allow_pickle=False``;
:func:`load_baseline` rebuilds an equivalent fitted ``Pipeline`` from them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)

META_FILE = "baseline.json"
ARRAYS_FILE = "baseline.npz"
FORMAT_VERSION = 1

# Hyper-parameters, stored with the model so a reload rebuilds the same transform.
VECTORIZER_PARAMS: dict[str, object] = {
    "ngram_range": (1, 2),
    "sublinear_tf": True,
    "min_df": 2,
    "lowercase": True,
    "strip_accents": None,
    "norm": "l2",
    "smooth_idf": True,
    "dtype": "float64",
}
MAX_ITER = 2000  # lbfgs on ~40k tweets x ~60k features converges well within this


def _vectorizer(**overrides: object) -> TfidfVectorizer:
    params = dict(VECTORIZER_PARAMS, **overrides)
    params["ngram_range"] = tuple(params["ngram_range"])  # JSON gives a list
    params["dtype"] = np.dtype(str(params["dtype"])).type
    return TfidfVectorizer(**params)


def fit_baseline(texts: Sequence[str], labels: Sequence[str], seed: int) -> Pipeline:
    """Fit the TF-IDF + logistic regression baseline.

    Args:
        texts: Training texts (already normalized).
        labels: One label per text.
        seed: Random state for the classifier (lbfgs itself is deterministic).

    Returns:
        A fitted ``Pipeline`` with steps ``tfidf`` and ``clf``.

    Raises:
        ValueError: If lengths differ or fewer than two classes are present.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ValueError("the baseline needs at least two classes")
    pipeline = Pipeline(
        [
            ("tfidf", _vectorizer()),
            ("clf", LogisticRegression(max_iter=MAX_ITER, random_state=seed)),
        ]
    )
    pipeline.fit(list(texts), list(labels))
    logger.info(
        "Fitted baseline: %d features, classes %s",
        len(pipeline.named_steps["tfidf"].vocabulary_),
        list(pipeline.named_steps["clf"].classes_),
    )
    return pipeline


def save_baseline(pipeline: Pipeline, path: str | Path) -> None:
    """Write a fitted baseline to ``path`` (a folder) as JSON + npz, no pickle.

    Args:
        pipeline: Pipeline returned by :func:`fit_baseline`.
        path: Output folder; created if missing.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tfidf: TfidfVectorizer = pipeline.named_steps["tfidf"]
    clf: LogisticRegression = pipeline.named_steps["clf"]
    terms = [""] * len(tfidf.vocabulary_)
    for term, index in tfidf.vocabulary_.items():
        terms[index] = term
    meta = {
        "format_version": FORMAT_VERSION,
        "sklearn_version": sklearn.__version__,
        "vectorizer_params": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in VECTORIZER_PARAMS.items()
        },
        "classes": [str(c) for c in clf.classes_],
        "terms": terms,  # index i of the feature vector is terms[i]
    }
    (path / META_FILE).write_text(json.dumps(meta, ensure_ascii=False))
    np.savez_compressed(
        path / ARRAYS_FILE, idf=tfidf.idf_, coef=clf.coef_, intercept=clf.intercept_
    )
    logger.info("Saved baseline (%d terms) to %s", len(terms), path)


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
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as arrays:
        idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
    terms: list[str] = meta["terms"]
    classes = np.asarray(meta["classes"], dtype=object)
    if idf.shape != (len(terms),) or coef.shape[1] != len(terms):
        raise ValueError(
            f"arrays do not match the {len(terms)}-term vocabulary: "
            f"idf {idf.shape}, coef {coef.shape}"
        )
    vocabulary = {term: i for i, term in enumerate(terms)}
    tfidf = _vectorizer(**meta["vectorizer_params"], vocabulary=vocabulary)
    tfidf.idf_ = idf
    clf = LogisticRegression(max_iter=MAX_ITER)
    clf.classes_ = classes
    clf.coef_ = coef
    clf.intercept_ = intercept
    clf.n_features_in_ = len(terms)
    if meta.get("sklearn_version") != sklearn.__version__:
        logger.warning(
            "Baseline saved with scikit-learn %s, loaded with %s",
            meta.get("sklearn_version"),
            sklearn.__version__,
        )
    return Pipeline([("tfidf", tfidf), ("clf", clf)])


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
