"""The project's datasets: versioned model folders, atomic Parquet writes."""

import logging
from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
import pytest
import torch
from kedro.io.core import DatasetError, Version
from transformers import BertConfig, BertModel

from distillery.datasets import (
    AtomicDaskParquetDataset,
    AtomicParquetDataset,
    BinaryDictDataset,
    ClassifierDataset,
)
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer


def _tiny_classifier(seed: int) -> TextClassifier:
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )
    torch.manual_seed(seed)
    return TextClassifier(BertModel(config, add_pooling_layer=False), ["a", "b"]).eval()


def test_versioned_save_and_load_round_trip(tmp_path: Path) -> None:
    model = _tiny_classifier(0)
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


def test_a_failed_parquet_write_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "clean.parquet"
    dataset = AtomicParquetDataset(filepath=str(path))
    good = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    dataset.save(good)

    unwritable = pd.DataFrame({"text": [object()]})  # pyarrow cannot store this
    with pytest.raises(DatasetError):
        dataset.save(unwritable)

    pd.testing.assert_frame_equal(dataset.load(), good)
    assert [p.name for p in tmp_path.iterdir()] == ["clean.parquet"]


def test_a_dask_folder_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "train"
    dataset = AtomicDaskParquetDataset(
        filepath=str(path), save_args={"write_index": False}
    )
    with dask.config.set(scheduler="synchronous"):
        dataset.save(dd.from_pandas(pd.DataFrame({"n": range(10)}), npartitions=3))
        dataset.save(dd.from_pandas(pd.DataFrame({"n": range(4)}), npartitions=1))
        assert dataset.load().compute()["n"].tolist() == [0, 1, 2, 3]
        broken = dd.from_pandas(
            pd.DataFrame({"n": range(4)}), npartitions=2
        ).map_partitions(_explode, meta={"n": "int64"})
        with pytest.raises(DatasetError):
            dataset.save(broken)
        assert dataset.load().compute()["n"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["train"]
    assert len(list(path.glob("*.parquet"))) == 1


def _explode(frame: pd.DataFrame) -> pd.DataFrame:
    if frame["n"].iloc[0] > 0:
        raise RuntimeError("a worker died mid-write")
    return frame


def test_a_versioned_folder_exists_once_a_version_is_saved(tmp_path: Path) -> None:
    dataset = BinaryDictDataset(str(tmp_path / "onnx"), version=Version(None, None))
    assert not dataset.exists()  # no version yet: False, not an error
    dataset.save({"model.onnx": b"\x08\x01"})
    reloaded = BinaryDictDataset(str(tmp_path / "onnx"), version=Version(None, None))
    assert reloaded.exists()
    assert reloaded.load() == {"model.onnx": b"\x08\x01"}


def _save_version(root: Path, version: str, artifact: ClassifierArtifact) -> Path:
    ClassifierDataset(str(root), version=Version(None, version)).save(artifact)
    return root / version / root.name


def test_a_corrupt_teacher_version_falls_back_to_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "teacher"
    tokenizer = load_tokenizer("builtin")
    older, newer = _tiny_classifier(0), _tiny_classifier(1)
    _save_version(
        root, "2026-01-01T00.00.00.000Z", ClassifierArtifact(older, tokenizer)
    )
    newest = _save_version(
        root, "2026-02-01T00.00.00.000Z", ClassifierArtifact(newer, tokenizer)
    )
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated after the save

    with caplog.at_level(logging.WARNING, logger="distillery.datasets"):
        loaded = ClassifierDataset(str(root), version=Version(None, None)).load()

    older_weights = dict(older.state_dict())
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, older_weights[name]), name
    assert f"{weights} does not match its sha256" in caplog.text
    assert "loading the previous intact version 2026-01-01T00.00.00.000Z" in caplog.text
    # Asked for by name, the corrupt version is an error, never a silent substitute.
    pinned = Version("2026-02-01T00.00.00.000Z", None)
    with pytest.raises(DatasetError, match="model.safetensors does not match"):
        ClassifierDataset(str(root), version=pinned).load()


def test_no_intact_version_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "onnx"
    for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
        BinaryDictDataset(str(root), version=Version(None, version)).save(
            {"model.onnx": b"\x08\x01"}
        )
    (root / "2026-01-01T00.00.00.000Z" / "onnx" / "model.onnx").write_bytes(b"\x08")
    (root / "2026-02-01T00.00.00.000Z" / "onnx" / "model.onnx").unlink()

    with pytest.raises(DatasetError) as raised:
        BinaryDictDataset(str(root), version=Version(None, None)).load()

    message = str(raised.value)
    assert "2026-02-01T00.00.00.000Z/onnx/model.onnx is missing" in message
    assert "no earlier version passes its checksums" in message
