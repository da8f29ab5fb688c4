"""Compress nodes: cached teacher logits, distilled students, ONNX exports, the gate."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distillery.ml.artifact import ClassifierArtifact
from distillery.ml.data import PadCollator, TokenDataset
from distillery.ml.distill import (
    StudentRecipe,
    compute_logits,
    make_student,
    vocabulary_to_keep,
)
from distillery.ml.evaluation import Gates, ModelEvaluation, ratios, select_best
from distillery.ml.export import check_parity, export_onnx, quantize_onnx
from distillery.ml.modeling import TextClassifier
from distillery.ml.options import check_keys
from distillery.ml.registry import data_tags
from distillery.ml.reporting import model_card_markdown
from distillery.ml.serving import log_and_register
from distillery.ml.training import RankZeroElsewhere, TrainConfig, launch_training

logger = logging.getLogger(__name__)

TEACHER_LOGITS = "teacher_logits"
REFERENCE = "teacher"  # the evaluation every gate compares against


@dataclass(frozen=True)
class CompressOptions:
    """``params:compress_options``."""

    students: tuple[StudentRecipe, ...]
    distill: dict[str, Any]
    workdir: str
    gates: dict[str, float]
    registry: dict[str, str]
    vocab_min_count: int = 2
    distill_samples: int | None = None
    logits_batch_size: int = 128
    parity_tolerance: float = 1e-4
    seed: int = 42

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


def cache_teacher_logits(
    teacher_model: ClassifierArtifact,
    model_input_train: pd.DataFrame,
    compress_options: dict[str, Any],
) -> pd.DataFrame:
    """Compute the teacher's logits once for the distillation set (length-sorted batches).

    Returns:
        The training rows (a seeded sample of ``distill_samples`` if set) with a
        ``teacher_logits`` column.
    """
    options = CompressOptions.from_params(compress_options)
    frame = model_input_train
    if options.distill_samples is not None and options.distill_samples < len(frame):
        frame = frame.sample(n=options.distill_samples, random_state=options.seed)
        frame = frame.sort_values("source_row").reset_index(drop=True)
    logits = compute_logits(teacher_model.model, frame, options.logits_batch_size)
    agreement = float((logits.argmax(1) == frame["label"].to_numpy()).mean())
    logger.info(
        "Cached teacher logits for %d rows (teacher train accuracy %.3f)",
        len(frame),
        agreement,
    )
    return frame.assign(**{TEACHER_LOGITS: list(logits)})


def distill_students(
    teacher_model: ClassifierArtifact,
    distill_train: pd.DataFrame,
    model_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, ClassifierArtifact], dict[str, Any], dict[str, Any]]:
    """Build each student (pruned vocabulary, kept layers/width) and distil it.

    Distillation runs the train stage's DDP loop with ``loss: kd`` on cached teacher
    logits.

    Returns:
        The distilled students by name, their MLflow metric curves and a summary.
    """
    options = CompressOptions.from_params(compress_options)
    teacher = teacher_model.model.eval()
    keep_ids = vocabulary_to_keep(
        distill_train["input_ids"], teacher_model.tokenizer, options.vocab_min_count
    )
    unk_id = teacher_model.tokenizer.unk_token_id
    sample = distill_train.head(256)
    students: dict[str, ClassifierArtifact] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    summary: dict[str, Any] = {"vocabulary_kept": len(keep_ids), "students": {}}
    for recipe in options.students:
        config = options.train_config(recipe)
        initial = make_student(
            teacher,
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
            model_input_val,
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
            TextClassifier.load(result.model_dir), teacher_model.tokenizer
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


def export_students(
    distilled_students: dict[str, ClassifierArtifact],
    model_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Export every student to ONNX (fp32, parity-checked) and ONNX Runtime int8.

    Returns:
        ``{"<name>.onnx": bytes, "<name>.int8.onnx": bytes}`` and a report with parity
        (max abs logit difference) and int8-vs-fp32 prediction agreement on validation.

    Raises:
        RuntimeError: if an fp32 export differs from PyTorch by more than the tolerance.
    """
    from distillery.ml.inference import OnnxPredictor  # noqa: PLC0415

    options = CompressOptions.from_params(compress_options)
    recipes = {r.name: r for r in options.students}
    files: dict[str, bytes] = {}
    report: dict[str, Any] = {}
    batches = _val_batches(model_input_val)
    texts = model_input_val["text"].astype(str).tolist()[:512]
    with tempfile.TemporaryDirectory() as tmp:
        for name, artifact in distilled_students.items():
            max_length = options.train_config(recipes[name]).max_length
            fp32 = export_onnx(
                artifact.model, Path(tmp) / f"{name}.onnx", max_length=max_length
            )
            diff = check_parity(artifact.model, fp32, batches)
            if diff > options.parity_tolerance:
                raise RuntimeError(
                    f"ONNX export of {name} differs from PyTorch by {diff:.2e} "
                    f"(> {options.parity_tolerance:.0e}); not exporting it"
                )
            int8 = Path(tmp) / f"{name}.int8.onnx"
            sizes = quantize_onnx(
                fp32, int8, embedding_bits=recipes[name].embedding_bits
            )
            fp32_pred = (
                OnnxPredictor(fp32, artifact.tokenizer).predict_proba(texts).argmax(1)
            )
            int8_pred = (
                OnnxPredictor(int8, artifact.tokenizer).predict_proba(texts).argmax(1)
            )
            agreement = float(np.mean(fp32_pred == int8_pred))
            logger.info(
                "Exported %s: parity %.2e, int8 agrees with fp32 on %.1f%% of %d texts",
                name,
                diff,
                100 * agreement,
                len(texts),
            )
            files[fp32.name] = fp32.read_bytes()
            files[int8.name] = int8.read_bytes()
            report[name] = {
                "parity_max_abs_diff": diff,
                "int8_agreement": agreement,
            } | sizes
    return files, report


STUDENT_FORMS = ("onnx-fp32", "onnx-int8")


def select_student(
    model_evaluations: list[dict[str, Any]], compress_options: dict[str, Any]
) -> dict[str, Any]:
    """Pick the best student export that passes every gate against the fp32 teacher.

    Candidates are the ONNX forms (what gets served); the PyTorch forms are measured
    for the comparison only.

    Raises:
        GateError: no candidate passes; the message tables each candidate's ratios and
            missed gates, and nothing is registered.
    """
    options = CompressOptions.from_params(compress_options)
    evaluations = [ModelEvaluation.from_dict(e) for e in model_evaluations]
    reference = next(e for e in evaluations if e.name == REFERENCE)
    candidates = [
        e for e in evaluations if e.family == "student" and e.form in STUDENT_FORMS
    ]
    gates = Gates(**options.gates)
    chosen = select_best(candidates, reference, gates)
    variant = chosen.name.removesuffix(f"-{chosen.form}")
    logger.info(
        "Selected %s (%s): %s",
        chosen.name,
        chosen.form,
        ", ".join(f"{k} {v:.3f}" for k, v in ratios(chosen, reference).items()),
    )
    return {
        "name": chosen.name,
        "variant": variant,
        "form": chosen.form,
        "file": f"{variant}{'.int8' if chosen.form == 'onnx-int8' else ''}.onnx",
        "ratios": ratios(chosen, reference),
        "gates": options.gates,
        "evaluation": chosen.to_dict(),
        "recipe": next(r.__dict__ for r in options.students if r.name == variant),
    }


def package_student(
    selected_student: dict[str, Any],
    student_onnx: dict[str, bytes],
    teacher_model: ClassifierArtifact,
    preprocess: dict[str, Any],
) -> dict[str, Any]:
    """The serving bundle of the selected student: ONNX graph, tokenizer, normaliser."""
    return {
        "onnx": student_onnx[selected_student["file"]],
        "tokenizer": teacher_model.tokenizer,
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
    teacher_eval = next(e for e in evaluations if e.name == REFERENCE)
    card = model_card_markdown(
        corpus={
            "path": source_manifest["path"],
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
        reference_name=REFERENCE,
        gates=selected_student["gates"],
        registry=registered_student,
    )
    return (
        card
        + "\n## Every variant\n\nSize vs latency vs macro-F1 of every evaluated model "
        "(`model_comparison.md` has the numbers):\n\n![trade-off](model_tradeoff.png)\n"
    )
