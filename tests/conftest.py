"""Project-wide test settings (no telemetry, offline hub) and shared fixtures."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# The packaged teacher is local; a test must never reach for the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, 32-wide BERT with the packaged teacher's real tokenizer files.

    It tokenises like the real teacher (same vocabulary) but trains in milliseconds.
    """
    # Imported here: the environment above must be set before transformers loads.
    import torch  # noqa: PLC0415
    from transformers import BertConfig, BertModel  # noqa: PLC0415

    from distillery.ml.modeling import load_tokenizer  # noqa: PLC0415

    path = tmp_path_factory.mktemp("tiny_teacher")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    load_tokenizer("builtin").save_pretrained(str(path))
    return path


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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's configuration in a fresh folder, with empty data layers."""
    copy = tmp_path / "project"
    copy.mkdir()
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


@pytest.fixture
def kedro_run(project: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``kedro run --env test <args>`` in the copy; return the finished process."""

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
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

    return run
