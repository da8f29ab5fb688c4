"""FSDP2 on gloo, repeated: does a 2-rank CPU run ever abort, and does it match one process?

Each run launches 2 gloo ranks with ``torchrun``: ``fully_shard`` on every layer and on
the root of a small MLP over an explicit CPU device mesh, 5 AdamW steps on fixed
batches, then rank 0 compares the gathered weights with one process that saw the same
batches. Half the runs tear the process group down at once, half after a barrier (as
``distillery.ml.train.loop`` does). A run counts as failed on any non-zero exit status
(an abort is -6 / 134) or a missing comparison.

Usage::

    .venv/bin/python benchmarks/fsdp_gloo_repeat.py [--runs 20]

Prints a table and writes ``benchmarks/results/fsdp_gloo_repeat.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from _results import write_results

STEPS = 5


def _model():  # noqa: ANN202
    import torch  # noqa: PLC0415

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 3),
    )


def _rank() -> None:
    """One rank of one run (under torchrun)."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415
    from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
    from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    model = _model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    xs = torch.randn(STEPS, 8, 32, generator=generator)
    ys = torch.randint(0, 3, (STEPS, 8), generator=generator)
    share = xs.shape[1] // world
    mine = slice(rank * share, (rank + 1) * share)
    loss_fn = torch.nn.functional.cross_entropy
    for x, y in zip(xs, ys, strict=True):
        loss_fn(model(x[mine]), y[mine]).backward()
        optimizer.step()
        optimizer.zero_grad()
    gathered = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if rank == 0:
        reference = _model()
        ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
        for x, y in zip(xs, ys, strict=True):
            loss_fn(reference(x), y).backward()
            ref_opt.step()
            ref_opt.zero_grad()
        diff = max(
            (gathered[k] - v).abs().max().item()
            for k, v in reference.state_dict().items()
        )
        sys.stdout.write(f"max_abs_diff {diff:.3e}\n")
        sys.stdout.flush()
    if os.environ.get("FSDP_REPEAT_BARRIER") == "1":
        dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    """Run the repeats; print the table; write the JSON."""
    if os.environ.get("FSDP_REPEAT_RANK") == "1":
        _rank()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per teardown")
    parser.add_argument("--port", type=int, default=29613)
    parser.add_argument("--out", default="benchmarks/results/fsdp_gloo_repeat.json")
    args = parser.parse_args()
    torchrun = Path(sys.executable).with_name("torchrun")
    rows = []
    for barrier in (False, True):
        codes, diffs = [], []
        for _ in range(args.runs):
            env = os.environ | {
                "FSDP_REPEAT_RANK": "1",
                "FSDP_REPEAT_BARRIER": "1" if barrier else "0",
            }
            done = subprocess.run(
                [
                    str(torchrun),
                    "--nproc-per-node",
                    "2",
                    "--master-port",
                    str(args.port),
                    __file__,
                ],  # fmt: skip
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            found = re.search(r"max_abs_diff (\S+)", done.stdout)
            # A run that exits 0 without printing its result still failed.
            codes.append(done.returncode or (0 if found else -1))
            if found:
                diffs.append(float(found.group(1)))
        rows.append(
            {
                "teardown": "barrier, then destroy" if barrier else "destroy at once",
                "runs": args.runs,
                "failed": sum(code != 0 for code in codes),
                "exit_codes": sorted(set(codes)),
                "max_abs_diff": max(diffs) if diffs else None,
            }
        )
    sys.stdout.write(f"{'teardown':<24}{'runs':>6}{'failed':>8}{'max |diff|':>12}\n")
    for row in rows:
        diff = "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"
        sys.stdout.write(
            f"{row['teardown']:<24}{row['runs']:>6}{row['failed']:>8}{diff:>12}\n"
        )
    write_results(
        Path(__file__).resolve().parents[1] / args.out,
        ("torch",),
        {"settings": vars(args) | {"steps": STEPS, "ranks": 2}, "rows": rows},
    )
    return 0 if all(row["failed"] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
