"""Classify texts from the command line with an ONNX serving bundle.

Usage::

    python -m distillery.predict "great flight" "lost my bag again"
    python -m distillery.predict --model path/to/bundle --json --threads 2 "ok"

By default the newest bundle written by ``kedro run`` is used:
``data/06_models/student_onnx/<version>/student_onnx/`` relative to the current
directory. Texts are raw: the bundle applies the training normalisation itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MODEL_ROOT = Path("data/06_models/student_onnx")
_BUNDLE_MARKER = "serving.json"  # distillery.ml.serving.CONFIG_FILE, kept import-free


def find_latest_bundle(root: str | Path) -> Path | None:
    """Return the newest bundle under a Kedro-versioned folder, or ``root`` itself.

    Kedro writes a versioned dataset ``student_onnx`` to
    ``<root>/<version>/student_onnx/``; version names are UTC timestamps, so the
    newest sorts last.

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
        if (candidate / _BUNDLE_MARKER).is_file():
            return candidate
    return None


def format_prediction(
    text: str, labels: Sequence[str], probabilities: Sequence[float], as_json: bool
) -> str:
    """One output line: the label, every class probability and the text.

    Args:
        text: The input text.
        labels: Class names.
        probabilities: One probability per class, in the order of ``labels``.
        as_json: Write a JSON object instead of tab-separated text.

    Returns:
        The line, without a newline.
    """
    probs = {name: float(p) for name, p in zip(labels, probabilities, strict=True)}
    label = max(probs, key=probs.__getitem__)
    if as_json:
        return json.dumps(
            {"text": text, "label": label, "probabilities": probs}, ensure_ascii=False
        )
    shown = " ".join(f"{name}={p:.4f}" for name, p in probs.items())
    return f"{label}\t{shown}\t{text}"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m distillery.predict",
        description="Classify raw texts with the distilled ONNX student.",
    )
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success (argparse exits with 2 on usage errors or a missing model).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    root = args.model if args.model is not None else DEFAULT_MODEL_ROOT
    bundle = find_latest_bundle(root)
    if bundle is None:
        parser.exit(
            2,
            f"{parser.prog}: error: no model bundle found at {root}; "
            "run `kedro run` first or pass --model PATH\n",
        )

    # Imported after argument checks: onnxruntime, torch and mlflow take seconds.
    from distillery.ml.serve.serving import load_onnx_predictor  # noqa: PLC0415

    predictor = load_onnx_predictor(bundle, num_threads=args.threads)
    proba = predictor.predict_proba(args.texts)  # (N, C)
    lines = [
        format_prediction(text, predictor.labels, row, args.json)
        for text, row in zip(args.texts, proba, strict=True)
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
