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


# Tiny randomly initialised teachers of other families (width 32, 3 blocks so the
# base config's freeze_layers: 2 leaves one to train). Encoders reuse the packaged
# WordPiece tokenizer, or a byte-level BPE trained here (RoBERTa, decoders): no hub.
TINY_FAMILIES = {
    "bert": {"tokenizer": "wordpiece"},
    "roberta": {
        "tokenizer": "roberta-bpe",
        # Positions start after the pad id: 128 tokens need 130 rows.
        "config": {"max_position_embeddings": 160, "type_vocab_size": 1},
    },
    "deberta-v2": {
        "tokenizer": "wordpiece",
        "config": {
            "max_position_embeddings": 512,
            "relative_attention": True,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,  # DeBERTa-v3's setting
            "position_buckets": 32,
            "type_vocab_size": 0,
        },
    },
    "modernbert": {
        "tokenizer": "wordpiece",
        "config": {
            "max_position_embeddings": 512,
            "cls_token_id": 101,
            "sep_token_id": 102,
            "bos_token_id": 101,
            "eos_token_id": 102,
        },
    },
    "electra": {"tokenizer": "wordpiece", "config": {"embedding_size": 32}},
    "qwen2": {
        "tokenizer": "decoder-bpe",
        "config": {"max_position_embeddings": 256, "num_key_value_heads": 1},
    },
    "llama": {
        "tokenizer": "decoder-bpe",
        "config": {"max_position_embeddings": 256, "num_key_value_heads": 1},
    },
    "mistral": {
        "tokenizer": "decoder-bpe",
        "config": {
            "max_position_embeddings": 256,
            "num_key_value_heads": 1,
            "sliding_window": None,
        },
    },
    "gemma": {
        "tokenizer": "decoder-bpe",
        # Gemma's head size is its own setting (256 by default), not hidden / heads.
        "config": {
            "max_position_embeddings": 256,
            "num_key_value_heads": 1,
            "head_dim": 16,
        },
    },
    "xlm-roberta": {
        "tokenizer": "roberta-bpe",
        "config": {"max_position_embeddings": 160, "type_vocab_size": 1},
    },
}
_BPE_TEXTS = [
    "what a lovely flight, thanks to the kind crew",
    "the flight was late and the staff were rude",
    "@user my bag is lost again http",
    "great service, calm trip, never a delay!!",
    "awful seats but the food was okay",
]


def _byte_level_bpe(special_tokens: list[str]):  # noqa: ANN202 - tokenizers.Tokenizer
    """A 400-id byte-level BPE trained on a few sentences (any text encodes)."""
    from tokenizers import (  # noqa: PLC0415
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_BPE_TEXTS * 4, trainer)
    return tokenizer


def _family_tokenizer(kind: str) -> tuple[Any, dict[str, int]]:
    """A fast tokenizer of ``kind`` and the special ids its model config needs."""
    from tokenizers import processors  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    from distillery.ml.models.modeling import load_tokenizer  # noqa: PLC0415

    if kind == "wordpiece":
        return load_tokenizer("builtin"), {"vocab_size": 30522, "pad_token_id": 0}
    if kind == "roberta-bpe":
        bpe = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        # RoBERTa's roles: <s> opens (bos, cls), </s> closes (eos, sep).
        roles = {"bos": "<s>", "cls": "<s>", "eos": "</s>", "sep": "</s>"}
        roles |= {"pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
        fast = PreTrainedTokenizerFast(
            tokenizer_object=bpe, **{f"{k}_token": v for k, v in roles.items()}
        )
        ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
        return fast, {"vocab_size": bpe.get_vocab_size()} | ids
    # A decoder's: one end-of-text token and no pad token, as Qwen2 and Llama ship.
    bpe = _byte_level_bpe(["<|endoftext|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    ids = {"bos_token_id": 0, "eos_token_id": 0}
    return fast, {"vocab_size": bpe.get_vocab_size()} | ids


def make_tiny_family_model(
    family: str, path: Path, num_layers: int = 3, seed: int = 0
) -> Path:
    """Save a tiny random ``family`` base model and its tokenizer in ``path``.

    Args:
        family: A key of :data:`TINY_FAMILIES` (a Hugging Face model type).
        path: Folder to create; loadable with ``AutoModel``/``AutoTokenizer``.
        num_layers: Transformer blocks.
        seed: Initialisation seed.

    Returns:
        ``path``.
    """
    import torch  # noqa: PLC0415
    from transformers import AutoConfig, AutoModel  # noqa: PLC0415

    spec = TINY_FAMILIES[family]
    tokenizer, ids = _family_tokenizer(spec["tokenizer"])
    config = AutoConfig.for_model(
        family,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        **ids | spec.get("config", {}),
    )
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_family_dir(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], Path]:
    """``tiny_family_dir(family)``: the folder of a tiny teacher of that family.

    Built once per session and family (see :func:`make_tiny_family_model`).
    """
    root = tmp_path_factory.mktemp("tiny_families")

    @functools.cache
    def build(family: str) -> Path:
        return make_tiny_family_model(family, root / family)

    return build


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
    project: Path, *args: str, timeout: int = 600, env_name: str = "test"
) -> subprocess.CompletedProcess:
    """Run ``kedro run --env ENV <args>`` in ``project``; return the finished process."""
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    return subprocess.run(
        [KEDRO, "run", "--env", env_name, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def kedro_runner() -> Callable[..., subprocess.CompletedProcess]:
    """:func:`run_kedro` itself, for module-scoped runs in a project of one's own."""
    return run_kedro


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
