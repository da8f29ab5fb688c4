"""Project-wide test settings (no telemetry, offline hub) and shared fixtures."""

import os
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
