"""Compress nodes: cached teacher logits, distilled students, ONNX exports, the gate.

Students are sliced out of a BERT-shaped teacher, or start from their own backbone
(``compress_options.student_backbone``) with their own tokenizer: then the teacher's
logits are computed on its own tokenisation of each text, and the students' rows are
tokenised again from the same texts with the students' tokenizer.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch

from distillery.ml.compress.distill import (
    SLICE_TEACHER,
    StudentRecipe,
    compute_logits,
    compute_logits_and_pooled,
    drop_words,
    load_student_backbone,
    make_student,
    resolve_student_backbone,
    vocabulary_to_keep,
)
from distillery.ml.compress.export import (
    DEFAULT_EMBEDDING_BLOCK_SIZE,
    check_parity,
    export_onnx,
    optimize_onnx,
    quantize_onnx,
    with_pooled_output,
)
from distillery.ml.data.batches import PadCollator, TokenDataset
from distillery.ml.data.text import load_encoder, retokenize_frame, truncating_encoder
from distillery.ml.metrics import classification_metrics
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.report.evaluation import Gates, ModelEvaluation, ratios, select_best
from distillery.ml.report.reporting import (
    comparison_table_markdown,
    model_card_markdown,
)
from distillery.ml.serve.registry import data_tags
from distillery.ml.serve.serving import log_and_register
from distillery.ml.train.config import RankZeroElsewhere, TrainConfig
from distillery.ml.train.launch import launch_training
from distillery.ml.train.options import check_keys

logger = logging.getLogger(__name__)

TEACHER_LOGITS = "teacher_logits"
AUGMENTED = "augmented"  # with augment_copies > 0: the row is a dropped-word copy
TEACHER_POOLED = "teacher_pooled"  # with distill.kd_hidden_weight > 0
TEACHER = "teacher"  # the fine-tuned teacher in PyTorch (eager), as trained
LOGITS_SOURCES = ("auto", "torch", "onnx-fp32", "onnx-int8")


@dataclass(frozen=True)
class CompressOptions:
    """``params:compress_options``."""

    students: tuple[StudentRecipe, ...]
    distill: dict[str, Any]
    workdir: str
    gates: dict[str, float]
    registry: dict[str, str]
    vocab_min_count: int = 3
    distill_samples: int | None = None
    logits_batch_size: int = 128
    logits_source: str = "auto"
    min_int8_agreement: float = 0.99
    teacher_check_rows: int = 1024
    parity_tolerance: float = 1e-4
    seed: int = 42
    student_backbone: str = "auto"
    augment_copies: int = 0
    augment_word_dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.students:
            raise ValueError("compress_options.students must list at least one student")
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"compress_options.students names must be unique: {names}")
        if self.vocab_min_count < 1:
            raise ValueError("compress_options.vocab_min_count must be >= 1")
        if self.distill_samples is not None and self.distill_samples < 1:
            raise ValueError("compress_options.distill_samples must be >= 1 or null")
        if self.logits_source not in LOGITS_SOURCES:
            raise ValueError(
                f"compress_options.logits_source must be one of {LOGITS_SOURCES}, "
                f"got {self.logits_source!r}"
            )
        if self.augment_copies < 0 or not 0 < self.augment_word_dropout < 1:
            raise ValueError(
                "compress_options.augment_copies must be >= 0 and "
                "augment_word_dropout in (0, 1)"
            )
        if not 0 < self.min_int8_agreement <= 1 or self.teacher_check_rows < 1:
            raise ValueError(
                "compress_options.min_int8_agreement must be in (0, 1] and "
                "teacher_check_rows >= 1"
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CompressOptions:
        """Build from parameters; students become :class:`StudentRecipe`s."""
        check_keys(cls, params, "compress_options")
        params = dict(params)
        params["students"] = tuple(
            StudentRecipe.from_dict(s) for s in params["students"]
        )
        return cls(**params)

    def train_config(self, recipe: StudentRecipe) -> TrainConfig:
        """The KD TrainConfig of one student: shared ``distill`` + the recipe's overrides."""
        options = {"loss": "kd", "seed": self.seed} | self.distill | recipe.distill
        options.setdefault(
            "checkpoint_dir", str(Path(self.workdir) / recipe.name / "checkpoints")
        )
        return TrainConfig.from_dict(options)

    def student_backbone_for(self, teacher: ClassifierArtifact) -> str:
        """``teacher`` (students sliced from it) or the backbone they start from."""
        return resolve_student_backbone(self.student_backbone, teacher.model.config)


def _for_students(
    frame: pd.DataFrame, backbone: str, options: CompressOptions
) -> pd.DataFrame:
    """``frame`` as the students read it: as is when they share the teacher's
    tokenizer, else tokenised again with the backbone's."""
    if backbone == SLICE_TEACHER:
        return frame
    encoder = load_encoder(backbone, int(options.distill["max_length"]))
    return retokenize_frame(frame, encoder)


def _logits_source(options: CompressOptions, teacher_export: dict[str, Any]) -> str:
    """``auto``: the int8 teacher when it agrees with fp32 often enough, else fp32."""
    if options.logits_source != "auto":
        return options.logits_source
    agreement = teacher_export[TEACHER]["int8_agreement"]
    return "onnx-int8" if agreement >= options.min_int8_agreement else "onnx-fp32"


def cache_teacher_logits(
    teacher_model: ClassifierArtifact,
    teacher_onnx: dict[str, bytes],
    teacher_export_report: dict[str, Any],
    model_input_train: pd.DataFrame,
    compress_options: dict[str, Any],
) -> pd.DataFrame:
    """Compute the teacher's logits once for the distillation set (length-sorted batches).

    By default (``logits_source: auto``) the ONNX Runtime int8 teacher computes them
    when its predictions agree with the fp32 teacher's on at least
    ``min_int8_agreement`` of the checked validation rows (measured by
    :func:`export_teacher`); it is several times faster than PyTorch on a CPU.

    The teacher reads the rows as its own tokenizer prepared them; when the students
    have their own backbone, the returned rows are tokenised again with its tokenizer
    (same texts, same logits).

    Returns:
        The training rows (a seeded sample of ``distill_samples`` if set) with a
        ``teacher_logits`` column (and ``teacher_pooled``, the teacher's pooled
        embeddings from the same forward pass, when ``distill.kd_hidden_weight``
        is set),
        tokenised for the students.
    """
    from distillery.ml.serve.inference import OnnxPredictor  # noqa: PLC0415

    options = CompressOptions.from_params(compress_options)
    frame = model_input_train
    if options.distill_samples is not None and options.distill_samples < len(frame):
        frame = frame.sample(n=options.distill_samples, random_state=options.seed)
        frame = frame.sort_values("source_row").reset_index(drop=True)
    frame = _with_augmented_copies(frame, teacher_model.tokenizer, options)
    source = _logits_source(options, teacher_export_report)
    pooled = float(options.distill.get("kd_hidden_weight") or 0) > 0
    if source == "torch":
        logits, embeddings = _teacher_outputs(
            teacher_model.model, frame, options, pooled
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / _onnx_file(TEACHER, source)
            data = teacher_onnx[path.name]
            if pooled:  # one session run gives the logits and the pooled embedding
                data = with_pooled_output(onnx.load_from_string(data))
                data = data.SerializeToString()
            path.write_bytes(data)
            predictor = OnnxPredictor(
                path, teacher_model.tokenizer, num_threads=torch.get_num_threads()
            )
            logits, embeddings = _teacher_outputs(predictor, frame, options, pooled)
    columns = {TEACHER_POOLED: list(embeddings)} if pooled else {}
    accuracy = float((logits.argmax(1) == frame["label"].to_numpy()).mean())
    logger.info(
        "Cached teacher logits (%s) for %d rows (teacher train accuracy %.3f)",
        source,
        len(frame),
        accuracy,
    )
    backbone = options.student_backbone_for(teacher_model)
    return _for_students(
        frame.assign(**{TEACHER_LOGITS: list(logits)}, **columns), backbone, options
    )


def _with_augmented_copies(
    frame: pd.DataFrame, tokenizer: Any, options: CompressOptions
) -> pd.DataFrame:
    """``frame`` and ``augment_copies`` copies of its rows with words dropped
    (:func:`drop_words`), tokenised by the teacher's ``tokenizer``; the teacher labels
    them like the rest. Copies keep their row's label and ``source_row``."""
    if not options.augment_copies:
        return frame
    encoder = truncating_encoder(tokenizer, int(options.distill["max_length"]))
    texts = frame["text"].astype(str).tolist()
    copies = [
        retokenize_frame(
            frame.assign(
                text=drop_words(
                    texts, options.augment_word_dropout, options.seed + index
                ),
                **{AUGMENTED: True},
            ),
            encoder,
        )
        for index in range(1, options.augment_copies + 1)
    ]
    logger.info(
        "Distillation set: %d rows + %d with words dropped (rate %.2f)",
        len(frame),
        len(frame) * options.augment_copies,
        options.augment_word_dropout,
    )
    return pd.concat([frame.assign(**{AUGMENTED: False}), *copies], ignore_index=True)


def _teacher_outputs(
    model: Any, frame: pd.DataFrame, options: CompressOptions, pooled: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The teacher's logits and, if asked, its pooled embeddings for every row."""
    if pooled:
        return compute_logits_and_pooled(model, frame, options.logits_batch_size)
    return compute_logits(model, frame, options.logits_batch_size), None


def tokenize_student_val(
    teacher_model: ClassifierArtifact,
    model_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> pd.DataFrame:
    """The validation rows tokenised for the students (the same rows when they share
    the teacher's tokenizer); distillation and export score the students on them."""
    options = CompressOptions.from_params(compress_options)
    backbone = options.student_backbone_for(teacher_model)
    if backbone != SLICE_TEACHER:
        logger.info("Tokenising the validation split for students from %s", backbone)
    return _for_students(model_input_val, backbone, options)


def distill_students(
    teacher_model: ClassifierArtifact,
    distill_train: pd.DataFrame,
    student_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, ClassifierArtifact], dict[str, Any], dict[str, Any]]:
    """Build each student (pruned vocabulary, kept layers/width) and distil it.

    Students are cut from the teacher, or from their own backbone when the teacher
    is not BERT-shaped (``student_backbone``). Distillation runs the train stage's
    DDP loop with ``loss: kd`` on cached teacher logits.

    Returns:
        The distilled students by name, their MLflow metric curves and a summary.
    """
    options = CompressOptions.from_params(compress_options)
    backbone = options.student_backbone_for(teacher_model)
    if backbone == SLICE_TEACHER:
        source, tokenizer = teacher_model.model.eval(), teacher_model.tokenizer
    else:
        source = load_student_backbone(backbone, teacher_model.labels)
        tokenizer = load_tokenizer(backbone)
        logger.info(
            "Students start from %s with its own tokenizer (the teacher is a %s)",
            backbone,
            teacher_model.model.config.model_type,
        )
    # Counted on the training texts: dropped-word copies would count each id again.
    original = distill_train
    if AUGMENTED in distill_train.columns:
        original = distill_train[~distill_train[AUGMENTED]]
    keep_ids = vocabulary_to_keep(
        original["input_ids"], tokenizer, options.vocab_min_count
    )
    unk_id = tokenizer.unk_token_id
    sample = distill_train.head(256)
    students: dict[str, ClassifierArtifact] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    summary: dict[str, Any] = {
        "student_backbone": backbone,
        "vocabulary_kept": len(keep_ids),
        "students": {},
    }
    for recipe in options.students:
        config = options.train_config(recipe)
        initial = make_student(
            source,
            recipe,
            keep_ids,
            unk_id,
            sample=sample,
            max_length=config.max_length,
        )
        workdir = Path(options.workdir) / recipe.name
        init_dir = workdir / "init"
        initial.save(init_dir)
        result = launch_training(
            config,
            distill_train,
            student_input_val,
            teacher_model.labels,
            workdir,
            init_model_dir=str(init_dir),
        )
        if result is None:
            logger.info(
                "This machine's ranks finished distilling %s. Global rank 0 ran on "
                "another machine, which keeps the students; this run stops with exit "
                "status 0.",
                recipe.name,
            )
            raise RankZeroElsewhere
        logger.info(
            "Student %s: val macro-F1 %.4f (epoch %d), %.0f samples/s",
            recipe.name,
            result.best_val_macro_f1,
            result.best_epoch,
            result.samples_per_s,
        )
        students[recipe.name] = ClassifierArtifact(
            TextClassifier.load(result.model_dir), tokenizer
        )
        prefix = recipe.name
        curves[f"{prefix}.train_loss"] = [
            {"step": int(r["step"]), "value": r["train_loss"]}
            for r in result.step_history
        ]
        curves[f"{prefix}.val_macro_f1"] = [
            {"step": int(r["epoch"]), "value": r["val_macro_f1"]}
            for r in result.epoch_history
        ]
        summary["students"][recipe.name] = {
            "recipe": {k: v for k, v in recipe.__dict__.items() if k != "distill"},
            "config": config.to_dict(),
            "parameters": sum(
                p.numel() for p in students[recipe.name].model.parameters()
            ),
            "best_val_macro_f1": result.best_val_macro_f1,
            "best_epoch": result.best_epoch,
            "samples_per_s": result.samples_per_s,
            "wall_s": result.wall_s,
            "resumed_from_step": result.resumed_from_step,
        }
    return students, {k: v for k, v in curves.items() if v}, summary


def _val_batches(frame: pd.DataFrame, size: int = 64, count: int = 4) -> list[dict]:
    dataset = TokenDataset(frame.head(size * count))
    collate = PadCollator()
    batches = []
    for start in range(0, len(dataset), size):
        batch = collate(
            [dataset[i] for i in range(start, min(start + size, len(dataset)))]
        )
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask")})
    return batches


def _onnx_file(name: str, form: str) -> str:
    """``<name>.onnx`` (fp32, graph-optimised) or ``<name>.int8.onnx``."""
    return f"{name}{'.int8' if form == 'onnx-int8' else ''}.onnx"


def _export_forms(  # noqa: PLR0917 - one model, where, how, and what to check on
    name: str,
    artifact: ClassifierArtifact,
    folder: Path,
    max_length: int,
    validation: pd.DataFrame,
    tolerance: float,
    *,
    embedding_bits: int = 8,
    embedding_block_size: int = DEFAULT_EMBEDDING_BLOCK_SIZE,
) -> dict[str, Any]:
    """Export one classifier as ONNX fp32 (graph-optimised, parity-checked) and int8.

    Both forms are scored on ``validation`` (macro-F1, and how often int8 predicts
    what fp32 predicts): the student is chosen on these numbers, never on test.

    Raises:
        RuntimeError: if the fp32 graph differs from PyTorch by more than
            ``tolerance``.
    """
    from distillery.ml.serve.inference import OnnxPredictor  # noqa: PLC0415

    raw = export_onnx(
        artifact.model, folder / f"{name}.raw.onnx", max_length=max_length
    )
    fp32 = optimize_onnx(raw, folder / _onnx_file(name, "onnx-fp32"))
    raw.unlink()
    diff = check_parity(artifact.model, fp32, _val_batches(validation))
    if diff > tolerance:
        raise RuntimeError(
            f"ONNX export of {name} differs from PyTorch by {diff:.2e} "
            f"(> {tolerance:.0e}); not exporting it"
        )
    int8 = folder / _onnx_file(name, "onnx-int8")
    sizes = quantize_onnx(
        fp32,
        int8,
        optimize=False,
        embedding_bits=embedding_bits,
        embedding_block_size=embedding_block_size,
    )
    texts = validation["text"].astype(str).tolist()
    gold = validation["label"].to_numpy()
    predicted = {
        form: OnnxPredictor(
            folder / _onnx_file(name, form),
            artifact.tokenizer,
            num_threads=torch.get_num_threads(),
        )
        .predict_proba(texts)
        .argmax(1)
        for form in STUDENT_FORMS
    }
    report = {
        "parity_max_abs_diff": diff,
        "int8_agreement": float(
            np.mean(predicted["onnx-fp32"] == predicted["onnx-int8"])
        ),
        "val_rows": len(texts),
        "val_macro_f1": {
            form: classification_metrics(gold, pred, artifact.labels)["macro_f1"]
            for form, pred in predicted.items()
        },
    } | sizes
    logger.info(
        "Exported %s: parity %.2e, int8 agrees with fp32 on %.2f%% of %d "
        "validation texts, validation macro-F1 %s",
        name,
        diff,
        100 * report["int8_agreement"],
        len(texts),
        {k: round(v, 4) for k, v in report["val_macro_f1"].items()},
    )
    return report


def _read_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.onnx"))}


def export_teacher(
    teacher_model: ClassifierArtifact,
    model_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The teacher as a user would deploy it without distillery: ONNX Runtime fp32
    (graph-optimised) and ONNX Runtime dynamic int8, per channel (quantisation only).

    Evaluation measures both beside the students, and the gates compare with them;
    the int8 form also caches the distillation logits when it agrees with fp32 on
    ``min_int8_agreement`` of ``teacher_check_rows`` validation rows.

    Returns:
        ``{"teacher.onnx": bytes, "teacher.int8.onnx": bytes}`` and
        ``{"teacher": report}`` as :func:`export_students` reports each student.
    """
    options = CompressOptions.from_params(compress_options)
    check = model_input_val.sample(
        n=min(options.teacher_check_rows, len(model_input_val)),
        random_state=options.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = _export_forms(
            TEACHER,
            teacher_model,
            Path(tmp),
            int(options.distill["max_length"]),
            check,
            options.parity_tolerance,
        )
        return _read_files(Path(tmp)), {TEACHER: report}


def export_students(
    distilled_students: dict[str, ClassifierArtifact],
    student_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Export every student to ONNX (fp32, parity-checked) and ONNX Runtime int8.

    ``student_input_val`` is the validation split tokenised for the students
    (:func:`tokenize_student_val`).

    Returns:
        ``{"<name>.onnx": bytes, "<name>.int8.onnx": bytes}`` and a report per
        student: parity (max abs logit difference), int8-vs-fp32 agreement and
        macro-F1 of both forms on the whole validation split, sizes.

    Raises:
        RuntimeError: if an fp32 export differs from PyTorch by more than the tolerance.
    """
    options = CompressOptions.from_params(compress_options)
    recipes = {r.name: r for r in options.students}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, artifact in distilled_students.items():
            report[name] = _export_forms(
                name,
                artifact,
                Path(tmp),
                options.train_config(recipes[name]).max_length,
                student_input_val,
                options.parity_tolerance,
                embedding_bits=recipes[name].embedding_bits,
                embedding_block_size=recipes[name].embedding_block_size,
            )
        return _read_files(Path(tmp)), report


STUDENT_FORMS = ("onnx-fp32", "onnx-int8")


def select_student(
    model_evaluations: list[dict[str, Any]],
    export_report: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    compress_options: dict[str, Any],
) -> dict[str, Any]:
    """Pick the best student export on *validation* that passes every gate.

    Candidates are the ONNX forms (what gets served). The choice and the F1 gate use
    validation macro-F1 (student export / fine-tuned teacher); size and latency are
    measured against ``gates.reference``, by default the teacher in ONNX Runtime fp32
    (what one deploys without distillery). The test scores are only reported.

    Raises:
        GateError: no candidate passes; the message tables each candidate's ratios and
            missed gates, and nothing is registered.
    """
    options = CompressOptions.from_params(compress_options)
    evaluations = [ModelEvaluation.from_dict(e) for e in model_evaluations]
    thresholds = dict(options.gates)
    reference_name = thresholds.pop("reference", f"{TEACHER}-onnx-fp32")
    reference = next(e for e in evaluations if e.name == reference_name)
    candidates = [
        e for e in evaluations if e.family == "student" and e.form in STUDENT_FORMS
    ]
    val_f1 = {
        e.name: export_report[e.name.removesuffix(f"-{e.form}")]["val_macro_f1"][e.form]
        for e in candidates
    }
    teacher_val_f1 = float(teacher_train_summary["best_val_macro_f1"])
    chosen = select_best(
        candidates, reference, Gates(**thresholds), val_f1, teacher_val_f1
    )
    variant = chosen.name.removesuffix(f"-{chosen.form}")
    return {
        "name": chosen.name,
        "variant": variant,
        "form": chosen.form,
        "file": _onnx_file(variant, chosen.form),
        "reference": reference_name,
        "val_macro_f1": val_f1[chosen.name],
        "teacher_val_macro_f1": teacher_val_f1,
        "ratios": ratios(chosen, reference),
        "gates": options.gates,
        "evaluation": chosen.to_dict(),
        "recipe": next(r.__dict__ for r in options.students if r.name == variant),
    }


def package_student(
    selected_student: dict[str, Any],
    student_onnx: dict[str, bytes],
    distilled_students: dict[str, ClassifierArtifact],
    preprocess: dict[str, Any],
) -> dict[str, Any]:
    """The serving bundle of the selected student: ONNX graph, its tokenizer (the
    teacher's, or its backbone's), normaliser."""
    return {
        "onnx": student_onnx[selected_student["file"]],
        "tokenizer": distilled_students[selected_student["variant"]].tokenizer,
        "normalize": {k: preprocess[k] for k in ("user_token", "url_token")},
    }


def register_student(
    student_onnx_bundle: str,
    selected_student: dict[str, Any],
    validation_summary: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    registry: dict[str, Any],
) -> dict[str, Any]:
    """Register the bundle as an MLflow pyfunc and point the alias (``challenger``) at it.

    The version is tagged with the corpus hash and data profile it was distilled on
    and the profile of its teacher's data, which the scheduled retraining compares
    the next corpus with.
    """
    tags = {
        "variant": selected_student["variant"],
        "form": selected_student["form"],
        **{k: f"{v:.4f}" for k, v in selected_student["ratios"].items()},
        **data_tags(
            validation_summary["sha256"],
            validation_summary["profile"],
            teacher_train_summary.get("data", {}).get("profile"),
        ),
    }
    info = log_and_register(
        student_onnx_bundle, registry["name"], registry["alias"], tags=tags
    )
    logger.info(
        "Registered %s version %s as @%s", info["name"], info["version"], info["alias"]
    )
    return info


def write_model_card(  # noqa: PLR0913 - the card gathers lineage from every stage
    selected_student: dict[str, Any],
    model_evaluations: list[dict[str, Any]],
    source_manifest: dict[str, Any],
    validation_summary: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    registered_student: dict[str, Any],
) -> str:
    """``model_card.md``: lineage, what each step cost and saved, use and limits."""
    variant = selected_student["variant"]
    evaluations = [
        e
        for e in map(ModelEvaluation.from_dict, model_evaluations)
        if e.family != "student" or e.name.startswith(f"{variant}")
    ]
    teacher_eval = next(e for e in evaluations if e.name == TEACHER)
    card = model_card_markdown(
        corpus={
            "path": source_manifest["path"],
            "package": source_manifest.get("package"),
            "sha256": source_manifest["sha256"],
            "rows": source_manifest["rows"],
        },
        validation=validation_summary["counts"],
        teacher={
            "run_id": teacher_train_summary.get("run_id"),
            "model_path": teacher_train_summary.get("config", {}).get(
                "model_name_or_path"
            ),
            "config": teacher_train_summary.get("config"),
            "val_macro_f1": teacher_train_summary.get("best_val_macro_f1"),
            "test_macro_f1": teacher_eval.macro_f1,
        },
        student={
            "name": selected_student["name"],
            "form": selected_student["form"],
            "config": selected_student["recipe"],
        },
        evaluations=evaluations,
        reference_name=selected_student["reference"],
        gates=selected_student["gates"],
        registry=registered_student,
    )
    everything = [ModelEvaluation.from_dict(e) for e in model_evaluations]
    secondary = [
        name
        for name in (f"{TEACHER}-onnx-int8", TEACHER)
        if name != selected_student["reference"]
    ]
    return (
        card + "\n## Every form and peer\n\nTest split, 1 thread, batch-1 latency with "
        "tokenisation included; sizes include the tokenizer files. The student was "
        "chosen on the validation split. Ratios are against "
        f"`{selected_student['reference']}`:\n\n"
        + comparison_table_markdown(
            everything, selected_student["reference"], secondary
        )
        + "\n\nmacro-F1 against p50 latency, with the Pareto frontier:\n\n"
        "![trade-off](model_tradeoff.png)\n"
    )
