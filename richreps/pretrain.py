"""Pretrain one seed with schedule-free AdamW and export members at chosen steps.

    torchrun --standalone --nproc_per_node 2 -m richreps.pretrain --out runs/demo --seed 0 \\
        --steps 20 --export-at 10 20 --global-batch 64 --width 8 --train-size 2000

The same entry point runs everywhere: it reads its rank from torchrun's environment (NCCL on
GPUs, gloo on CPU) and runs as a single process without it. A run checkpoints atomically,
resumes bitwise with `--resume auto` after a kill (relaunch the same command), stops on a
non-finite loss, and logs to out/metrics/seed<S>.jsonl. One live run per `--out` and seed: a second
is refused naming the first's pid and host (a lock in out/locks/, gone when its holder dies). A run
is done when out/done/seed<S>.json says so (`richreps.completion`, written last), and a torchrun
worker dies with its agent (`richreps.lifeline`). What the members are is decided by the
`richreps.config.Recipe` flags alone (defaults: AlgoPerf v0.6's schedule-free ResNet-50 entry);
the other flags say where, which seed, how long and how often to checkpoint. `RICHREPS_TEST_PAUSE`
is the fault suite's hook (`fault_pause`), inert unless set.

(Over 450 lines because the flags, their rules and the training loop stay in one file read top to
bottom, as in nanoGPT's train.py; restart guards, devices and streams live in `checkpoints`, `runtime`
and `data.streams`.)

Schedule-free evaluates at its averaged point x, not at the training point y, so every member,
evaluation and probe-ready export is taken at x with BatchNorm statistics recomputed there.
x is computed into a copy of the model, so exporting never perturbs training: the step-t
member of a long run is bitwise the member of a t-step run with the same seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from schedulefree import AdamWScheduleFree
from tqdm.auto import tqdm

from richreps import completion, lifeline, members, runtime
from richreps.checkpoints import (
    NonFiniteLoss,
    check_failure_marker,
    check_images,
    gather_rngs,
    hold_run_lock,
    newest_valid_checkpoint,
    save_checkpoint,
    start_of_run,
)
from richreps.config import SEED_MAX, STEPS_RULE, Recipe, rule_error, rule_text
from richreps.data import ImageIndex, shared_index
from richreps.data.prefetch import Prefetcher
from richreps.data.streams import make_data
from richreps.io import atomic_path, read_jsonl, unwritable, write_json
from richreps.members import member_path
from richreps.models import recalibrate_bn

# ---------------------------------------------------------------- configuration

RUN_RULES: dict[str, dict] = {}  # run flag -> its value rule, declared beside the flag by `_flag`


def _flag(group, name: str, rule: dict | None = None, **kw) -> None:
    """Add `name` to `group`; its value rule (`low` >=, `above` >, `high` <=, as `Recipe`'s fields
    declare theirs) is declared here, shown in its help and checked by `validate`."""
    if rule:
        RUN_RULES[name.removeprefix("--").replace("-", "_")] = rule
        kw["help"] = f"{kw.get('help', '')} ({rule_text(rule)})".lstrip()
    group.add_argument(name, **kw)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Run flags (where, which seed, how long, when to export) plus one flag per `Recipe` field."""
    ap = argparse.ArgumentParser(prog="python -m richreps.pretrain", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run folder: ckpt/, members/, metrics/")
    _flag(
        ap, "--seed", {"low": 0, "high": SEED_MAX}, type=int, default=0, help="initialisation and data order"
    )
    _flag(
        ap, "--steps", {"low": 1, **STEPS_RULE}, type=int, required=True, help="optimizer steps of this run"
    )
    ap.add_argument("--export-at", type=int, nargs="*", default=[], help="steps at which to export members")
    Recipe.add_arguments(ap)
    run = ap.add_argument_group("evaluation, checkpoints, logging (do not change the members)")
    _flag(
        run,
        "--eval-every",
        {"low": 0},
        type=int,
        default=0,
        help="steps between evaluations (0: at --eval-at and the last step only)",
    )
    run.add_argument(
        "--eval-at",
        type=int,
        nargs="*",
        default=[],
        help="more steps at which to log the pretraining validation accuracy (the early-stopped controls' "
        "candidates, richreps.earlystop); the last step is always evaluated",
    )
    _flag(run, "--ckpt-every", {"low": 1}, type=int, default=1000, help="steps between checkpoints")
    _flag(
        run,
        "--ckpt-minutes",
        {"above": 0},
        type=float,
        default=30.0,
        help="also checkpoint after this many minutes",
    )
    run.add_argument("--resume", choices=("auto", "none"), default="auto")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="move an earlier run of this seed to replaced/ (never deleted) and start afresh, with either --resume",
    )
    _flag(run, "--log-every", {"low": 1}, type=int, default=10)
    _flag(run, "--workers", {"low": 0}, type=int, default=None, help="imagenet: loader workers per process")
    run.add_argument(
        "--decode",
        choices=("cpu", "gpu"),
        default=None,
        help="imagenet: cpu = PIL in loader workers; gpu = batched decode + augmentation on the training "
        "device (nvjpeg). Default: gpu on CUDA, else cpu",
    )
    _flag(
        run,
        "--prefetch",
        {"low": 0, "high": 64},
        type=int,
        default=None,
        help="batches made ahead of the step in a background thread (richreps.data.prefetch). "
        "Default: 2 with --decode gpu, where decode and augmentation would otherwise run inline; else 0",
    )
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    run.add_argument(
        "--device",
        choices=runtime.DEVICES,
        default="auto",
        help="auto: CUDA when torch can use it, else the CPU (said at the start); cuda: an unusable GPU is an error",
    )
    args = ap.parse_args(argv)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """Fail in one line, naming the flag, before any data or model is built."""
    towers = [args.seed + o for o in getattr(args, "tower_offsets", ()) or ()]
    if any(not 0 <= s <= SEED_MAX for s in towers):
        raise SystemExit(
            f"error: --tower-offsets {list(args.tower_offsets)}: with --seed {args.seed} the towers' seeds {towers} "
            f"leave [0, {SEED_MAX}]"
        )
    why = unwritable(args.out)  # a file is created and removed there (or in its nearest existing parent)
    if why:
        raise SystemExit(f"error: --out {args.out}: {why}")
    for name, rule in RUN_RULES.items():
        why = rule_error("--" + name.replace("_", "-"), getattr(args, name), rule)
        if why:
            raise SystemExit(f"error: {why}")
    for flag, at in (("--export-at", args.export_at), ("--eval-at", args.eval_at)):
        bad = [s for s in at if not 1 <= s <= args.steps]
        if bad:
            raise SystemExit(f"error: {flag} {bad[0]} is outside [1, --steps {args.steps}]")
    bound = Recipe.bound_error(vars(args))
    if bound:
        raise SystemExit(f"error: {bound}")
    if args.data == "imagenet":
        from richreps.data.folders import DatasetError, check_layout

        if not args.data_root:  # Path("") would be the current folder
            raise SystemExit("error: --data imagenet needs --data-root (ImageNet in ImageFolder layout)")
        try:
            check_layout("imagenet", args.data_root)
        except DatasetError as e:
            raise SystemExit(f"error: --data-root: {e}") from None
    if args.data == "cues":
        from richreps.data import cues, ood

        known = ["mixture", *sorted(cues.TASKS), *ood.TARGETS]
        if args.cue_task not in known:
            raise SystemExit(f"error: --cue-task {args.cue_task!r} is not one of {known}")
        if 0 < args.train_size < args.global_batch:
            raise SystemExit(
                f"error: --train-size {args.train_size} is smaller than one batch (--global-batch {args.global_batch})"
            )
        try:
            cues.check_weights(args.cue_weights)
        except ValueError as e:
            raise SystemExit(f"error: --cue-weights: {e}") from None


# ---------------------------------------------------------------- distributed


def setup(device: str = "auto") -> tuple[int, int, torch.device]:
    """Rank, world size and device, from torchrun's environment when present; says its choice in one line.

    `device` is `--device`: `auto` trains on CUDA when torch can use it, else on the CPU, saying why;
    `cuda` makes a missing GPU, or a driver too old for this torch (both read as
    `torch.cuda.is_available()` False), an error instead of a ResNet-50 run on the CPU.
    """
    cuda, why = runtime.choose_cuda(device)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, world, backend = dist.get_rank(), dist.get_world_size(), dist.get_backend()
        chosen = torch.device("cuda", local) if cuda else torch.device("cpu")
    else:
        rank, world, backend, chosen = 0, 1, None, torch.device("cuda" if cuda else "cpu")
    runtime.say(rank, world, backend, chosen, why)
    return rank, world, chosen


def all_max(flag: float, device: torch.device, world: int) -> float:
    if world == 1:
        return flag
    t = torch.tensor([flag], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def broadcast_flag(flag: bool, device: torch.device, world: int) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t)


# ---------------------------------------------------------------- members at the evaluation point


@torch.no_grad()
def member_at_x(raw: nn.Module, opt: AdamWScheduleFree, calib, device: torch.device) -> nn.Module:
    """A copy of the model at schedule-free's evaluation point x, with BN statistics recomputed.

    Computes x = y + (1 - 1/beta1)(z - y), exactly what `optimizer.eval()` does in place,
    without touching the training state.
    """
    member = copy.deepcopy(raw)
    beta1 = opt.param_groups[0]["betas"][0]
    for p_member, p in zip(member.parameters(), raw.parameters()):
        z = opt.state[p].get("z")
        if z is not None:
            p_member.copy_(p.lerp(z, 1 - 1 / beta1))
    recalibrate_bn(member, calib, device)
    return member.eval()


@torch.no_grad()
def evaluate(member: nn.Module, val, device: torch.device, amp: bool) -> dict:
    loss, correct, n = 0.0, 0, 0
    for x, y in val:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            logits = member(x).float()
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return {"val_loss": loss / n, "val_acc": correct / n}


# ---------------------------------------------------------------- training


@dataclass
class Trainer:
    """Everything one training step touches. `train` loops over `train_step`; the throughput bench
    builds the same object and times the same step, so its figures are this loop's."""

    recipe: Recipe
    raw: nn.Module  # the member being trained (unwrapped)
    model: nn.Module  # what the step calls: raw, DDP-wrapped and/or compiled
    opt: AdamWScheduleFree
    stream: object  # .next() -> (x, y); .state_dict() / .load_state_dict()
    calib: object  # BatchNorm calibration batches, iterable any number of times
    val: object
    criterion: nn.Module
    accum: int
    device: torch.device
    amp: bool
    world: int
    # where a preemption checkpoint goes and what it records (runtime.save_live_checkpoint)
    out: Path | None = None
    seed: int = 0
    rank: int = 0
    decode: str = "cues"
    settings: dict = field(default_factory=dict)  # device and kernel settings: recorded, not the recipe
    at_start: runtime.StepStart | None = None  # the step in progress, as it began
    in_step: bool = False
    # on the device, so a step never waits for the host: steps taken, and the first with a non-finite loss
    clock: torch.Tensor | None = None
    first_bad: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.clock = torch.zeros((), dtype=torch.long, device=self.device)
        self.first_bad = torch.zeros((), dtype=torch.long, device=self.device)


def resolve_decode(args: argparse.Namespace, device: torch.device) -> str:
    """`--decode`, by default `gpu` (nvjpeg, batch-wise augmentation) on CUDA and `cpu` (PIL) elsewhere."""
    return args.decode or ("gpu" if device.type == "cuda" else "cpu")


def build(
    args: argparse.Namespace, rank: int, world: int, device: torch.device, index: ImageIndex | None = None
) -> Trainer:
    """Data, model and optimizer for `args`, as a fresh run (resume loads into it). `index`: the start's
    ImageNet listing, shared by the ranks (`data.shared_index`); listed here when not given."""
    recipe = Recipe.from_namespace(args)
    per_rank = recipe.global_batch // world
    micro = recipe.micro_batch or per_rank
    if recipe.global_batch % world or per_rank % micro:
        raise SystemExit(
            f"error: --global-batch {recipe.global_batch} must split into {world} processes "
            f"x whole micro-batches of {micro}"
        )
    amp = device.type == "cuda"
    settings = runtime.gpu_settings(device)  # cudnn.benchmark and TF32 on CUDA
    stream, calib, val, num_classes = make_data(
        recipe, args.seed, rank, world, device, micro, args.workers, resolve_decode(args, device), index
    )
    raw = members.model_for(recipe, num_classes, args.seed).to(
        device
    )  # the seed alone decides it, not the data
    if amp:
        raw = raw.to(memory_format=torch.channels_last)
    opt = AdamWScheduleFree(
        raw.parameters(),
        lr=recipe.lr,
        betas=(recipe.beta1, recipe.beta2),
        weight_decay=recipe.weight_decay,
        warmup_steps=recipe.warmup_steps,
        r=recipe.r_power,
        weight_lr_power=recipe.weight_lr_power,
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    decode = resolve_decode(args, device) if recipe.data == "imagenet" else "cues"
    workers = getattr(stream, "loader", None) and stream.loader.num_workers
    prefetch = prefetch_depth(args, decode)
    if prefetch:
        stream = Prefetcher(stream, prefetch, device)
    settings["prefetch"] = prefetch
    return Trainer(
        recipe, raw, raw, opt, stream, calib, val, criterion, per_rank // micro, device, amp, world,
        out=Path(args.out), seed=args.seed, rank=rank, decode=decode,
        settings={**settings, "world": world, "decode": decode, "loader_workers": workers or 0},
    )  # fmt: skip


def prefetch_depth(args: argparse.Namespace, decode: str) -> int:
    """`--prefetch`, by default 2 where the training thread would decode (`--decode gpu`), else 0: the CPU
    path's loader workers already decode ahead, and the cue streams index tensors already in place."""
    return args.prefetch if getattr(args, "prefetch", None) is not None else (2 if decode == "gpu" else 0)


def wrap(t: Trainer, compile: bool) -> None:
    """DDP across processes, then torch.compile; called after any resume has loaded the weights.

    Registers `t` as this process's live run (a preemption checkpoint saves it) and records its device
    and kernel settings in <out>/metrics/settings_seed<S>.json (rank 0)."""
    if t.rank == 0 and t.out is not None:
        write_json(t.out / "metrics" / f"settings_seed{t.seed}.json", {**t.settings, "compile": compile})
    runtime.register(t)
    if t.world > 1:
        t.model = nn.parallel.DistributedDataParallel(t.raw, device_ids=[t.device.index] if t.amp else None)
    if compile:
        t.model = torch.compile(t.model)
    t.opt.train()
    t.model.train()


def train_step(t: Trainer) -> torch.Tensor:
    """One optimizer step over `accum` micro-batches; returns the summed loss (a device scalar, not synced).

    Nothing here waits for the device: a non-finite loss is recorded on the device (`t.first_bad`, the
    first such step) and read by `train` at its next check (a log, export, evaluation or checkpoint step),
    before anything is written. Steps after a non-finite one are not skipped; the run fails at the check,
    naming the first bad step and the last checkpoint, which no bad step reached."""
    runtime.step_started(t)
    total = torch.zeros((), device=t.device)
    for i in range(t.accum):
        x, y = t.stream.next()
        x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
        if t.amp:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = i == t.accum - 1 or t.world == 1
        ctx = t.model.no_sync() if (not sync and hasattr(t.model, "no_sync")) else torch.enable_grad()
        with ctx, torch.autocast(t.device.type, torch.bfloat16, enabled=t.amp):
            loss = t.criterion(t.model(x), y) / t.accum
            loss.backward()
        total += loss.detach()
    t.clock += 1
    t.first_bad = torch.where((t.first_bad == 0) & ~torch.isfinite(total), t.clock, t.first_bad)
    with runtime.update(t):  # a preemption checkpoint never sees half-updated weights
        t.opt.step()
        t.opt.zero_grad(set_to_none=True)
    return total


def train(args: argparse.Namespace) -> dict:
    """Train one seed to `args.steps`, exporting members; returns the seed, steps and member files."""
    rank, world, device = setup(args.device)
    master = rank == 0
    out = Path(args.out)
    lock = hold_run_lock(out, args.seed, master, device, world)  # noqa: F841 - held while train runs
    ckpt_dir, metrics_dir = out / "ckpt" / f"seed{args.seed}", out / "metrics"
    failed = out / f"FAILED_seed{args.seed}.json"
    recipe = Recipe.from_namespace(args)
    decode = resolve_decode(args, device) if recipe.data == "imagenet" else "cues"
    exports = sorted(set(args.export_at) | {args.steps})
    # validated: the last step, every --eval-every and each --eval-at; only there, since an evaluation
    # recomputes BN statistics at x and reads the validation set (a run's costliest step)
    evals = set(args.eval_at) | {args.steps}
    # one rule for every start: recorded recipes compared, --overwrite moves aside, damaged members said
    before, ckpt, ckpt_path = start_of_run(
        out, recipe, args.seed, decode, args.resume, args.overwrite, exports, master, world
    )
    if ckpt is not None and len(ckpt["rng"]) != world:  # the stream's position is per process: refuse
        raise SystemExit(
            f"error: {ckpt_path} was saved by {len(ckpt['rng'])} processes and this start has {world}: each "
            "process resumes its own shard of the stream and BN sees the global batch / processes, so images "
            f"would be skipped or repeated; resume with {len(ckpt['rng'])} processes, or start afresh with --overwrite"
        )
    if master:
        completion.clear_done(out, args.seed)  # not done until this start finishes
    # ImageNet is listed once per start, by rank 0, for the image check and the data (issue 27)
    index = shared_index("imagenet", recipe.data_root, rank, world) if recipe.data == "imagenet" else None
    if recipe.data == "imagenet" and recipe.corrupt_policy == "error":
        check_images(recipe, rank, world, device, out, index, args.workers)
    t = build(args, rank, world, device, index)
    raw, opt, stream, calib, val = t.raw, t.opt, t.stream, t.calib, t.val
    step = 0
    unvalidated = completion.missing_evals(out, args.seed, sorted(set(args.eval_at)))
    if ckpt is not None and unvalidated and ckpt["step"] >= unvalidated[0]:  # a candidate asked for too late
        before = unvalidated[0] if before is None else min(before, unvalidated[0])
    if ckpt is not None and before is not None and ckpt["step"] >= before:
        # a member wanted below the step the run reached: resume below the first one still to export
        ckpt, ckpt_path = newest_valid_checkpoint(ckpt_dir, recipe, args.seed, decode, before)
    if ckpt is not None:
        raw.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        stream.load_state_dict(ckpt["stream"])
        step = ckpt["step"]
        if len(ckpt["rng"]) == world:
            torch.set_rng_state(ckpt["rng"][rank]["cpu"])
            if device.type == "cuda" and ckpt["rng"][rank]["cuda"] is not None:
                torch.cuda.set_rng_state(ckpt["rng"][rank]["cuda"], device)
    check_failure_marker(failed, ckpt_path)
    wrap(t, args.compile)
    amp = t.amp

    metrics_path = metrics_dir / f"seed{args.seed}.jsonl"
    if master:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        rows = read_jsonl(metrics_path) if metrics_path.exists() else []  # torn lines dropped, with a warning
        kept = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step]
        with atomic_path(metrics_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    log = metrics_path.open("a") if master else None
    bar = tqdm(
        total=args.steps,
        initial=step,
        desc=f"seed {args.seed}",
        unit="step",
        disable=not master,
        mininterval=2.0,
    )
    last_ckpt_time, window_start, window_images = time.monotonic(), time.perf_counter(), 0
    pause_at = fault_pause(master)  # None outside the fault suite

    t.clock.fill_(step)  # the device's count of steps taken (train_step's non-finite record)
    try:
        while step < args.steps:
            total = train_step(t)
            step += 1
            if step == pause_at:
                hold_for_fault_test(out, args.seed)
            window_images += recipe.global_batch
            bar.update(1)
            log_now = step % args.log_every == 0 or step == args.steps
            want_eval = step in evals or (args.eval_every and step % args.eval_every == 0)
            export = step in exports or want_eval
            # the checkpoint clock is read at log steps only: every rank then agrees without a per-step broadcast
            late = log_now and (time.monotonic() - last_ckpt_time) > 60 * args.ckpt_minutes
            due = step < args.steps and (
                step % args.ckpt_every == 0 or (log_now and broadcast_flag(late, device, world))
            )

            if log_now or export or due:  # the host waits for the device here, and only here
                first = float(t.first_bad) or math.inf  # 0: this rank saw none
                bad = -all_max(-first, device, world)  # the earliest bad step of any rank
                bad = 0 if math.isinf(bad) else int(bad)
                if bad:
                    msg = f"non-finite loss at step {bad} (seed {args.seed}); last good checkpoint: {ckpt_path or 'none'}"
                    if master:
                        write_json(
                            failed, {"error": msg, "step": bad, "checkpoint": str(ckpt_path or "none")}
                        )
                    raise NonFiniteLoss(msg)

            if master and log_now:
                elapsed = time.perf_counter() - window_start
                rec = {
                    "step": step,
                    "loss": round(float(total), 6),
                    "lr": opt.param_groups[0]["scheduled_lr"],
                    "images_per_s": round(window_images / max(elapsed, 1e-9), 1),
                    "epoch": stream.state_dict()["epoch"],
                }
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=rec["loss"])
                window_start, window_images = time.perf_counter(), 0

            if export:
                member = member_at_x(raw, opt, calib, device) if master else None
                if master and step in exports:
                    members.save(member, member_path(out, args.seed, step), recipe, args.seed, step)
                if master and want_eval:
                    if step == args.steps and pause_at == "final-eval":
                        hold_for_fault_test(out, args.seed)
                    rec = {"step": step, **evaluate(member, val, device, amp)}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                if world > 1:
                    dist.barrier()
                window_start, window_images = time.perf_counter(), 0  # throughput excludes evaluation

            if due:
                rngs = gather_rngs(device, world)
                if master:
                    ckpt_path = save_checkpoint(
                        ckpt_dir, raw, opt, step, stream, rngs, recipe, args.seed, decode
                    )
                last_ckpt_time = time.monotonic()
                if world > 1:
                    dist.barrier()
    finally:
        if isinstance(stream, Prefetcher):  # its thread stops with the run, finished or not
            stream.close()

    bar.close()
    runtime.register(None)  # finished: nothing left for a preemption handler to save
    if master:
        log.close()
        state_path = out / "final" / f"seed{args.seed}.pt"  # the training state, for bitwise comparisons
        with atomic_path(state_path) as tmp:
            torch.save({"model": raw.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
        # last: the members, the metrics and the final state are written
        completion.mark_done(out, args.seed, recipe, step, exports)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {
        "seed": args.seed,
        "steps": step,
        "members": [str(member_path(out, args.seed, s)) for s in exports],
    }


def fault_pause(master: bool) -> int | str | None:
    """The fault suite's hook (tests/test_lifeline.py), read once per run: `RICHREPS_TEST_PAUSE=step:<N>`
    holds rank 0 after step N's update, `final-eval` before the final evaluation (after the last export);
    None, the rule everywhere else, holds nothing."""
    pause = os.environ.get("RICHREPS_TEST_PAUSE") if master else None
    return int(pause[5:]) if pause and pause.startswith("step:") else pause


def hold_for_fault_test(out: Path, seed: int) -> None:
    """Write <out>/paused_seed<S> and wait, so that the test kills the runner at exactly this moment."""
    (out / f"paused_seed{seed}").touch()
    time.sleep(600)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    lifeline.tie_torchrun_worker()  # a worker dies with torchrun's agent, which dies with the runner's kernel
    code = main()
    if "LOCAL_RANK" in os.environ:  # a torchrun worker: every file is written and closed by now. Skip the
        # interpreter's finalization, where gloo's worker threads can abort the process after a finished
        # run (seen once here: "terminate called without an active exception"; pytorch/pytorch#179291)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
