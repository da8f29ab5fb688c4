"""Kedro datasets of the project."""

from __future__ import annotations

import logging
import shutil
from copy import deepcopy
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from distillery.ml.artifact import ClassifierArtifact

logger = logging.getLogger(__name__)


class ClassifierDataset(
    AbstractVersionedDataset[ClassifierArtifact, ClassifierArtifact]
):
    """A versioned folder holding a :class:`ClassifierArtifact`, also logged to MLflow.

    Example catalog entry::

        teacher_model:
          type: distillery.datasets.ClassifierDataset
          filepath: data/06_models/teacher
          versioned: true
          artifact_path: teacher   # folder in the active MLflow run; null = don't log

    Args:
        filepath: folder (local) for the model.
        version: Kedro version (set by ``versioned: true``).
        artifact_path: where to log the folder in the active MLflow run, or ``None``.
        metadata: free-form metadata, ignored by the dataset.
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        artifact_path: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=PurePosixPath(Path(filepath).resolve().as_posix()),
            version=version,
        )
        self._artifact_path = artifact_path
        self.metadata = metadata

    def load(self) -> ClassifierArtifact:
        """Load the model folder of the requested (default: latest) version."""
        return ClassifierArtifact.load(self._get_load_path())

    def save(self, data: ClassifierArtifact) -> None:
        """Write the model folder atomically (temp folder + rename), then log it."""
        path = Path(self._get_save_path())
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        data.save(tmp)
        tmp.rename(path)
        if self._artifact_path is not None:
            import mlflow  # noqa: PLC0415

            if mlflow.active_run() is not None:
                mlflow.log_artifacts(str(path), self._artifact_path)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "version": self._version,
            "artifact_path": self._artifact_path,
        }

    def _copy(self, **overwrite_params: Any) -> ClassifierDataset:
        dataset_copy = deepcopy(self)
        for name, value in overwrite_params.items():
            setattr(dataset_copy, name, value)
        return dataset_copy
