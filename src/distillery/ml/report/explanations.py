"""The release's explanation report: the student's reasons, how faithful, how like its
teacher's.

On a seeded sample of test texts, every word's weight comes from leave-one-out
(:mod:`distillery.ml.serve.explain`) for the student and for the teacher, both the
ONNX Runtime models the release compares. Three things are measured:

- faithfulness: the student's probability drop when its top-k words are removed,
  against k random words (``deletion``), as areas under the curves;
- agreement: the rank correlation of the two models' word weights toward the
  teacher's answer, and the share of the teacher's top-3 words among the student's;
- the words that weigh most toward each class, over the whole test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distillery.ml.serve.explain import (
    attribution_agreement,
    deletion_curve,
    leave_one_out,
    render_html,
    top_words_by_class,
)
from distillery.ml.serve.inference import Predictor


@dataclass(frozen=True)
class ExplainOptions:
    """How the release explains its student (``compress_options.explain``)."""

    texts: int = 500  # test texts in the faithfulness and agreement sample
    max_k: int = 5  # the most words removed in the deletion curve
    top_words: int = 10  # words listed per class in the model card
    min_count: int = 10  # test texts a word must appear in to be listed
    examples: int = 5  # texts rendered with highlights in explanations.html
    seed: int = 0  # the sample and the random words

    def __post_init__(self) -> None:
        for name in ("texts", "max_k", "top_words", "min_count", "examples"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"compress_options.explain.{name} must be >= 1, "
                    f"got {getattr(self, name)}"
                )


def explain_release(
    student: Predictor,
    teacher: Predictor,
    texts: Sequence[str],
    normalize: Callable[[str], str],
    options: ExplainOptions,
) -> tuple[dict[str, Any], str]:
    """Explain the student on the test texts; measure faithfulness and agreement.

    Args:
        student: The registered student (ONNX Runtime).
        teacher: The teacher it was distilled from (ONNX Runtime fp32).
        texts: The test split's texts.
        normalize: The text normalisation both models apply.
        options: Sample sizes and seed.

    Returns:
        The report (``explanations.json``) and the HTML page of example texts.

    Raises:
        ValueError: With no texts.
    """
    if not texts:
        raise ValueError("no texts to explain")
    rng = np.random.default_rng(options.seed)
    chosen = rng.permutation(len(texts))[: options.texts]
    sample = [texts[i] for i in chosen]
    everything = leave_one_out(student, list(texts), normalize=normalize)
    explained = [everything[i] for i in chosen]
    by_teacher = leave_one_out(teacher, sample, normalize=normalize)
    toward_teacher = leave_one_out(
        student,
        sample,
        normalize=normalize,
        targets=[student.labels.index(e.label) for e in by_teacher],
    )
    report = {
        "method": "leave-one-out: a word's weight is the explained class's "
        "probability drop when the word alone is removed",
        "texts": len(sample),
        "test_texts": len(texts),
        "deletion": deletion_curve(
            student, explained, max_k=options.max_k, seed=options.seed
        ),
        "agreement": attribution_agreement(by_teacher, toward_teacher, k=3),
        "answers_agree": float(
            np.mean(
                [a.label == b.label for a, b in zip(by_teacher, explained, strict=True)]
            )
        ),
        "top_words": top_words_by_class(
            everything, k=options.top_words, min_count=options.min_count
        ),
        "examples": [
            {"text": e.text, "label": e.label, "top_tokens": e.top_tokens(3)}
            for e in explained[: options.examples]
        ],
    }
    page = render_html(
        explained[: options.examples], "Why the student decides as it does"
    )
    return report, page


def explanation_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's headline figures, as flat MLflow metrics."""
    deletion, agreement = report["deletion"], report["agreement"]
    return {
        "deletion_auc": deletion["attributed_auc"],
        "deletion_auc_random": deletion["random_auc"],
        "deletion_auc_gain": deletion["auc_gain"],
        "teacher_spearman": agreement["spearman"],
        "teacher_top3_overlap": agreement["top_k_overlap"],
    }


def explanations_markdown(
    report: dict[str, Any], page: str = "explanations.html"
) -> str:
    """The model card's section on why the student decides as it does.

    Args:
        report: :func:`explain_release`'s report.
        page: The HTML page of highlighted examples, beside the card.

    Returns:
        Markdown: the method, faithfulness and agreement figures, the top words per
        class, and a link to the page.
    """
    deletion, agreement = report["deletion"], report["agreement"]
    lines = [
        "## Why it decides as it does",
        "",
        f"Word weights by {report['method']}. On {report['texts']} test texts:",
        "",
        f"- Faithfulness: removing the student's top {len(deletion['k'])} words one "
        f"by one lowers its probability by {deletion['attributed_auc']:.3f} on average "
        f"(area under the deletion curve), random words by {deletion['random_auc']:.3f}.",
        f"- Agreement with the teacher, toward the teacher's answer: rank correlation "
        f"of word weights {agreement['spearman']:.3f}; {agreement['top_k_overlap']:.0%} "
        f"of the teacher's top {agreement['k']} words are among the student's.",
        "",
        f"Words that weigh most toward each class over the {report['test_texts']} test "
        "texts (mean weight, texts):",
        "",
        "| class | words |",
        "| --- | --- |",
    ]
    for label, rows in report["top_words"].items():
        words = ", ".join(
            f"{r['word']} ({r['mean_weight']:+.3f}, {r['texts']})" for r in rows
        )
        lines.append(f"| {label} | {words or '–'} |")
    lines += ["", f"Example texts with their words highlighted: [{page}]({page}).", ""]
    return "\n".join(lines)
