"""Training checkpoints of `richreps.pretrain`: atomic writes, the newest valid one, RNG states, and the
guards around a restart (the non-finite-loss marker, `--resume none` / `--overwrite`).

A checkpoint holds everything a bitwise resume needs (model, optimizer, stream position, every rank's
RNG state) plus the recipe, seed and decode path that wrote it, and a checksum of its payload; a resume
skips a torn or corrupt one for the previous one and refuses one written by another recipe, naming the flag.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from richreps.config import Recipe
from richreps.io import atomic_path, payload_digest


def save_checkpoint(
    folder: Path, raw, opt, step: int, stream, rngs: list, recipe: Recipe, seed: int, decode: str
) -> Path:
    """Atomic write of everything a bitwise resume needs; keeps the previous one as a fallback."""
    path = folder / f"step{step:09d}.pt"
    payload = {
        "model": raw.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "stream": stream.state_dict(),
        "rng": rngs,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "decode": decode,  # the two decode paths draw different crops: a resume must keep the path
    }
    with atomic_path(path) as tmp:
        torch.save({**payload, "digest": payload_digest(payload)}, tmp)
    for old in sorted(folder.glob("step*.pt"))[:-2]:
        old.unlink()
    return path


def newest_valid_checkpoint(
    folder: Path, recipe: Recipe, seed: int, decode: str, before: int | None = None
) -> tuple[dict | None, Path | None]:
    """The newest checkpoint that loads and was written by this recipe and seed, at a step below
    `before` when given (a member wanted at an earlier step than the run reached is retrained from
    a checkpoint before it: shared-prefix runs are deterministic, so it is the same member).

    The check compares every `Recipe` field, so no flag that changes the trajectory can be
    missed; a checkpoint of another recipe is refused naming the flag.
    """
    for path in sorted(folder.glob("step*.pt"), reverse=True):
        if before is not None and int(path.stem.removeprefix("step")) >= before:
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            digest = ckpt.pop("digest")
        except Exception as e:  # noqa: BLE001 - a torn, corrupt or unsafe file: try the previous one
            print(f"[pretrain] skipping unreadable checkpoint {path} ({type(e).__name__})", file=sys.stderr)
            continue
        if digest != payload_digest(ckpt):
            print(
                f"[pretrain] skipping corrupt checkpoint {path} (payload checksum mismatch)", file=sys.stderr
            )
            continue
        diff = recipe.diff(ckpt.get("recipe"))
        if diff is None and ckpt.get("seed") != seed:
            diff = ("seed", ckpt.get("seed"), seed)
        if diff is None and ckpt.get("decode", decode) != decode:
            diff = ("decode", ckpt.get("decode"), decode)
        if diff:
            key, old, new = diff
            raise SystemExit(
                f"error: {path} was written with --{key.replace('_', '-')} {old}, this run has {new}; "
                "use another --out"
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


def check_failure_marker(marker: Path, resume_from: Path | None) -> None:
    """A non-finite loss is deterministic: restarting from the checkpoint that led to it would only
    hit it again, so that is refused. Starting from another checkpoint (an older valid one, after the
    one it recorded turned out corrupt) or from scratch is allowed, and the marker is set aside."""
    if not marker.exists():
        return
    try:
        rec = json.loads(marker.read_text())
    except ValueError:
        rec = {}
    if rec.get("checkpoint", "none") == str(resume_from or "none"):
        raise NonFiniteLoss(
            f"{rec.get('error', 'an earlier non-finite loss')}; restarting from the same checkpoint would repeat "
            "it: change the recipe in a new --out, or use --resume none --overwrite"
        )
    print(
        f"[pretrain] {marker.name}: the non-finite loss came after {rec.get('checkpoint')}; "
        f"this start resumes from {resume_from or 'scratch'}, so it is allowed",
        file=sys.stderr,
    )
    try:
        marker.rename(marker.with_suffix(".json.earlier"))
    except FileNotFoundError:  # another rank set it aside first
        pass


def seed_files(out: Path, seed: int) -> list[Path]:
    """Everything a run of `seed` wrote in `out`: checkpoints, metrics, members, final state, failure marker."""
    candidates = [
        out / "ckpt" / f"seed{seed}",
        out / "metrics" / f"seed{seed}.jsonl",
        out / "final" / f"seed{seed}.pt",
        out / f"FAILED_seed{seed}.json",
        *sorted((out / "members").glob(f"seed{seed}_step*.pt")),
    ]
    return [p for p in candidates if p.exists()]


def fresh_start(out: Path, seed: int, overwrite: bool, master: bool, world: int) -> None:
    """`--resume none`: refuse to mix with an earlier run of this seed, or move it aside (never delete)."""
    earlier = seed_files(out, seed)
    if earlier and not overwrite:
        raise SystemExit(
            f"error: {out} already holds a run of seed {seed} ({earlier[0]}); "
            "use a new --out, or --overwrite to move it aside"
        )
    if earlier and master:
        aside = out / "replaced" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
        for p in earlier:
            dest = aside / p.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            p.rename(dest)
        print(f"[pretrain] moved the earlier run of seed {seed} aside to {aside}", file=sys.stderr)
    if world > 1:
        dist.barrier()
