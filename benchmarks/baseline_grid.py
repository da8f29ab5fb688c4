"""Baseline grid: how far the default TF-IDF grid is from a wider search, on validation.

Fits the evaluate stage's baseline (word + char_wb TF-IDF, balanced logistic
regression, ``distillery.ml.baseline.fit_baseline``) on the training split of the last
``kedro run`` for every setting of a wider grid and scores each on the validation
split, so the default grid in ``parameters_evaluate.yml`` can be checked against it.
The test split is not read. Usage::

    .venv/bin/python benchmarks/baseline_grid.py

Prints a table and writes ``benchmarks/results/baseline_grid.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd
from _results import write_results

from distillery.ml.report.baseline import BaselineGrid, fit_baseline

ROOT = Path(__file__).resolve().parents[1]
# (word n-grams, char n-grams) -> C values; the default grid is the first row's
# [1, 2] x [2, 5] with C 2 and 8.
WIDER = (
    ([[1, 2]], [[2, 5]], [0.5, 1.0, 2.0, 4.0, 8.0]),
    ([[1, 3]], [[1, 6]], [1.0, 2.0, 4.0]),
    ([[1, 1]], [[3, 5]], [1.0, 2.0, 4.0]),
)


def main() -> int:
    """Fit and score every setting; print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/baseline_grid.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    labels = json.loads((ROOT / "data/05_model_input/label_vocab.json").read_text())[
        "labels"
    ]

    def split(name: str) -> tuple[list[str], list[str]]:
        frame = pd.read_parquet(ROOT / "data/05_model_input" / name)
        return frame["text"].astype(str).tolist(), [
            labels[int(i)] for i in frame["label"]
        ]

    train, val = split("train"), split("val")
    rows = []
    for word, char, cs in WIDER:
        grid = BaselineGrid.from_dict(
            {"word_ngrams": word, "char_ngrams": char, "C": cs}
        )
        start = time.perf_counter()
        _, tried = fit_baseline(*train, *val, grid=grid)
        wall = time.perf_counter() - start
        rows += [r | {"grid_wall_s": wall} for r in tried]
        for r in tried:
            sys.stdout.write(
                f"word {r['word_ngrams']} char {r['char_ngrams']} C {r['C']:<4}"
                f" val macro-F1 {r['val_macro_f1']:.4f}\n"
            )
        sys.stdout.flush()
    best = max(rows, key=lambda r: r["val_macro_f1"])
    sys.stdout.write(f"best: {best}\n")
    write_results(
        ROOT / args.out,
        ("scikit-learn",),
        {
            "train_rows": len(train[0]),
            "val_rows": len(val[0]),
            "best": best,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
