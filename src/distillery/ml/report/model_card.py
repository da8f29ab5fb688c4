"""The model card: lineage, what each compression step cost and saved, use and limits.

A pure function of evaluations and lineage facts: it returns markdown and writes
nothing; the caller saves or logs it. Missing facts render as ``n/a``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from distillery.ml.report.gates import ratios
from distillery.ml.report.model_evaluation import ModelEvaluation
from distillery.ml.report.tables import (
    comparison_table_markdown,
    find_evaluation,
    format_factor,
    format_mb,
    markdown_table,
)

NOT_AVAILABLE = "n/a"


def model_card_markdown(
    *,
    corpus: Mapping[str, Any],
    validation: Mapping[str, Any],
    teacher: Mapping[str, Any],
    student: Mapping[str, Any],
    evaluations: Sequence[ModelEvaluation],
    reference_name: str,
    gates: Mapping[str, Any],
    registry: Mapping[str, Any] | None,
) -> str:
    """A markdown model card: lineage, cost/saving per step, use and limitations.

    Missing keys render as ``n/a``; nothing is claimed that the inputs do not say.

    Args:
        corpus: ``path``, ``sha256``, ``rows``; optional ``language`` and
            ``domain`` (e.g. ``"English"``, ``"tweets"``) used in "Intended use".
        validation: Counts from validation (e.g. rows in, clean, quarantined by
            reason), listed as given.
        teacher: ``run_id``, ``model_path``, ``config``, ``val_macro_f1``,
            ``test_macro_f1``.
        student: ``config`` (the variant), ``form`` and ``name`` (the chosen
            evaluation's name); optional ``max_length``.
        evaluations: Every evaluated form. Non-baseline ones are walked in the
            order given (teacher fp32 → teacher int8 → student torch fp32 → … →
            final ONNX int8); baselines are listed as the bar to clear.
        reference_name: The evaluation ratios are relative to (the fp32 teacher).
        gates: The release gate thresholds, listed as given.
        registry: Registered model facts (e.g. ``name``, ``version``, ``uri``), or
            ``None`` if the model was not registered.

    Returns:
        The card.

    Raises:
        ValueError: If ``evaluations`` is empty or ``reference_name`` or
            ``student["name"]`` (when given) is not among them.
    """
    if not evaluations:
        raise ValueError("model_card_markdown needs at least one evaluation")
    reference = find_evaluation(evaluations, reference_name)
    chosen_name = student.get("name")
    chosen = (
        find_evaluation(evaluations, chosen_name) if chosen_name else evaluations[-1]
    )
    labels = list(chosen.extra.get("labels") or chosen.per_class)
    chosen_ratios = ratios(chosen, reference)
    sections = [
        _summary(chosen, reference, chosen_ratios, teacher),
        _lineage(corpus, validation, teacher, student, chosen),
        _step_walk(evaluations, chosen, reference),
        [
            "### All evaluated forms",
            "",
            comparison_table_markdown(evaluations, reference_name),
        ],
        _release_gates(gates, chosen, chosen_ratios),
        [
            "## Registry",
            "",
            *(_bullets(registry) if registry else ["- not registered"]),
        ],
        _intended_use(corpus, labels),
        _limitations(corpus, student, chosen),
    ]
    # One blank line after every section, the last one included.
    return "\n".join(line for section in sections for line in [*section, ""])


def _summary(
    chosen: ModelEvaluation,
    reference: ModelEvaluation,
    chosen_ratios: Mapping[str, float],
    teacher: Mapping[str, Any],
) -> list[str]:
    """The title and one paragraph: the chosen form against the reference."""
    return [
        f"# Model card: {chosen.name}",
        "",
        f"Text classifier ({chosen.form}, family {chosen.family}); teacher run "
        f"{_value(teacher.get('run_id'))}. Against {reference.name}: test macro-F1 "
        f"{chosen.macro_f1:.4f} (F1 retained {chosen_ratios['f1_retained']:.3f}), "
        f"{format_mb(chosen.size_bytes)} MB (size ratio "
        f"{format_factor(chosen_ratios['size_ratio'])}), p50 "
        f"{chosen.latency_p50_ms:.2f} ms at batch 1 (latency ratio "
        f"{format_factor(chosen_ratios['latency_ratio'])}).",
    ]


def _lineage(
    corpus: Mapping[str, Any],
    validation: Mapping[str, Any],
    teacher: Mapping[str, Any],
    student: Mapping[str, Any],
    chosen: ModelEvaluation,
) -> list[str]:
    """Where the model came from: corpus, validation counts, teacher, student."""
    corpus_facts = {
        "path": corpus.get("path"),
        **({"package": corpus["package"]} if corpus.get("package") else {}),
        "sha256": corpus.get("sha256"),
        "rows": corpus.get("rows"),
    }
    teacher_facts = {
        "run id": teacher.get("run_id"),
        "model path": teacher.get("model_path"),
        "config": teacher.get("config"),
        "validation macro-F1": teacher.get("val_macro_f1"),
        "test macro-F1": teacher.get("test_macro_f1"),
    }
    student_facts = {
        "chosen model": chosen.name,
        "form": student.get("form", chosen.form),
        "variant config": student.get("config"),
    }
    return [
        "## Lineage",
        "",
        "### Corpus",
        "",
        *_bullets(corpus_facts),
        "",
        "### Validation",
        "",
        *(_bullets(validation) or ["- no validation counts recorded"]),
        "",
        "### Teacher",
        "",
        *_bullets(teacher_facts),
        "",
        "### Student",
        "",
        *_bullets(student_facts),
    ]


def _step_walk(
    evaluations: Sequence[ModelEvaluation],
    chosen: ModelEvaluation,
    reference: ModelEvaluation,
) -> list[str]:
    """Each neural form against the one before it, then the baselines to beat."""
    steps = [e for e in evaluations if e.family != "baseline"]
    baselines = [e for e in evaluations if e.family == "baseline"]
    lines = [
        "## What each step cost and saved",
        "",
        f"Test split of {chosen.n_test} texts; latency is one text per call "
        f"(tokenization included) with {chosen.num_threads} thread(s). Factors "
        "above 1 mean smaller or faster than the step before.",
        "",
        _step_table(steps, reference) if steps else "No neural model was evaluated.",
    ]
    if baselines:
        lines.append("")
    lines += [
        f"Baseline {b.name} ({b.form}): macro-F1 {b.macro_f1:.4f}, "
        f"{format_mb(b.size_bytes)} MB, p50 {b.latency_p50_ms:.2f} ms."
        for b in baselines
    ]
    return lines


def _release_gates(
    gates: Mapping[str, Any],
    chosen: ModelEvaluation,
    chosen_ratios: Mapping[str, float],
) -> list[str]:
    """The gate thresholds as given, then where the chosen form stands."""
    return [
        "## Release gates",
        "",
        *(_bullets(gates) or ["- none"]),
        f"- {chosen.name}: F1 retained {chosen_ratios['f1_retained']:.3f}, size "
        f"ratio {format_factor(chosen_ratios['size_ratio'])}, latency ratio "
        f"{format_factor(chosen_ratios['latency_ratio'])}",
    ]


def _intended_use(corpus: Mapping[str, Any], labels: list[str]) -> list[str]:
    """What the model is for: its labels, the texts it suits, its input and output."""
    language = corpus.get("language")
    domain = corpus.get("domain")
    if language or domain:
        source = " ".join(str(v) for v in (language, domain) if v)
    else:
        source = (
            f"texts like those of the training corpus ({_value(corpus.get('path'))})"
        )
    return [
        "## Intended use",
        "",
        f"- Assigning one of the labels {', '.join(labels)} to {source}.",
        "- Input: one raw text per call or a batch; the predictor tokenizes.",
        "- Output: a probability per label; the most probable label is the prediction.",
    ]


def _limitations(
    corpus: Mapping[str, Any], student: Mapping[str, Any], chosen: ModelEvaluation
) -> list[str]:
    """What the measurements do not cover, and known weak spots of the chosen form."""
    f1 = {label: stats["f1"] for label, stats in chosen.per_class.items()}
    lines = [
        "## Limitations",
        "",
        f"- Quality was measured on {chosen.n_test} held-out texts from the same "
        f"corpus ({_value(corpus.get('path'))}); other sources are not measured.",
        "- Labels are those of the corpus; label noise in it is learned as well.",
        f"- Latency and throughput were measured on the evaluation machine with "
        f"{chosen.num_threads} thread(s); other hardware will differ.",
    ]
    if chosen.form.startswith("onnx"):
        lines.append(
            "- ONNX forms ran in sessions with ONNX Runtime's SkipLayerNormFusion off "
            "(`distillery.ml.compress.export.ort_session`); a default session fuses "
            "it back, which was slower on the evaluation machine."
        )
    if f1:
        worst = min(f1, key=f1.get)
        best = max(f1, key=f1.get)
        lines.append(
            f"- Per-class F1 ranges from {f1[worst]:.3f} ({worst}) to "
            f"{f1[best]:.3f} ({best})."
        )
    config = student.get("config")
    max_length = student.get("max_length") or (
        config.get("max_length") if isinstance(config, Mapping) else None
    )
    if max_length:
        lines.append(f"- Texts longer than {max_length} tokens are truncated.")
    return lines


def _value(value: Any) -> str:
    """Inline markdown for a lineage value (mappings and lists as compact JSON)."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, Mapping | list | tuple):
        return f"`{json.dumps(value, sort_keys=True, default=str)}`"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _bullets(facts: Mapping[str, Any]) -> list[str]:
    """One markdown bullet per fact, ``- key: value``."""
    return [f"- {key}: {_value(value)}" for key, value in facts.items()]


def _signed(value: float, digits: int) -> str:
    """A number with its sign, e.g. ``-0.0100``."""
    return f"{value:+.{digits}f}"


def _step_table(steps: Sequence[ModelEvaluation], reference: ModelEvaluation) -> str:
    """Each step against the previous one: F1 change, size and latency factors."""
    header = [
        "step",
        "model",
        "form",
        "macro-F1",
        "ΔF1 vs previous",
        "size (MB)",
        "smaller vs previous",
        "p50 (ms)",
        "faster vs previous",
        "F1 retained vs reference",
    ]
    rows = []
    previous: ModelEvaluation | None = None
    for number, e in enumerate(steps, start=1):
        if previous is None:
            delta = smaller = faster = "—"
        else:
            delta = _signed(e.macro_f1 - previous.macro_f1, 4)
            smaller = format_factor(previous.size_bytes / e.size_bytes)
            faster = format_factor(previous.latency_p50_ms / e.latency_p50_ms)
        rows.append(
            [
                str(number),
                e.name,
                e.form,
                f"{e.macro_f1:.4f}",
                delta,
                format_mb(e.size_bytes),
                smaller,
                f"{e.latency_p50_ms:.2f}",
                faster,
                f"{ratios(e, reference)['f1_retained']:.3f}",
            ]
        )
        previous = e
    return markdown_table(header, rows)
