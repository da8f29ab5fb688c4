"""Benchmark results name no machine paths (benchmarks/_results.py)."""

from __future__ import annotations

import json
import re
import subprocess
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


# Written by write_results; conf_full/ holds copies of one run's reports, whose
# provenance is end_to_end-full.json beside them.
WRITTEN = sorted((ROOT / "benchmarks/results").glob("*.json"))


@pytest.mark.parametrize("path", WRITTEN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_results_record_their_commit_and_machine(path: Path) -> None:
    result = json.loads(path.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", result.get("commit") or ""), path.name
    assert result["machine"]["cpus"] >= 1


def test_new_results_record_the_commit_they_ran_on(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _results import write_results  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    written = json.loads(
        write_results(tmp_path / "r.json", (), {"rows": []}).read_text()
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert written["commit"] == head
    assert isinstance(written["dirty"], bool)
    assert written["rows"] == []
