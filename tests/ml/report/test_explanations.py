"""The release's explanation report on two real models that read the same cue words."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from distillery.ml.data.text import normalize_text
from distillery.ml.report.explanations import (
    ExplainOptions,
    explain_release,
    explanation_metrics,
)


def test_the_report_measures_faithfulness_agreement_and_top_words(
    cue_model: Callable, cue_corpus: Callable
) -> None:
    student, teacher = cue_model(1.0), cue_model(8.0)
    texts = cue_corpus(2, 120)[0]
    options = ExplainOptions(texts=60, max_k=3, top_words=2, min_count=5, examples=4)
    report, page = explain_release(student, teacher, texts, normalize_text, options)

    assert report["texts"] == 60 and report["test_texts"] == 120
    deletion = report["deletion"]
    assert deletion["attributed_auc"] > deletion["random_auc"]
    assert report["agreement"]["spearman"] > 0.5  # both lean on the cue word
    assert report["agreement"]["top_k_overlap"] > 0.5
    assert report["answers_agree"] == 1.0
    assert report["top_words"]["positive"][0]["word"] == "great"
    assert report["top_words"]["negative"][0]["word"] == "awful"
    assert len(report["examples"]) == 4 and page.count("<p><b>") == 4
    assert (
        report == explain_release(student, teacher, texts, normalize_text, options)[0]
    )
    assert explanation_metrics(report)["deletion_auc_gain"] == deletion["auc_gain"]


def test_bad_explain_options_and_no_texts_are_refused(cue_model: Callable) -> None:
    with pytest.raises(ValueError, match="explain.texts must be >= 1"):
        ExplainOptions(texts=0)
    student = cue_model(1.0)
    with pytest.raises(ValueError, match="no texts"):
        explain_release(student, student, [], normalize_text, ExplainOptions())
