"""Launch a TIME-CONCAT plan: torchrun locally, or a SLURM batch script for a cluster."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from richreps import members
from richreps.budget import Plan, Run
from richreps.config import Recipe
from richreps.io import write_json, write_text
from richreps.members import member_path


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
    run_dir: str | Path,
    recipe: Recipe,
    extra: list[str],
    nproc: int,
    log_dir: str | Path | None = None,
) -> list[dict]:
    """Run every planned run with torchrun on this machine, one after another.

    A run whose members all exist and record exactly this recipe, seed and step is skipped;
    any other run resumes from its own checkpoints, so re-running the plan after a crash only
    redoes unfinished work.
    """
    log_dir = Path(log_dir or Path(run_dir) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results = []
    for run in plan.runs:
        if all(
            members.is_current(member_path(run_dir, run.seed, s), recipe, run.seed, s) for s in run.exports
        ):
            results.append({"seed": run.seed, "steps": run.steps, "status": "done earlier", "wall_s": 0.0})
            continue
        cmd = torchrun_command(run_args(run, run_dir, [*recipe.flags(), *extra]), nproc)
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


LAUNCH_MODES = ("local", "slurm", "none")


def launch_plans(
    plans: list[Plan],
    run_dir: str | Path,
    recipe: Recipe,
    extra: list[str],
    mode: str,
    nproc: int,
    nodes: int = 1,
) -> list[dict]:
    """Train every seed set's plan here (`local`), write one SLURM script per set (`slurm`), or
    do nothing and use the members already there (`none`). Returns the local runs' wall times."""
    if mode not in LAUNCH_MODES:
        raise ValueError(f"launch must be one of {LAUNCH_MODES}, got {mode!r}")
    wall: list[dict] = []
    for k, p in enumerate(plans):
        if mode == "local":
            wall += run_local(p, run_dir, recipe, extra, nproc=nproc)
        elif mode == "slurm":
            script = slurm_script(
                p,
                str(Path(run_dir).resolve()),
                [*recipe.flags(), *extra],
                nodes=nodes,
                gpus_per_node=nproc,
                job_name=f"timecat-set{k}",
            )
            path = write_text(Path(run_dir) / f"timecat_set{k}.sbatch", script)
            print(f"wrote {path.name}: submit it with sbatch, then re-run with launch: none")
    return wall


def members_table(plans: list[Plan], run_dir: str | Path, recipe: Recipe) -> pd.DataFrame:
    """Every member of every seed set, with whether it exists for this recipe."""
    return pd.concat([list_members(p, run_dir, recipe).assign(seed_set=k) for k, p in enumerate(plans)])


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """All seeds' JSONL metrics as one table (training rows and evaluation rows)."""
    frames = []
    for path in sorted(Path(run_dir, "metrics").glob("seed*.jsonl")):
        df = pd.read_json(path, lines=True)
        frames.append(df.assign(seed=int(path.stem.removeprefix("seed"))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def list_members(plan: Plan, run_dir: str | Path, recipe: Recipe) -> pd.DataFrame:
    """Every member the plan needs: seed, step, which CATs use it, its file, and whether it is current."""
    rows = []
    for run in plan.runs:
        for step in run.exports:
            path = member_path(run_dir, run.seed, step)
            rows.append(
                {
                    "seed": run.seed,
                    "step": step,
                    "used by": run.used_by[step],
                    "file": f"members/{path.name}",
                    "current": members.is_current(path, recipe, run.seed, step),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the plan, handed from notebook 03 to 04

PLAN_FILE = "plan.json"


def write_plan(pretrain_dir: str | Path, recipe: Recipe, plans: list[Plan]) -> Path:
    """What notebook 03 produced, for notebook 04: the recipe, its run folder and every seed set's CATs."""
    run_dir = Path(pretrain_dir) / recipe.tag()
    record = {
        "recipe": recipe.to_dict(),
        "run_dir": recipe.tag(),
        "mode": plans[0].mode,
        "seed_sets": [{str(n): [list(m) for m in ms] for n, ms in p.cats.items()} for p in plans],
        "members": [
            str(member_path(recipe.tag(), r.seed, s)) for p in plans for r in p.runs for s in r.exports
        ],
    }
    write_json(Path(pretrain_dir) / PLAN_FILE, record)
    return run_dir


def read_plan(pretrain_dir: str | Path) -> tuple[Recipe, Path, list[dict[int, list[tuple[int, int]]]]]:
    """(recipe, run folder, per seed set {n: [(seed, steps), ...]}) as notebook 03 wrote them."""
    path = Path(pretrain_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebook 03 first")
    record = json.loads(path.read_text())
    cats = [{int(n): [tuple(m) for m in ms] for n, ms in s.items()} for s in record["seed_sets"]]
    return Recipe.from_dict(record["recipe"]), Path(pretrain_dir) / record["run_dir"], cats
