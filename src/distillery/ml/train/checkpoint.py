"""Resumable training checkpoints, written atomically and read back without pickle code.

Layout under ``checkpoint_dir``::

    run-<hash16>/                 one folder per config hash, so runs never mix
        run.json                  the hashed config fields and data fingerprint
        step-00000012/            one folder per checkpoint; the last ``keep`` remain
            config.json, classifier.json, model.safetensors   (TextClassifier.save)
            state.pt              optimizer, scheduler, progress, RNG states
            meta.json             hash, step, best epoch and the sha256 of every
                                  file above and of the best epoch's files; last
            sharded/              FSDP2 only, instead of the weights and optimizer:
                                  every rank's rows as safetensors, and index.json
        best-epoch-0002/          weights of the best validation epoch so far

``meta.json`` is written last, so a folder without it is incomplete. Resuming checks
every recorded sha256: a truncated or altered file (the step's weights or state, or
the best epoch's weights the run would end with) makes the checkpoint skipped, with
a warning naming the file, in favour of the newest one that checks out.
``state.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``, weights are safetensors and the rest JSON, so a
tampered file cannot run code on load. A checkpoint without checksums, or with sharded
state in the older DCP layout (whose metadata is a pickle), is not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from distillery.checksums import first_mismatch, folder_digests
from distillery.ml.models.modeling import WEIGHTS_FILE, TextClassifier

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"
RUN_FILE = "run.json"
SHARDED_DIR = "sharded"
SHARDED_INDEX = "index.json"  # in SHARDED_DIR: the tensors each rank file holds
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_BEST_DIR = re.compile(r"^best-epoch-(\d{4})$")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, inconsistent or unsafe to load."""


def config_hash(fields: dict[str, Any], data_fingerprint: str) -> str:
    """Return the sha256 that identifies a run's result-affecting inputs.

    Args:
        fields: JSON-serializable config values that change the trained weights.
        data_fingerprint: Digest of the training and validation data.

    Returns:
        Hex digest.
    """
    payload = json.dumps({"config": fields, "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_meta(folder: Path) -> dict[str, Any] | None:
    """A checkpoint's ``meta.json``, or None when it is unreadable."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def capture_rng_state() -> dict[str, Any]:
    """Return this process's python, numpy, torch and CUDA RNG states as tensors/plain types."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        # weights_only refuses numpy arrays, so the MT19937 key travels as a tensor.
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npy["key"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write a training state (tensors and plain containers only) with ``torch.save``."""
    torch.save(state, str(path))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a ``state.pt`` with ``weights_only=True``.

    Raises:
        CheckpointError: If the file holds anything beyond tensors and plain
            containers (e.g. a pickled object with ``__reduce__``), or is corrupt.
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise CheckpointError(
            f"refusing to load {path}: not a plain tensor/container state ({err})"
        ) from err


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint folder on disk."""

    path: Path
    step: int


def _atomic_dir(parent: Path, name: str) -> Path:
    """Return a fresh hidden temporary folder in ``parent`` for writing ``name``."""
    tmp = parent / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    return tmp


class CheckpointManager:
    """Write, find, prune and read checkpoints of one config hash.

    Only rank 0 calls the writing methods.

    Args:
        root: ``checkpoint_dir``.
        run_hash: :func:`config_hash` of this run.
        fields: The hashed config fields, kept to explain a fresh start.
        data_fingerprint: The hashed data digest, likewise.
        keep: Step checkpoints to keep.
    """

    def __init__(
        self,
        root: str | Path,
        run_hash: str,
        fields: dict[str, Any],
        data_fingerprint: str,
        keep: int = 2,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.run_hash = run_hash
        self.fields = fields
        self.data_fingerprint = data_fingerprint
        self.keep = keep
        self.run_dir = self.root / f"run-{run_hash[:16]}"
        self.skipped: list[tuple[Path, str]] = []  # (checkpoint, problem) of latest()

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints of this run, oldest first."""
        if not self.run_dir.is_dir():
            return []
        found = []
        for child in self.run_dir.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / META_FILE).is_file():
                found.append(Checkpoint(child, int(match.group(1))))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint of this run whose files match their checksums.

        A checkpoint that fails :meth:`verify` is skipped with a warning naming the
        file, and recorded in :attr:`skipped`.

        Returns:
            The checkpoint, or None when there is no intact one.
        """
        self.skipped = []
        for checkpoint in reversed(self.checkpoints()):
            problem = self.verify(checkpoint)
            if problem is None:
                return checkpoint
            self.skipped.append((checkpoint.path, problem))
            logger.warning(
                "Skipping checkpoint step %d: %s; trying the previous one",
                checkpoint.step,
                problem,
            )
        return None

    def verify(self, checkpoint: Checkpoint) -> str | None:
        """Check a checkpoint's config hash and the sha256 of each of its files.

        The best epoch's weights it refers to are checked too: a resumed run ends
        with them. A checkpoint written before checksums were recorded is refused.

        Returns:
            None when it checks out, else what is wrong, naming the file.
        """
        meta = _read_meta(checkpoint.path)
        if meta is None:
            return f"{checkpoint.path / META_FILE} is unreadable"
        if meta.get("config_hash") != self.run_hash:
            return (
                f"{checkpoint.path} has config hash {meta.get('config_hash')}, "
                f"expected {self.run_hash}"
            )
        if "files" not in meta:
            return (
                f"{checkpoint.path / META_FILE} records no checksums (written by an "
                "older version), so its files cannot be verified"
            )
        sharded = checkpoint.path / SHARDED_DIR
        if sharded.is_dir() and not (sharded / SHARDED_INDEX).is_file():
            return (
                f"{sharded} has no {SHARDED_INDEX}: sharded state in the older DCP "
                "layout, whose metadata is a pickle, is not loaded"
            )
        return first_mismatch(checkpoint.path, meta["files"]) or first_mismatch(
            self.run_dir, meta.get("best_files") or {}
        )

    def explain_fresh_start(self) -> str:
        """Say why no checkpoint applies: none at all, or which inputs changed."""
        others = []
        if self.root.is_dir():
            others = [
                p / RUN_FILE
                for p in self.root.glob("run-*")
                if p != self.run_dir and (p / RUN_FILE).is_file()
            ]
        if self.skipped:
            return (
                f"no intact checkpoint in {self.run_dir} ({len(self.skipped)} "
                "failed their checksums, see the warnings above); starting fresh"
            )
        if not others:
            return f"no checkpoint in {self.root}; starting fresh"
        newest = max(others, key=lambda p: p.stat().st_mtime)
        previous = json.loads(newest.read_text())
        changes = [
            f"{key}: {previous['config'].get(key)!r} -> {value!r}"
            for key, value in self.fields.items()
            if previous["config"].get(key) != value
        ]
        if previous.get("data") != self.data_fingerprint:
            changes.append("training/validation data or initial weights")
        reason = "; ".join(changes) or "hashed inputs differ"
        return (
            f"checkpoints in {newest.parent} were made with a different config "
            f"({reason}); starting fresh"
        )

    def save(
        self,
        model: TextClassifier | None,
        state: dict[str, Any],
        step: int,
        best_epoch: int | None,
        *,
        sharded: Path | None = None,
    ) -> Path:
        """Write a checkpoint atomically (temp folder + rename), then prune old ones.

        ``meta.json`` goes last and records the sha256 of every file, and of the
        files of ``best_epoch``'s weights.

        Args:
            model: The unwrapped model; None when ``sharded`` holds the weights.
            state: Optimizer/scheduler/progress/RNG state; tensors and plain types.
            step: Optimizer steps done.
            best_epoch: The epoch whose weights are the best so far, kept on disk
                while this checkpoint exists.
            sharded: A complete sharded-state folder, moved into the checkpoint.

        Returns:
            The checkpoint folder.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        run_file = self.run_dir / RUN_FILE
        if not run_file.exists():
            record = {"config": self.fields, "data": self.data_fingerprint}
            run_file.write_text(json.dumps(record, indent=2, sort_keys=True))
        name = f"step-{step:08d}"
        final = self.run_dir / name
        tmp = _atomic_dir(self.run_dir, name)
        if model is not None:
            model.save(tmp)
        if sharded is not None:
            os.replace(sharded, tmp / SHARDED_DIR)
        save_state(state, tmp / STATE_FILE)
        best = self.best_dir(best_epoch) if best_epoch is not None else None
        meta = {
            "config_hash": self.run_hash,
            "step": step,
            "best_epoch": best_epoch,
            "files": folder_digests(tmp),
            "best_files": (
                folder_digests(best, f"{best.name}/")
                if best is not None and best.is_dir()
                else None
            ),
        }
        partial = tmp / f".{META_FILE}.partial"
        partial.write_text(json.dumps(meta, indent=2))
        os.replace(partial, tmp / META_FILE)
        if final.exists():
            # Only a rerun of identical, deterministic steps gets here.
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune(best_epoch)
        logger.info("Wrote checkpoint %s", final)
        return final

    def save_best(self, model: TextClassifier, epoch: int) -> Path:
        """Write the weights of a new best epoch atomically."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        name = f"best-epoch-{epoch:04d}"
        final = self.run_dir / name
        tmp = _atomic_dir(self.run_dir, name)
        model.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def best_dir(self, epoch: int) -> Path:
        """Folder of the best weights written for ``epoch``."""
        return self.run_dir / f"best-epoch-{epoch:04d}"

    def load(
        self, checkpoint: Checkpoint
    ) -> tuple[dict[str, torch.Tensor] | None, dict]:
        """Read a checkpoint's weights and state.

        Returns:
            ``(model_state_dict, state)``; the weights are None in a sharded
            checkpoint.

        Raises:
            CheckpointError: If the folder belongs to another config, a file fails
                its checksum (see :meth:`verify`), or the state file is unsafe.
        """
        problem = self.verify(checkpoint)
        if problem is not None:
            raise CheckpointError(problem)
        state = load_state(checkpoint.path / STATE_FILE)
        weights_file = checkpoint.path / WEIGHTS_FILE
        if not weights_file.is_file():
            return None, state
        try:
            return load_file(str(weights_file)), state
        except (OSError, SafetensorError) as err:
            raise CheckpointError(
                f"{weights_file} is not a readable safetensors file ({err})"
            ) from err

    def _prune(self, best_epoch: int | None) -> None:
        """Drop all but the newest ``keep`` checkpoints and unreferenced best weights."""
        found = self.checkpoints()
        for old in found[: -self.keep]:
            shutil.rmtree(old.path, ignore_errors=True)
        # A kept checkpoint may point to an older best epoch; that one must survive
        # so that resuming from it still finds its best weights.
        referenced = {best_epoch}
        for kept in found[-self.keep :]:
            referenced.add((_read_meta(kept.path) or {}).get("best_epoch"))
        for child in self.run_dir.iterdir():
            match = _BEST_DIR.match(child.name)
            if match and int(match.group(1)) not in referenced:
                shutil.rmtree(child, ignore_errors=True)
