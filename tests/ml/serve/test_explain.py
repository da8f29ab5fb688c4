"""Word attributions: they find the words a model uses, add up, and can be checked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from distillery.ml.data.text import normalize_text
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.report.baseline import BaselinePredictor
from distillery.ml.serve.explain import (
    Explanation,
    attribution_agreement,
    deletion_curve,
    format_explanation,
    integrated_gradients,
    leave_one_out,
    render_html,
    top_words_by_class,
)


@pytest.fixture(scope="module")
def baseline(cue_model: Callable[[float], BaselinePredictor]) -> BaselinePredictor:
    return cue_model(4.0)


def test_leave_one_out_puts_the_cue_word_first(baseline: BaselinePredictor) -> None:
    texts = ["the   flight was great today @united", "my bag was awful at the gate"]
    first, second = leave_one_out(baseline, texts, normalize=normalize_text)
    assert first.text == "the flight was great today @user"  # as the model reads it
    assert first.words == tuple(first.text.split())
    assert (first.label, first.top(1)[0][0]) == ("positive", "great")
    assert (second.label, second.top(1)[0][0]) == ("negative", "awful")
    full = baseline.predict_proba([first.text])[0, baseline.labels.index("positive")]
    without = baseline.predict_proba(["the flight was today @user"])[0, 1]
    assert first.weights[3] == pytest.approx(full - without)
    assert first.top_tokens(1) == f"great:{first.weights[3]:+.3f}"


def test_leave_one_out_explains_the_class_it_is_asked_for(
    baseline: BaselinePredictor,
) -> None:
    (toward_negative,) = leave_one_out(baseline, ["great flight"], targets=[0])
    assert toward_negative.label == "negative"
    assert dict(toward_negative.top(2))["great"] < 0  # it pushes away from negative


def test_leave_one_out_is_deterministic_and_refuses_bad_input(
    baseline: BaselinePredictor, cue_corpus: Callable
) -> None:
    texts = cue_corpus(2, 10)[0]
    assert leave_one_out(baseline, texts) == leave_one_out(baseline, texts)
    with pytest.raises(ValueError, match="texts must be strings"):
        leave_one_out(baseline, ["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="1 targets for 2 texts"):
        leave_one_out(baseline, ["ok", "fine"], targets=[0])


def test_attributed_words_hurt_more_than_random_ones(
    baseline: BaselinePredictor, cue_corpus: Callable
) -> None:
    explanations = leave_one_out(baseline, cue_corpus(3, 80)[0])
    curve = deletion_curve(baseline, explanations, max_k=3, seed=0)
    assert curve["k"] == [1, 2, 3] and curve["texts"] == 80
    assert curve["attributed_auc"] > curve["random_auc"] + 0.2
    assert curve["auc_gain"] == pytest.approx(
        curve["attributed_auc"] - curve["random_auc"]
    )
    assert 0 < curve["auc_gain_low"] < curve["auc_gain"] < curve["auc_gain_high"]
    # Removing more words never helps the attributed curve here.
    assert curve["attributed_drop"] == sorted(curve["attributed_drop"])
    with pytest.raises(ValueError, match="max_k >= 1"):
        deletion_curve(baseline, explanations, max_k=0)


def test_agreement_is_full_with_itself_and_lower_with_reversed_weights() -> None:
    words = ("a", "b", "c", "d")
    one = Explanation("a b c d", words, (0.4, 0.3, 0.2, 0.1), "x", 0.9)
    reversed_ = Explanation("a b c d", words, (0.1, 0.2, 0.3, 0.4), "x", 0.9)
    assert attribution_agreement([one], [one]) == {
        "spearman": pytest.approx(1.0),
        "top_k_overlap": 1.0,
        "texts": 1,
        "k": 3,
    }
    crossed = attribution_agreement([one], [reversed_], k=2)
    assert crossed["spearman"] == pytest.approx(-1.0)
    assert crossed["top_k_overlap"] == 0.0
    other = Explanation("a b", ("a", "b"), (0.1, 0.2), "x", 0.9)
    with pytest.raises(ValueError, match="not the same text"):
        attribution_agreement([one], [other])


def test_top_words_by_class_and_the_page(
    baseline: BaselinePredictor, cue_corpus: Callable
) -> None:
    explanations = leave_one_out(baseline, cue_corpus(4, 60)[0])
    table = top_words_by_class(explanations, k=2, min_count=5)
    assert table["positive"][0]["word"] == "great"
    assert table["negative"][0]["word"] == "awful"
    pooled = top_words_by_class(
        [
            Explanation("Great!", ("Great!",), (0.5,), "x", 0.9),
            Explanation("great", ("great",), (0.3,), "x", 0.9),
            Explanation("#Great.", ("#Great.",), (0.1,), "x", 0.9),
        ],
        min_count=1,
    )
    assert pooled["x"] == [
        {"word": "great", "mean_weight": pytest.approx(0.4), "texts": 2},
        {"word": "#great", "mean_weight": pytest.approx(0.1), "texts": 1},
    ]
    page = render_html(
        [*explanations[:2], Explanation("<b>", ("<b>",), (0.5,), "x", 1.0)], "Why"
    )
    assert (
        page.count("<p><b>") == 3
        and "&lt;b&gt;" in page
        and "<title>Why</title>" in page
    )
    line = format_explanation(explanations[0])
    assert line.startswith(f"{explanations[0].label} (")
    assert all(word in line for word in explanations[0].words)


def test_integrated_gradients_add_up_to_the_probability_gained(
    tiny_teacher_dir, tiny_classifier: Callable[..., TextClassifier]
) -> None:
    tokenizer = load_tokenizer(str(tiny_teacher_dir))
    model = tiny_classifier(["negative", "positive"], shape="teacher", seed=3)
    with torch.no_grad():
        model.head.weight.mul_(40)  # a model with opinions
    texts = ["the flight was unbelievably great", "lost my bag @delta"]
    explanations = integrated_gradients(
        model, tokenizer, texts, normalize=normalize_text, steps=64
    )
    assert explanations == integrated_gradients(
        model, tokenizer, texts, normalize=normalize_text, steps=64
    )
    for e in explanations:
        assert e.words == tuple(e.text.split())
        encoded = tokenizer(e.text, return_tensors="pt")
        ids = encoded["input_ids"]
        special = torch.tensor([[i in tokenizer.all_special_ids for i in ids[0]]])
        baseline_ids = torch.where(special, ids, tokenizer.pad_token_id)
        column = model.labels.index(e.label)
        with torch.no_grad():
            base = torch.softmax(model(baseline_ids, torch.ones_like(ids)), -1)[
                0, column
            ]
        # Completeness: the words' weights add up to what the text adds over padding;
        # "unbelievably" is several sub-word tokens, summed into one word.
        assert sum(e.weights) == pytest.approx(e.probability - float(base), abs=0.02)
