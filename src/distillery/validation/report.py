"""A self-contained HTML page of a validation run (no server, no JavaScript)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from distillery.validation.suites import RuleOutcome

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}.ok{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}
code{background:#f6f6f6;padding:0 .2rem}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(
    source: str,
    counts: Mapping[str, int],
    outcomes: Sequence[RuleOutcome],
    quarantine_examples: Mapping[str, Sequence[str]],
    repair_examples: Sequence[tuple[str, str]] = (),
) -> str:
    """Render the validation result as one HTML page.

    Args:
        source: the corpus file or URI.
        counts: headline counts (rows in, clean, quarantined, ...).
        outcomes: every contract and row rule that ran, in registry order.
        quarantine_examples: up to a few example texts per quarantine reason.
        repair_examples: a few ``(original, repaired)`` texts.

    Returns:
        The page as a string.
    """
    rule_rows = [
        (
            f"<code>{html.escape(o.name)}</code>",
            html.escape(o.column),
            html.escape(o.description),
            '<span class="ok">pass</span>'
            if o.success
            else '<span class="fail">rows quarantined</span>',
            o.unexpected_count,
            html.escape(o.observed),
        )
        for o in outcomes
    ]
    example_rows = [
        (
            f"<code>{html.escape(reason)}</code>",
            "<br>".join(html.escape(t[:200]) for t in texts),
        )
        for reason, texts in quarantine_examples.items()
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>distillery validation report</title><style>{_STYLE}</style></head><body>"
        "<h1>distillery validation report</h1>"
        f"<p>Source: <code>{html.escape(source)}</code></p>"
        + _table(["count", "rows"], [(html.escape(k), v) for k, v in counts.items()])
        + "<h2>Rules (Great Expectations suites)</h2>"
        + _table(
            ["rule", "column", "expectation", "result", "failing rows", "observed"],
            rule_rows,
        )
        + "<h2>Repaired texts (undecodable bytes removed)</h2>"
        + _table(
            ["original", "repaired"],
            [(html.escape(a[:200]), html.escape(b[:200])) for a, b in repair_examples],
        )
        + "<h2>Quarantine examples</h2>"
        + _table(["reason", "examples"], example_rows)
        + "</body></html>"
    )
