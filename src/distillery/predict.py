"""Classify texts from the command line with an ONNX serving bundle.

Usage::

    python -m distillery.predict "great flight" "lost my bag again"
    python -m distillery.predict --model path/to/bundle --json --threads 2 "ok"
    python -m distillery.predict --input tweets.txt            # one text per line
    python -m distillery.predict --input tweets.csv --column body --output out.parquet
    cat tweets.txt | python -m distillery.predict --output out.jsonl
    python -m distillery.predict --explain "the flight was delayed again"

Texts come from the command line, from ``--input`` (``.txt``: one per line;
``.csv``, ``.parquet``, ``.jsonl``: the column named by ``--column``, default
``text``; ``-``: standard input, one per line) or, with neither, from standard
input when it is not a terminal. Results go to standard output (a line per text)
or, with ``--output``, to a ``.csv``, ``.parquet`` or ``.jsonl`` file holding
``text``, ``label`` and one ``prob_<label>`` column per class, row *i* for input
row *i*. File and standard-input runs show a progress bar on standard error.

``--explain`` adds, for each text, the weight of every word toward the predicted label
(leave-one-out: the label's probability drop without the word; about one prediction
per word): a ``why:`` line after each printed line, an ``explanation`` list in JSON,
and a ``top_tokens`` column (the three heaviest words) in an ``--output`` file.

By default the newest bundle written by ``kedro run`` is used:
``data/06_models/student_onnx/<version>/student_onnx/`` relative to the current
directory. Texts are raw: the bundle applies the training normalisation itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from distillery.checksums import check_manifest

DEFAULT_MODEL_ROOT = Path("data/06_models/student_onnx")
_BUNDLE_MARKER = "serving.json"  # distillery.ml.serving.CONFIG_FILE, kept import-free
DEFAULT_COLUMN = "text"
TABLE_FORMATS = (".csv", ".parquet", ".jsonl")  # read a column; also output formats
LINE_FORMATS = (".txt",)
CHUNK_SIZE = 512  # texts per predict call: the progress bar's step


class InputError(ValueError):
    """The texts to classify cannot be read (missing file, column, bad values)."""


def find_latest_bundle(root: str | Path) -> Path | None:
    """Return the newest bundle under a Kedro-versioned folder, or ``root`` itself.

    Kedro writes a versioned dataset ``student_onnx`` to
    ``<root>/<version>/student_onnx/``; version names are UTC timestamps, so the
    newest sorts last. A version whose files fail their checksums is skipped with a
    warning.

    Args:
        root: A bundle folder, or the versioned dataset folder holding versions.

    Returns:
        The bundle folder, or ``None`` if none is found.
    """
    root = Path(root)
    if (root / _BUNDLE_MARKER).is_file():
        return root
    if not root.is_dir():
        return None
    versions = sorted((p for p in root.iterdir() if p.is_dir()), reverse=True)
    for version in versions:
        candidate = version / root.name
        if not (candidate / _BUNDLE_MARKER).is_file():
            continue
        problem = check_manifest(candidate)
        if problem is None:
            return candidate
        sys.stderr.write(f"warning: skipping {candidate}: {problem}\n")
    return None


def format_prediction(
    text: str,
    labels: Sequence[str],
    probabilities: Sequence[float],
    as_json: bool,
    explanation: Any = None,
) -> str:
    """One output line: the label, every class probability and the text.

    Args:
        text: The input text.
        labels: Class names.
        probabilities: One probability per class, in the order of ``labels``.
        as_json: Write a JSON object instead of tab-separated text.
        explanation: The text's :class:`~distillery.ml.serve.explain.Explanation`,
            if asked for: a ``why:`` line follows (or an ``explanation`` list of
            ``[word, weight]`` in JSON).

    Returns:
        The line (two with an explanation, as text), without a final newline.
    """
    probs = {name: float(p) for name, p in zip(labels, probabilities, strict=True)}
    label = max(probs, key=probs.__getitem__)
    if as_json:
        record = {"text": text, "label": label, "probabilities": probs}
        if explanation is not None:
            record["explanation"] = [
                [word, round(weight, 6)]
                for word, weight in zip(
                    explanation.words, explanation.weights, strict=True
                )
            ]
        return json.dumps(record, ensure_ascii=False)
    shown = " ".join(f"{name}={p:.4f}" for name, p in probs.items())
    line = f"{label}\t{shown}\t{text}"
    if explanation is None:
        return line
    words = " ".join(
        f"{word}({weight:+.3f})"
        for word, weight in zip(explanation.words, explanation.weights, strict=True)
    )
    return f"{line}\n\twhy: {words}"


def read_lines(stream: IO[str]) -> list[str]:
    """One text per line, line ends removed; blank lines stay (row i = line i)."""
    return [line.rstrip("\r\n") for line in stream]


def read_texts(source: str | Path, column: str | None = None) -> list[str]:
    """Read the texts of a ``.txt`` file (one per line) or a table's column.

    Args:
        source: A ``.txt``, ``.csv``, ``.parquet`` or ``.jsonl`` file.
        column: The text column of a table; default ``text``. Not allowed for
            ``.txt``.

    Returns:
        The texts, in file order. An empty CSV cell is an empty text.

    Raises:
        InputError: If the file is missing or of an unsupported kind, the column is
            absent, or a value is missing or not a string.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in LINE_FORMATS + TABLE_FORMATS:
        raise InputError(
            f"unsupported input {path}: use one of "
            f"{', '.join(LINE_FORMATS + TABLE_FORMATS)}"
        )
    if not path.is_file():
        raise InputError(f"no such input file: {path}")
    if suffix in LINE_FORMATS:
        if column is not None:
            raise InputError(f"--column applies to {', '.join(TABLE_FORMATS)} input")
        with path.open(encoding="utf-8", errors="replace", newline="") as stream:
            return read_lines(stream)
    import pandas as pd  # noqa: PLC0415 - only tables need it

    column = column or DEFAULT_COLUMN
    try:
        if suffix == ".csv":
            # Cells stay strings; an empty cell is an empty text, not NaN.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}") from error
    if column not in frame.columns:
        raise InputError(
            f"no column {column!r} in {path}; its columns are "
            f"{[str(c) for c in frame.columns]} (choose one with --column)"
        )
    values = frame[column].tolist()
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise InputError(
            f"column {column!r} of {path} has {len(bad)} missing or non-text "
            f"value(s), rows {bad[:5]}"
        )
    return values


def write_predictions(frame: Any, path: str | Path) -> Path:
    """Write a predictions frame to ``.csv``, ``.parquet`` or ``.jsonl``.

    The file is written next to its final name and renamed into place, so an
    interrupted run never leaves a partial file under that name.

    Args:
        frame: ``text``, ``label`` and ``prob_<label>`` columns.
        path: The output file; its extension picks the format.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(partial, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(partial, index=False)
    else:
        frame.to_json(partial, orient="records", lines=True, force_ascii=False)
    os.replace(partial, path)
    return path


def _chunks(texts: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m distillery.predict",
        description="Classify raw texts with the distilled ONNX student.",
    )
    parser.add_argument(
        "texts",
        nargs="*",
        metavar="TEXT",
        help="texts to classify (or use --input, or pipe texts on standard input)",
    )
    parser.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help=(
            "read texts from FILE: .txt (one per line), .csv, .parquet or .jsonl "
            "(the --column column); '-' reads standard input, one per line"
        ),
    )
    parser.add_argument(
        "--column",
        "-c",
        default=None,
        help=f"text column of a .csv/.parquet/.jsonl input (default {DEFAULT_COLUMN})",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help=(
            "write text, label and prob_<label> columns to this .csv, .parquet or "
            ".jsonl file instead of printing a line per text"
        ),
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=(
            "serving bundle folder (or a versioned folder holding bundles); "
            f"default: newest under {DEFAULT_MODEL_ROOT}"
        ),
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line instead of text"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads (default 1)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar on standard error"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help=(
            "also weigh every word toward the predicted label (leave-one-out): a "
            "why: line per text, or a top_tokens column with --output"
        ),
    )
    return parser


def _check_output(parser: argparse.ArgumentParser, output: Path | None) -> None:
    if output is None:
        return
    if output.suffix.lower() not in TABLE_FORMATS:
        parser.error(f"--output must end in {', '.join(TABLE_FORMATS)}, got {output}")
    if not output.parent.is_dir():
        parser.error(f"--output folder {output.parent} does not exist")


def _gather_texts(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[str], bool]:
    """The texts to classify and whether they came in bulk (file or stdin)."""
    if args.texts and args.input is not None:
        parser.error("give texts on the command line or --input, not both")
    if args.texts:
        if args.column is not None:
            parser.error("--column applies to --input files")
        return list(args.texts), False
    if args.input is None and sys.stdin.isatty():
        parser.error("no texts: pass TEXT..., --input FILE, or pipe texts on stdin")
    try:
        if args.input is None or args.input == "-":
            if args.column is not None:
                raise InputError("--column applies to --input files, not stdin")
            return read_lines(sys.stdin), True
        return read_texts(args.input, args.column), True
    except InputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success (argparse exits with 2 on usage errors, a missing model, or
        an input that cannot be read).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    _check_output(parser, args.output)
    root = args.model if args.model is not None else DEFAULT_MODEL_ROOT
    bundle = find_latest_bundle(root)
    if bundle is None:
        parser.exit(
            2,
            f"{parser.prog}: error: no model bundle found at {root}; "
            "run `kedro run` first or pass --model PATH\n",
        )
    texts, bulk = _gather_texts(parser, args)

    # Imported after argument checks: onnxruntime, torch and mlflow take seconds.
    from distillery.ml.serve.serving import (  # noqa: PLC0415
        load_onnx_predictor,
        probabilities_frame,
    )

    predictor = load_onnx_predictor(bundle, num_threads=args.threads)
    proba, explanations = _classify(predictor, texts, args, bulk)
    if args.output is not None:
        frame = probabilities_frame(predictor.labels, proba)
        frame.insert(0, "text", texts)
        if explanations is not None:
            frame["top_tokens"] = [e.top_tokens(3) for e in explanations]
        write_predictions(frame, args.output)
        sys.stderr.write(f"Wrote {len(texts)} predictions to {args.output}\n")
        return 0
    lines = [
        format_prediction(
            text,
            predictor.labels,
            row,
            args.json,
            explanations[i] if explanations is not None else None,
        )
        for i, (text, row) in enumerate(zip(texts, proba, strict=True))
    ]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


def _classify(
    predictor: Any, texts: list[str], args: argparse.Namespace, bulk: bool
) -> tuple[Any, list[Any] | None]:
    """Probabilities ``(N, C)`` of every text, chunk by chunk under a progress bar,
    and with ``--explain`` each text's word weights toward its predicted label."""
    import numpy as np  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from distillery.ml.serve.explain import leave_one_out  # noqa: PLC0415

    parts, explanations = [], []
    with tqdm(
        total=len(texts),
        unit="text",
        file=sys.stderr,
        disable=args.no_progress or not bulk,
        desc="Explaining" if args.explain else "Classifying",
    ) as progress:
        for chunk in _chunks(texts, CHUNK_SIZE):
            parts.append(predictor.predict_proba(chunk))  # (n, C)
            if args.explain:
                explanations += leave_one_out(
                    predictor, chunk, normalize=predictor.encoder.normalize
                )
            progress.update(len(chunk))
    proba = np.concatenate(parts) if parts else np.empty((0, len(predictor.labels)))
    return proba, explanations if args.explain else None


if __name__ == "__main__":
    sys.exit(main())
