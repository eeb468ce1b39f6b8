"""Pretrain one seed with schedule-free AdamW and export members at chosen steps.

    torchrun --standalone --nproc_per_node 2 -m richreps.pretrain --out runs/smoke --seed 0 \\
        --steps 450 --export-at 80 100 200 450

The same entry point runs everywhere: it reads its rank from torchrun's environment (NCCL on
GPUs, gloo on CPU) and runs as a single process without it. A run checkpoints atomically,
resumes bitwise with `--resume auto` (also after torchrun restarts a dead rank), stops on a
non-finite loss, and logs to out/metrics/seed<S>.jsonl.

Schedule-free evaluates at its averaged point x, not at the training point y, so every member,
evaluation and probe-ready export is taken at x with BatchNorm statistics recomputed there.
x is computed into a copy of the model, so exporting never perturbs training: the step-t
member of a long run is bitwise the member of a t-step run with the same seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from schedulefree import AdamWScheduleFree
from tqdm.auto import tqdm

from richreps.io import atomic_path, write_json
from richreps.models import ARCHS, build_model, recalibrate_bn

# ---------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m richreps.pretrain", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run folder: ckpt/, members/, metrics/")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps of this run")
    ap.add_argument("--export-at", type=int, nargs="*", default=[], help="steps at which to export members")
    data = ap.add_argument_group("data")
    data.add_argument("--data", choices=("cues", "imagenet"), default="cues")
    data.add_argument("--data-root", default="", help="ImageNet root (ImageFolder layout)")
    data.add_argument("--cue-weights", type=float, nargs=4, default=[0.25, 0.25, 0.25, 0.25])
    data.add_argument("--cue-redundant", type=float, nargs=4, default=None, help="per-cue reliabilities")
    data.add_argument("--train-size", type=int, default=20000, help="cues: images in the pretraining set")
    data.add_argument("--val-size", type=int, default=2000, help="cues: images in the validation set")
    data.add_argument("--data-seed", type=int, default=0, help="cues: the dataset (shared by all seeds)")
    data.add_argument("--val-fraction", type=float, default=0.01, help="imagenet: held-out share of train")
    data.add_argument("--image-size", type=int, default=224)
    data.add_argument("--workers", type=int, default=None)
    data.add_argument("--corrupt-policy", choices=("error", "skip"), default="error")
    model = ap.add_argument_group("model and optimizer (defaults: AlgoPerf v0.6 schedule-free entry)")
    model.add_argument("--arch", choices=ARCHS, default="small_cnn")
    model.add_argument("--width", type=int, default=32, help="small_cnn width")
    model.add_argument("--global-batch", type=int, default=1024)
    model.add_argument(
        "--micro-batch", type=int, default=0, help="per-process batch per forward (0: no accumulation)"
    )
    model.add_argument("--lr", type=float, default=0.0025)
    model.add_argument("--beta1", type=float, default=0.9)
    model.add_argument("--beta2", type=float, default=0.99552)
    model.add_argument("--weight-decay", type=float, default=0.0812)
    model.add_argument(
        "--warmup-steps", type=int, default=0, help="fixed in steps (keeps shared-prefix exact)"
    )
    model.add_argument("--label-smoothing", type=float, default=0.2)
    model.add_argument("--r", type=float, default=0.75)
    model.add_argument("--weight-lr-power", type=float, default=2.0)
    model.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    run = ap.add_argument_group("evaluation, checkpoints, logging")
    run.add_argument("--bn-batches", type=int, default=50, help="batches to recompute BN statistics at x")
    run.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: exports only)")
    run.add_argument("--ckpt-every", type=int, default=1000, help="steps between checkpoints")
    run.add_argument(
        "--ckpt-minutes", type=float, default=30.0, help="also checkpoint after this many minutes"
    )
    run.add_argument("--resume", choices=("auto", "none"), default="auto")
    run.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args(argv)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """Fail in one line, naming the flag, before any data or model is built."""
    if args.steps < 1:
        raise SystemExit(f"error: --steps must be >= 1, got {args.steps}")
    bad = [s for s in args.export_at if not 1 <= s <= args.steps]
    if bad:
        raise SystemExit(f"error: --export-at {bad[0]} is outside [1, --steps {args.steps}]")
    if args.data == "imagenet" and not Path(args.data_root).is_dir():
        raise SystemExit(
            f"error: --data-root {args.data_root!r} is not a folder (ImageNet in ImageFolder layout)"
        )
    if args.warmup_steps < 0:
        raise SystemExit(f"error: --warmup-steps must be >= 0, got {args.warmup_steps}")


# ---------------------------------------------------------------- distributed


def setup() -> tuple[int, int, torch.device]:
    """Rank, world size and device, from torchrun's environment when present."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        cuda = torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", 0))
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


# ---------------------------------------------------------------- data


class Position:
    """Where a data stream is: the epoch and the samples this rank has consumed in it."""

    epoch: int = 0
    pos: int = 0

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self.restart()

    def restart(self) -> None:
        raise NotImplementedError


class CueStream(Position):
    """Shuffled minibatches of an in-memory tensor dataset, resumable at (epoch, position)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch: int, seed: int, rank: int, world: int
    ):
        from richreps.data.sampler import ResumableSampler

        self.images, self.labels, self.batch = images, labels, batch
        self.sampler = ResumableSampler(len(labels), world, rank, seed=seed, drop_last=True)
        self.order = None

    def restart(self) -> None:
        self.order = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self.order is None:
                self.sampler.set_epoch(self.epoch)
                self.order = torch.tensor(self.sampler.indices())
            if self.pos + self.batch <= len(self.order):
                break
            self.epoch, self.pos, self.order = self.epoch + 1, 0, None
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return self.images[idx], self.labels[idx]


class LoaderStream(Position):
    """The same interface over a DataLoader of real images (ImageNet), resumable mid-epoch."""

    def __init__(self, dataset, batch: int, seed: int, rank: int, world: int, workers: int | None):
        from richreps.data.sampler import ResumableSampler

        self.dataset, self.batch, self.workers = dataset, batch, workers
        self.sampler = ResumableSampler(len(dataset), world, rank, seed=seed, drop_last=True)
        self.it = None

    def restart(self) -> None:
        self.it = None

    def next(self):
        from richreps.data.pipeline import cpu_loader

        while True:
            if self.it is None:
                self.sampler.set_epoch(self.epoch, start=self.pos)
                self.dataset.epoch = self.epoch
                self.it = iter(
                    cpu_loader(
                        self.dataset, self.batch, sampler=self.sampler, workers=self.workers, drop_last=True
                    )
                )
            try:
                x, y = next(self.it)
                self.pos += len(y)
                return x, y
            except StopIteration:
                self.epoch, self.pos, self.it = self.epoch + 1, 0, None


class SeededSamples(torch.utils.data.Dataset):
    """Augmentation seeded by (seed, epoch, index): a resumed run draws the same crops."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        torch.manual_seed(hash((self.seed, self.epoch, i)) % (2**63))
        return self.base[i]


def make_data(args, rank: int, world: int, device: torch.device, micro: int):
    """(train stream, calibration batches, validation batches, number of classes)."""
    if args.data == "cues":
        from richreps.data import cues

        splits = cues.pretrain_splits(
            args.cue_weights,
            {"train": args.train_size, "val": args.val_size},
            seed=args.data_seed,
            redundant=args.cue_redundant,
            device=device,
        )
        tr, va = splits["train"], splits["val"]
        stream = CueStream(tr.images, tr.labels, micro, args.seed, rank, world)
        g = torch.Generator().manual_seed(args.seed + 7919)
        calib_idx = torch.randperm(len(tr.labels), generator=g)[: args.bn_batches * micro]
        calib = [tr.images[calib_idx[i : i + micro]] for i in range(0, len(calib_idx), micro)]
        val = [(va.images[i : i + 512], va.labels[i : i + 512]) for i in range(0, len(va.labels), 512)]
        return stream, calib, val, 10
    from richreps.data import build_dataset, pretrain_transform

    common = dict(val_fraction=args.val_fraction, seed=0, corrupt_policy=args.corrupt_policy)
    train = build_dataset(
        "imagenet", args.data_root, "train", pretrain_transform(True, args.image_size), **common
    )
    held = build_dataset(
        "imagenet", args.data_root, "val", pretrain_transform(False, args.image_size), **common
    )
    stream = LoaderStream(SeededSamples(train, args.seed), micro, args.seed, rank, world, args.workers)
    calib_set = torch.utils.data.Subset(
        SeededSamples(train, args.seed + 7919), range(args.bn_batches * micro)
    )
    calib = (x for x, _ in torch.utils.data.DataLoader(calib_set, batch_size=micro))
    val = torch.utils.data.DataLoader(held, batch_size=256, num_workers=args.workers or 0)
    return stream, calib, val, len(train.classes)


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


def export_member(member: nn.Module, path: Path, args, step: int, num_classes: int) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format": "richreps-member-1",
                "arch": args.arch,
                "width": args.width,
                "num_classes": num_classes,
                "feature_dim": member.feature_dim,
                "seed": args.seed,
                "step": step,
                "data": args.data,
                "state_dict": member.state_dict(),
            },
            tmp,
        )


# ---------------------------------------------------------------- checkpoints

RESUME_KEYS = (
    "arch",
    "width",
    "seed",
    "data",
    "cue_weights",
    "global_batch",
    "lr",
    "beta1",
    "beta2",
    "weight_decay",
    "warmup_steps",
    "r",
    "weight_lr_power",
    "train_size",
    "data_seed",
)


def save_checkpoint(folder: Path, raw, opt, step: int, stream, rngs: list, args) -> Path:
    """Atomic write of everything a bitwise resume needs; keeps the previous one as a fallback."""
    path = folder / f"step{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": raw.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "stream": stream.state(),
                "rng": rngs,
                "config": {k: getattr(args, k) for k in RESUME_KEYS},
            },
            tmp,
        )
    for old in sorted(folder.glob("step*.pt"))[:-2]:
        old.unlink()
    return path


def newest_valid_checkpoint(folder: Path, args) -> tuple[dict | None, Path | None]:
    """The newest checkpoint that loads and matches this run's configuration."""
    for path in sorted(folder.glob("step*.pt"), reverse=True):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - a torn or corrupt file: try the previous one
            print(f"[pretrain] skipping unreadable checkpoint {path} ({type(e).__name__})", file=sys.stderr)
            continue
        mismatch = {
            k: (ckpt["config"].get(k), getattr(args, k))
            for k in RESUME_KEYS
            if ckpt["config"].get(k) != getattr(args, k)
        }
        if mismatch:
            key, (old, new) = next(iter(mismatch.items()))
            raise SystemExit(
                f"error: {path} was written with --{key.replace('_', '-')} {old}, this run has {new}; "
                "use another --out or --resume none"
            )
        return ckpt, path
    return None, None


def rng_states(device: torch.device) -> dict:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def gather_rngs(device: torch.device, world: int) -> list:
    state = rng_states(device)
    if world == 1:
        return [state]
    out = [None] * world
    dist.all_gather_object(out, state)
    return out


class NonFiniteLoss(RuntimeError):
    pass


# ---------------------------------------------------------------- training


def train(args: argparse.Namespace) -> dict:
    rank, world, device = setup()
    master = rank == 0
    out = Path(args.out)
    ckpt_dir, member_dir, metrics_dir = out / "ckpt" / f"seed{args.seed}", out / "members", out / "metrics"
    failed = out / f"FAILED_seed{args.seed}.json"
    if failed.exists():  # a non-finite loss is deterministic: a restart would only hit it again
        raise NonFiniteLoss(failed.read_text().strip())
    per_rank = args.global_batch // world
    micro = args.micro_batch or per_rank
    if args.global_batch % world or per_rank % micro:
        raise SystemExit(
            f"error: --global-batch {args.global_batch} must split into {world} processes "
            f"x whole micro-batches of {micro}"
        )
    accum = per_rank // micro
    amp = device.type == "cuda"

    stream, calib, val, num_classes = make_data(args, rank, world, device, micro)
    torch.manual_seed(args.seed)  # the initialisation depends only on the seed, not on the data
    raw = build_model(args.arch, num_classes, args.width).to(device)
    if amp:
        raw = raw.to(memory_format=torch.channels_last)
    opt = AdamWScheduleFree(
        raw.parameters(),
        lr=args.lr,
        betas=(args.beta1, args.beta2),
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        r=args.r,
        weight_lr_power=args.weight_lr_power,
    )
    step, ckpt_path = 0, None
    if args.resume == "auto":
        ckpt, ckpt_path = newest_valid_checkpoint(ckpt_dir, args)
        if ckpt is not None:
            raw.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            stream.load(ckpt["stream"])
            step = ckpt["step"]
            if len(ckpt["rng"]) == world:
                torch.set_rng_state(ckpt["rng"][rank]["cpu"])
                if device.type == "cuda" and ckpt["rng"][rank]["cuda"] is not None:
                    torch.cuda.set_rng_state(ckpt["rng"][rank]["cuda"], device)
    model = raw
    if world > 1:
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if amp else None)
    if args.compile:
        model = torch.compile(model)
    opt.train()
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    metrics_path = metrics_dir / f"seed{args.seed}.jsonl"
    if master:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        kept = [
            ln
            for ln in (metrics_path.read_text().splitlines() if metrics_path.exists() else [])
            if json.loads(ln)["step"] <= step
        ]
        with atomic_path(metrics_path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in kept))
    log = metrics_path.open("a") if master else None
    bar = tqdm(
        total=args.steps,
        initial=step,
        desc=f"seed {args.seed}",
        unit="step",
        disable=not master,
        mininterval=2.0,
    )
    exports = sorted(set(args.export_at) | {args.steps})
    last_ckpt_time, window_start, window_images = time.monotonic(), time.perf_counter(), 0

    while step < args.steps:
        total = torch.zeros((), device=device)
        for i in range(accum):
            x, y = stream.next()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if amp:
                x = x.contiguous(memory_format=torch.channels_last)
            sync = i == accum - 1 or world == 1
            ctx = model.no_sync() if (not sync and hasattr(model, "no_sync")) else torch.enable_grad()
            with ctx, torch.autocast(device.type, torch.bfloat16, enabled=amp):
                loss = criterion(model(x), y) / accum
                loss.backward()
            total += loss.detach()
        if all_max(float(~torch.isfinite(total)), device, world) > 0:
            msg = f"non-finite loss at step {step + 1} (seed {args.seed}); last good checkpoint: {ckpt_path or 'none'}"
            if master:
                write_json(failed, {"error": msg})
            raise NonFiniteLoss(msg)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        window_images += args.global_batch
        bar.update(1)

        if master and (step % args.log_every == 0 or step == args.steps):
            elapsed = time.perf_counter() - window_start
            rec = {
                "step": step,
                "loss": round(float(total), 6),
                "lr": opt.param_groups[0]["scheduled_lr"],
                "images_per_s": round(window_images / max(elapsed, 1e-9), 1),
                "epoch": stream.state()["epoch"],
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=rec["loss"])
            window_start, window_images = time.perf_counter(), 0

        want_eval = args.eval_every and step % args.eval_every == 0
        if step in exports or want_eval:
            member = member_at_x(raw, opt, calib, device) if master else None
            if master and step in exports:
                export_member(member, member_dir / f"seed{args.seed}_step{step}.pt", args, step, num_classes)
            if master and (want_eval or step == args.steps):
                rec = {"step": step, **evaluate(member, val, device, amp)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if world > 1:
                dist.barrier()
            window_start, window_images = time.perf_counter(), 0  # throughput excludes evaluation

        due = step % args.ckpt_every == 0 or (time.monotonic() - last_ckpt_time) > 60 * args.ckpt_minutes
        if broadcast_flag(due and step < args.steps, device, world):
            rngs = gather_rngs(device, world)
            if master:
                ckpt_path = save_checkpoint(ckpt_dir, raw, opt, step, stream, rngs, args)
            last_ckpt_time = time.monotonic()
            if world > 1:
                dist.barrier()

    bar.close()
    if master:
        log.close()
        state_path = out / "final" / f"seed{args.seed}.pt"  # the training state, for bitwise comparisons
        with atomic_path(state_path) as tmp:
            torch.save({"model": raw.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {
        "seed": args.seed,
        "steps": step,
        "members": [str(member_dir / f"seed{args.seed}_step{s}.pt") for s in exports],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
