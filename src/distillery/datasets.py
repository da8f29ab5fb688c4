"""Kedro datasets of the project: versioned folders written atomically, logged to MLflow.

Each dataset is a folder (one version per run with ``versioned: true``) written to a
temporary name and renamed when complete, so a later stage never reads a half-written
model. The folder carries ``checksums.json``, the sha256 of each of its files, checked
on load: when the newest version of a versioned dataset was truncated or altered since,
the newest intact version is loaded instead, with a warning naming the file. With
``artifact_path`` set, the folder is also logged to the active MLflow run.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from copy import deepcopy
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

import dask.dataframe as dd
import fsspec
import pandas as pd
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    VersionNotFoundError,
    get_filepath_str,
    get_protocol_and_path,
)
from kedro_datasets.dask import ParquetDataset as DaskParquetDataset
from kedro_datasets.pandas import ParquetDataset as PandasParquetDataset

from distillery.checksums import MANIFEST_FILE, check_manifest, write_manifest
from distillery.ml.models.artifact import ClassifierArtifact

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _FolderDataset(AbstractVersionedDataset[T, T], Generic[T]):
    """Base class: subclasses say how to write an object to a folder and read it back.

    Args:
        filepath: local folder.
        version: Kedro version (set by ``versioned: true``).
        artifact_path: folder in the active MLflow run to log to; None = don't log.
        metadata: free-form, ignored.
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        artifact_path: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=PurePosixPath(Path(filepath).resolve().as_posix()), version=version
        )
        self._artifact_path = artifact_path
        self.metadata = metadata

    def _write(self, data: T, folder: Path) -> None:
        raise NotImplementedError

    def _read(self, folder: Path) -> T:
        raise NotImplementedError

    def load(self) -> T:
        """Read the requested (default: newest intact) version.

        Raises:
            DatasetError: If the requested version fails its checksums, or no version
                of a versioned dataset passes them.
        """
        folder = Path(self._get_load_path())
        problem = check_manifest(folder)
        if problem is None:
            return self._read(folder)
        if self._version is None or self._version.load is not None:
            raise DatasetError(f"Cannot load {folder}: {problem}")
        for older in self._versions_before(folder):
            if check_manifest(older) is None:
                logger.warning(
                    "%s; loading the previous intact version %s instead",
                    problem,
                    older.parent.name,
                )
                return self._read(older)
        raise DatasetError(
            f"Cannot load {folder}: {problem}, and no earlier version passes its "
            "checksums"
        )

    def _versions_before(self, folder: Path) -> list[Path]:
        """Saved versions older than ``folder``, newest first (names are timestamps)."""
        root = Path(str(self._filepath))
        return sorted(
            (
                candidate
                for candidate in root.glob(f"*/{root.name}")
                if candidate.is_dir() and candidate.parent.name < folder.parent.name
            ),
            reverse=True,
        )

    def save(self, data: T) -> None:
        """Write to a temporary folder, rename it into place, then log it to MLflow."""
        path = Path(self._get_save_path())
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._write(data, tmp)
        write_manifest(tmp)
        if path.exists():  # unversioned: replace the previous folder
            shutil.rmtree(path)
        tmp.rename(path)
        if self._artifact_path is not None:
            import mlflow  # noqa: PLC0415

            if mlflow.active_run() is not None:
                mlflow.log_artifacts(str(path), self._artifact_path)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except VersionNotFoundError:  # versioned, nothing saved yet
            return False

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "version": self._version,
            "artifact_path": self._artifact_path,
        }

    def _copy(self, **overwrite_params: Any) -> _FolderDataset[T]:
        dataset_copy = deepcopy(self)
        for name, value in overwrite_params.items():
            setattr(dataset_copy, name, value)
        return dataset_copy


class ClassifierDataset(_FolderDataset[ClassifierArtifact]):
    """A :class:`ClassifierArtifact` (safetensors weights, configs, tokenizer, labels)."""

    def _write(self, data: ClassifierArtifact, folder: Path) -> None:
        data.save(folder)

    def _read(self, folder: Path) -> ClassifierArtifact:
        return ClassifierArtifact.load(folder)


class ClassifierDictDataset(_FolderDataset[dict[str, ClassifierArtifact]]):
    """Several named classifiers, one sub-folder each (e.g. the student variants)."""

    def _write(self, data: dict[str, ClassifierArtifact], folder: Path) -> None:
        for name, artifact in data.items():
            artifact.save(folder / name)

    def _read(self, folder: Path) -> dict[str, ClassifierArtifact]:
        return {
            sub.name: ClassifierArtifact.load(sub)
            for sub in sorted(folder.iterdir())
            if sub.is_dir()
        }


class BinaryDictDataset(_FolderDataset[dict[str, bytes]]):
    """Named binary files (e.g. ONNX graphs): ``{"L2-H256.int8.onnx": b"..."}``."""

    def _write(self, data: dict[str, bytes], folder: Path) -> None:
        for name, payload in data.items():
            (folder / name).write_bytes(payload)

    def _read(self, folder: Path) -> dict[str, bytes]:
        return {
            f.name: f.read_bytes()
            for f in sorted(folder.iterdir())
            if f.is_file() and f.name != MANIFEST_FILE
        }


class BaselineDataset(_FolderDataset[Any]):
    """The TF-IDF + logistic-regression baseline, stored as JSON + npz (no pickle)."""

    def _write(self, data: Any, folder: Path) -> None:
        from distillery.ml.report.baseline import save_baseline  # noqa: PLC0415

        save_baseline(data, folder)

    def _read(self, folder: Path) -> Any:
        from distillery.ml.report.baseline import load_baseline  # noqa: PLC0415

        return load_baseline(folder)


class OnnxBundleDataset(_FolderDataset[Any]):
    """A serving bundle (ONNX graph, tokenizer, ``serving.json``); loads as its folder.

    Saving takes ``{"onnx": bytes, "tokenizer": ..., "normalize": {...}}``; loading
    returns the folder path, which is what MLflow logging and the CLI need.
    """

    def _write(self, data: Any, folder: Path) -> None:
        from distillery.ml.serve.serving import save_onnx_bundle  # noqa: PLC0415

        graph = folder / "source.onnx"
        graph.write_bytes(data["onnx"])
        save_onnx_bundle(graph, data["tokenizer"], folder, data["normalize"])
        graph.unlink()

    def _read(self, folder: Path) -> str:
        return str(folder)


def _temporary_name(path: str) -> str:
    return f"{path.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"


class AtomicParquetDataset(PandasParquetDataset):
    """``pandas.ParquetDataset`` that writes a temporary file and renames it into place.

    A run interrupted mid-write leaves the previous file (or none), never half of one
    that a later stage would read.
    """

    def save(self, data: pd.DataFrame) -> None:
        """Write to ``<path>.tmp-*``, then rename onto ``<path>``."""
        final = get_filepath_str(self._get_save_path(), self._protocol)
        tmp = _temporary_name(final)
        try:
            with self._fs.open(tmp, **self._fs_open_args_save) as handle:
                data.to_parquet(handle, **self._save_args)
            self._fs.mv(tmp, final)
        finally:
            if self._fs.exists(tmp):
                self._fs.rm(tmp)
        self._invalidate_cache()


class AtomicDaskParquetDataset(DaskParquetDataset):
    """``dask.ParquetDataset`` writing a temporary folder that replaces the old one.

    The old folder is moved aside only once the new one is complete, so a reader sees
    the old files, the new files, or (for an instant) none; never a mix.
    """

    def save(self, data: dd.DataFrame) -> None:
        """Write every partition to ``<path>.tmp-*``, then swap folders."""
        self._process_schema()
        protocol = get_protocol_and_path(self._filepath)[0]
        fs = fsspec.filesystem(protocol=protocol, **self.fs_args)
        tmp = _temporary_name(self._filepath)
        try:
            data.to_parquet(path=tmp, storage_options=self.fs_args, **self._save_args)
            if fs.exists(self._filepath):
                old = _temporary_name(self._filepath)
                fs.mv(self._filepath, old, recursive=True)
                fs.mv(tmp, self._filepath, recursive=True)
                fs.rm(old, recursive=True)
            else:
                fs.mv(tmp, self._filepath, recursive=True)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp, recursive=True)
