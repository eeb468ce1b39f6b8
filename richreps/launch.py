"""Launch a TIME-CONCAT plan: torchrun on this machine, or submitit jobs on a SLURM cluster.

Both launchers and the SLURM settings are one concern (how a plan's runs are started and found again).
The plan file notebook 03 hands to notebook 04 is `richreps.planfile`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from richreps import completion, lifeline, members
from richreps.budget import Plan, Run
from richreps.config import Recipe
from richreps.io import read_jsonl
from richreps.members import member_path

if TYPE_CHECKING:
    from richreps.study import Study


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
        *(["--eval-at", *map(str, run.evals)] if run.evals else []),
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
    """The run finished (`richreps.completion`: its record, written last, names this recipe, its steps and
    exports, and its metrics validate every step of `run.evals`) and every member of it exists and records exactly this recipe, seed and step. Members alone are
    not enough: a run killed after its last export but before its final evaluation has them all."""
    return completion.is_done(run_dir, run.seed, recipe, run.steps, list(run.exports), run.evals) and all(
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
            # torchrun's agent dies with this process (the kernel), and its workers with it (richreps.lifeline)
            preexec = lifeline.die_with_parent_preexec()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
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
    it calls `checkpoint` on global rank 0, which saves the running trainer's state as of its last
    completed step and requeues the same command, and `--resume auto` continues from that checkpoint.
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
        """Save, then requeue: without the save, up to `--ckpt-every` steps would be trained again.

        A failed save is said and the job still requeues: it then resumes from the previous checkpoint."""
        from submitit.helpers import DelayedSubmission

        from richreps import runtime

        flag = dict(zip(self.argv, self.argv[1:]))
        try:
            saved = runtime.save_live_checkpoint(flag.get("--out"), int(flag.get("--seed", 0)))
            said = f"saved {saved}" if saved else "no completed step to save"
        except Exception as e:  # noqa: BLE001 - requeue anyway: the previous checkpoint still resumes
            said = f"could not save ({type(e).__name__}: {e}); the requeued job resumes from the previous checkpoint"
        print(f"[launch] {runtime.environment_note()} stopped: {said}; requeueing", file=sys.stderr)
        return DelayedSubmission(PretrainJob(self.argv))


@dataclass(frozen=True)
class SlurmSettings:
    """What a cluster asks of a job, from notebook 03's parameters of the same names.

    Empty strings leave SLURM's own defaults (default partition, account and QoS). A run longer than
    `slurm_time_min` is requeued by submitit when its time is up (checkpoint saved first, at most 20
    times), so a cluster that caps jobs at 24 or 48 h still completes a 450K-step run.
    """

    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_qos: str = ""
    slurm_time_min: int = 72 * 60
    cpus_per_gpu: int = 10
    mem_gb_per_gpu: int = 60

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(f.default, int) and not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{f.name} must be an integer >= 1, got {v!r}")
            if isinstance(f.default, str) and (not isinstance(v, str) or any(c.isspace() for c in v)):
                raise ValueError(
                    f"{f.name} must be a name without spaces ('' for the cluster's default), got {v!r}"
                )


def slurm_executor(
    folder: str | Path,
    nodes: int,
    gpus_per_node: int,
    job_name: str = "timecat",
    settings: SlurmSettings | None = None,
):
    """A submitit executor for multi-node DDP: one task per GPU, its cores given to srun too
    (since SLURM 22.05 srun no longer inherits `--cpus-per-task` from sbatch)."""
    import submitit

    s = settings or SlurmSettings()
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=20)
    names = {"slurm_partition": s.slurm_partition, "slurm_account": s.slurm_account, "slurm_qos": s.slurm_qos}
    executor.update_parameters(
        name=job_name,
        nodes=nodes,
        tasks_per_node=gpus_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=s.cpus_per_gpu,
        mem_gb=s.mem_gb_per_gpu * gpus_per_node,
        timeout_min=s.slurm_time_min,
        slurm_signal_delay_s=120,
        slurm_srun_args=["--cpus-per-task", str(s.cpus_per_gpu)],
        **{k: v for k, v in names.items() if v},
    )
    return executor


def submit_slurm(
    plan: Plan, out: str | Path, common: list[str], nodes: int, gpus_per_node: int, **kw
) -> list[str]:
    """Submit every planned run as its own SLURM job; returns the job ids. `kw`: `slurm_executor`'s."""
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
    slurm: SlurmSettings | None = None,
) -> list[dict]:
    """Train every seed set's plan here (`local`), submit its unfinished runs to SLURM (`slurm`, with
    the cluster's `slurm` settings), or do nothing and use the members already there (`none`).
    Returns the local runs' wall times."""
    if mode not in LAUNCH_MODES:
        raise ValueError(f"launch must be one of {LAUNCH_MODES}, got {mode!r}")
    wall: list[dict] = []
    for k, p in enumerate(plans):
        if mode == "local":
            wall += run_local(p, run_dir, recipe, extra, nproc=nproc)
        elif mode == "slurm":
            todo = replace(p, runs=[r for r in p.runs if not run_is_current(r, run_dir, recipe)])
            ids = submit_slurm(
                todo,
                run_dir,
                [*recipe.flags(), *extra],
                nodes,
                nproc,
                job_name=f"timecat-set{k}",
                settings=slurm,
            )
            print(
                f"seed set {k}: submitted {len(ids)} SLURM jobs ({', '.join(ids) or 'none needed'}); "
                f"logs in {Path(run_dir) / 'slurm'}. When they finish, run again with launch: none"
            )
    return wall


def launch_study(
    study: Study,
    pretrain_dir: str | Path,
    extra: list[str],
    mode: str,
    nproc: int,
    nodes: int = 1,
    slurm: SlurmSettings | None = None,
) -> list[dict]:
    """`launch_plans` for everything the study trains (`Study.trained`): the main run, each control, and
    each variant with its controls, each into pretrain_dir/<folder>/<its recipe's tag>."""
    wall: list[dict] = []
    for folder, recipe, plans in study.trained():
        run_dir = Path(pretrain_dir) / folder / recipe.tag()
        wall += launch_plans(plans, run_dir, recipe, extra, mode, nproc, nodes, slurm)
    return wall


def members_table(plans: list[Plan], run_dir: str | Path, recipe: Recipe) -> pd.DataFrame:
    """Every member of every seed set, with whether it exists for this recipe."""
    return pd.concat([list_members(p, run_dir, recipe).assign(seed_set=k) for k, p in enumerate(plans)])


def study_members(study: Study, pretrain_dir: str | Path) -> pd.DataFrame:
    """`members_table` of the main run and of each control (whose files are named from pretrain/)."""
    main = members_table(study.plans, Path(pretrain_dir) / study.recipe.tag(), study.recipe)
    parts = [main]
    for c in study.controls:
        table = members_table(c.plans, Path(pretrain_dir) / c.recipe.tag(), c.recipe)
        parts.append(table.assign(file=c.recipe.tag() + "/" + table["file"]))
    return pd.concat(parts)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """All seeds' JSONL metrics as one table (training rows and evaluation rows). A torn line, the last
    write of a killed job, is dropped with a warning (`richreps.io.read_jsonl`)."""
    frames = []
    for path in sorted(Path(run_dir, "metrics").glob("seed*.jsonl")):
        df = pd.DataFrame(read_jsonl(path))
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


def compute_table(
    recipe: Recipe, cats: dict[int, list[tuple[int, int]]], controls: list[tuple[str, Recipe, int]] = ()
) -> pd.DataFrame:
    """Training FLOPs of CAT1, CATmax and each control (name, recipe, steps): FLOPs per training image
    (forward and backward, `models.train_flops_per_image`) x global batch x steps, summed over members.
    WIDE1 runs CAT1's steps on a wider network, so its compute is reported beside the others, not assumed
    equal."""
    import torch

    from richreps.members import model_for
    from richreps.models import train_flops_per_image

    classes = 10 if recipe.data == "cues" else 1000
    image = 32 if recipe.data == "cues" else recipe.image_size  # cue images: richreps.data.cues.SIZE

    def per_image(r: Recipe) -> float:
        with torch.random.fork_rng():
            return train_flops_per_image(model_for(r, classes, 10_000), image)  # any seed: FLOPs only

    n_max = max(cats)
    rows = [
        ("CAT1", recipe, cats[1]),
        (f"CAT{n_max}", recipe, cats[n_max]),
        *((name, r, [(0, steps)]) for name, r, steps in controls),
    ]
    out = []
    for name, r, ms in rows:
        flops = per_image(r)
        steps = sum(s for _, s in ms)
        out.append(
            {
                "representation": name,
                "members": len(ms),
                "steps (summed)": steps,
                "FLOPs per image": flops,
                "training FLOPs": flops * r.global_batch * steps,
            }
        )
    table = pd.DataFrame(out).set_index("representation")
    table["x CAT1"] = table["training FLOPs"] / table.loc["CAT1", "training FLOPs"]
    return table
