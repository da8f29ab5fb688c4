"""Compress nodes on a tiny teacher: distil, export with parity, gate, register."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from distillery.datasets import AtomicParquetDataset
from distillery.ml.compress.distill import compute_logits, vocabulary_to_keep
from distillery.ml.data.text import tokenize_partition
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.report.evaluation import GateError, ModelEvaluation
from distillery.pipelines.compress import create_pipeline
from distillery.pipelines.compress.nodes import (
    cache_teacher_logits,
    distill_students,
    export_students,
    export_teacher,
    tokenize_student_val,
)

LABELS = ["negative", "positive"]
WORDS = {
    "negative": ["awful", "late", "rude", "lost"],
    "positive": ["great", "kind", "smooth", "thanks"],
}


def _frame(n: int, tokenizer: str = "builtin") -> pd.DataFrame:
    rows = [
        {"text": f"{w} flight {i}", "label": label, "source_row": len(LABELS) * i + k}
        for i in range(n)
        for k, (label, words) in enumerate(WORDS.items())
        for w in [words[i % 4]]
    ]
    frame = tokenize_partition(
        pd.DataFrame(rows), tokenizer, 32, {"negative": 0, "positive": 1}
    )
    return frame


def _options(workdir: Path, **gates: float) -> dict:
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
        }
        | gates,
        "registry": {"name": "distillery-student", "alias": "challenger"},
        "vocab_min_count": 1,
    }


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path) -> ClassifierArtifact:
    model = TextClassifier.from_pretrained_encoder(str(tiny_teacher_dir), LABELS, 0.0)
    return ClassifierArtifact(model.eval(), load_tokenizer("builtin"))


def test_students_are_distilled_pruned_and_exported_with_parity(
    teacher: ClassifierArtifact, tmp_path: Path
) -> None:
    options = _options(tmp_path / "work")
    train, val = _frame(12), _frame(4)

    teacher_onnx, teacher_report = export_teacher(teacher, val, options)
    assert set(teacher_onnx) == {"teacher.onnx", "teacher.int8.onnx"}
    assert teacher_report["teacher"]["parity_max_abs_diff"] <= 1e-4

    def cache(change: dict) -> pd.DataFrame:
        return cache_teacher_logits(
            teacher, teacher_onnx, teacher_report, train, options | change
        )

    by_source = {s: cache({"logits_source": s}) for s in ("torch", "onnx-fp32", "auto")}
    torch_logits = np.stack(by_source["torch"]["teacher_logits"])
    fp32_logits = np.stack(by_source["onnx-fp32"]["teacher_logits"])
    np.testing.assert_allclose(fp32_logits, torch_logits, atol=1e-4)
    # With the representation term, the same pass also caches the pooled embedding:
    # the ONNX teacher's matches PyTorch's, and the logits stay the same.
    hidden = {"distill": options["distill"] | {"kd_hidden_weight": 1.0}}
    pooled = {
        s: cache(hidden | {"logits_source": s})
        for s in ("torch", "onnx-fp32", "onnx-int8")
    }
    np.testing.assert_allclose(
        np.stack(pooled["onnx-fp32"]["teacher_pooled"]),
        np.stack(pooled["torch"]["teacher_pooled"]),
        atol=1e-4,
    )
    np.testing.assert_array_equal(
        np.stack(pooled["onnx-fp32"]["teacher_logits"]), fp32_logits
    )
    assert np.stack(pooled["onnx-int8"]["teacher_pooled"]).shape == (
        len(train),
        teacher.model.config.hidden_size,
    )
    # Dropped-word copies: labelled by the teacher on their own tokens, marked, and
    # left out of the vocabulary count.
    augmented = cache(
        {"augment_copies": 1, "augment_word_dropout": 0.5, "logits_source": "onnx-fp32"}
    )
    n = len(train)
    assert augmented["augmented"].tolist() == [False] * n + [True] * n
    copies = augmented.iloc[n:].reset_index(drop=True)
    assert copies[["label", "source_row"]].equals(train[["label", "source_row"]])
    assert (copies["text"] != train["text"]).any()
    assert all(
        len(c.split()) < len(t.split()) or c == t
        for c, t in zip(copies["text"], train["text"], strict=True)
    )
    np.testing.assert_allclose(
        np.stack(copies["teacher_logits"]),
        compute_logits(teacher.model, copies),
        atol=1e-4,
    )
    np.testing.assert_array_equal(
        np.stack(augmented["teacher_logits"].iloc[:n]), fp32_logits
    )
    distill_train = by_source["auto"]
    students, curves, summary = distill_students(teacher, distill_train, val, options)
    _, _, augmented_summary = distill_students(
        teacher, augmented, val, options | {"workdir": str(tmp_path / "work-augmented")}
    )
    assert augmented_summary["vocabulary_kept"] == summary["vocabulary_kept"]
    files, report = export_students(students, val, options)

    assert len(distill_train["teacher_logits"].iloc[0]) == 2
    student = students["L1-H16"].model
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 1
    # The vocabulary was pruned to the tokens of the distillation set (+ specials).
    assert student.config.vocab_size == summary["vocabulary_kept"] < 100
    assert "L1-H16.train_loss" in curves
    assert set(files) == {"L1-H16.onnx", "L1-H16.int8.onnx"}
    assert report["L1-H16"]["parity_max_abs_diff"] <= 1e-4
    assert 0.0 <= report["L1-H16"]["int8_agreement"] <= 1.0


def _texts(texts: list[str], first_row: int) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "text": texts,
            "label": "negative",
            "source_row": range(first_row, first_row + len(texts)),
        }
    )
    return tokenize_partition(rows, "builtin", 32, {"negative": 0, "positive": 1})


TRANSFER_LINES = [
    "smooth trip with the crew",  # kept
    "rude   flight 100",  # a validation text once its spaces are collapsed
    "kind flight 200",  # a test text
    "awful flight 0",  # a training text
    "smooth trip with the crew",  # a repeat
    "",  # blank
    "zebra quokka xylophone",  # kept: words no training text has
]


def test_a_transfer_set_is_pseudo_labelled_and_distilled_beside_the_training_rows(
    teacher: ClassifierArtifact, tmp_path: Path
) -> None:
    transfer_file = tmp_path / "unlabelled.txt"
    transfer_file.write_text("\n".join(TRANSFER_LINES) + "\n")
    options = _options(tmp_path / "work") | {
        "logits_source": "torch",
        "transfer_set": {"path": str(transfer_file)},
    }
    train = _frame(6)
    val, test = _texts(["rude flight 100"], 1000), _texts(["kind flight 200"], 2000)
    catalog = DataCatalog(
        {
            "teacher_model": MemoryDataset(teacher, copy_mode="assign"),
            "teacher_onnx": MemoryDataset({}),
            "teacher_export_report": MemoryDataset({}),
            "model_input_train@pandas": MemoryDataset(train),
            "model_input_val@pandas": MemoryDataset(val),
            "model_input_test@pandas": MemoryDataset(test),
            "params:compress_options": MemoryDataset(options),
            "params:preprocess": MemoryDataset({"user_token": "@user"}),
            "params:validate": MemoryDataset({"scrub_pii": True}),
            # Persisted as the catalog does: the counts travel in the Parquet's attrs.
            "distill_train": AtomicParquetDataset(
                filepath=str(tmp_path / "distill.parquet")
            ),
        }
    )
    SequentialRunner().run(
        create_pipeline().only_nodes("compress.cache_teacher_logits_node"), catalog
    )

    distill_train = catalog.load("distill_train")
    n = len(train)
    assert distill_train["transfer"].tolist() == [False] * n + [True] * 2
    rows = distill_train.iloc[n:]
    assert rows["text"].tolist() == [TRANSFER_LINES[0], TRANSFER_LINES[-1]]
    assert rows["source_row"].tolist() == [-1, -7]
    assert not set(rows["text"]) & (set(val["text"]) | set(test["text"]))
    # Pseudo-labels: the teacher's argmax on its own tokens of the text.
    logits = compute_logits(teacher.model, rows)
    assert rows["label"].tolist() == logits.argmax(1).tolist()
    np.testing.assert_allclose(np.stack(rows["teacher_logits"]), logits, atol=1e-6)
    assert distill_train["label"].iloc[:n].tolist() == train["label"].tolist()

    students, curves, summary = distill_students(teacher, distill_train, val, options)

    assert summary["rows"] == n + 2
    assert summary["transfer"]["path"] == str(transfer_file)
    assert summary["transfer"]["counts"] == {
        "rows_in": 7,
        "kept": 2,
        "dropped_blank": 1,
        "dropped_eval_overlap": 2,
        "dropped_train_overlap": 1,
        "dropped_duplicate": 1,
    }
    assert curves["transfer.dropped_eval_overlap"] == [{"step": 0, "value": 2.0}]
    # The pruned vocabulary counts the transfer texts' words too.
    alone = vocabulary_to_keep(train["input_ids"], teacher.tokenizer, 1)
    assert summary["vocabulary_kept"] > len(alone)
    assert students["L1-H16"].model.config.vocab_size == summary["vocabulary_kept"]
    assert curves["L1-H16.train_loss"]


def test_a_decoder_teacher_distils_into_students_with_their_own_tokenizer(
    tiny_family_dir, tmp_path: Path
) -> None:
    folder = str(tiny_family_dir("qwen2"))
    model = TextClassifier.from_pretrained_encoder(folder, LABELS, 0.0).eval()
    teacher = ClassifierArtifact(model, load_tokenizer(folder))
    options = _options(tmp_path / "work")
    options |= {
        "students": [{"name": "L1-H64", "num_layers": 1, "hidden_size": 64}],
        "logits_source": "torch",
        # The representation term too: the student's 64-wide pooled embedding is
        # projected onto the teacher's 32 dimensions, across tokenizers.
        "distill": options["distill"] | {"kd_hidden_weight": 1.0},
    }
    # What preprocess wrote: the texts in the teacher's own tokens.
    train, val = _frame(12, folder), _frame(4, folder)

    distill_train = cache_teacher_logits(teacher, {}, {}, train, options)
    student_val = tokenize_student_val(teacher, val, options)

    # The logits are the teacher's on its own tokens; the rows the students read
    # are the same texts in the packaged MiniLM's tokens.
    np.testing.assert_allclose(
        np.stack(distill_train["teacher_logits"]),
        compute_logits(model, train),
        atol=1e-6,
    )
    pooled, _ = model.encode(
        torch.tensor(train["input_ids"].iloc[0].tolist())[None],
        torch.tensor(train["attention_mask"].iloc[0].tolist())[None],
    )
    np.testing.assert_allclose(
        distill_train["teacher_pooled"].iloc[0], pooled[0].detach().numpy(), atol=1e-5
    )
    builtin = _frame(12)
    assert [ids.tolist() for ids in distill_train["input_ids"]] == [
        ids.tolist() for ids in builtin["input_ids"]
    ]
    assert student_val["text"].tolist() == val["text"].tolist()
    assert student_val["input_ids"].iloc[0].tolist() == (
        _frame(4)["input_ids"].iloc[0].tolist()
    )

    students, _, summary = distill_students(
        teacher, distill_train, student_val, options
    )
    files, report = export_students(students, student_val, options)

    assert summary["student_backbone"] == "builtin"
    student = students["L1-H64"]
    assert student.model.projection is None  # trained with it, saved without
    assert student.model.config.model_type == "bert"
    assert student.model.config.hidden_size == 64
    assert student.tokenizer.cls_token == "[CLS]"  # MiniLM's, not the teacher's
    assert set(files) == {"L1-H64.onnx", "L1-H64.int8.onnx"}
    assert report["L1-H64"]["parity_max_abs_diff"] <= 1e-4

    with pytest.raises(ValueError, match="needs one of the model types"):
        tokenize_student_val(teacher, val, options | {"student_backbone": "teacher"})


def test_transfer_texts_reach_students_with_their_own_tokenizer(
    tiny_family_dir, tmp_path: Path
) -> None:
    folder = str(tiny_family_dir("qwen2"))
    model = TextClassifier.from_pretrained_encoder(folder, LABELS, 0.0).eval()
    teacher = ClassifierArtifact(model, load_tokenizer(folder))
    options = _options(tmp_path / "work") | {
        "students": [{"name": "L1-H64", "num_layers": 1, "hidden_size": 64}],
        "logits_source": "torch",
    }
    train, val = _frame(4, folder), _frame(2, folder)
    transfer = pd.DataFrame({"text": ["zebra quokka xylophone"], "source_row": [-1]})
    transfer.to_parquet(tmp_path / "unlabelled.parquet")
    options["transfer_set"] = {"path": str(tmp_path / "unlabelled.parquet")}

    distill_train = cache_teacher_logits(teacher, {}, {}, train, options, val, val)

    row = distill_train.iloc[[-1]]
    assert row["transfer"].item() and row["source_row"].item() == -1
    # Labelled on the teacher's own tokens, read by the students in MiniLM's.
    in_teacher_tokens = tokenize_partition(
        transfer.assign(label="negative"), folder, 32, {"negative": 0}
    )
    logits = compute_logits(model, in_teacher_tokens)
    np.testing.assert_allclose(row["teacher_logits"].item(), logits[0], atol=1e-6)
    assert row["label"].item() == logits[0].argmax()
    in_student_tokens = tokenize_partition(
        transfer.assign(label="negative"), "builtin", 32, {"negative": 0}
    )
    assert row["input_ids"].item().tolist() == (
        in_student_tokens["input_ids"].iloc[0].tolist()
    )
    student_val = tokenize_student_val(teacher, val, options)
    students, _, summary = distill_students(
        teacher, distill_train, student_val, options
    )
    assert summary["student_backbone"] == "builtin"
    assert students["L1-H64"].tokenizer.cls_token == "[CLS]"


def _evaluation(name: str, form: str, f1: float, size: int, p50: float) -> dict:
    family = "teacher" if name.startswith("teacher") else "student"
    return ModelEvaluation(
        name=name,
        family=family,
        form=form,
        accuracy=f1,
        macro_f1=f1,
        per_class={},
        confusion=[[1, 0], [0, 1]],
        size_bytes=size,
        latency_p50_ms=p50,
        latency_p95_ms=p50,
        throughput_per_s=1.0,
        num_threads=1,
        n_test=2,
    ).to_dict()


@pytest.fixture
def tracking(tmp_path: Path):  # noqa: ANN201
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment(
        "t", artifact_location=(tmp_path / "art").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment):
        yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(previous)


PROFILE = {"rows": 2, "label_shares": {"neg": 0.5, "pos": 0.5}, "length": {"p50": 9.0}}
TEACHER_PROFILE = {"rows": 4, "label_shares": {"pos": 1.0}, "length": {"p50": 7.0}}


def _gate_slice(
    teacher: ClassifierArtifact, tmp_path: Path, options: dict
) -> DataCatalog:
    students = {"L1-H16": teacher}  # any classifier will do for packaging
    files, _ = export_students(
        {"L1-H16": ClassifierArtifact(teacher.model, teacher.tokenizer)},
        _frame(2),
        options,
    )
    # Test scores say fp32 is far better; validation scores (what the choice uses)
    # say int8 is. The choice must follow validation.
    evaluations = [
        _evaluation("teacher", "torch-fp32", 0.80, 1000, 20.0),
        _evaluation("teacher-onnx-fp32", "onnx-fp32", 0.80, 1000, 10.0),
        _evaluation("L1-H16-onnx-fp32", "onnx-fp32", 0.79, 200, 2.0),
        _evaluation("L1-H16-onnx-int8", "onnx-int8", 0.70, 50, 1.0),
    ]
    export_report = {"L1-H16": {"val_macro_f1": {"onnx-fp32": 0.70, "onnx-int8": 0.77}}}
    return DataCatalog(
        {
            "model_evaluations": MemoryDataset(evaluations),
            "export_report": MemoryDataset(export_report),
            "params:compress_options": MemoryDataset(options),
            "params:compress_options.registry": MemoryDataset(options["registry"]),
            "student_onnx": MemoryDataset(files, copy_mode="assign"),
            "distilled_students": MemoryDataset(students, copy_mode="assign"),
            "params:preprocess": MemoryDataset(
                {"user_token": "@user", "url_token": "http"}
            ),
            "student_onnx_bundle": MemoryDataset(copy_mode="assign"),
            "validation_summary": MemoryDataset(
                {"sha256": "c0ffee", "profile": PROFILE}
            ),
            "teacher_train_summary": MemoryDataset(
                {
                    "best_val_macro_f1": 0.80,
                    "data": {"sha256": "beef", "profile": TEACHER_PROFILE},
                }
            ),
        }
    )


def _gate_pipeline() -> Pipeline:
    return (
        create_pipeline()
        .from_nodes("release.select_student_node")
        .to_nodes("release.register_student_node")
    )


def test_a_student_failing_a_gate_is_never_registered(
    teacher: ClassifierArtifact, tmp_path: Path, tracking: mlflow.MlflowClient
) -> None:
    options = _options(tmp_path / "work", min_size_ratio=100.0)
    catalog = _gate_slice(teacher, tmp_path, options)

    with pytest.raises(GateError) as info:
        SequentialRunner().run(_gate_pipeline(), catalog)

    message = str(info.value)
    assert "L1-H16-onnx-fp32" in message and "L1-H16-onnx-int8" in message
    assert "size_ratio" in message
    assert tracking.search_registered_models() == []


def test_the_best_passing_export_is_registered(
    teacher: ClassifierArtifact, tmp_path: Path, tracking: mlflow.MlflowClient
) -> None:
    options = _options(tmp_path / "work", min_f1_retained=0.9)
    catalog = _gate_slice(teacher, tmp_path, options)
    # A bundle needs a folder: save through the real dataset type.
    from distillery.datasets import OnnxBundleDataset  # noqa: PLC0415

    catalog["student_onnx_bundle"] = OnnxBundleDataset(str(tmp_path / "bundle"))

    SequentialRunner().run(_gate_pipeline(), catalog)

    version = tracking.get_model_version_by_alias("distillery-student", "challenger")
    assert int(version.version) == 1
    # fp32 keeps 0.70 / 0.80 of the teacher's validation F1 (below the 0.9 gate);
    # int8 keeps 0.9625 and is chosen, although its test score is the lower one.
    assert version.tags["form"] == "onnx-int8"
    # Reported ratios are test scores against the ONNX Runtime fp32 teacher.
    assert float(version.tags["f1_retained"]) == pytest.approx(0.70 / 0.80, abs=1e-4)
    assert float(version.tags["latency_ratio"]) == pytest.approx(10.0)
    # The data it was distilled on and its teacher's data, for scheduled retraining.
    assert version.tags["corpus_sha256"] == "c0ffee"
    assert json.loads(version.tags["data_profile"]) == PROFILE
    assert json.loads(version.tags["teacher_data_profile"]) == TEACHER_PROFILE
