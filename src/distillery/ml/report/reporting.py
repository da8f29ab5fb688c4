"""Comparison tables, figures and the model card built from :class:`ModelEvaluation`.

Pure functions of evaluations and lineage facts: they return markdown strings and
matplotlib figures (headless, Agg) and write nothing; the caller saves or logs them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    NullFormatter,
)

from distillery.ml.report.evaluation import ModelEvaluation, ratios  # noqa: E402

MAX_GRID_COLUMNS = 3  # confusion matrices per figure row
NOT_AVAILABLE = "n/a"


def _find(evaluations: Sequence[ModelEvaluation], name: str) -> ModelEvaluation:
    for evaluation in evaluations:
        if evaluation.name == name:
            return evaluation
    raise ValueError(f"reference {name!r} is not among {[e.name for e in evaluations]}")


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mb(size_bytes: float) -> str:
    """Megabytes (10^6 bytes): two decimals, or two significant digits below 0.01."""
    mb = size_bytes / 1e6
    return f"{mb:.2f}" if mb >= 0.01 else f"{mb:.2g}"


def _times(value: float) -> str:
    return f"{value:.2f}x"


def comparison_table_markdown(
    evaluations: Sequence[ModelEvaluation],
    reference_name: str,
    secondary_names: Sequence[str] = (),
) -> str:
    """One markdown row per evaluation, in the order given.

    Columns: model, form, macro-F1, accuracy, F1 retained (candidate / reference
    macro-F1), size in MB (10^6 bytes), size ratio (reference / candidate), p50 and
    p95 latency at batch 1 in ms, latency ratio (reference / candidate p50) and
    throughput in texts per second at batch 32.

    Args:
        evaluations: The evaluations, reference included.
        reference_name: Name of the evaluation the ratios are relative to.
        secondary_names: Further references; each adds "smaller" and "faster"
            columns (reference / candidate size and p50 latency).

    Returns:
        The table (header, separator, one line per evaluation).

    Raises:
        ValueError: If no evaluation is called ``reference_name``.
    """
    reference = _find(evaluations, reference_name)
    secondary = [_find(evaluations, name) for name in secondary_names]
    header = [
        "model",
        "form",
        "macro-F1",
        "accuracy",
        "F1 retained",
        "size (MB)",
        "size ratio",
        "p50 (ms)",
        "p95 (ms)",
        "latency ratio",
        "throughput (/s)",
    ]
    for other in secondary:
        header += [f"smaller vs {other.name}", f"faster vs {other.name}"]
    rows = []
    for e in evaluations:
        r = ratios(e, reference)
        extra = []
        for other in secondary:
            o = ratios(e, other)
            extra += [_times(o["size_ratio"]), _times(o["latency_ratio"])]
        rows.append(
            [
                e.name,
                e.form,
                f"{e.macro_f1:.4f}",
                f"{e.accuracy:.4f}",
                f"{r['f1_retained']:.3f}",
                _mb(e.size_bytes),
                _times(r["size_ratio"]),
                f"{e.latency_p50_ms:.2f}",
                f"{e.latency_p95_ms:.2f}",
                _times(r["latency_ratio"]),
                f"{e.throughput_per_s:.0f}",
                *extra,
            ]
        )
    return _markdown_table(header, rows)


def confusion_matrices_figure(
    evaluations: Sequence[ModelEvaluation], labels: list[str]
) -> Figure:
    """A grid with one confusion-matrix heatmap per evaluation.

    Cells are coloured by the row share (recall per true label, so classes of
    different sizes read alike) and annotated with raw counts.

    Args:
        evaluations: The evaluations, in display order.
        labels: Label names, in the row/column order of every ``confusion``.

    Returns:
        The figure: exactly one axes per evaluation (unused grid cells removed).

    Raises:
        ValueError: If ``evaluations`` is empty or a matrix does not match ``labels``.
    """
    if not evaluations:
        raise ValueError("confusion_matrices_figure needs at least one evaluation")
    n_labels = len(labels)
    for e in evaluations:
        if np.shape(e.confusion) != (n_labels, n_labels):
            raise ValueError(
                f"{e.name}: confusion is {np.shape(e.confusion)}, expected "
                f"{n_labels}x{n_labels} for labels {labels}"
            )
    n_cols = min(MAX_GRID_COLUMNS, len(evaluations))
    n_rows = math.ceil(len(evaluations) / n_cols)
    side = 1.2 + 0.6 * n_labels
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(side * n_cols, side * n_rows), squeeze=False
    )
    flat = axes.ravel()
    for ax, e in zip(flat, evaluations, strict=False):
        counts = np.asarray(e.confusion, dtype=np.int64)  # (true, predicted)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(n_labels):
            for j in range(n_labels):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8,
                )
        ax.set_xticks(range(n_labels), labels, rotation=45, ha="right")
        ax.set_yticks(range(n_labels), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{e.name}\nmacro-F1 {e.macro_f1:.3f}", fontsize=9)
    for ax in flat[len(evaluations) :]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


def pareto_frontier(evaluations: Sequence[ModelEvaluation]) -> list[ModelEvaluation]:
    """The evaluations no other beats on both macro-F1 and p50 latency, fastest first.

    Args:
        evaluations: Any evaluations.

    Returns:
        The frontier: each is faster than the next and has a lower macro-F1.
    """
    frontier: list[ModelEvaluation] = []
    for e in sorted(evaluations, key=lambda e: (e.latency_p50_ms, -e.macro_f1)):
        if not frontier or e.macro_f1 > frontier[-1].macro_f1:
            frontier.append(e)
    return frontier


_FAMILY_COLOURS = {"teacher": "tab:red", "baseline": "tab:gray", "student": "tab:blue"}


def tradeoff_figure(
    evaluations: Sequence[ModelEvaluation], reference_name: str
) -> Figure:
    """Macro-F1 against median batch-1 latency (log scale), with the Pareto frontier.

    Every form and peer is a point (colour: family, area: size on disk); the frontier
    joins the forms no other beats on both axes.

    Args:
        evaluations: The evaluations, reference included.
        reference_name: Drawn with a black edge and named in the title.

    Returns:
        The figure: one axes.

    Raises:
        ValueError: If no evaluation is called ``reference_name``.
    """
    reference = _find(evaluations, reference_name)
    fig, ax = plt.subplots(figsize=(8, 5))
    for e in evaluations:
        ax.scatter(
            e.latency_p50_ms,
            e.macro_f1,
            s=30 + 6 * math.sqrt(e.size_bytes / 1e6) * 10,
            color=_FAMILY_COLOURS.get(e.family, "tab:green"),
            edgecolors="black" if e is reference else "none",
            linewidths=1.5,
            alpha=0.8,
            zorder=3,
        )
        ax.annotate(
            f"{e.name} ({e.size_bytes / 1e6:.1f} MB)",
            (e.latency_p50_ms, e.macro_f1),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=7,
        )
    frontier = pareto_frontier(evaluations)
    ax.step(
        [e.latency_p50_ms for e in frontier],
        [e.macro_f1 for e in frontier],
        where="post",
        color="black",
        linestyle="--",
        linewidth=1,
        label="Pareto frontier",
        zorder=2,
    )
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.1)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("p50 latency at batch 1, 1 thread, tokenisation included (ms, log)")
    ax.set_ylabel("test macro-F1")
    ax.set_title(f"Quality vs latency (reference: {reference.name}; area: size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


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
    return [f"- {key}: {_value(value)}" for key, value in facts.items()]


def _signed(value: float, digits: int) -> str:
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
            smaller = _times(previous.size_bytes / e.size_bytes)
            faster = _times(previous.latency_p50_ms / e.latency_p50_ms)
        rows.append(
            [
                str(number),
                e.name,
                e.form,
                f"{e.macro_f1:.4f}",
                delta,
                _mb(e.size_bytes),
                smaller,
                f"{e.latency_p50_ms:.2f}",
                faster,
                f"{ratios(e, reference)['f1_retained']:.3f}",
            ]
        )
        previous = e
    return _markdown_table(header, rows)


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
    reference = _find(evaluations, reference_name)
    chosen_name = student.get("name")
    chosen = _find(evaluations, chosen_name) if chosen_name else evaluations[-1]
    labels = list(chosen.extra.get("labels") or chosen.per_class)
    steps = [e for e in evaluations if e.family != "baseline"]
    baselines = [e for e in evaluations if e.family == "baseline"]
    chosen_ratios = ratios(chosen, reference)

    lines = [
        f"# Model card: {chosen.name}",
        "",
        f"Text classifier ({chosen.form}, family {chosen.family}); teacher run "
        f"{_value(teacher.get('run_id'))}. Against {reference.name}: test macro-F1 "
        f"{chosen.macro_f1:.4f} (F1 retained {chosen_ratios['f1_retained']:.3f}), "
        f"{_mb(chosen.size_bytes)} MB (size ratio "
        f"{_times(chosen_ratios['size_ratio'])}), p50 {chosen.latency_p50_ms:.2f} ms "
        f"at batch 1 (latency ratio {_times(chosen_ratios['latency_ratio'])}).",
        "",
        "## Lineage",
        "",
        "### Corpus",
        "",
        *_bullets(
            {
                "path": corpus.get("path"),
                **({"package": corpus["package"]} if corpus.get("package") else {}),
                "sha256": corpus.get("sha256"),
                "rows": corpus.get("rows"),
            }
        ),
        "",
        "### Validation",
        "",
        *(_bullets(validation) or ["- no validation counts recorded"]),
        "",
        "### Teacher",
        "",
        *_bullets(
            {
                "run id": teacher.get("run_id"),
                "model path": teacher.get("model_path"),
                "config": teacher.get("config"),
                "validation macro-F1": teacher.get("val_macro_f1"),
                "test macro-F1": teacher.get("test_macro_f1"),
            }
        ),
        "",
        "### Student",
        "",
        *_bullets(
            {
                "chosen model": chosen.name,
                "form": student.get("form", chosen.form),
                "variant config": student.get("config"),
            }
        ),
        "",
        "## What each step cost and saved",
        "",
        f"Test split of {chosen.n_test} texts; latency is one text per call "
        f"(tokenization included) with {chosen.num_threads} thread(s). Factors "
        "above 1 mean smaller or faster than the step before.",
        "",
        _step_table(steps, reference) if steps else "No neural model was evaluated.",
        "",
    ]
    for b in baselines:
        lines.append(
            f"Baseline {b.name} ({b.form}): macro-F1 {b.macro_f1:.4f}, "
            f"{_mb(b.size_bytes)} MB, p50 {b.latency_p50_ms:.2f} ms."
        )
    if baselines:
        lines.append("")
    lines += [
        "### All evaluated forms",
        "",
        comparison_table_markdown(evaluations, reference_name),
        "",
        "## Release gates",
        "",
        *(_bullets(gates) or ["- none"]),
        f"- {chosen.name}: F1 retained {chosen_ratios['f1_retained']:.3f}, size "
        f"ratio {_times(chosen_ratios['size_ratio'])}, latency ratio "
        f"{_times(chosen_ratios['latency_ratio'])}",
        "",
        "## Registry",
        "",
        *(_bullets(registry) if registry else ["- not registered"]),
        "",
        *_intended_use(corpus, labels),
        "",
        *_limitations(corpus, student, chosen),
        "",
    ]
    return "\n".join(lines)


def _intended_use(corpus: Mapping[str, Any], labels: list[str]) -> list[str]:
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
