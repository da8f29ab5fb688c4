"""Why a model decides as it does: word attributions, and how far to trust them.

Two attribution methods, both at the level of the words a reader sees (the text as the
model reads it, normalised, split on whitespace):

- :func:`leave_one_out` works on any :class:`~distillery.ml.serve.inference.Predictor`
  (the ONNX student, the ONNX teacher, the TF-IDF baseline): a word's weight is how much
  the explained class's probability drops when that word alone is removed. Every
  variant of every text goes through one ``predict_proba`` call, so a tweet costs a few
  milliseconds with the student.
- :func:`integrated_gradients` (Captum) works on a PyTorch ``TextClassifier``, teacher
  or student: the gradient of the class probability integrated along the path from a
  baseline of padding tokens to the text, summed over each word's sub-word tokens.

:func:`deletion_curve` measures whether the weights are faithful (removing the top
words should hurt the prediction more than removing random ones), and
:func:`attribution_agreement` whether the student leans on the same words as its
teacher.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from distillery.ml.models.modeling import TextClassifier
from distillery.ml.serve.inference import Predictor

MAX_WORDS = 64  # words explained per text; a tweet has about 15
_PUNCTUATION = ".,!?:;\"'()[]…"  # stripped from a word's ends when words are pooled


@dataclass(frozen=True)
class Explanation:
    """The words of one text and the weight of each toward one class.

    Attributes:
        text: The text as the model reads it (normalised).
        words: ``text`` split on whitespace, at most ``MAX_WORDS`` of them.
        weights: One per word; positive pushes toward ``label``.
        label: The class explained (by default the predicted one).
        probability: The model's probability of ``label`` for the whole text.
    """

    text: str
    words: tuple[str, ...]
    weights: tuple[float, ...]
    label: str
    probability: float

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` words that push hardest toward the label, strongest first."""
        order = sorted(range(len(self.words)), key=lambda i: -self.weights[i])
        return [(self.words[i], self.weights[i]) for i in order[:k]]

    def top_tokens(self, k: int = 3) -> str:
        """``word:+0.123`` for the top ``k`` words, space-separated (a table cell)."""
        return " ".join(f"{word}:{weight:+.3f}" for word, weight in self.top(k))


def _words(text: str) -> list[str]:
    return text.split()[:MAX_WORDS]


def _without(words: Sequence[str], drop: set[int]) -> str:
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def _prepared(
    texts: Sequence[str], normalize: Callable[[str], str] | None
) -> list[tuple[str, list[str]]]:
    if any(not isinstance(t, str) for t in texts):
        raise ValueError("texts must be strings")
    normalized = [normalize(t) if normalize else " ".join(t.split()) for t in texts]
    return [(t, _words(t)) for t in normalized]


def leave_one_out(
    predictor: Predictor,
    texts: Sequence[str],
    *,
    normalize: Callable[[str], str] | None = None,
    targets: Sequence[int] | None = None,
) -> list[Explanation]:
    """Each word's weight: the explained class's probability drop without it.

    Args:
        predictor: Any predictor; it may normalise again (normalisation is idempotent).
        texts: Raw texts.
        normalize: The model's text normalisation, applied before splitting words.
        targets: Class index to explain per text; default the predicted class.

    Returns:
        One :class:`Explanation` per text, in order.

    Raises:
        ValueError: On a text that is not a string or targets of another length.
    """
    prepared = _prepared(texts, normalize)
    if targets is not None and len(targets) != len(prepared):
        raise ValueError(f"{len(targets)} targets for {len(prepared)} texts")
    variants = [text for text, _ in prepared]
    for _, words in prepared:
        variants += [_without(words, {i}) for i in range(len(words))]
    probabilities = predictor.predict_proba(variants)  # (N + sum of words, C)
    explanations, offset = [], len(prepared)
    for row, (text, words) in enumerate(prepared):
        full = probabilities[row]
        target = int(full.argmax()) if targets is None else int(targets[row])
        dropped = probabilities[offset : offset + len(words), target]
        offset += len(words)
        explanations.append(
            Explanation(
                text=text,
                words=tuple(words),
                weights=tuple(float(full[target] - p) for p in dropped),
                label=predictor.labels[target],
                probability=float(full[target]),
            )
        )
    return explanations


def _word_of_tokens(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """The index of the whitespace word each token lies in; -1 for special tokens."""
    starts, position = [], 0
    for word in text.split():
        position = text.index(word, position)
        starts.append((position, position + len(word)))
        position += len(word)
    owners = []
    for start, end in offsets:
        owner = -1
        if end > start:
            owner = next((i for i, (s, e) in enumerate(starts) if s <= start < e), -1)
        owners.append(owner)
    return owners


def integrated_gradients(  # noqa: PLR0913 - the model, the texts, the integral
    model: TextClassifier,
    tokenizer: object,
    texts: Sequence[str],
    *,
    normalize: Callable[[str], str] | None = None,
    max_length: int = 128,
    steps: int = 32,
) -> list[Explanation]:
    """Integrated gradients of the predicted class's probability, per word (Captum).

    The baseline keeps the special tokens and replaces every other token by padding;
    a word's weight is the sum over its sub-word tokens' embedding attributions. By
    the method's completeness, the weights add up to about the probability of the
    text minus that of the baseline.

    Args:
        model: A PyTorch classifier (teacher or student), put in eval mode.
        tokenizer: Its fast tokenizer (offsets are needed to find words).
        texts: Raw texts.
        normalize: The model's text normalisation.
        max_length: Truncation length.
        steps: Points on the integration path.

    Returns:
        One :class:`Explanation` per text, for the predicted class.
    """
    from captum.attr import LayerIntegratedGradients  # noqa: PLC0415 - optional cost

    model = model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    special = set(tokenizer.all_special_ids)

    def probabilities(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(ids, mask).float(), dim=-1)  # (B, C)

    method = LayerIntegratedGradients(
        probabilities, model.encoder.get_input_embeddings()
    )
    explanations = []
    for text, words in _prepared(texts, normalize):
        encoded = tokenizer(
            text, truncation=True, max_length=max_length, return_offsets_mapping=True
        )
        ids = torch.tensor([encoded["input_ids"]])  # (1, T)
        mask = torch.ones_like(ids)
        baseline = torch.where(
            torch.tensor([[i in special for i in encoded["input_ids"]]]), ids, pad
        )
        with torch.no_grad():
            full = probabilities(ids, mask)[0]
        target = int(full.argmax())
        attributions = method.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=(mask,),
            target=target,
            n_steps=steps,
        )  # (1, T, H)
        per_token = attributions.sum(-1)[0].detach().float().numpy()  # (T,)
        weights = np.zeros(len(words))
        for token, owner in enumerate(_word_of_tokens(text, encoded["offset_mapping"])):
            if 0 <= owner < len(words):
                weights[owner] += per_token[token]
        explanations.append(
            Explanation(
                text=text,
                words=tuple(words),
                weights=tuple(float(w) for w in weights),
                label=model.labels[target],
                probability=float(full[target]),
            )
        )
    return explanations


def deletion_curve(
    predictor: Predictor,
    explanations: Sequence[Explanation],
    *,
    max_k: int = 5,
    seed: int = 0,
) -> dict[str, object]:
    """The explained class's probability drop as the top-k words are removed, against
    the drop when k random words are removed, for k = 1 .. ``max_k``.

    A text with fewer than k words loses all of them. The area under each curve is
    the mean drop over k; ``auc_gain`` (attributed minus random) is above 0 when the
    weights point at the words the model needs.

    Args:
        predictor: The model the explanations are of.
        explanations: Its explanations (their texts are already normalised).
        max_k: The most words removed.
        seed: Seed of the random words.

    Returns:
        ``{"k", "attributed_drop", "random_drop", "attributed_auc", "random_auc",
        "auc_gain", "auc_gain_low", "auc_gain_high", "texts"}``: the curves, their
        areas, and the gain with its 95% bootstrap interval over texts.

    Raises:
        ValueError: With no explanations or ``max_k`` < 1.
    """
    if not explanations or max_k < 1:
        raise ValueError(f"need explanations and max_k >= 1, got max_k={max_k}")
    rng = np.random.default_rng(seed)
    variants = []
    for e in explanations:
        ranked = sorted(range(len(e.words)), key=lambda i: -e.weights[i])
        shuffled = rng.permutation(len(e.words)).tolist()
        for k in range(1, max_k + 1):
            variants.append(_without(e.words, set(ranked[:k])))
            variants.append(_without(e.words, set(shuffled[:k])))
    probabilities = predictor.predict_proba(variants).reshape(
        len(explanations), max_k, 2, -1
    )  # (N, K, attributed|random, C)
    column = [predictor.labels.index(e.label) for e in explanations]
    kept = probabilities[np.arange(len(explanations)), :, :, column]  # (N, K, 2)
    drop = np.array([e.probability for e in explanations])[:, None, None] - kept
    attributed, random = drop[..., 0].mean(0), drop[..., 1].mean(0)  # (K,)
    # The gain's 95% interval over texts: resample texts, keep each text's gain.
    gains = (drop[..., 0] - drop[..., 1]).mean(1)  # (N,)
    draws = rng.integers(0, len(gains), (1000, len(gains)))
    low, high = np.percentile(gains[draws].mean(1), [2.5, 97.5])
    return {
        "k": list(range(1, max_k + 1)),
        "attributed_drop": attributed.tolist(),
        "random_drop": random.tolist(),
        "attributed_auc": float(attributed.mean()),
        "random_auc": float(random.mean()),
        "auc_gain": float(attributed.mean() - random.mean()),
        "auc_gain_low": float(low),
        "auc_gain_high": float(high),
        "texts": len(explanations),
    }


def attribution_agreement(
    first: Sequence[Explanation], second: Sequence[Explanation], *, k: int = 3
) -> dict[str, float | int]:
    """How alike two models' word weights are on the same texts.

    Args:
        first: One model's explanations (e.g. the teacher's).
        second: The other's, of the same texts and, for a fair reading, the same
            classes (``leave_one_out(targets=...)``).
        k: Size of the top sets compared.

    Returns:
        ``{"spearman", "top_k_overlap", "texts", "k"}``: the mean rank correlation of
        the weights over texts of at least two words whose weights vary for both, and
        the mean share of the first model's top ``k`` words in the second's.

    Raises:
        ValueError: If the lists differ in length or a pair explains different texts.
    """
    if len(first) != len(second):
        raise ValueError(f"{len(first)} against {len(second)} explanations")
    correlations, overlaps = [], []
    for a, b in zip(first, second, strict=True):
        if a.words != b.words:
            raise ValueError(f"not the same text: {a.text!r} and {b.text!r}")
        if not a.words:
            continue
        size = min(k, len(a.words))
        top_a = {i for i, _ in _ranked(a)[:size]}
        top_b = {i for i, _ in _ranked(b)[:size]}
        overlaps.append(len(top_a & top_b) / size)
        if len(a.words) > 1 and np.ptp(a.weights) > 0 and np.ptp(b.weights) > 0:
            correlations.append(float(spearmanr(a.weights, b.weights).statistic))
    return {
        "spearman": float(np.mean(correlations)) if correlations else float("nan"),
        "top_k_overlap": float(np.mean(overlaps)) if overlaps else float("nan"),
        "texts": len(overlaps),
        "k": k,
    }


def _ranked(e: Explanation) -> list[tuple[int, float]]:
    return sorted(enumerate(e.weights), key=lambda item: -item[1])


def top_words_by_class(
    explanations: Sequence[Explanation], *, k: int = 10, min_count: int = 5
) -> dict[str, list[dict[str, float | int | str]]]:
    """The words with the highest mean weight toward each class, over many texts.

    Words are pooled lower-cased and without the punctuation at their ends.

    Args:
        explanations: Explanations of many texts (each toward its own label).
        k: Words listed per class.
        min_count: Texts a word must appear in (for that class) to be listed.

    Returns:
        ``{label: [{"word", "mean_weight", "texts"}, ...]}``, strongest first.
    """
    weights: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in explanations:
        for word, weight in zip(e.words, e.weights, strict=True):
            # "Thanks!" and "thanks" are one word to a reader; "#" and "@" stay.
            key = word.lower().strip(_PUNCTUATION) or word.lower()
            weights[e.label][key].append(weight)
    table = {}
    for label in sorted(weights):
        rows = [
            {"word": word, "mean_weight": float(np.mean(w)), "texts": len(w)}
            for word, w in weights[label].items()
            if len(w) >= min_count
        ]
        table[label] = sorted(rows, key=lambda r: -r["mean_weight"])[:k]
    return table


def format_explanation(explanation: Explanation) -> str:
    """One line for a terminal: the label, then every word with its weight."""
    words = " ".join(
        f"{w}({v:+.3f})"
        for w, v in zip(explanation.words, explanation.weights, strict=True)
    )
    return f"{explanation.label} ({explanation.probability:.3f}): {words}"


def render_html(explanations: Sequence[Explanation], title: str) -> str:
    """A standalone page: each text with its words highlighted by weight.

    Green pushes toward the explained label, red away from it; the stronger the
    weight (relative to the text's strongest), the deeper the colour.
    """
    rows = []
    for e in explanations:
        scale = max((abs(w) for w in e.weights), default=0.0) or 1.0
        spans = []
        for word, weight in zip(e.words, e.weights, strict=True):
            alpha = min(abs(weight) / scale, 1.0)
            rgb = "22, 163, 74" if weight >= 0 else "220, 38, 38"
            spans.append(
                f'<span title="{weight:+.4f}" style="background: '
                f'rgba({rgb}, {alpha:.2f})">{html.escape(word)}</span>'
            )
        rows.append(
            f"<p><b>{html.escape(e.label)}</b> ({e.probability:.3f}): "
            f"{' '.join(spans)}</p>"
        )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Green words push toward the predicted label, red ones away from it "
        "(hover for the weight).</p>"
        f"{''.join(rows)}</body></html>\n"
    )
