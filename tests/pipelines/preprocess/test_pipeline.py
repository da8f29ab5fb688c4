"""The preprocess pipeline as a slice: in-memory catalog, SequentialRunner, real Dask."""

import dask
import dask.dataframe as dd
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from distillery.pipelines.preprocess import create_pipeline
from distillery.pipelines.preprocess.nodes import PreprocessOptions, normalize_texts

PARAMS = {
    "seed": 3,
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "tokenizer": "builtin",
    "max_length": 32,
    "user_token": "@user",
    "url_token": "http",
    "npartitions": 3,
}
OUTPUTS = [
    "normalized_texts",
    "label_vocab",
    "model_input_train@dask",
    "model_input_val@dask",
    "model_input_test@dask",
    "duplicate_texts",
    "preprocess_summary",
    "preprocess_metrics",
]


def _validated() -> pd.DataFrame:
    texts = [f"tweet {i} about cars http://t.co/{i}" for i in range(60)]
    texts += ["@someone same text", "@other  same   text"]  # duplicates once normalised
    labels = ["pos" if i % 3 else "neg" for i in range(60)] + ["pos", "pos"]
    return pd.DataFrame(
        {"text": texts, "label": labels, "source_row": range(len(texts))}
    ).astype({"text": "string", "label": "string"})


def _run(frame: pd.DataFrame) -> dict:
    catalog = DataCatalog(
        {
            "validated_texts@dask": MemoryDataset(
                dd.from_pandas(frame, npartitions=2), copy_mode="assign"
            ),
            "params:preprocess": MemoryDataset(PARAMS),
        }
        | {name: MemoryDataset(copy_mode="assign") for name in OUTPUTS}
    )
    pipeline = create_pipeline()
    with dask.config.set(scheduler="synchronous"):
        SequentialRunner().run(pipeline, catalog)
        # The runner releases intermediate datasets; the free outputs stay loadable.
        loaded = {name: catalog.load(name) for name in pipeline.outputs()}
        return {
            name: data.compute() if hasattr(data, "compute") else data
            for name, data in loaded.items()
        }


def test_preprocess_slice_splits_dedups_and_tokenizes() -> None:
    out = _run(_validated())

    splits = [out[f"model_input_{s}@dask"] for s in ("train", "val", "test")]
    rows = pd.concat(splits)
    # 62 rows in, one duplicate dropped, none lost or repeated across splits.
    assert len(rows) == 61
    assert rows["source_row"].is_unique
    assert out["duplicate_texts"][["source_row", "duplicate_of"]].values.tolist() == [
        [61, 60]
    ]
    assert out["preprocess_summary"]["split_sizes"] == {
        "train": len(splits[0]),
        "val": len(splits[1]),
        "test": len(splits[2]),
    }
    assert set(rows["label"]) == {0, 1}
    first = rows.set_index("source_row").loc[0]
    assert first["text"] == "tweet 0 about cars http"
    assert list(first["input_ids"])[0] == 101


def test_splits_are_stable_when_the_corpus_grows() -> None:
    small = _run(_validated().iloc[:30])
    grown = _run(_validated())

    def split_of(out: dict) -> dict[int, str]:
        return {
            int(r): s
            for s in ("train", "val", "test")
            for r in out[f"model_input_{s}@dask"]["source_row"]
        }

    before, after = split_of(small), split_of(grown)
    assert all(after[row] == split for row, split in before.items())


def test_a_larger_input_gets_more_partitions_and_the_same_rows() -> None:
    # One partition per input partition (Parquet row group) once there are more than
    # `npartitions`: a partition's memory stays bounded as the corpus grows.
    options = PARAMS | {"npartitions": 2}
    few = normalize_texts(dd.from_pandas(_validated(), npartitions=1), options)
    many = normalize_texts(dd.from_pandas(_validated(), npartitions=6), options)

    assert (few.npartitions, many.npartitions) == (2, 6)
    with dask.config.set(scheduler="synchronous"):
        rows = [
            f.compute().sort_values("source_row").reset_index(drop=True)
            for f in (few, many)
        ]
    pd.testing.assert_frame_equal(rows[0], rows[1])
    assert rows[1]["is_duplicate"].sum() == 1


def test_bad_split_fractions_are_rejected() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        PreprocessOptions.from_params(
            PARAMS | {"split": {"train": 0.9, "val": 0.2, "test": 0.1}}
        )
