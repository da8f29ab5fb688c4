"""Benchmark results name no machine paths (benchmarks/_results.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks/results").rglob("*.json"))
# A path from the file system's root: a slash not inside a URL or a word ("samples/s").
ABSOLUTE = re.compile(r"(?<![\w.:/<>])/[^\s/\"']+/")


@pytest.fixture(scope="module")
def relative():  # noqa: ANN201 - the function under test
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _results import _relative  # noqa: PLC0415

        yield _relative
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_paths_are_written_from_the_root_or_as_outside(relative) -> None:  # noqa: ANN001
    written = relative(
        {
            "command": f"python x.py --out {ROOT}/benchmarks/results/a.json "
            "--log /tmp/run/kedro.log",
            "rows": [{"path": "/data/corpus.csv", "unit": "samples/s"}],
            "url": "https://example.org/a/b",
        }
    )
    assert written == {
        "command": "python x.py --out benchmarks/results/a.json "
        "--log <outside>/kedro.log",
        "rows": [{"path": "<outside>/corpus.csv", "unit": "samples/s"}],
        "url": "https://example.org/a/b",
    }


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_results_name_no_machine_paths(path: Path) -> None:
    text = json.dumps(json.loads(path.read_text()))
    assert not ABSOLUTE.search(text), ABSOLUTE.search(text).group(0)
