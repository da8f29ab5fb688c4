"""Training settings and results: the typed contract between a Kedro node and the ranks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distillery.ml.models.modeling import POOLINGS

_DEVICES = ("auto", "cpu", "cuda")
_LOSSES = ("ce", "kd")
STRATEGIES = ("ddp", "fsdp")
PRECISIONS = ("auto", "fp32", "bf16")
# New fields stay out of the checkpoint hash at their defaults, so checkpoints written
# before they existed still resume.
_HASHED_ONLY_IF_SET = {
    "strategy": "ddp",
    "lora": None,
    "kd_hidden_weight": 0.0,
    "precision": "auto",
}
# Fields that do not change the trained weights stay out of the checkpoint hash, so
# a run can resume with another world size, thread count or checkpoint cadence.
_UNHASHED_FIELDS = frozenset(
    {
        "nproc",
        "nnodes",
        "rdzv_endpoint",
        "rdzv_backend",
        "rdzv_id",
        "max_restarts",
        "checkpoint_dir",
        "checkpoint_every_steps",
        "num_threads",
        "eval_batch_size",
        "device",
        "log_every_steps",
        "fail_at_step",
        "fail_rank",
        # Recomputing activations gives the same gradients; only memory and time change.
        "activation_checkpointing",
    }
)


def _refuse_unknown_keys(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise a ValueError naming the keys of ``values`` that ``cls`` lacks."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")


@dataclass(frozen=True)
class LoraOptions:
    """Low-rank adapters (LoRA, through ``peft``) on the encoder's linear layers.

    Only the adapters and the classification head train; the adapters are merged
    into the weights before the model is saved, so saved models are plain.

    Attributes:
        r: Rank of each adapter.
        alpha: Scaling numerator: the update is ``(alpha / r) * B @ A``.
        dropout: Dropout on the adapters' input.
        target_modules: Names (suffixes) of the linear layers to adapt; None lets
            ``peft`` pick its default for the architecture (BERT: query, value).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        errors = []
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            errors.append(f"lora.r must be an int >= 1, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            errors.append(f"lora.alpha must be a number, got {self.alpha!r}")
        elif self.alpha <= 0:
            errors.append(f"lora.alpha must be > 0, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            errors.append(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        modules = self.target_modules
        if modules is not None:
            if isinstance(modules, str) or not all(
                isinstance(m, str) and m for m in modules
            ):
                errors.append(
                    "lora.target_modules must be a list of module names or null, "
                    f"got {modules!r}"
                )
            elif not modules:
                errors.append("lora.target_modules must not be empty (null = default)")
            else:
                object.__setattr__(self, "target_modules", tuple(modules))
        if errors:
            raise ValueError("invalid lora options: " + "; ".join(errors))

    @property
    def scaling(self) -> float:
        """Factor of the low-rank update, ``alpha / r``."""
        return self.alpha / self.r

    @classmethod
    def from_value(cls, value: Any) -> LoraOptions | None:
        """Build from a parameters mapping (or pass an instance or None through).

        Raises:
            ValueError: On unknown keys, a non-mapping or invalid values.
        """
        if value is None or isinstance(value, LoraOptions):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"lora must be a mapping or null, got {value!r}")
        _refuse_unknown_keys(cls, value, "lora")
        return cls(**value)


class TrainingFailedError(RuntimeError):
    """A training rank failed; the message names the rank and its error."""


class RankZeroElsewhere(SystemExit):
    """Ends ``kedro run`` with exit status 0 on a machine that did not host rank 0.

    In a multi-node run every machine runs the same ``kedro run --pipeline train``, and
    the c10d rendezvous, not the order in which machines start, decides which machine
    hosts global rank 0. That machine saves the model and logs to MLflow. The others
    have trained their share but hold no result, and a Kedro node cannot finish
    without returning its declared outputs (the catalog would save them). So the node
    leaves the run instead: ``SystemExit`` is not an ``Exception``, so Kedro reports no
    failed node, the catalog saves nothing, and the process exits 0.
    """

    def __init__(self) -> None:
        super().__init__(0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides data; checks itself on creation.

    Attributes:
        model_name_or_path: Pretrained encoder: ``builtin``, a local folder or hub id.
        pooling: ``auto`` (mean for encoders, last token for decoders), ``mean``,
            ``cls`` or ``last``; a saved classifier keeps its own.
        max_length: Longest tokenized example allowed, in tokens (data is already
            truncated to it upstream; longer rows are an error).
        batch_size: Global examples per optimizer step, summed over ranks and
            accumulation micro-steps.
        grad_accum_steps: Micro-steps per optimizer step.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW decay for matrices; biases and norms get none.
        warmup_ratio: Share of optimizer steps spent in linear warm-up.
        max_grad_norm: Gradient clipping norm; None disables clipping.
        epochs: Passes over the training data.
        max_train_samples: Deterministic subsample (by ``seed``); None keeps all.
        max_steps: Cap on optimizer steps (also sets the LR schedule); None = none.
        dropout: Drop probability of every dropout layer (encoder and head).
        patience: Epochs without a better validation macro-F1 before stopping;
            None never stops early.
        seed: Seed for init, shuffling and dropout.
        nproc: Processes (ranks) per node.
        nnodes: Nodes.
        rdzv_endpoint: ``host:port`` of the rendezvous; None picks a free local port
            (single node only).
        rdzv_backend: torch elastic rendezvous backend.
        rdzv_id: Rendezvous run id shared by all nodes; None draws one (single node).
        max_restarts: Times torch elastic restarts all ranks (from the latest
            checkpoint) after one fails or is killed; 0 fails at once.
        checkpoint_dir: Checkpoint folder; None means ``<output_dir>/checkpoints``.
        checkpoint_every_steps: Optimizer steps between checkpoints (epoch ends are
            always checkpointed); None checkpoints at epoch ends only.
        freeze_embeddings: Keep the encoder's embedding module fixed.
        freeze_layers: Keep the encoder's first N transformer blocks fixed too (with
            the embeddings frozen, nothing below them needs a backward pass).
        num_threads: Torch CPU threads per rank; None = cores / nproc.
        bucket_multiplier: Batches per length-sorting chunk.
        eval_batch_size: Validation examples per forward pass per rank.
        device: ``auto``, ``cpu`` or ``cuda``.
        loss: ``ce`` (labels) or ``kd`` (needs ``teacher_logits`` in the frame).
        kd_alpha: Weight of the distillation term for ``kd``.
        kd_temperature: Softmax temperature for ``kd``.
        kd_hidden_weight: Weight of a representation term for ``kd``: one minus the
            cosine between the student's pooled embedding, mapped to the teacher's
            width by a linear projection trained alongside (and dropped when the
            model is saved), and the teacher's pooled embedding (``teacher_pooled``
            in the frame). 0 distils the logits only.
        log_every_steps: Optimizer steps between log lines on rank 0.
        pad_token_id: Token id used to pad batches.
        fail_at_step: Fault injection for reliability tests: rank ``fail_rank``
            raises right after this optimizer step (and its checkpoint, if due).
            None in real runs.
        fail_rank: The rank that ``fail_at_step`` fails.
        strategy: ``ddp`` (every rank holds the whole model, gradients and AdamW
            state) or ``fsdp`` (FSDP2: each rank holds ``1 / world_size`` of them).
        activation_checkpointing: Recompute each block's activations in the
            backward pass (non-reentrant) instead of keeping them.
        lora: Train low-rank adapters and the head only (:class:`LoraOptions`, or
            a mapping of its fields); None trains all unfrozen weights.
        precision: ``fp32``, ``bf16`` (forward passes in bf16 autocast; weights,
            gradients, optimizer state and losses in fp32) or ``auto``: bf16 on
            CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32.
    """

    model_name_or_path: str = "builtin"
    pooling: str = "auto"
    max_length: int = 128
    batch_size: int = 32
    grad_accum_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    epochs: int = 3
    max_train_samples: int | None = None
    max_steps: int | None = None
    dropout: float = 0.1
    patience: int | None = 2
    seed: int = 42
    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_backend: str = "c10d"
    rdzv_id: str | None = None
    max_restarts: int = 1
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int | None = 500
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    num_threads: int | None = None
    bucket_multiplier: int = 50
    eval_batch_size: int = 64
    device: str = "auto"
    loss: str = "ce"
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    kd_hidden_weight: float = 0.0
    log_every_steps: int = 50
    pad_token_id: int = 0
    fail_at_step: int | None = None
    fail_rank: int = 0
    strategy: str = "ddp"
    activation_checkpointing: bool = False
    lora: LoraOptions | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        # YAML gives a mapping; keep the typed, hashable form.
        object.__setattr__(self, "lora", LoraOptions.from_value(self.lora))
        errors = self._type_errors()
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))
        checks = [
            *self._optimization_checks(),
            *self._run_checks(),
            *self._loss_and_strategy_checks(),
        ]
        errors = [message for ok, message in checks if not ok]
        shards = self.world_size * self.grad_accum_steps
        # With a non-positive count the message above already says what is wrong.
        if shards >= 1 and self.batch_size % shards:
            errors.append(
                f"batch_size {self.batch_size} must be divisible by nproc * nnodes * "
                f"grad_accum_steps = {shards}"
            )
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))

    def _optimization_checks(self) -> list[tuple[bool, str]]:
        """(passes, message) for the model, batch, optimizer and schedule fields."""
        return [
            (bool(self.model_name_or_path), "model_name_or_path must be non-empty"),
            (self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}"),
            (self.max_length >= 2, "max_length must be >= 2"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum_steps >= 1, "grad_accum_steps must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                "max_grad_norm must be > 0 or null",
            ),
            (self.epochs >= 1, "epochs must be >= 1"),
            (
                self.max_train_samples is None or self.max_train_samples >= 1,
                "max_train_samples must be >= 1 or null",
            ),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.patience is None or self.patience >= 1, "patience must be >= 1"),
            (self.seed >= 0, "seed must be >= 0"),
        ]

    def _run_checks(self) -> list[tuple[bool, str]]:
        """(passes, message) for the ranks, rendezvous, checkpoints and batching."""
        return [
            (self.nproc >= 1, "nproc must be >= 1"),
            (self.nnodes >= 1, "nnodes must be >= 1"),
            (bool(self.rdzv_backend), "rdzv_backend must be non-empty"),
            (
                self.nnodes == 1 or bool(self.rdzv_endpoint),
                "rdzv_endpoint is required when nnodes > 1",
            ),
            (
                self.nnodes == 1 or bool(self.rdzv_id),
                "rdzv_id is required when nnodes > 1 (all nodes must share it)",
            ),
            (self.max_restarts >= 0, "max_restarts must be >= 0"),
            (
                self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
                "checkpoint_every_steps must be >= 1 or null",
            ),
            (
                self.num_threads is None or self.num_threads >= 1,
                "num_threads must be >= 1",
            ),
            (self.freeze_layers >= 0, "freeze_layers must be >= 0"),
            (self.bucket_multiplier >= 1, "bucket_multiplier must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.device in _DEVICES, f"device must be one of {_DEVICES}"),
        ]

    def _loss_and_strategy_checks(self) -> list[tuple[bool, str]]:
        """(passes, message) for the loss, logging, fault injection and strategy."""
        return [
            (self.loss in _LOSSES, f"loss must be one of {_LOSSES}"),
            (0 <= self.kd_alpha <= 1, "kd_alpha must be in [0, 1]"),
            (self.kd_temperature > 0, "kd_temperature must be > 0"),
            (self.kd_hidden_weight >= 0, "kd_hidden_weight must be >= 0"),
            (
                self.kd_hidden_weight == 0 or self.loss == "kd",
                "kd_hidden_weight needs loss kd",
            ),
            (self.log_every_steps >= 1, "log_every_steps must be >= 1"),
            (self.pad_token_id >= 0, "pad_token_id must be >= 0"),
            (
                self.fail_at_step is None or self.fail_at_step >= 1,
                "fail_at_step must be >= 1 or null",
            ),
            (0 <= self.fail_rank < self.world_size, "fail_rank must be a valid rank"),
            (self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}"),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {PRECISIONS}",
            ),
        ]

    def _type_errors(self) -> list[str]:
        """Check field types, since YAML parameters arrive untyped."""
        errors = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = {
                "str": (str,),
                "int": (int,),
                "float": (int, float),
                "bool": (bool,),
            }
            base, _, optional = f.type.partition(" | ")
            if (value is None and optional == "None") or base not in allowed:
                continue  # nested options check themselves
            # bool is an int subclass; a YAML `true` must not pass as a count.
            if isinstance(value, bool) and base != "bool":
                errors.append(f"{f.name} must be {base}, got {value!r}")
            elif not isinstance(value, allowed[base]):
                errors.append(f"{f.name} must be {f.type}, got {value!r}")
        return errors

    @property
    def world_size(self) -> int:
        """Total ranks."""
        return self.nproc * self.nnodes

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from parameters, refusing keys it does not know.

        Raises:
            ValueError: On unknown keys or invalid values.
        """
        _refuse_unknown_keys(cls, values, "TrainConfig")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (picklable, YAML/JSON friendly)."""
        return dataclasses.asdict(self)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in _UNHASHED_FIELDS
            and not (k in _HASHED_ONLY_IF_SET and v == _HASHED_ONLY_IF_SET[k])
        }


@dataclass
class TrainResult:
    """What rank 0 returns; plain types only so it pickles across processes.

    Attributes:
        model_dir: Folder with the best validation epoch's weights
            (:meth:`TextClassifier.save` format).
        step_history: Per optimizer step: ``step``, ``train_loss``, ``lr``,
            ``samples_per_s`` (global).
        epoch_history: Per epoch (numbered from 1): ``epoch``, ``step``,
            ``val_loss``, ``val_accuracy``, ``val_macro_f1``.
        best_epoch: Epoch whose weights are in ``model_dir``.
        best_val_macro_f1: Its validation macro-F1.
        resumed_from_step: Step of the checkpoint this run resumed from, or None.
        samples_per_s: Global training throughput of this run (samples per
            second, validation and checkpoint time included).
        wall_s: Wall time of the loop on rank 0, in seconds.
        train_samples: Training examples after subsampling.
        world_size: Ranks that trained.
        stopped_early: Whether patience ran out.
        precision: The precision the forward passes ran in (``fp32`` or ``bf16``).
    """

    model_dir: str
    step_history: list[dict[str, float]]
    epoch_history: list[dict[str, float]]
    best_epoch: int
    best_val_macro_f1: float
    resumed_from_step: int | None
    samples_per_s: float
    wall_s: float
    train_samples: int
    world_size: int
    stopped_early: bool
    precision: str = "fp32"
