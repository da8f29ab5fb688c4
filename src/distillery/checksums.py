"""sha256 manifests for folders the project writes: checkpoints and saved models.

A manifest maps each file's path (relative to a root) to its sha256. It is written
after the files it lists, so a folder whose manifest checks out is whole and unaltered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_FILE = "checksums.json"


def write_manifest(folder: Path) -> None:
    """Record the sha256 of every file under ``folder`` in its ``checksums.json``."""
    digests = folder_digests(folder, exclude=frozenset({MANIFEST_FILE}))
    (folder / MANIFEST_FILE).write_text(json.dumps({"sha256": digests}, indent=1))


def check_manifest(folder: Path) -> str | None:
    """What is wrong with a saved folder, naming the file; None when it checks out.

    A folder saved before manifests were written (no ``checksums.json``) passes.
    """
    manifest = folder / MANIFEST_FILE
    if not manifest.exists():
        return None
    try:
        digests = json.loads(manifest.read_text())["sha256"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return f"{manifest} is unreadable"
    return first_mismatch(folder, digests)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_digests(
    folder: Path, prefix: str = "", exclude: frozenset[str] = frozenset()
) -> dict[str, str]:
    """sha256 of each file under ``folder`` (sub-folders included), keyed
    ``prefix + relative path``; names in ``exclude`` (relative paths) are left out."""
    digests = {}
    for child in sorted(folder.rglob("*")):
        name = child.relative_to(folder).as_posix()
        if child.is_file() and name not in exclude:
            digests[prefix + name] = file_sha256(child)
    return digests


def first_mismatch(root: Path, digests: dict[str, str]) -> str | None:
    """Check the files of a manifest under ``root``.

    Returns:
        None when every file is present with its recorded sha256, else what is
        wrong, naming the first file that is missing, truncated or altered.
    """
    for name, digest in digests.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if file_sha256(path) != digest:
            return f"{path} does not match its sha256 (truncated or altered)"
    return None
