"""ONNX export, parity check and ONNX Runtime quantization of a ``TextClassifier``.

Choices (measured on the packaged MiniLM teacher and its 2-layer students, torch 2.13,
onnxruntime 1.32, see ``benchmarks/calibrate_student_sizes.py``):

* **Exporter**: torch's default ``torch.export``-based exporter (``dynamo=True``, needs
  ``onnxscript``). The legacy TorchScript exporter is deprecated since torch 2.9 and
  its graph is 2.5x larger (shape arithmetic, ``Constant`` nodes); both reach parity
  ~1e-6. Attention is exported with the *eager* implementation: SDPA adds mask
  plumbing (``IsNaN``/``Where``) and ran slower in ONNX Runtime. For the BERT-like
  families (:data:`ADDITIVE_MASK_FAMILIES`) the classifier hands the encoder eager
  attention's additive ``(B, 1, 1, T)`` mask itself: transformers' own mask builder
  exported ~20 nodes (``Range``, ``GreaterOrEqual``, ``And``, ``GatherND``,
  ``Where``...) for the same values; outputs are identical, the int8 student 1.02x
  faster at batch 1 without them (within the spread; ``benchmarks/student_graph.py``).
* **Vocabulary map**: the ``id_map`` lookup is exported inside the graph (a
  ``GatherND`` on an int32 initializer in front of the embedding ``Gather``), so the
  ONNX model takes the tokenizer's ids directly. int32 storage costs 4 bytes per
  original id (122 KB for 30522 ids) against 8 for int64, with identical outputs.
* **Graph optimization**: ONNX Runtime's transformer optimizer (``model_type="bert"``)
  fuses ``BiasGelu`` in this graph; its ``Attention`` and ``EmbedLayerNormalization``
  patterns only match the legacy exporter's graph, and on this CPU the fully fused
  legacy graph was no faster at batch 1. It is told not to fuse residual ``Add`` +
  ``LayerNormalization`` into ``SkipLayerNormalization``, and every session made by
  :func:`ort_session` keeps ONNX Runtime from fusing it at load time
  (:data:`UNFUSED_ORT_OPTIMIZERS`): the fused kernel ran ~10x slower per element than
  ``LayerNormalization`` here (onnxruntime 1.32, AMD EPYC), so leaving it out made the
  int8 student 1.30x and the int8 teacher 1.35x faster at batch 1 on test tweets
  (``benchmarks/ort_fusions.py``). fp32 outputs are the same to 1e-6; int8 outputs
  move by the rounding of the dynamically quantised activations (99.97% and 99.55% of
  the test predictions unchanged). The setting applies to every ONNX form alike. Only the BERT-like
  families it knows (:data:`ORT_OPTIMIZER_TYPES`) go through it; any other family
  (DeBERTa, ModernBERT, decoders) gets ONNX Runtime's generic offline graph
  optimization, which fuses what it recognises and never changes the outputs.
* **Quantization**: ``quantize_dynamic`` with int8 weights on ``MatMul`` and the
  embedding ``Gather`` (the embeddings dominate a small student's size). Weights are
  per-channel with ``reduce_range`` (7-bit): on CPUs without VNNI (AVX2 only, like
  the machine this was measured on; later ones had AVX-512 VNNI) ONNX Runtime's u8s8
  kernels use ``VPMADDUBSW``, whose int16 accumulation saturates with full-range
  weights; a 2-layer student's mean absolute logit error
  fell from 0.18 to 0.06 with it. ``embedding_bits=4`` instead stores the word
  embeddings as 4-bit blocks, halving the largest tensor once more; each block of
  ``embedding_block_size`` values has one fp32 scale. ONNX Runtime's quantizer
  writes them for its ``GatherBlockQuantized`` contrib op, whose CPU kernel cost a
  fifth of the int8 student's time; the same values are stored two per byte and
  unpacked by standard ops instead (:mod:`distillery.ml.compress.embedding_4bit`: same
  outputs, the int8 student 1.14x faster at batch 1; ``benchmarks/student_graph.py``).
  The default student uses blocks of 128: blocks of 32 stored four times the scales
  (0.35 against 0.09 MB of its 3.1 MB file) for the same validation F1
  (``docs/benchmarks.md``).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from distillery.ml.compress.embedding_4bit import (
    check_block_size,
    quantize_word_embeddings_4bit,
    unpack_block_quantized_gather,
)
from distillery.ml.models.modeling import TextClassifier

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
# Values per fp32 scale of 4-bit word embeddings: 128 stores a quarter of the scales
# of 32 for the same validation F1 (docs/benchmarks.md, "Smaller files").
DEFAULT_EMBEDDING_BLOCK_SIZE = 128
DEFAULT_OPSET = 20  # the torch.export exporter's default; Gelu is a native op here
# ONNX Runtime graph optimizers kept off, offline and in every session (module doc).
UNFUSED_ORT_OPTIMIZERS = ("SkipLayerNormFusion",)
# Families whose eager attention adds a (B, 1, 1, T) float mask that transformers
# passes through as given: their graphs get that mask ready-made (module doc).
ADDITIVE_MASK_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
# Hugging Face model types -> ONNX Runtime transformer optimizer type. RoBERTa, XLM-R
# and ELECTRA share BERT's block layout, which is what the "bert" fusions match.
ORT_OPTIMIZER_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
}


def export_onnx(
    model: TextClassifier,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    max_length: int = 128,
    *,
    additive_mask: bool | None = None,
) -> Path:
    """Export ``model`` to a single-file ONNX graph with dynamic batch and sequence.

    The graph takes ``input_ids`` and ``attention_mask`` (int64, ``(B, T)``, the
    original tokenizer's ids) and returns ``logits`` (float32, ``(B, C)``). Labels,
    ``max_length``, heads and width are stored as model metadata.

    Args:
        model: Classifier to export; not modified (a copy is exported).
        path: Output ``.onnx`` file; parent folders are created.
        opset: ONNX opset (>= 18 for this exporter).
        max_length: Longest sequence the graph must accept; at most the model's
            ``max_position_embeddings``.
        additive_mask: Hand the encoder eager attention's additive mask ready-made
            (:attr:`TextClassifier.additive_mask`); ``None`` = for the families in
            :data:`ADDITIVE_MASK_FAMILIES`, ``False`` = let transformers build it.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: If ``max_length`` exceeds the model's position embeddings.
        ImportError: If ``onnxscript`` (needed by torch's exporter) is missing.
    """
    path = Path(path)
    positions = model.max_positions or max_length
    if not 2 <= max_length <= positions:
        raise ValueError(f"max_length must be in [2, {positions}], got {max_length}")
    model = copy.deepcopy(model).eval().cpu()
    # Eager attention exports a plain MatMul/Softmax graph without SDPA's mask plumbing.
    model.encoder.set_attn_implementation("eager")
    if additive_mask is None:
        additive_mask = model.config.model_type in ADDITIVE_MASK_FAMILIES
    model.additive_mask = additive_mask

    seq = min(16, max_length)
    input_ids = torch.full((2, seq), model.config.pad_token_id or 0, dtype=torch.long)
    input_ids[:, 0] = 1
    attention_mask = torch.ones((2, seq), dtype=torch.long)
    attention_mask[1, seq // 2 :] = 0  # a padded row keeps the mask path in the graph
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    seq_dim = torch.export.Dim("seq", min=1, max=max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Both inputs share the batch and seq dims on purpose; torch notes it.
        warnings.filterwarnings(
            "ignore", message=r".*shares the same shape constraints"
        )
        torch.onnx.export(
            model,
            (input_ids, attention_mask),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch_dim, 1: seq_dim}, {0: batch_dim, 1: seq_dim}),
            external_data=False,
            verbose=False,
        )
    graph = onnx.load(str(path))
    _set_metadata(graph, _model_metadata(model, max_length))
    onnx.save(graph, str(path))
    logger.info(
        "Exported ONNX model to %s (%.2f MB, opset %d)",
        path,
        path.stat().st_size / 1e6,
        opset,
    )
    return path


def _model_metadata(model: TextClassifier, max_length: int) -> dict[str, str]:
    """Metadata that lets a predictor and the quantizer work from the file alone."""
    metadata = {
        "labels": json.dumps(model.labels),
        "max_length": str(max_length),
        "num_heads": str(model.config.num_attention_heads),
        "hidden_size": str(model.config.hidden_size),
    }
    # The optimizer reads a missing type as BERT's: a BERT export's metadata (and
    # size) stays what it was before other families were supported.
    if model.config.model_type != "bert":
        metadata["model_type"] = str(model.config.model_type)
    return metadata


def _set_metadata(graph: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace ``graph``'s metadata entries named in ``metadata``."""
    kept = [p for p in graph.metadata_props if p.key not in metadata]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)


def read_metadata(onnx_path: str | Path) -> dict[str, str]:
    """Return the string metadata stored in an ONNX file by :func:`export_onnx`.

    Args:
        onnx_path: ONNX file.

    Returns:
        Key-value metadata (``labels`` is a JSON list).
    """
    graph = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def check_parity(
    model: TextClassifier,
    onnx_path: str | Path,
    batches: Iterable[Mapping[str, np.ndarray | torch.Tensor]],
) -> float:
    """Largest absolute logit difference between ``model`` and its ONNX export.

    Args:
        model: The exported PyTorch model (evaluated in eval mode, on CPU).
        onnx_path: The ONNX file.
        batches: Tokenized batches with ``input_ids`` and ``attention_mask`` of shape
            ``(B, T)`` (e.g. tokenizer outputs).

    Returns:
        ``max |logits_torch - logits_onnx|`` over all batches (fp32 export: <= 1e-4).

    Raises:
        ValueError: If ``batches`` is empty.
    """
    session = ort_session(onnx_path)
    was_training = model.training
    model.eval()
    worst = -1.0
    try:
        for batch in batches:
            feeds = {k: np.asarray(batch[k], dtype=np.int64) for k in INPUT_NAMES}
            with torch.inference_mode():
                expected = model(*(torch.from_numpy(feeds[k]) for k in INPUT_NAMES))
            (got,) = session.run([OUTPUT_NAME], feeds)  # (B, C)
            worst = max(worst, float(np.abs(got - expected.numpy()).max()))
    finally:
        model.train(was_training)
    if worst < 0:
        raise ValueError("check_parity needs at least one batch")
    logger.info("ONNX parity on %s: max |diff| = %.3g", onnx_path, worst)
    return worst


def ort_session(
    onnx_path: str | Path,
    num_threads: int | None = None,
    options: Any = None,
    *,
    unfused: Sequence[str] = UNFUSED_ORT_OPTIMIZERS,
) -> Any:  # onnxruntime.InferenceSession; imported lazily
    """An ONNX Runtime CPU session without the fusions in :data:`UNFUSED_ORT_OPTIMIZERS`.

    Every session the project opens goes through here, so every ONNX form (teacher and
    student, fp32 and int8) runs with the same graph optimizations.

    Args:
        onnx_path: The ``.onnx`` file.
        num_threads: Intra-op threads (inter-op 1, sequential execution); ``None``
            leaves ONNX Runtime's defaults.
        options: ``onnxruntime.SessionOptions`` to start from (e.g. for profiling).
        unfused: Graph optimizers to keep off; ``()`` opens the session a user gets
            without the project (every optimizer on), for comparisons.
    """
    import onnxruntime as ort  # noqa: PLC0415 - heavy import, only needed here

    options = options or ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1  # one sequential graph; no parallel branches
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        str(onnx_path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(unfused),
    )


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    *,
    optimize: bool = True,
    per_channel: bool = True,
    reduce_range: bool = True,
    embedding_bits: int = 8,
    embedding_block_size: int = DEFAULT_EMBEDDING_BLOCK_SIZE,
    unpack_4bit: bool = True,
) -> dict[str, int]:
    """Optimize the graph and quantize its weights dynamically (int8 activations).

    Args:
        fp32_path: ONNX file written by :func:`export_onnx`.
        int8_path: Output file.
        optimize: Run ONNX Runtime's BERT transformer optimizer first (falls back to
            ONNX Runtime's own offline graph optimization if the optimizer fails).
        per_channel: One weight scale per output channel instead of per tensor.
        reduce_range: 7-bit weights, avoiding u8s8 saturation on CPUs without VNNI.
        embedding_bits: 8 (int8 ``Gather``) or 4 (4-bit blocks for the word
            embeddings, two per byte, unpacked by standard ops after the ``Gather``).
        embedding_block_size: Values per fp32 scale of the 4-bit word embeddings
            (a power of two, 16 to 256): larger blocks store fewer scales.
        unpack_4bit: Unpack the 4-bit embeddings with standard ops
            (:func:`~.embedding_4bit.unpack_block_quantized_gather`); ``False``
            keeps ONNX Runtime's ``GatherBlockQuantized`` contrib op (for
            comparison, or for an execution provider whose kernel for it is fast).

    Returns:
        Sizes in bytes: ``fp32_bytes``, ``optimized_bytes``, ``quantized_bytes``.

    Raises:
        ValueError: If ``embedding_bits`` is not 4 or 8, or the block size is not a
            power of two from 16 to 256.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    if embedding_bits not in (4, 8):
        raise ValueError(f"embedding_bits must be 4 or 8, got {embedding_bits}")
    check_block_size(embedding_block_size)
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    metadata = read_metadata(fp32_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        current = fp32_path
        if optimize:
            current = _optimize_graph(fp32_path, Path(tmp) / "optimized.onnx", metadata)
        optimized_bytes = current.stat().st_size
        if embedding_bits == 4:
            current = quantize_word_embeddings_4bit(
                current, Path(tmp) / "emb4.onnx", embedding_block_size
            )
        quantize_dynamic(
            current,
            int8_path,
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            # Contrib ops (fused or 4-bit) lack ONNX type inference; they are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    graph = onnx.load(str(int8_path))
    if embedding_bits == 4 and unpack_4bit:
        unpack_block_quantized_gather(graph)
    _set_metadata(graph, metadata)
    onnx.save(graph, str(int8_path))
    sizes = {
        "fp32_bytes": fp32_path.stat().st_size,
        "optimized_bytes": optimized_bytes,
        "quantized_bytes": int8_path.stat().st_size,
    }
    logger.info("Quantized %s -> %s: %s", fp32_path, int8_path, sizes)
    return sizes


def optimize_onnx(src: str | Path, dst: str | Path) -> Path:
    """Write ``src`` with ONNX Runtime's transformer fusions applied (fp32 still).

    This is the graph-optimised fp32 model a user deploys with ONNX Runtime; the
    metadata of :func:`export_onnx` is kept.

    Args:
        src: ONNX file written by :func:`export_onnx`.
        dst: Output file; parent folders are created.

    Returns:
        ``dst`` as a ``Path``.
    """
    src, dst = Path(src), Path(dst)
    metadata = read_metadata(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _optimize_graph(src, dst, metadata)
    graph = onnx.load(str(dst))
    _set_metadata(graph, metadata)
    onnx.save(graph, str(dst))
    return dst


def _optimize_graph(src: Path, dst: Path, metadata: Mapping[str, str]) -> Path:
    """Fuse transformer subgraphs with ONNX Runtime, keeping the file self-contained."""
    from onnxruntime.transformers.fusion_options import FusionOptions  # noqa: PLC0415
    from onnxruntime.transformers.optimizer import optimize_model  # noqa: PLC0415

    # Files written before the model type was recorded are BERT's.
    model_type = metadata.get("model_type", "bert")
    optimizer_type = ORT_OPTIMIZER_TYPES.get(model_type)
    if optimizer_type is None:
        logger.info(
            "ONNX Runtime has no transformer optimizer for model type %r; using its "
            "offline graph optimization",
            model_type,
        )
        return _offline_optimize(src, dst)
    fusions = FusionOptions(optimizer_type)
    # Mirrors UNFUSED_ORT_OPTIMIZERS (the offline optimizer has its own switches).
    fusions.enable_skip_layer_norm = False
    try:
        optimized = optimize_model(
            str(src),
            model_type=optimizer_type,
            num_heads=int(metadata.get("num_heads", 0)),
            hidden_size=int(metadata.get("hidden_size", 0)),
            optimization_options=fusions,
        )
        logger.info(
            "Transformer optimizer fusions: %s",
            {k: v for k, v in optimized.get_fused_operator_statistics().items() if v},
        )
        optimized.save_model_to_file(str(dst))
    except Exception:  # the optimizer is best effort by design
        logger.warning(
            "Transformer optimizer failed on %s; using ONNX Runtime's offline "
            "graph optimization",
            src,
            exc_info=True,
        )
        _offline_optimize(src, dst)
    return dst


def _offline_optimize(src: Path, dst: Path) -> Path:
    """ONNX Runtime's own offline graph optimization (extended level, CPU)."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort_session(src, options=options)
    return dst


POOLED_OUTPUT = "pooled"  # the extra output of with_pooled_output
_HEAD_WEIGHT = "head.weight"  # TextClassifier.head's weight, as export_onnx names it
_QUANTIZERS = ("DynamicQuantizeLinear", "QuantizeLinear")


def with_pooled_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a classifier graph that also returns the pooled embedding its head
    reads, as ``pooled`` (float32, ``(B, H)``), beside ``logits``.

    Works on every form this module writes (fp32, optimised, quantised): the pooled
    embedding is the float tensor entering the node that reads the head's weight
    (through the activation's quantiser in a quantised graph). One session run then
    gives what representation distillation caches with the logits.

    Raises:
        ValueError: If no node reads the head's weight.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if any(name.startswith(_HEAD_WEIGHT) for name in node.input[1:]):
            pooled = node.input[0]
            source = producers.get(pooled)
            if source is not None and source.op_type in _QUANTIZERS:
                pooled = source.input[0]
            break
    else:
        raise ValueError(
            f"no node of the graph reads the classifier head ({_HEAD_WEIGHT})"
        )
    model = copy.deepcopy(model)
    model.graph.node.append(
        onnx.helper.make_node(
            "Identity", [pooled], [POOLED_OUTPUT], name="pooled_output"
        )
    )
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            POOLED_OUTPUT, onnx.TensorProto.FLOAT, ["batch", None]
        )
    )
    return model
