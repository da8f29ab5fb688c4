"""4-bit word embeddings in an ONNX graph: blockwise quantization, then unpacking.

:func:`quantize_word_embeddings_4bit` stores the word embeddings as 4-bit blocks
with one fp32 scale per ``block_size`` values, through ONNX Runtime's quantizer,
which writes them for its ``GatherBlockQuantized`` contrib op. That op's CPU kernel
cost a fifth of the int8 student's time (onnxruntime 1.32), so
:func:`unpack_block_quantized_gather` stores the same values two per byte and
unpacks them with standard ops instead: same outputs, the int8 student 1.14x
faster at batch 1 (``benchmarks/student_graph.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WORD_EMBEDDINGS = "encoder.embeddings.word_embeddings.weight"
_UNPACKED = "word_embeddings_4bit"  # prefix of the nodes and initializers it writes


def check_block_size(block_size: int) -> None:
    """Raise ``ValueError`` unless ``block_size`` is what ONNX Runtime's 4-bit
    ``Gather`` quantizer takes: a power of two from 16 to 256.

    Args:
        block_size: Values per fp32 scale.

    Raises:
        ValueError: If ``block_size`` is not 16, 32, 64, 128 or 256.
    """
    if block_size not in (16, 32, 64, 128, 256):
        raise ValueError(
            f"embedding_block_size must be a power of two from 16 to 256, got {block_size}"
        )


def quantize_word_embeddings_4bit(src: Path, dst: Path, block_size: int) -> Path:
    """Replace the word-embedding ``Gather`` by a 4-bit ``GatherBlockQuantized``.

    The other ``Gather`` nodes are left as they are; unnamed nodes get a name
    (``<op_type>_<index>``), since the quantizer excludes nodes by name.

    Args:
        src: ONNX file with one ``Gather`` on :data:`WORD_EMBEDDINGS`.
        dst: Output file.
        block_size: Values per fp32 scale (see :func:`check_block_size`).

    Returns:
        ``dst``.

    Raises:
        ValueError: If ``src`` has no or several ``Gather`` nodes on the word
            embeddings.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # noqa: PLC0415
        MatMulNBitsQuantizer,
    )

    graph = onnx.load(str(src))
    for i, node in enumerate(graph.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"  # exclusion goes by name
    gathers = [n for n in graph.graph.node if n.op_type == "Gather"]
    word = [n for n in gathers if n.input[0] == WORD_EMBEDDINGS]
    if len(word) != 1:
        raise ValueError(f"expected one Gather on {WORD_EMBEDDINGS}, found {len(word)}")
    quantizer = MatMulNBitsQuantizer(
        graph,
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        op_types_to_quantize=("Gather",),
        # Exclusion is the only filter: nodes_to_include adds to the op types.
        nodes_to_exclude=[n.name for n in gathers if n is not word[0]],
        quant_axes=(("Gather", 1),),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        # All-zero rows (the [PAD] embedding) get scale 0; ORT maps them to 0 itself.
        quantizer.process()
    quantizer.model.save_model_to_file(str(dst))
    return dst


def unpack_block_quantized_gather(model: onnx.ModelProto) -> None:
    """Replace the ``GatherBlockQuantized`` node by standard ops that do the same.

    ONNX Runtime 1.32's CPU kernel for ``GatherBlockQuantized`` took ~1.8 us per
    gathered row of 256 values (56 us for a 30-token tweet, a fifth of the int8
    student's session), whatever the block size, against ~4 us for the whole int8
    ``Gather`` + ``DequantizeLinear``. The same 4-bit values and scales are stored
    as two nibbles per byte (column ``j`` low, column ``j + width/2`` high, offset
    by 8) and dequantised after the ``Gather``: ``BitwiseAnd``/``BitShift``,
    ``Concat``, ``Cast``, ``Sub`` 8, ``Mul`` by the row's block scales. The outputs
    are the same floats; the file grows by a few hundred bytes of graph.

    Args:
        model: A graph with at most one ``GatherBlockQuantized`` (symmetric int4,
            ``gather_axis`` 0, ``quantize_axis`` 1, as
            :func:`quantize_word_embeddings_4bit` writes it); changed in place.

    Raises:
        ValueError: If the node is not of that form.
    """
    found = _find_block_quantized_gather(model)
    if found is None:
        return
    position, node, block = found
    data_name, ids, scales_name = node.input
    initializers = {i.name: i for i in model.graph.initializer}
    values = numpy_helper.to_array(initializers[data_name]).astype(np.int16)  # [-8, 7]
    scales = numpy_helper.to_array(initializers[scales_name]).astype(np.float32)
    width = values.shape[1]
    blocks = scales.shape[1]
    tensors = {
        "packed": _pack_nibbles(values, blocks * block),
        "low_mask": np.array(15, np.uint8),
        "shift": np.array(4, np.uint8),
        "offset": np.array(8, np.float32),
        "scales": scales[:, :, None],  # (rows, blocks, 1): broadcast over a block
        "blocked_shape": np.array([0, 0, blocks, block], np.int64),
        "flat_shape": np.array([0, 0, blocks * block], np.int64),
    }
    replacement = _dequantize_nodes(ids, node.output[0], blocks * block != width)
    if blocks * block != width:  # padding columns of a partial last block
        tensors.update(
            starts=np.array([0], np.int64),
            ends=np.array([width], np.int64),
            axes=np.array([-1], np.int64),
        )
    _splice(model, position, replacement, (data_name, scales_name), tensors)


def _name(part: str) -> str:
    """Name of a node or initializer written by the unpacking."""
    return f"{_UNPACKED}/{part}"


def _find_block_quantized_gather(
    model: onnx.ModelProto,
) -> tuple[int, onnx.NodeProto, int] | None:
    """The ``GatherBlockQuantized`` node's position, the node and its block size."""
    nodes = list(model.graph.node)
    found = [i for i, n in enumerate(nodes) if n.op_type == "GatherBlockQuantized"]
    if not found:
        return None
    (position,) = found
    node = nodes[position]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if (
        len(node.input) != 3
        or attributes.get("gather_axis", 0) != 0
        or (attributes.get("quantize_axis", 1) != 1)
    ):
        raise ValueError(f"unexpected GatherBlockQuantized form: {node}")
    return position, node, int(attributes["block_size"])


def _pack_nibbles(values: np.ndarray, padded: int) -> np.ndarray:
    """``(rows, width)`` values in [-8, 7] -> ``(rows, padded / 2)`` bytes: column
    ``j`` in the low nibble, column ``j + padded / 2`` in the high one, offset by 8."""
    rows, width = values.shape
    # `padded` is whole blocks, and block sizes are even (check_block_size).
    nibbles = np.full((rows, padded), 8, dtype=np.uint8)  # 8 = zero after the offset
    nibbles[:, :width] = values + 8
    half = padded // 2
    return nibbles[:, :half] | (nibbles[:, half:] << 4)


def _dequantize_nodes(ids: str, output: str, sliced: bool) -> list[onnx.NodeProto]:
    """The standard ops that gather, unpack and scale rows of :func:`_pack_nibbles`;
    with ``sliced``, a last ``Slice`` drops the padding of a partial last block."""
    flat = _name("dequantized") if sliced else output
    nodes = [
        helper.make_node("Gather", [_name("packed"), ids], [_name("bytes")], axis=0),
        helper.make_node(
            "BitwiseAnd", [_name("bytes"), _name("low_mask")], [_name("low")]
        ),
        helper.make_node(
            "BitShift",
            [_name("bytes"), _name("shift")],
            [_name("high")],
            direction="RIGHT",
        ),
        helper.make_node(
            "Concat", [_name("low"), _name("high")], [_name("u4")], axis=-1
        ),
        helper.make_node("Cast", [_name("u4")], [_name("float")], to=TensorProto.FLOAT),
        helper.make_node("Sub", [_name("float"), _name("offset")], [_name("centred")]),
        helper.make_node(
            "Reshape", [_name("centred"), _name("blocked_shape")], [_name("blocked")]
        ),
        helper.make_node(
            "Gather", [_name("scales"), ids], [_name("row_scales")], axis=0
        ),
        helper.make_node(
            "Mul", [_name("blocked"), _name("row_scales")], [_name("scaled")]
        ),
        helper.make_node("Reshape", [_name("scaled"), _name("flat_shape")], [flat]),
    ]
    if sliced:
        nodes.append(
            helper.make_node(
                "Slice",
                [flat, _name("starts"), _name("ends"), _name("axes")],
                [output],
            )
        )
    for i, node in enumerate(nodes):
        node.name = _name(f"{i}_{node.op_type}")
    return nodes


def _splice(
    model: onnx.ModelProto,
    position: int,
    replacement: list[onnx.NodeProto],
    dropped: tuple[str, ...],
    tensors: dict[str, np.ndarray],
) -> None:
    """Put ``replacement`` in place of the node at ``position``, and ``tensors``
    (named by :func:`_name`) in place of the initializers named in ``dropped``."""
    del model.graph.node[position]
    for i, new in enumerate(replacement):
        model.graph.node.insert(position + i, new)
    kept = [i for i in model.graph.initializer if i.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.initializer.extend(
        numpy_helper.from_array(array, _name(key)) for key, array in tensors.items()
    )
