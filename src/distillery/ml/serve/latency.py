"""Latency, throughput and size measurements for any :class:`Predictor`.

Every timing goes through ``Predictor.predict_proba`` on real texts, so
tokenization, batching and the softmax are included: that is what a caller waits
for. Timings are for benchmarks and reports; tests never assert them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from distillery.ml.serve.inference import Predictor

logger = logging.getLogger(__name__)


def _batches(texts: list[str], batch_size: int, count: int) -> list[list[str]]:
    """``count`` consecutive batches, cycling through ``texts``."""
    n = len(texts)
    return [
        [texts[(i * batch_size + j) % n] for j in range(batch_size)]
        for i in range(count)
    ]


def measure_latency(
    predictor: Predictor,
    texts: list[str],
    batch_size: int = 1,
    warmup: int = 20,
    repeats: int = 200,
) -> dict[str, float]:
    """Wall-clock latency of one ``predict_proba`` call.

    Args:
        predictor: Model to time.
        texts: Real texts, cycled through in order (no text is timed twice unless
            ``repeats * batch_size`` exceeds ``len(texts)``).
        batch_size: Texts per call.
        warmup: Untimed calls first (allocations, thread pools, caches).
        repeats: Timed calls.

    Returns:
        ``p50_ms``, ``p95_ms``, ``mean_ms`` per call, and ``batch_size``.

    Raises:
        ValueError: If ``texts`` is empty or a count is not positive.
    """
    if not texts:
        raise ValueError("measure_latency needs at least one text")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, repeats >= 1, warmup >= 0; got "
            f"{batch_size}, {repeats}, {warmup}"
        )
    for batch in _batches(texts[::-1], batch_size, warmup):
        predictor.predict_proba(batch)
    timings_ns = np.empty(repeats, dtype=np.int64)
    for i, batch in enumerate(_batches(texts, batch_size, repeats)):
        start = time.perf_counter_ns()
        predictor.predict_proba(batch)
        timings_ns[i] = time.perf_counter_ns() - start
    ms = timings_ns / 1e6
    result = {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "batch_size": float(batch_size),
    }
    logger.info("Latency at batch %d: %s", batch_size, result)
    return result


def measure_throughput(
    predictor: Predictor,
    texts: list[str],
    batch_size: int = 32,
    warmup: int = 2,
) -> float:
    """Texts per second when ``texts`` are sent in consecutive batches.

    Args:
        predictor: Model to time.
        texts: Real texts; each is predicted once in the timed pass.
        batch_size: Texts per ``predict_proba`` call.
        warmup: Untimed batches first.

    Returns:
        Samples per second over the whole timed pass.

    Raises:
        ValueError: If ``texts`` is empty or ``batch_size`` is below 1.
    """
    if not texts or batch_size < 1:
        raise ValueError("measure_throughput needs texts and batch_size >= 1")
    for batch in _batches(texts, batch_size, warmup):
        predictor.predict_proba(batch)
    start = time.perf_counter_ns()
    for i in range(0, len(texts), batch_size):
        predictor.predict_proba(texts[i : i + batch_size])
    seconds = (time.perf_counter_ns() - start) / 1e9
    rate = len(texts) / seconds
    logger.info("Throughput at batch %d: %.1f samples/s", batch_size, rate)
    return rate


def artifact_size_bytes(path: str | Path) -> int:
    """Size on disk of a file, or of every file under a folder.

    Args:
        path: File or folder.

    Returns:
        Total bytes.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise FileNotFoundError(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
