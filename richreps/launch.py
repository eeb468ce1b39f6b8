"""Launch a TIME-CONCAT plan: torchrun locally, or a SLURM batch script for a cluster."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from richreps.budget import Plan, Run


def run_args(run: Run, out: str | Path, common: list[str]) -> list[str]:
    """richreps.pretrain arguments for one planned run."""
    return [
        "--out",
        str(out),
        "--seed",
        str(run.seed),
        "--steps",
        str(run.steps),
        "--export-at",
        *map(str, run.exports),
        *common,
    ]


def torchrun_command(
    args: list[str],
    nproc: int,
    nnodes: int = 1,
    standalone: bool = True,
    max_restarts: int = 0,
    rdzv_endpoint: str = "",
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--max_restarts={max_restarts}",
    ]
    if standalone:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"]
    return [*cmd, "-m", "richreps.pretrain", *args]


def run_local(
    plan: Plan,
    out: str | Path,
    common: list[str],
    nproc: int,
    max_restarts: int = 1,
    log_dir: str | Path | None = None,
) -> list[dict]:
    """Run every planned run with torchrun on this machine, one after another.

    Each run resumes from its own checkpoints, so re-running the plan after a crash only
    redoes unfinished work; a run whose final member exists is skipped.
    """
    log_dir = Path(log_dir or Path(out) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results = []
    for run in plan.runs:
        final = Path(out) / "members" / f"seed{run.seed}_step{run.steps}.pt"
        if final.exists():
            results.append({"seed": run.seed, "steps": run.steps, "status": "done earlier", "wall_s": 0.0})
            continue
        cmd = torchrun_command(run_args(run, out, common), nproc, max_restarts=max_restarts)
        start = time.perf_counter()
        log = log_dir / f"seed{run.seed}.log"
        with log.open("w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            tail = log.read_text().strip().splitlines()[-5:]
            raise RuntimeError(
                f"seed {run.seed} failed (exit {proc.returncode}); log {log}: " + " | ".join(tail)
            )
        results.append(
            {
                "seed": run.seed,
                "steps": run.steps,
                "status": "trained",
                "wall_s": round(time.perf_counter() - start, 1),
            }
        )
    return results


def slurm_script(
    plan: Plan,
    out: str,
    common: list[str],
    nodes: int,
    gpus_per_node: int,
    job_name: str = "timecat",
    partition: str = "",
    account: str = "",
    time_limit: str = "72:00:00",
    cpus_per_gpu: int = 10,
    port: int = 29500,
    max_restarts: int = 3,
) -> str:
    """A SLURM batch script: one srun + torchrun per planned run, multi-node rendezvous over c10d.

    srun starts one torchrun per node; torchrun starts one process per GPU and restarts dead
    ranks (`--max_restarts`), which resume from the newest checkpoint.
    """
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_gpu * gpus_per_node}",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --output={out}/logs/%x-%j.out",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        *([f"#SBATCH --account={account}"] if account else []),
        "set -euo pipefail",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"mkdir -p {shlex.quote(out)}/logs",
    ]
    body = []
    for run in plan.runs:
        args = " ".join(shlex.quote(a) for a in run_args(run, out, common))
        body.append(
            f"srun --nodes={nodes} --ntasks-per-node=1 python -m torch.distributed.run "
            f"--nnodes={nodes} --nproc_per_node={gpus_per_node} --max_restarts={max_restarts} "
            f"--rdzv_id=$SLURM_JOB_ID --rdzv_backend=c10d --rdzv_endpoint=$head_node:{port} "
            f"-m richreps.pretrain {args}"
        )
    return "\n".join(header + [""] + body) + "\n"


def flags(options: dict) -> list[str]:
    """{'global_batch': 64, 'cue_weights': [.4, .6], 'compile': True} -> richreps.pretrain flags."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out += [flag] if value else []
        elif isinstance(value, list | tuple):
            out += [flag, *map(str, value)]
        elif value not in (None, ""):
            out += [flag, str(value)]
    return out


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """All seeds' JSONL metrics as one table (training rows and evaluation rows)."""
    frames = []
    for path in sorted(Path(run_dir, "metrics").glob("seed*.jsonl")):
        df = pd.read_json(path, lines=True)
        frames.append(df.assign(seed=int(path.stem.removeprefix("seed"))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def list_members(plan: Plan, run_dir: str | Path) -> pd.DataFrame:
    """Every member the plan needs: seed, step, which CATs use it, its file, and whether it exists."""
    rows = []
    for run in plan.runs:
        for step in run.exports:
            path = Path(run_dir) / "members" / f"seed{run.seed}_step{step}.pt"
            rows.append(
                {
                    "seed": run.seed,
                    "step": step,
                    "used by": run.used_by[step],
                    "file": f"members/{path.name}",
                    "exists": path.exists(),
                }
            )
    return pd.DataFrame(rows)
