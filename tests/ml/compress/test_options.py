"""``compress_options`` checked at the node boundary, and what it resolves to."""

from pathlib import Path

import pytest

from distillery.ml.compress.options import CompressOptions, TransferSet


def _options(workdir: Path) -> dict:
    return {
        "students": [
            {"name": "L1-H16", "num_layers": 1, "hidden_size": 16, "num_heads": 1}
        ],
        "distill": {"max_length": 32, "batch_size": 8, "epochs": 1, "nproc": 1},
        "workdir": str(workdir),
        "gates": {
            "min_f1_retained": 0.5,
            "min_size_ratio": 1.0,
            "min_latency_ratio": 0.1,
        },
        "registry": {"name": "distillery-student", "alias": "challenger"},
        "vocab_min_count": 1,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"augment_copies": -1},
        {"augment_word_dropout": 0.0},
        {"augment_word_dropout": 1.0},
    ],
)
def test_augmentation_options_are_checked(tmp_path: Path, change: dict) -> None:
    assert CompressOptions.from_params(_options(tmp_path)).augment_copies == 0
    with pytest.raises(ValueError, match="augment_copies must be >= 0"):
        CompressOptions.from_params(_options(tmp_path) | change)


def test_an_unknown_logits_source_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="logits_source must be one of"):
        CompressOptions.from_params(_options(tmp_path) | {"logits_source": "gpu"})


@pytest.mark.parametrize(
    ("agreement", "expected"),
    [(0.995, "onnx-int8"), (0.99, "onnx-int8"), (0.9, "onnx-fp32")],
)
def test_auto_logits_come_from_int8_only_when_it_agrees_with_fp32(
    tmp_path: Path, agreement: float, expected: str
) -> None:
    options = CompressOptions.from_params(_options(tmp_path))
    report = {"teacher": {"int8_agreement": agreement}}
    assert options.logits_source_for(report) == expected


def test_a_set_logits_source_ignores_the_export_report(tmp_path: Path) -> None:
    options = CompressOptions.from_params(
        _options(tmp_path) | {"logits_source": "torch"}
    )
    assert options.logits_source_for({}) == "torch"


def test_shared_distillation_settings(tmp_path: Path) -> None:
    params = _options(tmp_path)
    options = CompressOptions.from_params(params)
    assert options.max_length == 32
    assert not options.caches_pooled
    hidden = params | {"distill": params["distill"] | {"kd_hidden_weight": 0.5}}
    assert CompressOptions.from_params(hidden).caches_pooled
    config = options.train_config(options.students[0])
    assert config.loss == "kd"
    assert config.checkpoint_dir == str(tmp_path / "L1-H16" / "checkpoints")


def test_the_transfer_set_is_off_by_default_and_parsed_when_set(
    tmp_path: Path,
) -> None:
    assert CompressOptions.from_params(_options(tmp_path)).transfer_set is None
    transfer = {"path": "texts.txt", "max_rows": 10}
    options = CompressOptions.from_params(
        _options(tmp_path) | {"transfer_set": transfer}
    )
    assert options.transfer_set == TransferSet("texts.txt", "text", 10)


@pytest.mark.parametrize(
    ("transfer", "message"),
    [
        ({"path": "t.csv", "colum": "tweet"}, r"unknown .*transfer_set key.*'colum'"),
        ({"text_column": "tweet"}, "transfer_set needs a path"),
        ({"path": "t.csv", "max_rows": 0}, "max_rows must be >= 1"),
        ({"path": "t.csv", "max_rows": "all"}, "max_rows must be an integer"),
        ({"path": " "}, "path must be a non-empty string"),
        ("t.csv", "transfer_set must be a mapping"),
    ],
)
def test_a_bad_transfer_set_is_rejected(
    tmp_path: Path, transfer: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CompressOptions.from_params(_options(tmp_path) | {"transfer_set": transfer})
