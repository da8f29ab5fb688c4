"""Every figure the benchmark docs quote stands in a committed results JSON.

``docs/benchmarks.md`` (the current results) and ``docs/experiments.md`` (their
history) may quote only numbers that a script wrote under ``benchmarks/results/``:
a figure nobody can trace is not a result. A quoted number matches a JSON value when
the value, shown with as many decimals as the doc uses, is that number (as a plain
value, as a percentage, or bytes as MB). Dates, clock times, code spans, code blocks and link
targets are not figures.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/benchmarks.md", "docs/experiments.md")
RESULTS = ROOT / "benchmarks/results"

# A number standing alone: not glued to a word ("L2", "H256", "1e-3", "seed7",
# "layers-4-5").
NUMBER = re.compile(
    r"(?<![\w.])(?<!\w-)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w]|\.\d)"
)
IN_STRING = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
NOT_FIGURES = (
    re.compile(r"```.*?```", re.S),  # code blocks: commands, not results
    re.compile(r"`[^`\n]*`"),  # code spans: settings, file names
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),  # dates
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"),  # clock times
    re.compile(r"\bseeds? \d+(?:(?:,| and) \d+)*"),  # seeds: settings, not results
    re.compile(r"\b95% (?:bootstrap )?interval"),  # an interval's coverage: a setting
    re.compile(r"\b[0-9a-f]{7,40}\b"),  # commits
    re.compile(r"\bbenchmarks/results/\S+"),  # paths to the results themselves
)


def _numbers_in(value: object) -> Iterator[float]:
    """Every number in a JSON value, those inside its strings included."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, str):  # "3.11.7" holds 3.11, as a doc quotes a version
        for number in IN_STRING.findall(value):
            yield float(number.replace(",", ""))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers_in(item)


# A results file or folder as a doc names it: "compression.json", "conf_full/".
NAMED = re.compile(r"[\w\-]+(?:/[\w\-]+)*(?:\.json|/)")


def recorded(paths: list[Path]) -> list[float]:
    """Every number in the given results, also as a percentage and as MB, sorted."""
    values: set[float] = set()
    for path in paths:
        for number in _numbers_in(json.loads(path.read_text())):
            values.update((abs(number), abs(number) * 100, abs(number) / 1e6))
    return sorted(values)


def named_results(text: str) -> list[Path]:
    """The results files a piece of doc names: by file name, or all in a folder."""
    found = set()
    for name in NAMED.findall(text):
        tail = name.removeprefix("benchmarks/results/")
        if not tail:  # the results folder itself: names nothing in particular
            continue
        if tail.endswith("/"):
            if (RESULTS / tail).is_dir():
                found.update((RESULTS / tail).glob("*.json"))
        else:
            found.update(RESULTS.rglob(Path(tail).name))
    return sorted(found)


def sections(text: str) -> list[tuple[str, str]]:
    """``(heading, body)`` of the preamble and each ``##`` section."""
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return [("preamble", parts[0])] + list(zip(parts[1::2], parts[2::2], strict=True))


def quoted_figures(text: str) -> list[tuple[str, float, int]]:
    """The figures a doc quotes: (as written, value, decimals shown)."""
    for pattern in NOT_FIGURES:
        text = pattern.sub(" ", text)
    return [
        (
            f"{whole}.{decimals}" if decimals else whole,
            float(whole.replace(",", "") + (f".{decimals}" if decimals else "")),
            len(decimals),
        )
        for whole, decimals in NUMBER.findall(text)
    ]


def _is_recorded(value: float, decimals: int, recorded: list[float]) -> bool:
    half = 0.5 * 10**-decimals + 1e-9
    i = bisect.bisect_left(recorded, value - half)
    return i < len(recorded) and recorded[i] <= value + half


def test_figures_are_found_in_the_text_and_not_in_code_or_dates() -> None:
    text = (
        "0.7692 on test (`kd_alpha: 0.9`, 2026-12-04 19:02, commit da9af67, seed 42, "
        "95% interval), "
        "L2-H256 at 1e-3, 28,914 rows, 4.7–5.5×, ```\npython x.py --steps 20\n```"
    )
    assert quoted_figures(text) == [
        ("0.7692", 0.7692, 4),
        ("28,914", 28914.0, 0),
        ("4.7", 4.7, 1),
        ("5.5", 5.5, 1),
    ]


def test_results_yield_their_numbers_those_in_strings_included() -> None:
    result = {"python": "3.11.7", "rows": [3562, {"mb": 3.33}], "ok": True}
    assert sorted(_numbers_in(result)) == [3.11, 3.33, 7.0, 3562.0]


def test_a_figure_matches_only_at_the_precision_it_is_shown() -> None:
    recorded = sorted([0.76918, 76.918, 1117.3])
    assert _is_recorded(0.7692, 4, recorded)
    assert _is_recorded(76.9, 1, recorded)  # a percentage
    assert _is_recorded(1117.0, 0, recorded)
    assert not _is_recorded(0.7693, 4, recorded)
    assert not _is_recorded(1118.0, 0, recorded)


def test_a_section_names_its_results_by_file_or_folder() -> None:
    names = named_results(
        "From `benchmarks/results/compression_rerun.json` and conf_full/; not x.json"
    )
    assert RESULTS / "compression_rerun.json" in names
    assert RESULTS / "conf_full/selected_student.json" in names
    assert all(path.is_file() for path in names)
    text = "intro 1\n## A\nsome 2\n### A.1\nmore 3\n## B\nlast 4\n"
    assert sections(text) == [
        ("preamble", "intro 1\n"),
        ("## A", "\nsome 2\n### A.1\nmore 3\n"),
        ("## B", "\nlast 4\n"),
    ]


@pytest.mark.parametrize("doc", DOCS)
def test_every_figure_in_the_benchmark_docs_is_in_the_json_it_names(doc: str) -> None:
    text = (ROOT / doc).read_text()
    assert quoted_figures(text), f"{doc} quotes no figure at all"
    problems = []
    for heading, body in sections(text):
        figures = quoted_figures(body)
        if not figures:
            continue
        sources = named_results(heading + body)
        if not sources:
            problems.append(f"{heading}: quotes figures but names no results JSON")
            continue
        values = recorded(sources)
        missing = sorted({w for w, v, d in figures if not _is_recorded(v, d, values)})
        if missing:
            problems.append(
                f"{heading}: {missing} in none of {[p.name for p in sources]}"
            )
    assert not problems, "\n".join(problems)
