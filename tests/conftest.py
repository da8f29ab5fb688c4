"""Project-wide test settings (no telemetry, offline hub) and shared fixtures."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pandas as pd
    from transformers import BertModel

    from distillery.ml.models.modeling import TextClassifier

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# The packaged teacher is local; a test must never reach for the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# The two shapes of tiny BERT the tests build (width 32, 2 heads of 16, FFN 37):
# "teacher" shares the packaged teacher's 30522-id vocabulary, so its real tokenizer
# works; "toy" has 100 ids and 4 layers, for tests that feed raw ids.
TINY_BERT_SHAPES = {
    "teacher": {
        "vocab_size": 30522,
        "num_hidden_layers": 1,
        "max_position_embeddings": 128,
    },
    "toy": {"vocab_size": 100, "num_hidden_layers": 4, "max_position_embeddings": 64},
}


def _tiny_bert(shape: str = "toy", seed: int = 0) -> BertModel:
    """A randomly initialised, pooler-less ``BertModel`` of a ``TINY_BERT_SHAPES``."""
    # Imported here: the environment above must be set before transformers loads.
    import torch  # noqa: PLC0415
    from transformers import BertConfig, BertModel  # noqa: PLC0415, F811

    config = BertConfig(
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=37,
        **TINY_BERT_SHAPES[shape],
    )
    torch.manual_seed(seed)
    return BertModel(config, add_pooling_layer=False)


def _tiny_classifier(
    labels: list[str], shape: str = "toy", seed: int = 0
) -> TextClassifier:
    """A ``TextClassifier`` (eval mode) over ``_tiny_bert(shape, seed)``."""
    from distillery.ml.models.modeling import TextClassifier  # noqa: PLC0415, F811

    return TextClassifier(_tiny_bert(shape, seed), labels).eval()


@pytest.fixture(scope="session")
def tiny_classifier() -> Callable[..., TextClassifier]:
    """``tiny_classifier(labels, shape="toy", seed=0)`` builds a tiny classifier.

    ``shape="teacher"`` gives a 1-layer model over the packaged teacher's vocabulary;
    ``"toy"`` a 4-layer one over 100 ids (max 64 positions).
    """
    return _tiny_classifier


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, 32-wide BERT with the packaged teacher's real tokenizer files.

    It tokenises like the real teacher (same vocabulary) but trains in milliseconds.
    """
    from distillery.ml.models.modeling import load_tokenizer  # noqa: PLC0415

    path = tmp_path_factory.mktemp("tiny_teacher")
    _tiny_bert("teacher").save_pretrained(path)
    load_tokenizer("builtin").save_pretrained(str(path))
    return path


TRIP_WORDS = {
    "negative": ["awful", "late", "rude"],
    "positive": ["great", "kind", "calm"],
}


def _trip_split(n: int, offset: int) -> pd.DataFrame:
    """``n`` rows per class, "<word> trip <i>", tokenized (builtin, 32 tokens)."""
    import pandas as pd  # noqa: PLC0415, F811

    from distillery.ml.data.text import tokenize_partition  # noqa: PLC0415

    rows = [
        {"text": f"{ws[i % 3]} trip {i}", "label": label, "source_row": offset + i}
        for i in range(n)
        for label, ws in TRIP_WORDS.items()
    ]
    return tokenize_partition(
        pd.DataFrame(rows), "builtin", 32, {"negative": 0, "positive": 1}
    )


@pytest.fixture(scope="session")
def trip_split() -> Callable[[int, int], pd.DataFrame]:
    """``trip_split(n, offset)``: a toy negative/positive model-input frame.

    ``2 * n`` rows ("<word> trip <i>"), ``source_row`` from ``offset``.
    """
    return _trip_split


def _tiny_train_options(
    model_dir: Path, workdir: Path, **overrides: Any
) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model_dir),
        "max_length": 32,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "epochs": 2,
        "workdir": str(workdir),
    } | overrides


@pytest.fixture(scope="session")
def tiny_train_options() -> Callable[..., dict[str, Any]]:
    """``tiny_train_options(model_dir, workdir, **overrides)``: ``params:train_options``.

    Batch 8, 2 epochs, lr 1e-3, 32 tokens; every other key comes from ``overrides``.
    """
    return _tiny_train_options


ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
LAYERS = (
    "01_raw",
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)


def copy_project(copy: Path) -> Path:
    """The project's configuration in ``copy`` (created), with empty data layers."""
    copy.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", copy)
    (
        copy / "src"
    ).mkdir()  # kedro wants the folder; the package is installed (editable)
    shutil.copytree(
        ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("local")
    )
    (copy / "conf" / "local").mkdir()
    for layer in LAYERS:
        (copy / "data" / layer).mkdir(parents=True)
    return copy


def run_kedro(
    project: Path, *args: str, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``kedro run --env test <args>`` in ``project``; return the finished process."""
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    return subprocess.run(
        [KEDRO, "run", "--env", "test", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's configuration in a fresh folder, with empty data layers."""
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def project_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], Path]:
    """Make a project copy in a fresh session-lived folder (for module fixtures)."""
    return lambda name: copy_project(tmp_path_factory.mktemp(name) / "project")


@pytest.fixture
def kedro_run(project: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``kedro run --env test <args>`` in the copy; return the finished process."""
    return functools.partial(run_kedro, project)


@dataclass(frozen=True)
class FullRun:
    """Every stage of ``kedro run --env test``: stopped at the gates, then resumed."""

    project: Path
    failed: subprocess.CompletedProcess  # the run with a gate no student can pass
    bundle_after_failure: bool  # did the serving bundle exist after it?
    resume_nodes: str | None  # the nodes Kedro said to resume from
    resumed: subprocess.CompletedProcess | None  # `--from-nodes <resume_nodes>`


@pytest.fixture(scope="session")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    """The full tiny run, once per session: the slowest part of the suite.

    test_full_run asserts on it; other end-to-end tests (the notebook) read its
    outputs and must not write to the copy.
    """
    project = copy_project(tmp_path_factory.mktemp("full_run") / "project")
    failed = run_kedro(
        project,
        "--params",
        "compress_options.gates.min_size_ratio=1000",
        timeout=1200,
    )
    bundle = (project / "data/06_models/student_onnx").exists()
    resume = re.search(r'--from-nodes[ =]"?([\w.,]+)"?', failed.stdout + failed.stderr)
    resumed = None
    if resume is not None:
        resumed = run_kedro(project, "--from-nodes", resume.group(1), timeout=1200)
    return FullRun(
        project=project,
        failed=failed,
        bundle_after_failure=bundle,
        resume_nodes=resume.group(1) if resume else None,
        resumed=resumed,
    )
