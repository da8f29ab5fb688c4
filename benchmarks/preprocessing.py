"""Preprocessing benchmark: the preprocess stage on Dask vs the same steps in pandas
vs Hugging Face ``datasets.map(batched=True, num_proc=2)``, at 100k and 1M rows.

The input is the validated corpus (``data/03_primary/validated_texts.parquet`` from a
previous ``kedro run``) replicated to the row count, each copy's texts made unique by a
suffix, so that de-duplication keeps the real work. Every engine does the same steps:
normalise, assign the hash split, drop exact duplicates, tokenise with the teacher's
fast tokenizer, write Parquet. Each engine and size runs in its own subprocess; peak
RSS is the sum over that subprocess and its children (Dask workers), sampled every
50 ms. Usage::

    .venv/bin/python benchmarks/preprocessing.py [--sizes 100000 1000000]

Prints a table and writes ``benchmarks/results/preprocessing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("dask", "pandas", "datasets")
SEED = 42
FRACTIONS = (0.8, 0.1, 0.1)


def make_input(rows: int, folder: Path) -> Path:
    """The validated corpus replicated to ``rows`` rows with unique texts and row ids."""
    base = pd.read_parquet(ROOT / "data/03_primary/validated_texts.parquet")
    copies = -(-rows // len(base))
    frame = pd.concat(
        [base.assign(text=base["text"] + f" r{k}") for k in range(copies)],
        ignore_index=True,
    ).head(rows)
    frame = frame.assign(source_row=range(len(frame)))
    path = folder / f"input-{rows}.parquet"
    frame.to_parquet(path, row_group_size=50_000)
    return path


def run_pandas(source: Path, out: Path) -> None:
    """The preprocess steps, single process, whole frame in memory."""
    from distillery.ml.text import (  # noqa: PLC0415
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
    """Hugging Face datasets: batched map with 2 processes for the per-row work."""
    import datasets  # noqa: PLC0415

    from distillery.ml.modeling import load_tokenizer  # noqa: PLC0415
    from distillery.ml.text import assign_split, normalize_text, text_hash  # noqa: PLC0415

    tokenizer = load_tokenizer("builtin")
    data = datasets.load_dataset("parquet", data_files=str(source), split="train")

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
        encoded = tokenizer(batch["text"], truncation=True, max_length=128)
        return dict(encoded) | {"label": [labels[x] for x in batch["label"]]}

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


def measure(engine: str, source: Path, workdir: Path) -> dict[str, float]:
    """Run one engine in a subprocess; wall time and peak RSS of its process tree."""
    out = workdir / f"{engine}-{source.stem}"
    out.mkdir()
    # run_path, not an import: the benchmarks folder must not shadow modules on
    # sys.path (a script named like a module would hide the stdlib-style `compression` package).
    code = (
        "import runpy, pathlib; "
        f"runpy.run_path({__file__!r})['run_{engine}']"
        f"(pathlib.Path({str(source)!r}), pathlib.Path({str(out)!r}))"
    )
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, _rss_tree(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{engine} failed: {process.stderr.read()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak / 1e6}


def main() -> int:
    """Run every engine at every size, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/preprocessing.json")
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            source = make_input(size, Path(tmp))
            for engine in args.engines:
                result = measure(engine, source, Path(tmp))
                rows.append(
                    {
                        "engine": engine,
                        "rows": size,
                        **result,
                        "rows_per_s": size / result["wall_s"],
                    }
                )
                sys.stdout.write(
                    f"{engine:<10}{size:>10}{result['wall_s']:>9.1f} s{size / result['wall_s']:>10.0f} rows/s{result['peak_rss_mb']:>9.0f} MB\n"
                )
                sys.stdout.flush()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    versions = {}
    for package in ("dask", "distributed", "pandas", "tokenizers", "datasets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["python", *sys.argv]),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "versions": versions,
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
