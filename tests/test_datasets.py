"""The project's datasets: versioned model folders, atomic Parquet writes."""

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
