"""ClassifierDataset: versioned folders that round-trip a classifier and its tokenizer."""

from pathlib import Path

import torch
from kedro.io.core import Version
from transformers import BertConfig, BertModel

from distillery.datasets import ClassifierDataset
from distillery.ml.artifact import ClassifierArtifact
from distillery.ml.modeling import TextClassifier, load_tokenizer


def test_versioned_save_and_load_round_trip(tmp_path: Path) -> None:
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )
    torch.manual_seed(0)
    model = TextClassifier(
        BertModel(config, add_pooling_layer=False), ["a", "b"]
    ).eval()
    artifact = ClassifierArtifact(model, load_tokenizer("builtin"))
    dataset = ClassifierDataset(str(tmp_path / "teacher"), version=Version(None, None))

    dataset.save(artifact)
    loaded = dataset.load()

    batch = loaded.tokenizer(["a small test"], return_tensors="pt")
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"])
        got = loaded.model(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(expected, got)
    assert loaded.labels == ["a", "b"]
    versions = list((tmp_path / "teacher").iterdir())
    assert (
        len(versions) == 1 and (versions[0] / "teacher" / "model.safetensors").is_file()
    )
    assert not list(versions[0].glob("*.tmp"))
