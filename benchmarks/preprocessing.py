"""Preprocessing benchmark: the preprocess stage on Dask vs the same steps in pandas
vs Hugging Face ``datasets.map(batched=True, num_proc=2)``, at 100k and 1M rows.

The input is the validated corpus (``data/03_primary/validated_texts.parquet`` from a
previous ``kedro run``) replicated to the row count, each copy's texts made unique by a
suffix, so that de-duplication keeps the real work. Every engine does the same steps:
normalise, assign the hash split, drop exact duplicates, tokenise with the teacher's
fast tokenizer, write Parquet. Each engine and size runs in its own subprocess; peak
RSS is the sum over that subprocess and its children (Dask workers), sampled every
50 ms, and CPU seconds are those of the whole process tree (``cores`` = CPU / wall:
the tokenizer's own thread pool makes "single process" use more than one core).
Engines run interleaved, ``--repeats`` rounds per size; the table shows the median
wall time and the largest peak. Usage::

    .venv/bin/python benchmarks/preprocessing.py [--sizes 100000 1000000] [--repeats 1]
        [--base data/03_primary/validated_texts.parquet]

Prints a table and writes ``benchmarks/results/preprocessing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("dask", "pandas", "datasets")
SEED = 42
FRACTIONS = (0.8, 0.1, 0.1)
BASE = ROOT / "data/03_primary/validated_texts.parquet"
# As the catalog writes validated_texts: Dask reads one partition per row group.
ROW_GROUP_SIZE = 20_000


def make_input(base_path: Path, rows: int, folder: Path) -> Path:
    """The validated corpus replicated to ``rows`` rows with unique texts and row ids."""
    base = pd.read_parquet(base_path)
    copies = -(-rows // len(base))
    frame = pd.concat(
        [base.assign(text=base["text"] + f" r{k}") for k in range(copies)],
        ignore_index=True,
    ).head(rows)
    frame = frame.assign(source_row=range(len(frame)))
    path = folder / f"input-{rows}.parquet"
    frame.to_parquet(path, row_group_size=ROW_GROUP_SIZE)
    return path


def run_pandas(source: Path, out: Path) -> None:
    """The preprocess steps, single process, whole frame in memory."""
    from distillery.ml.data.text import (  # noqa: PLC0415
        mark_duplicates_partition,
        normalize_partition,
        tokenize_partition,
    )

    frame = pd.read_parquet(source)
    marked = mark_duplicates_partition(
        normalize_partition(frame, SEED, FRACTIONS, "@user", "http")
    )
    kept = marked[~marked["is_duplicate"]]
    labels = {label: i for i, label in enumerate(sorted(kept["label"].unique()))}
    for split in ("train", "val", "test"):
        rows = kept[kept["split"] == split]
        tokenize_partition(rows, "builtin", 128, labels).to_parquet(
            out / f"{split}.parquet"
        )


def run_dask(source: Path, out: Path) -> None:
    """The stage's own node functions on a local Dask cluster (2 workers)."""
    import dask.dataframe as dd  # noqa: PLC0415
    from distributed import Client, LocalCluster  # noqa: PLC0415

    from distillery.datasets import AtomicDaskParquetDataset  # noqa: PLC0415
    from distillery.pipelines.preprocess.nodes import (  # noqa: PLC0415
        build_label_vocab,
        normalize_texts,
        tokenize_splits,
    )

    options = {
        "seed": SEED,
        "npartitions": 8,
        "tokenizer": "builtin",
        "max_length": 128,
    }
    schema = "input_ids:[int],attention_mask:[int8],label:long,text:str,source_row:long"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        normalized = AtomicDaskParquetDataset(filepath=str(out / "normalized"))
        normalized.save(
            normalize_texts(dd.read_parquet(source, split_row_groups=True), options)
        )
        vocab = build_label_vocab(normalized.load())
        for split, frame in zip(
            ("train", "val", "test"),
            tokenize_splits(normalized.load(), vocab, options),
            strict=True,
        ):
            AtomicDaskParquetDataset(
                filepath=str(out / split), save_args={"schema": schema}
            ).save(frame)


def run_datasets(source: Path, out: Path) -> None:
    """Hugging Face datasets: batched map with 2 processes for the per-row work.

    It tokenises with the same encoder call as the other engines, so the comparison is
    of the engines, not of tokenizer wrappers.
    """
    import datasets  # noqa: PLC0415

    from distillery.ml.data.text import (  # noqa: PLC0415
        assign_split,
        load_encoder,
        normalize_text,
        text_hash,
    )

    encoder = load_encoder("builtin", 128)
    # A fresh cache per run: repeats must not reuse an earlier run's Arrow files.
    datasets.disable_caching()
    data = datasets.load_dataset(
        "parquet",
        data_files=str(source),
        split="train",
        cache_dir=str(out / "hf-cache"),
    )

    def normalise(batch: dict) -> dict:
        texts = [normalize_text(t) for t in batch["text"]]
        hashes = [text_hash(t, SEED) for t in texts]
        return {"text": texts, "split": [assign_split(h, FRACTIONS) for h in hashes]}

    data = data.map(normalise, batched=True, num_proc=2)
    seen: set[str] = set()
    keep = [not (t in seen or seen.add(t)) for t in data["text"]]  # first copy wins
    data = data.select([i for i, k in enumerate(keep) if k])
    labels = {label: i for i, label in enumerate(sorted(set(data["label"])))}

    def tokenise(batch: dict) -> dict:
        ids = [e.ids for e in encoder.encode_batch_fast(batch["text"])]
        return {
            "input_ids": ids,
            "attention_mask": [[1] * len(i) for i in ids],
            "label": [labels[x] for x in batch["label"]],
        }

    data = data.map(tokenise, batched=True, num_proc=2)
    for split in ("train", "val", "test"):
        data.filter(
            lambda b: [s == split for s in b["split"]], batched=True
        ).to_parquet(str(out / f"{split}.parquet"))


def _rss_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    total, stack = 0, [pid]
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        stack.extend(children.get(current, []))
    return total


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(engine: str, source: Path, workdir: Path) -> dict[str, float]:
    """Run one engine in a subprocess; wall time, CPU time and peak RSS of its tree.

    CPU time counts the subprocess and every descendant it waited for (Dask workers
    are joined by their nanny, datasets' pool by datasets).
    """
    out = workdir / f"{engine}-{source.stem}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # run_path, not an import: the benchmarks folder must not shadow modules on
    # sys.path (a script named like a module would hide the stdlib-style `compression` package).
    code = (
        "import runpy, pathlib; "
        f"runpy.run_path({__file__!r})['run_{engine}']"
        f"(pathlib.Path({str(source)!r}), pathlib.Path({str(out)!r}))"
    )
    load = os.getloadavg()[0]
    cpu = _children_cpu_s()
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, _rss_tree(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    cpu = _children_cpu_s() - cpu
    if process.returncode != 0:
        raise RuntimeError(f"{engine} failed: {process.stderr.read()[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": peak / 1e6,
        "load_1min_before": load,
    }


def summarize(runs: list[dict]) -> list[dict]:
    """One row per engine and size: median wall and CPU time, largest peak RSS."""
    rows = []
    for size in dict.fromkeys(r["rows"] for r in runs):
        for engine in dict.fromkeys(r["engine"] for r in runs):
            cell = [r for r in runs if r["rows"] == size and r["engine"] == engine]
            if not cell:
                continue
            wall = statistics.median(r["wall_s"] for r in cell)
            cpu = statistics.median(r["cpu_s"] for r in cell)
            rows.append(
                {
                    "engine": engine,
                    "rows": size,
                    "repeats": len(cell),
                    "wall_s": wall,
                    "wall_s_all": [r["wall_s"] for r in cell],
                    "rows_per_s": size / wall,
                    "cpu_s": cpu,
                    "cores": cpu / wall,
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in cell),
                }
            )
    return rows


def targets(runs: list[dict], rows: list[dict]) -> dict[str, float]:
    """The issue's ratios at the largest size (speed-ups: median of per-round ratios)."""
    sizes = sorted({r["rows"] for r in runs})
    big, small = sizes[-1], sizes[0]

    def per_round(engine: str) -> float | None:
        pairs = [
            (d["wall_s"], o["wall_s"])
            for d, o in zip(
                [r for r in runs if r["rows"] == big and r["engine"] == "dask"],
                [r for r in runs if r["rows"] == big and r["engine"] == engine],
                strict=False,
            )
        ]
        return statistics.median(o / d for d, o in pairs) if pairs else None

    peak = {(r["engine"], r["rows"]): r["peak_rss_mb"] for r in rows}
    result = {
        "rows": big,
        "dask_speedup_vs_pandas": per_round("pandas"),
        "dask_speedup_vs_datasets": per_round("datasets"),
    }
    if big != small and ("dask", small) in peak:
        result["dask_peak_rss_ratio"] = peak["dask", big] / peak["dask", small]
        result["peak_rss_ratio_sizes"] = [small, big]
    return result


def main() -> int:
    """Run every engine at every size, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds")
    parser.add_argument(
        "--base", default=str(BASE), help="validated corpus to replicate"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/preprocessing.json")
    )
    args = parser.parse_args()
    base = Path(args.base)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            source = make_input(base, size, Path(tmp))
            for round_ in range(args.repeats):
                for engine in args.engines:
                    result = measure(engine, source, Path(tmp))
                    runs.append(
                        {"engine": engine, "rows": size, "round": round_, **result}
                    )
                    sys.stdout.write(
                        f"{engine:<10}{size:>10}{result['wall_s']:>9.1f} s"
                        f"{size / result['wall_s']:>10.0f} rows/s"
                        f"{result['cpu_s'] / result['wall_s']:>6.2f} cores"
                        f"{result['peak_rss_mb']:>9.0f} MB"
                        f"   (load {result['load_1min_before']:.1f})\n"
                    )
                    sys.stdout.flush()
    rows = summarize(runs)
    goals = targets(runs, rows)
    sys.stdout.write(json.dumps(goals, indent=2) + "\n")
    # Imported here: the engines run this file through runpy in subprocesses whose
    # sys.path lacks benchmarks/; only main() needs the helper.
    from _results import write_results  # noqa: PLC0415

    write_results(
        args.out,
        ("dask", "distributed", "pandas", "tokenizers", "datasets"),
        {
            "base": {"path": str(base), "rows": len(pd.read_parquet(base))},
            "targets": goals,
            "rows": rows,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
