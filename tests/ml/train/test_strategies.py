"""Memory strategies: FSDP2 against one process, LoRA, activation checkpointing and
sharded checkpoints that resume, also on another number of ranks.

FSDP2 once averaged gradients wrongly on gloo without any error (pytorch#162338), so
the sharded runs are compared with a single process that saw the same batches.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from distillery.ml.models.modeling import WEIGHTS_FILE, TextClassifier
from distillery.ml.train.checkpoint import SHARDED_DIR, SHARDED_INDEX
from distillery.ml.train.config import LoraOptions, TrainConfig, TrainResult
from distillery.ml.train.launch import launch_training
from distillery.ml.train.lora import apply_lora, merge_lora_state
from distillery.ml.train.strategies import autocast, enable_activation_checkpointing

# Sharded and single-process runs add the same gradients in another order; after
# 16 AdamW steps at lr 3e-3 their float32 weights differ by ~1e-7 (measured).
TOLERANCE = 1e-5


def _weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return load_file(str(Path(result.model_dir) / WEIGHTS_FILE))


def _assert_same_run(got: TrainResult, expected: TrainResult, atol: float) -> None:
    losses = [s["train_loss"] for s in got.step_history]
    assert losses == pytest.approx(
        [s["train_loss"] for s in expected.step_history], abs=atol
    )
    assert [e["val_loss"] for e in got.epoch_history] == pytest.approx(
        [e["val_loss"] for e in expected.epoch_history], abs=atol
    )
    assert got.best_epoch == expected.best_epoch
    a, b = _weights(got), _weights(expected)
    assert a.keys() == b.keys()
    for name, tensor in b.items():
        assert torch.allclose(a[name], tensor, atol=atol, rtol=0), name


def _tiny_classifier(layers: int = 2, dropout: float = 0.0) -> TextClassifier:
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    encoder = BertModel(config, add_pooling_layer=False)
    return TextClassifier(encoder, ["a", "b", "c"], dropout).train()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 100, (4, 12), generator=generator)  # (B, T)
    mask = torch.ones_like(ids)
    mask[2:, 8:] = 0
    return ids, mask, torch.tensor([0, 1, 2, 1])


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "zero3"}, "strategy must be one of"),
        ({"lora": {"r": 0}}, "lora.r must be an int >= 1"),
        ({"lora": {"rank": 8}}, "unknown lora keys"),
        ({"lora": {"target_modules": "query"}}, "lora.target_modules must be a list"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout must be in"),
        ({"lora": 8}, "lora must be a mapping or null"),
        ({"activation_checkpointing": "yes"}, "activation_checkpointing must be bool"),
    ],
)
def test_config_rejects_bad_strategy_options(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(changes)


def test_strategy_options_round_trip_and_hash_only_when_set() -> None:
    default = TrainConfig()
    # Checkpoints written before these options existed keep their hash.
    assert {"strategy", "lora", "activation_checkpointing", "precision"}.isdisjoint(
        default.hashed_fields()
    )
    config = TrainConfig.from_dict(
        {
            "strategy": "fsdp",
            "activation_checkpointing": True,
            "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        }
    )
    assert config.lora == LoraOptions(r=4, alpha=8, target_modules=("query", "value"))
    assert TrainConfig.from_dict(config.to_dict()) == config
    hashed = config.hashed_fields()
    assert hashed["strategy"] == "fsdp"
    assert hashed["lora"]["r"] == 4
    # Recomputing activations does not change the weights: same checkpoints.
    assert "activation_checkpointing" not in hashed


# ----------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_autocast_runs_matmuls_in_the_resolved_precision(
    precision: str, dtype: torch.dtype
) -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with autocast(precision, torch.device("cpu")):
        product = a @ b
    assert product.dtype == dtype
    assert (a @ b).dtype == torch.float32  # nothing left on afterwards


# ------------------------------------------------- activation checkpointing


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    ids, mask, labels = _batch()
    grads = []
    for checkpointed in (False, True):
        model = _tiny_classifier(dropout=0.1)
        if checkpointed:
            enable_activation_checkpointing(model)
        torch.manual_seed(5)  # the same dropout masks, recomputation included
        loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-7, rtol=0), name
    assert any(grad.abs().sum() > 0 for grad in plain.values())


# ---------------------------------------------------------------------- LoRA


def test_lora_trains_only_adapters_and_head() -> None:
    model = _tiny_classifier()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = apply_lora(model, LoraOptions(r=2, alpha=4))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n in names if "lora_" in n or n.startswith("head.")}
    assert {"head.weight", "head.bias"} <= names
    # query and value of both blocks, A and B each
    assert sum("lora_" in n for n in names) == 2 * 2 * 2
    assert trainable == sum(
        p.numel() for n, p in model.named_parameters() if n in names
    )

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    ids, mask, labels = _batch()
    for _ in range(3):
        torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(model.named_parameters())
    for name, tensor in before.items():
        # Injection moved adapted weights under `base_layer`.
        moved = name.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias"
        )
        current = after.get(name, after.get(moved))
        if name.startswith("head."):
            assert not torch.equal(current, tensor), name
        else:
            assert torch.equal(current, tensor), name
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())


def test_merged_lora_state_equals_peft_merge() -> None:
    model = _tiny_classifier()
    options = LoraOptions(r=2, alpha=6, target_modules=("query", "dense"))
    apply_lora(model, options)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # starts at zero; make the update count
                param.normal_()
    ids, mask, _ = _batch()
    model.eval()
    expected_logits = model(ids, mask)
    merged = merge_lora_state(model.state_dict(), options.scaling)

    plain = _tiny_classifier()
    plain.load_state_dict(merged)  # strict: exactly the plain model's keys
    plain.eval()
    assert torch.allclose(plain(ids, mask), expected_logits, atol=1e-5)
    for module in model.modules():
        if hasattr(module, "merge") and hasattr(module, "base_layer"):
            module.merge()  # what peft's merge_and_unload does, layer by layer
    for name, tensor in model.state_dict().items():
        if ".base_layer." in name:
            assert torch.allclose(
                merged[name.replace(".base_layer.", ".")], tensor, atol=1e-6
            ), name


def test_lora_run_saves_a_plain_classifier(
    base_config: TrainConfig, splits, tmp_path: Path, tiny_encoder_dir: Path
) -> None:
    config = replace(
        base_config, lora={"r": 4, "alpha": 8}, epochs=1, checkpoint_every_steps=4
    )
    result = launch_training(
        config, splits.train, splits.val, splits.labels, tmp_path / "out"
    )
    saved = load_file(str(Path(result.model_dir) / WEIGHTS_FILE))
    assert not any("lora_" in k or "base_layer" in k for k in saved)
    model = TextClassifier.load(result.model_dir)  # loads like any classifier
    assert model.labels == splits.labels

    # The step checkpoint keeps the adapters apart: the base weights are the
    # pretrained ones, and base + scaling * B @ A is what was saved.
    step_dir = next((tmp_path / "ckpt").glob("run-*/step-00000004"))
    unmerged = load_file(str(step_dir / WEIGHTS_FILE))
    pretrained = load_file(str(tiny_encoder_dir / "model.safetensors"))
    query = "encoder.layer.0.attention.self.query.weight"
    base = unmerged[f"encoder.{query.replace('.weight', '.base_layer.weight')}"]
    assert torch.equal(base, pretrained[query])
    assert not torch.equal(saved[f"encoder.{query}"], pretrained[query])


# --------------------------------------------------------------- FSDP2, 2 ranks


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "options",
    [
        {"grad_accum_steps": 2},
        {"lora": {"r": 4, "alpha": 8}, "activation_checkpointing": True},
    ],
    ids=["accumulation", "lora+checkpointing"],
)
def test_fsdp_two_ranks_match_one_process(
    base_config: TrainConfig,
    splits,
    tmp_path: Path,
    tiny_encoder_dir: Path,
    options: dict,
) -> None:
    config = replace(base_config, **options)
    one = launch_training(
        replace(config, checkpoint_dir=str(tmp_path / "c1")),
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "one",
    )
    sharded = launch_training(
        replace(config, strategy="fsdp", nproc=2, checkpoint_dir=str(tmp_path / "c2")),
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "two",
    )
    assert sharded.world_size == 2
    assert len(sharded.step_history) == len(one.step_history) == 16
    _assert_same_run(sharded, one, TOLERANCE)
    # Training moved the encoder well beyond the tolerance.
    pretrained = load_file(str(tiny_encoder_dir / "model.safetensors"))
    trained = _weights(sharded)
    moved = max(
        (trained[f"encoder.{k}"] - v).abs().max() for k, v in pretrained.items()
    )
    assert moved > 100 * TOLERANCE


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sharded_checkpoint_resumes_on_two_ranks_and_on_one(
    base_config: TrainConfig, splits, tmp_path: Path
) -> None:
    config = replace(
        base_config, strategy="fsdp", nproc=2, max_steps=12, checkpoint_every_steps=3
    )
    args = (splits.train, splits.val, splits.labels)
    clean = launch_training(
        replace(config, checkpoint_dir=str(tmp_path / "clean_ckpt")),
        *args,
        tmp_path / "clean",
    )
    # Checkpoints at 3, 6, 8 (epoch end), 9; the crash after step 10 loses 10.
    with pytest.raises(RuntimeError, match="injected fault on rank 1 after step 10"):
        launch_training(
            replace(config, fail_at_step=10, fail_rank=1), *args, tmp_path / "crash"
        )
    last = sorted((tmp_path / "ckpt").glob("run-*/step-*"))[-1]
    assert last.name == "step-00000009"
    # Each rank's rows as safetensors and a JSON index; no pickle anywhere.
    assert sorted(p.name for p in (last / SHARDED_DIR).iterdir()) == [
        SHARDED_INDEX,
        "rank-00000.safetensors",
        "rank-00001.safetensors",
    ]
    assert not (last / WEIGHTS_FILE).exists()  # no rank held the whole model
    shutil.copytree(tmp_path / "ckpt", tmp_path / "ckpt_one")

    resumed = launch_training(config, *args, tmp_path / "resumed")
    assert resumed.resumed_from_step == 9
    _assert_same_run(resumed, clean, atol=0.0)  # same ranks: bit for bit

    # The 2-rank shards, resharded onto 1 rank.
    one = launch_training(
        replace(config, nproc=1, checkpoint_dir=str(tmp_path / "ckpt_one")),
        *args,
        tmp_path / "one",
    )
    assert one.resumed_from_step == 9
    assert one.world_size == 1
    _assert_same_run(one, clean, TOLERANCE)
