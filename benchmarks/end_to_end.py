"""End-to-end benchmark: wall time of `kedro run`, per stage and in total.

Runs ``kedro run`` (default: the defaults, every stage) in the project, then reads the
per-stage wall times that ``StageTimerHook`` logged to that run in MLflow
(``wall_s.<stage>``, node time including the saving of outputs) next to the wall time
of the whole command (start-up included). Usage::

    .venv/bin/python benchmarks/end_to_end.py [--env ENV] [--clean] [--log FILE]

``--clean`` empties the data folders first (as on a fresh clone); ``--log`` keeps
Kedro's output (node by node times). The JSON also keeps the run's headline results
from its own reports (rows in, repaired and quarantined; the teacher's precision,
throughput and validation macro-F1; every evaluated form's test macro-F1, size and
p50; the selected student and its ratios), so every figure of the run is in a
committed file. Prints a table and
writes ``benchmarks/results/end_to_end.json`` (``end_to_end-<env>.json`` for other
environments).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "compress")
TARGET_S = 720.0  # 12 minutes


def _clean() -> None:
    """Empty every data layer as on a fresh clone (files in ``data/`` itself, such
    as the run lock, are not layers and stay)."""
    for layer in (ROOT / "data").iterdir():
        if not layer.is_dir():
            continue
        for item in layer.iterdir():
            if item.name != ".gitkeep":
                shutil.rmtree(item) if item.is_dir() else item.unlink()


def _read(relative: str) -> dict[str, Any]:
    return json.loads((ROOT / relative).read_text())


def _run_reports() -> dict[str, Any]:
    """Headline results from the reports the run just wrote in ``data/``."""
    counts = _read("data/08_reporting/validation_summary.json")["counts"]
    teacher = _read("data/08_reporting/teacher_train_summary.json")
    comparison = _read("data/08_reporting/model_comparison.json")
    selected = _read("data/07_model_output/selected_student.json")
    versions = sorted((ROOT / "data/06_models/teacher").iterdir())
    return {
        "kedro_run_version": versions[-1].name,
        "validation": {
            k: counts[k]
            for k in ("rows_in", "rows_clean", "rows_repaired", "rows_quarantined")
        },
        "teacher": {
            k: teacher[k]
            for k in ("precision", "samples_per_s", "best_val_macro_f1", "world_size")
        },
        "evaluate": {
            "reference": comparison["reference"],
            "models": [
                {
                    k: m[k]
                    for k in (
                        "name",
                        "form",
                        "macro_f1",
                        "size_bytes",
                        "latency_p50_ms",
                    )
                }
                for m in comparison["models"]
            ],
        },
        "selected_student": {
            k: selected[k]
            for k in ("name", "val_macro_f1", "teacher_val_macro_f1", "ratios")
        },
    }


def _earlier_attempt(
    client: mlflow.MlflowClient, run_id: str | None
) -> dict[str, Any] | None:
    """The stage times and wall time (MLflow start to end) of a run resumed here."""
    if run_id is None:
        return None
    run = client.get_run(run_id)
    stages = {
        s: run.data.metrics[f"wall_s.{s}"]
        for s in STAGES
        if f"wall_s.{s}" in run.data.metrics
    }
    wall = (run.info.end_time - run.info.start_time) / 1000
    return {
        "mlflow_run_id": run_id,
        "status": run.info.status,
        "wall_s": wall,
        "stages": stages,
    }


def main() -> int:
    """Run kedro, collect the stage times, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env", default=None, help="Kedro environment (default: local)"
    )
    parser.add_argument("--clean", action="store_true", help="empty data/ first")
    parser.add_argument("--log", default=None, help="write kedro's output to this file")
    parser.add_argument(
        "--out", default=None, help="results file (default end_to_end[-ENV].json)"
    )
    parser.add_argument("--from-nodes", default=None, help="resume from these nodes")
    parser.add_argument("--params", default=None, help="kedro run --params")
    parser.add_argument(
        "--continues",
        default=None,
        help="MLflow run id of the failed run this one resumes: its stage times and "
        "wall time are added to this run's",
    )
    args = parser.parse_args()
    if args.clean:
        _clean()
    command = [str(Path(sys.executable).with_name("kedro")), "run"]
    if args.env:
        command += ["--env", args.env]
    for flag in ("from_nodes", "params"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "true"}
    started = time.time()
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.time() - started
    if args.log:
        Path(args.log).write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        return done.returncode

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ROOT / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distillery")
    run = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.start_time >= {int(started * 1000)}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    stages = {s: run.data.metrics.get(f"wall_s.{s}") for s in STAGES}
    earlier = _earlier_attempt(client, args.continues)
    if earlier is not None:
        wall += earlier["wall_s"]
        for stage, seconds in earlier["stages"].items():
            stages[stage] = (stages[stage] or 0.0) + seconds
    rows = [{"stage": s, "wall_s": v} for s, v in stages.items() if v is not None]
    lines = [f"{'stage':<12}{'wall (s)':>10}"]
    lines += [f"{r['stage']:<12}{r['wall_s']:>10.1f}" for r in rows]
    lines.append(
        f"{'nodes total':<12}{run.data.metrics.get('wall_s.total', 0.0):>10.1f}"
    )
    lines.append(f"{'command':<12}{wall:>10.1f}   (target <= {TARGET_S:.0f} s)")
    sys.stdout.write("\n".join(lines) + "\n")
    name = "end_to_end.json" if args.env is None else f"end_to_end-{args.env}.json"
    if args.out is not None:
        name = Path(args.out).name
    write_results(
        ROOT / "benchmarks" / "results" / name,
        ("kedro", "kedro-mlflow", "mlflow", "dask", "torch", "transformers"),
        {
            "mlflow_run_id": run.info.run_id,
            "stages": rows,
            "nodes_total_s": run.data.metrics.get("wall_s.total"),
            "command_wall_s": wall,
            "earlier_attempt": earlier,  # a failed run this one resumed, included above
            "target_s": TARGET_S,
            "run_reports": _run_reports(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
