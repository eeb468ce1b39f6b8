"""Launch a TIME-CONCAT plan: torchrun on this machine, or submitit jobs on a SLURM cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from richreps import members
from richreps.budget import Plan, Run
from richreps.config import Recipe
from richreps.io import write_json
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


def run_is_current(run: Run, run_dir: str | Path, recipe: Recipe) -> bool:
    """Every member of `run` exists and records exactly this recipe, seed and step."""
    return all(
        members.is_current(member_path(run_dir, run.seed, s), recipe, run.seed, s) for s in run.exports
    )


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
    # the machine's cores shared among the processes (torchrun would give each process 1 thread)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    results = []
    for run in plan.runs:
        if run_is_current(run, run_dir, recipe):
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


class PretrainJob:
    """One planned run as a submitit job on SLURM: each task is one rank of `richreps.pretrain`.

    submitit writes the batch script (log folder created before submission, this interpreter,
    `--signal` for preemption and time limits) and sets each task's rank; on preemption or timeout
    it calls `checkpoint`, which requeues the same command, and `--resume auto` continues from the
    newest checkpoint.
    """

    def __init__(self, argv: list[str]):
        self.argv = argv

    def __call__(self) -> dict:
        from submitit.helpers import TorchDistributedEnvironment

        from richreps import pretrain

        # every task sees the node's GPUs and picks its own with LOCAL_RANK (pretrain.setup)
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return pretrain.train(pretrain.parse_args(self.argv))

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(PretrainJob(self.argv))


def slurm_executor(
    folder: str | Path,
    nodes: int,
    gpus_per_node: int,
    job_name: str = "timecat",
    partition: str = "",
    account: str = "",
    timeout_min: int = 72 * 60,
    cpus_per_gpu: int = 10,
    mem_gb_per_gpu: int = 60,
):
    """A submitit executor for multi-node DDP: one task per GPU, its cores given to srun too
    (since SLURM 22.05 srun no longer inherits `--cpus-per-task` from sbatch)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=20)
    executor.update_parameters(
        name=job_name,
        nodes=nodes,
        tasks_per_node=gpus_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_gpu,
        mem_gb=mem_gb_per_gpu * gpus_per_node,
        timeout_min=timeout_min,
        slurm_signal_delay_s=120,
        slurm_srun_args=["--cpus-per-task", str(cpus_per_gpu)],
        **({"slurm_partition": partition} if partition else {}),
        **({"slurm_account": account} if account else {}),
    )
    return executor


def submit_slurm(
    plan: Plan, out: str | Path, common: list[str], nodes: int, gpus_per_node: int, **kw
) -> list[str]:
    """Submit every planned run as its own SLURM job; returns the job ids."""
    out = Path(out).resolve()
    executor = slurm_executor(out / "slurm", nodes, gpus_per_node, **kw)
    return [executor.submit(PretrainJob(run_args(run, out, common))).job_id for run in plan.runs]


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
    """Train every seed set's plan here (`local`), submit its unfinished runs to SLURM (`slurm`), or
    do nothing and use the members already there (`none`). Returns the local runs' wall times."""
    if mode not in LAUNCH_MODES:
        raise ValueError(f"launch must be one of {LAUNCH_MODES}, got {mode!r}")
    wall: list[dict] = []
    for k, p in enumerate(plans):
        if mode == "local":
            wall += run_local(p, run_dir, recipe, extra, nproc=nproc)
        elif mode == "slurm":
            todo = replace(p, runs=[r for r in p.runs if not run_is_current(r, run_dir, recipe)])
            ids = submit_slurm(
                todo, run_dir, [*recipe.flags(), *extra], nodes, nproc, job_name=f"timecat-set{k}"
            )
            print(
                f"seed set {k}: submitted {len(ids)} SLURM jobs ({', '.join(ids) or 'none needed'}); "
                f"logs in {Path(run_dir) / 'slurm'}. When they finish, run again with launch: none"
            )
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
        "sweeps": [
            {str(b): {str(n): [list(m) for m in ms] for n, ms in by_n.items()} for b, by_n in p.sweep.items()}
            for p in plans
        ],
        "trajectories": [[list(m) for m in p.trajectory] for p in plans],
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


def read_extras(
    pretrain_dir: str | Path,
) -> tuple[list[dict[int, dict[int, list[tuple[int, int]]]]], list[list[tuple[int, int]]]]:
    """The plan's budget sweep and trajectory, per seed set (empty when notebook 03 asked for none)."""
    record = json.loads((Path(pretrain_dir) / PLAN_FILE).read_text())
    sweeps = [
        {int(b): {int(n): [tuple(m) for m in ms] for n, ms in by_n.items()} for b, by_n in s.items()}
        for s in record.get("sweeps", [])
    ]
    trajectories = [[tuple(m) for m in t] for t in record.get("trajectories", [])]
    return sweeps, trajectories
