"""4-bit word embeddings in ONNX: the blockwise quantizer and the standard-op unpacking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from distillery.ml.compress.embedding_4bit import (
    WORD_EMBEDDINGS,
    check_block_size,
    quantize_word_embeddings_4bit,
    unpack_block_quantized_gather,
)
from distillery.ml.compress.export import ort_session


def _embedding_graph(tables: dict[str, np.ndarray]) -> onnx.ModelProto:
    """One unnamed ``Gather`` per table on the same ids, each output summed."""
    names = list(tables)
    nodes = [
        helper.make_node("Gather", [name, "ids"], [f"{name}.rows"]) for name in names
    ]
    nodes.append(helper.make_node("Sum", [f"{name}.rows" for name in names], ["out"]))
    width = next(iter(tables.values())).shape[1]
    graph = helper.make_graph(
        nodes,
        "embeddings",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, None, width])],
        [numpy_helper.from_array(table, name) for name, table in tables.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("block", [16, 32, 64, 128, 256])
def test_check_block_size_accepts_the_quantizers_sizes(block: int) -> None:
    check_block_size(block)


@pytest.mark.parametrize("block", [8, 48, 512])
def test_check_block_size_rejects_other_sizes(block: int) -> None:
    with pytest.raises(ValueError, match=f"power of two from 16 to 256, got {block}"):
        check_block_size(block)


def test_only_the_word_embeddings_become_4bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tables = {
        WORD_EMBEDDINGS: rng.standard_normal((50, 32)).astype(np.float32),
        "positions": rng.standard_normal((50, 32)).astype(np.float32),
    }
    onnx.save(_embedding_graph(tables), tmp_path / "fp32.onnx")
    out = quantize_word_embeddings_4bit(
        tmp_path / "fp32.onnx", tmp_path / "emb4.onnx", block_size=16
    )
    assert out == tmp_path / "emb4.onnx"
    nodes = onnx.load(str(out)).graph.node
    blocked = [n for n in nodes if n.op_type == "GatherBlockQuantized"]
    assert len(blocked) == 1
    assert blocked[0].input[0].startswith(WORD_EMBEDDINGS)
    attributes = {a.name: helper.get_attribute_value(a) for a in blocked[0].attribute}
    assert attributes["block_size"] == 16
    # The other table keeps its fp32 Gather; every node has a name.
    assert [n.input[0] for n in nodes if n.op_type == "Gather"] == ["positions"]
    assert all(n.name for n in nodes)
    ids = {"ids": rng.integers(0, 50, (2, 7))}
    (got,) = ort_session(out).run(None, ids)
    expected = tables[WORD_EMBEDDINGS][ids["ids"]] + tables["positions"][ids["ids"]]
    # 4-bit rounding of N(0, 1) values: close, not equal.
    assert 0 < np.abs(got - expected).max() < 0.5


def test_quantize_needs_one_gather_on_the_word_embeddings(tmp_path: Path) -> None:
    table = np.zeros((10, 16), np.float32)
    onnx.save(_embedding_graph({"positions": table}), tmp_path / "fp32.onnx")
    with pytest.raises(ValueError, match="expected one Gather on .* found 0"):
        quantize_word_embeddings_4bit(
            tmp_path / "fp32.onnx", tmp_path / "emb4.onnx", block_size=16
        )


def test_unpacking_leaves_a_graph_without_the_contrib_op_unchanged() -> None:
    table = np.ones((10, 16), np.float32)
    model = _embedding_graph({WORD_EMBEDDINGS: table})
    before = model.SerializeToString()
    unpack_block_quantized_gather(model)
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    ("width", "block"), [(64, 16), (256, 128), (192, 128), (384, 32)]
)
def test_unpacked_4bit_gather_equals_gather_block_quantized(
    tmp_path: Path, width: int, block: int
) -> None:
    """The standard-op unpacking returns exactly what ONNX Runtime's
    ``GatherBlockQuantized`` kernel returns for the same 4-bit table, including a
    partial last block (192 = 128 + 64)."""
    rng = np.random.default_rng(width + block)
    table = rng.standard_normal((300, width)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="gather")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [None, None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, None, width])],
        [numpy_helper.from_array(table, "table")],
    )
    quantizer = MatMulNBitsQuantizer(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        bits=4,
        block_size=block,
        is_symmetric=True,
        op_types_to_quantize=("Gather",),
        quant_axes=(("Gather", 1),),
    )
    quantizer.process()
    blocked = quantizer.model.model
    unpacked = onnx.ModelProto()
    unpacked.CopyFrom(blocked)
    unpack_block_quantized_gather(unpacked)
    onnx.checker.check_model(unpacked)
    assert [n.op_type for n in blocked.graph.node] == ["GatherBlockQuantized"]
    assert "GatherBlockQuantized" not in {n.op_type for n in unpacked.graph.node}
    ids = {"ids": rng.integers(0, 300, (3, 17)).astype(np.int32)}
    outputs = []
    for name, model in (("blocked", blocked), ("unpacked", unpacked)):
        onnx.save(model, tmp_path / f"{name}.onnx")
        outputs += ort_session(tmp_path / f"{name}.onnx").run(None, ids)
    expected, got = outputs
    assert got.shape == (3, 17, width)
    np.testing.assert_array_equal(got, expected)
    # 4-bit rounding of N(0, 1) values: close, not equal, to the fp32 rows.
    assert 0 < np.abs(got - table[ids["ids"]]).max() < 0.5


def test_unpacking_refuses_another_gather_axis() -> None:
    graph = helper.make_graph(
        [
            helper.make_node(
                "GatherBlockQuantized",
                ["data", "ids", "scales"],
                ["rows"],
                domain="com.microsoft",
                gather_axis=1,
                block_size=16,
            )
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, None])],
    )
    with pytest.raises(ValueError, match="unexpected GatherBlockQuantized form"):
        unpack_block_quantized_gather(helper.make_model(graph))
