"""Serving bundle, MLflow pyfunc and registry helpers for the ONNX student.

A *bundle* is a self-contained folder that serves raw text without the training
configuration::

    model.onnx       the graph written by ``export_onnx`` (fp32 or quantized)
    tokenizer.json   the teacher's fast tokenizer (+ the files of ``save_pretrained``)
    serving.json     {"labels", "max_length", "pad_token", "normalize": {...}}

The normalisation options are stored because serving must apply the very same
``normalize_text`` that the training data went through; a model fed unnormalised
mentions and URLs sees inputs it was never trained on.

The bundle is loaded through the Rust ``tokenizers`` backend (``tokenizer.json``)
rather than ``transformers.AutoTokenizer``: it yields the same ids (see
``distillery.ml.serve.inference``) without needing the transformers configuration files.

``DistilleryOnnxModel`` wraps a bundle as an MLflow pyfunc (the bundle is its only
artifact), and ``log_and_register`` logs it in the active run, registers a new
version and points an alias (``challenger`` by default) at it, so that
``mlflow models serve -m models:/distillery-student@challenger`` serves it.

The pyfunc is logged *from code*: ``python_model`` is the path of
``pyfunc_model.py``, which MLflow copies into the logged model and runs at load
time. Nothing is pickled, so loading a registered model (promotion, serving)
never unpickles.

Registration is ordered so that a tracking server lost half-way leaves nothing
broken behind: the model files are uploaded first, the version is created with its
tags in one request only once they are all there, and the alias moves last. An
interruption raises :class:`RegistrationError`, which says what was and was not
recorded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from tokenizers import Tokenizer

from distillery.ml.compress.export import read_metadata
from distillery.ml.data.text import normalize_text
from distillery.ml.serve.explain import leave_one_out
from distillery.ml.serve.inference import OnnxPredictor

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CONFIG_FILE = "serving.json"
TOKENIZER_FILE = "tokenizer.json"
TEXT_COLUMN = "text"
EXPLAIN_PARAM = "explain"  # predict(params={"explain": True}) adds TOP_TOKENS_COLUMN
TOP_TOKENS_COLUMN = "top_tokens"
LABEL_COLUMN = "label"
PROB_PREFIX = "prob_"
BUNDLE_ARTIFACT = "bundle"  # key of the bundle folder in the pyfunc's artifacts
PYFUNC_NAME = "student_pyfunc"  # the logged model's name inside the run
# The models-from-code file MLflow stores with the model and runs to build it.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
ONNX_ARTIFACT_DIR = "student"  # the raw ONNX file goes to <run>/student/model.onnx
DEFAULT_REGISTERED_NAME = "distillery-student"
DEFAULT_ALIAS = "challenger"
# Pinned to the logging environment; MLflow adds its own pin. Inferring requirements
# instead would load the model in a subprocess to record its imports (slow).
SERVING_PACKAGES = ("onnxruntime", "tokenizers", "numpy", "pandas")
_NORMALIZE_KEYS = ("user_token", "url_token")
_NORMALIZE_DEFAULTS = {"user_token": "@user", "url_token": "http"}
EXAMPLE_TEXTS = (
    "@united great flight, thanks! http://t.co/abc",
    "my bag is lost again",
)


@dataclass(frozen=True)
class _BundleTokenizer:
    """The two attributes ``TextEncoder`` reads from a transformers tokenizer."""

    backend_tokenizer: Tokenizer
    pad_token: str


def save_onnx_bundle(
    onnx_path: str | Path,
    tokenizer: Any,
    folder: str | Path,
    normalize_options: Mapping[str, Any],
) -> Path:
    """Write a self-contained serving folder: ONNX graph, tokenizer and settings.

    Labels and ``max_length`` are read from the ONNX metadata written by
    :func:`distillery.ml.export.export_onnx`.

    Args:
        onnx_path: ONNX file written by ``export_onnx`` (or ``quantize_onnx``).
        tokenizer: The teacher's fast tokenizer (transformers, saved with
            ``save_pretrained``) or a ``tokenizers.Tokenizer``.
        folder: Output folder; created if missing, existing bundle files replaced.
        normalize_options: ``user_token`` and ``url_token`` used by ``normalize_text``
            on the training data; other keys are ignored, so the preprocess
            parameters can be passed as they are. Missing keys take
            ``normalize_text``'s defaults.

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        ValueError: If the ONNX file lacks labels or max_length metadata, a
            normalisation option is not a string, or the tokenizer has no pad token.
        TypeError: If ``tokenizer`` is not a fast tokenizer.
    """
    onnx_path, folder = Path(onnx_path), Path(folder)
    metadata = read_metadata(onnx_path)
    missing = [k for k in ("labels", "max_length") if k not in metadata]
    if missing:
        raise ValueError(f"{onnx_path} lacks ONNX metadata {missing}; use export_onnx")
    normalize = {
        key: normalize_options.get(key, _NORMALIZE_DEFAULTS[key])
        for key in _NORMALIZE_KEYS
    }
    bad = {k: v for k, v in normalize.items() if not isinstance(v, str)}
    if bad:
        raise ValueError(f"normalize options must be strings, got {bad}")
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, Tokenizer):
        raise TypeError(f"expected a fast tokenizer, got {type(tokenizer).__name__}")
    pad_token = getattr(tokenizer, "pad_token", None) or "[PAD]"
    if backend.token_to_id(pad_token) is None:
        raise ValueError(f"tokenizer has no pad token {pad_token!r}")

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / MODEL_FILE)
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(folder))
    else:
        backend.save(str(folder / TOKENIZER_FILE))
    labels = json.loads(metadata["labels"])
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ValueError(f"{onnx_path} metadata labels is not a list of strings")
    config = {
        "labels": labels,
        "max_length": int(metadata["max_length"]),
        "pad_token": pad_token,
        "normalize": normalize,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    logger.info(
        "Saved ONNX serving bundle to %s (%d labels, max_length %d)",
        folder,
        len(config["labels"]),
        config["max_length"],
    )
    return folder


def read_bundle_config(folder: str | Path) -> dict[str, Any]:
    """Read and check ``serving.json`` of a bundle written by :func:`save_onnx_bundle`.

    Args:
        folder: The bundle folder.

    Returns:
        The settings: ``labels``, ``max_length``, ``pad_token`` and ``normalize``.

    Raises:
        FileNotFoundError: If the folder lacks ``model.onnx``, ``tokenizer.json`` or
            ``serving.json``.
        ValueError: If ``serving.json`` lacks a key.
    """
    folder = Path(folder)
    missing = [
        name
        for name in (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE)
        if not (folder / name).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{folder} is not a serving bundle: missing {missing}")
    config = json.loads((folder / CONFIG_FILE).read_text())
    absent = [k for k in ("labels", "max_length", "normalize") if k not in config]
    if absent:
        raise ValueError(f"{folder / CONFIG_FILE} lacks {absent}")
    config.setdefault("pad_token", "[PAD]")
    return config


def load_onnx_predictor(folder: str | Path, num_threads: int = 1) -> OnnxPredictor:
    """Load a bundle as a predictor that takes raw text (normalised on the way in).

    Args:
        folder: Bundle folder written by :func:`save_onnx_bundle`.
        num_threads: ONNX Runtime intra-op threads.

    Returns:
        An :class:`OnnxPredictor` with the bundle's labels, max_length and normaliser.

    Raises:
        FileNotFoundError: If ``folder`` is not a bundle.
    """
    folder = Path(folder)
    config = read_bundle_config(folder)
    tokenizer = _BundleTokenizer(
        Tokenizer.from_file(str(folder / TOKENIZER_FILE)), config["pad_token"]
    )
    normalize = functools.partial(normalize_text, **config["normalize"])
    return OnnxPredictor(
        folder / MODEL_FILE,
        tokenizer,
        labels=list(config["labels"]),
        max_length=int(config["max_length"]),
        num_threads=num_threads,
        normalize=normalize,
    )


def probabilities_frame(labels: Sequence[str], proba: np.ndarray) -> pd.DataFrame:
    """Turn ``(N, C)`` probabilities into ``label`` + one ``prob_<label>`` column each.

    Args:
        labels: Class names, in column order of ``proba``.
        proba: Probabilities, shape ``(N, C)``.

    Returns:
        A frame with ``N`` rows.
    """
    columns: dict[str, Any] = {
        LABEL_COLUMN: [labels[i] for i in proba.argmax(axis=1)] if len(proba) else []
    }
    for j, name in enumerate(labels):
        columns[f"{PROB_PREFIX}{name}"] = proba[:, j].astype(np.float64)
    return pd.DataFrame(columns)


def texts_from_input(model_input: Any) -> list[str]:
    """Extract the texts from what a pyfunc may receive.

    Args:
        model_input: A DataFrame with a ``text`` column (or a single column), a
            Series, a string, a list of strings or of ``{"text": ...}`` records, a
            ``{"text": [...]}`` mapping, or a 1-D array.

    Returns:
        The texts, in order.

    Raises:
        ValueError: If no text column can be found or a value is not a string.
    """
    if isinstance(model_input, str):
        values: list[Any] = [model_input]
    elif isinstance(model_input, Mapping) and TEXT_COLUMN in model_input:
        value = model_input[TEXT_COLUMN]
        values = [value] if isinstance(value, str) else list(value)
    elif isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            values = model_input[TEXT_COLUMN].tolist()
        elif model_input.shape[1] == 1:
            values = model_input.iloc[:, 0].tolist()
        else:
            raise ValueError(
                f"expected a '{TEXT_COLUMN}' column, got {list(model_input.columns)}"
            )
    elif isinstance(model_input, pd.Series | np.ndarray):
        values = np.asarray(model_input, dtype=object).ravel().tolist()
    elif isinstance(model_input, Sequence):
        values = [
            v[TEXT_COLUMN] if isinstance(v, Mapping) and TEXT_COLUMN in v else v
            for v in model_input
        ]
    else:
        raise ValueError(f"unsupported input type {type(model_input).__name__}")
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise ValueError(f"texts must be strings; rows {bad[:5]} are not")
    return values


class RegistrationError(RuntimeError):
    """Logging or registering a bundle stopped half-way (most often: MLflow went away).

    The message says which step failed and what the registry holds afterwards.
    """


class DistilleryOnnxModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc over a serving bundle: raw texts in, label + probabilities out.

    The bundle folder is the artifact ``bundle``; ``model_config={"num_threads": N}``
    (at log or load time) sets ONNX Runtime's threads per worker (default 1). The
    instance is built by ``pyfunc_model.py`` (models from code), never unpickled.
    """

    def __init__(self) -> None:
        self._predictor: OnnxPredictor | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the bundle named by ``context.artifacts["bundle"]``."""
        threads = int((context.model_config or {}).get("num_threads", 1))
        self._predictor = load_onnx_predictor(
            context.artifacts[BUNDLE_ARTIFACT], num_threads=threads
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Classify raw texts.

        Args:
            context: The pyfunc context (unused; the bundle is loaded already).
            model_input: A DataFrame with a ``text`` column; a Series or a list of
                strings works too (see :func:`texts_from_input`). Through a loaded
                ``PyFuncModel`` MLflow first enforces the signature (a ``text``
                column), so pass a DataFrame, records or a Series named ``text``
                there; the scoring server also takes ``{"inputs": ["..."]}``.
            params: ``{"explain": True}`` adds a ``top_tokens`` column: the three
                words that weigh most toward each text's label, with their weights
                (leave-one-out, :mod:`distillery.ml.serve.explain`); it costs about
                one prediction per word.

        Returns:
            ``label`` and ``prob_<label>`` columns (and ``top_tokens`` when asked),
            one row per text.

        Raises:
            RuntimeError: If called before ``load_context``.
            MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400 from the scoring
                server) if the input holds no texts or a value is not a string.
        """
        if self._predictor is None:
            raise RuntimeError("DistilleryOnnxModel.predict called before load_context")
        try:
            texts = texts_from_input(model_input)
        except ValueError as error:
            raise MlflowException(
                str(error), error_code=INVALID_PARAMETER_VALUE
            ) from error
        proba = self._predictor.predict_proba(texts)  # (N, C)
        frame = probabilities_frame(self._predictor.labels, proba)
        if (params or {}).get(EXPLAIN_PARAM):
            explained = leave_one_out(
                self._predictor, texts, normalize=self._predictor.encoder.normalize
            )
            frame[TOP_TOKENS_COLUMN] = [e.top_tokens(3) for e in explained]
        return frame


def serving_requirements() -> list[str]:
    """Pinned pip requirements of the pyfunc, read from the installed versions."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in SERVING_PACKAGES]


@contextlib.contextmanager
def _run_for_logging(run_id: str | None) -> Iterator[str]:
    """Yield the id of the run to log into: the active one, or ``run_id`` resumed."""
    active = mlflow.active_run()
    if active is not None:
        if run_id is not None and run_id != active.info.run_id:
            raise ValueError(
                f"run_id {run_id} differs from the active run {active.info.run_id}"
            )
        yield active.info.run_id
        return
    if run_id is None:
        raise RuntimeError("no active MLflow run: start one or pass run_id")
    with mlflow.start_run(run_id=run_id) as run:
        yield run.info.run_id


def log_and_register(
    bundle_folder: str | Path,
    registered_name: str = DEFAULT_REGISTERED_NAME,
    alias: str = DEFAULT_ALIAS,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Log a bundle as a pyfunc, register a new version and point ``alias`` at it.

    The raw ONNX file is also logged as the run artifact ``student/model.onnx``.
    The steps run in an order that leaves the registry consistent if MLflow goes
    away between any two of them: every file is uploaded before the version exists,
    the version is created with its tags in one request, and the alias moves last,
    so ``alias`` only ever points at a complete version.

    Args:
        bundle_folder: Folder written by :func:`save_onnx_bundle`.
        registered_name: Registered model name.
        alias: Alias moved to the new version.
        tags: Tags set on the new model version (and the logged model); values are
            turned into strings.
        run_id: Run to log into. Default the active run; if no run is active the
            run is resumed and ended (status FINISHED) afterwards.

    Returns:
        ``name``, ``version`` (int), ``alias``, ``model_uri``
        (``models:/<name>/<version>``), ``alias_uri``, ``run_id`` and
        ``logged_model_uri``.

    Raises:
        RuntimeError: If no run is active and no ``run_id`` is given.
        ValueError: If ``run_id`` differs from the active run.
        FileNotFoundError: If ``bundle_folder`` is not a bundle.
        RegistrationError: If MLflow fails (or cannot be reached) half-way; the
            message names the step and what the registry holds.
    """
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    bundle = Path(bundle_folder)
    # Checked before anything is registered: a broken bundle fails here.
    signature, example = _signature_and_example(bundle)
    str_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    step, version = "logging the model files", None
    try:
        with _run_for_logging(run_id) as active_run_id:
            info = _log_bundle(bundle, signature, example, str_tags)
            step = f"registering a version of {registered_name}"
            version = mlflow.register_model(
                info.model_uri, registered_name, tags=str_tags or None
            ).version
        step = f"moving @{alias} to version {version}"
        MlflowClient().set_registered_model_alias(registered_name, alias, str(version))
    except (MlflowException, OSError) as error:
        raise RegistrationError(
            _interrupted_message(registered_name, alias, step, version, error)
        ) from error
    logger.info(
        "Registered %s version %s (alias %s) from run %s",
        registered_name,
        version,
        alias,
        active_run_id,
    )
    return {
        "name": registered_name,
        "version": int(version),
        "alias": alias,
        "model_uri": f"models:/{registered_name}/{version}",
        "alias_uri": f"models:/{registered_name}@{alias}",
        "run_id": active_run_id,
        "logged_model_uri": info.model_uri,
    }


def _signature_and_example(bundle: Path) -> tuple[ModelSignature, pd.DataFrame]:
    """The pyfunc's signature and input example, from predicting the example texts."""
    from mlflow.models import infer_signature  # noqa: PLC0415

    predictor = load_onnx_predictor(bundle)
    example = pd.DataFrame({TEXT_COLUMN: list(EXAMPLE_TEXTS)})
    output = probabilities_frame(
        predictor.labels, predictor.predict_proba(list(EXAMPLE_TEXTS))
    )
    return infer_signature(example, output, params={EXPLAIN_PARAM: False}), example


def _log_bundle(
    bundle: Path,
    signature: ModelSignature,
    example: pd.DataFrame,
    str_tags: dict[str, str],
) -> ModelInfo:
    """Upload the raw ONNX file and the pyfunc (from code) into the active run."""
    mlflow.log_artifact(str(bundle / MODEL_FILE), artifact_path=ONNX_ARTIFACT_DIR)
    return mlflow.pyfunc.log_model(
        name=PYFUNC_NAME,
        python_model=str(PYFUNC_CODE),
        artifacts={BUNDLE_ARTIFACT: str(bundle)},
        pip_requirements=serving_requirements(),
        signature=signature,
        input_example=example,
        model_config={"num_threads": 1},
        tags=str_tags or None,
    )


def _interrupted_message(
    name: str, alias: str, step: str, version: str | None, error: BaseException
) -> str:
    """What failed and what the registry holds, for :class:`RegistrationError`."""
    if version is None:
        held = f"no version was confirmed and {name}@{alias} was not moved"
    else:
        held = (
            f"version {version} is registered with all its files, "
            f"but {name}@{alias} was not moved to it"
        )
    return (
        f"MLflow ({mlflow.get_tracking_uri()}) failed while {step}: {error}. "
        f"In the registry {held}. The serving bundle on disk is complete; register "
        "again once the tracking server answers."
    )
