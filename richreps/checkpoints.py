"""Training checkpoints of `richreps.pretrain`: atomic writes, the newest valid one, RNG states, and the
guards around a restart (the run's lock, `start_of_run`, the non-finite-loss marker, `--resume none` /
`--overwrite`).

A checkpoint holds everything a bitwise resume needs (model, optimizer, stream position, every rank's
RNG state) plus the recipe, seed and decode path that wrote it, and a checksum of its payload; a resume
skips a torn or corrupt one for the previous one and refuses one written by another recipe, naming the flag.
Every start of a run, whatever its `--resume` and `--export-at`, first compares the recipe recorded in
the newest valid checkpoint and in every member already in `--out` with the request (`start_of_run`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from richreps.config import Recipe
from richreps.io import atomic_path, payload_digest

if TYPE_CHECKING:
    from richreps.data.folders import ImageIndex


class RunLock:
    """An exclusive `flock` on <out>/locks/seed<S>.lock: one live run of a seed in a folder at a time.

    The kernel drops a flock when the last descriptor of its open file closes: when this object goes
    (`train` returns), or when the process dies however it dies (SIGKILL, OOM, a lost node), so a dead
    holder never blocks. A forked child (a loader worker) closes its copy at once (`os.register_at_fork`),
    so a worker outliving its parent holds nothing. The file stays (removing a lock file races with a
    run that has just opened it) and names its last holder, pid and host: what a refusal says."""

    held: weakref.WeakValueDictionary[str, RunLock] = weakref.WeakValueDictionary()  # this process's

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # never LOCK_UN: that would also release it for a parent sharing the file
            self.fd = -1

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit; the kernel closes the file anyway
            pass


def _release_in_child() -> None:
    for lock in list(RunLock.held.values()):
        lock.release()  # the child's copy only: the parent's descriptor keeps the lock
    RunLock.held.clear()


os.register_at_fork(after_in_child=_release_in_child)


def take_run_lock(out: Path, seed: int) -> RunLock | None:
    """Lock (`out`, `seed`) for this process, or refuse in one line naming the live holder. A process
    that holds it already (a run started again in one interpreter) gets its own lock back; a file
    system without flock (some network mounts) is said, and the run goes on unlocked."""
    path = (Path(out) / "locks" / f"seed{seed}.lock").absolute()
    mine = RunLock.held.get(str(path))
    if mine is not None and mine.fd >= 0:
        return mine
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:  # a lock file another user made, a read-only folder: one line, not a traceback
        raise SystemExit(f"error: --out {out}: cannot open the run's lock {path} ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "it has not written its pid yet"
        os.close(fd)
        raise SystemExit(
            f"error: --out {out} --seed {seed} is in use by a live run ({holder}); wait for it or stop it, "
            f"or use another --out (lock: {path})"
        ) from None
    except OSError as e:
        os.close(fd)
        print(
            f"[pretrain] warning: cannot lock {path} ({e.strerror}): a second run is not refused",
            file=sys.stderr,
        )
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    lock = RunLock.held[str(path)] = RunLock(path, fd)
    return lock


def hold_run_lock(out: Path, seed: int, master: bool, device: torch.device, world: int) -> RunLock | None:
    """Rank 0 (or the single process) takes the run's lock before anything else of the run, `--overwrite`'s
    move included; every rank learns whether it did, so a refused run stops on all of them in one line."""
    lock, refusal = None, None
    if master:
        try:
            lock = take_run_lock(out, seed)
        except SystemExit as e:
            refusal = str(e.code)
    if world > 1:
        flag = torch.tensor([float(refusal is not None)], device=device)
        dist.broadcast(flag, 0)
        if float(flag) > 0 and not master:
            raise SystemExit(f"error: --out {out} --seed {seed} is in use by a live run (rank 0 names it)")
    if refusal:
        raise SystemExit(refusal)
    return lock


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
        if not isinstance(ckpt.get("recipe"), Mapping):  # a valid digest over a damaged record
            kind = type(ckpt.get("recipe")).__name__
            print(f"[pretrain] skipping damaged checkpoint {path} (its recipe is a {kind})", file=sys.stderr)
            continue
        diff = recipe.diff(ckpt.get("recipe"))
        if diff is None and ckpt.get("seed") != seed:
            diff = ("seed", ckpt.get("seed"), seed)
        if diff is None and ckpt.get("decode", decode) != decode:
            diff = ("decode", ckpt.get("decode"), decode)
        if diff:
            key, old, new = diff
            raise SystemExit(refusal(path, key, old, new))
        return ckpt, path
    return None, None


def refusal(path: Path, key: str, old, new) -> str:
    """The one-line error for a file in `--out` written by another recipe, naming the first differing flag."""
    return (
        f"error: {path} was written with --{key.replace('_', '-')} {old}, this run has {new}; "
        "use another --out, or --overwrite to move the earlier run to replaced/"
    )


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
    """Everything a run of `seed` wrote in `out`: checkpoints, metrics and settings, members, final state,
    failure marker, completion record."""
    candidates = [
        out / "ckpt" / f"seed{seed}",
        out / "metrics" / f"seed{seed}.jsonl",
        *sorted((out / "metrics").glob(f"*_seed{seed}.json")),  # e.g. the run's device settings
        out / "final" / f"seed{seed}.pt",
        out / f"FAILED_seed{seed}.json",
        out / "done" / f"seed{seed}.json",  # richreps.completion's record
        *sorted((out / "members").glob(f"seed{seed}_step*.pt")),
    ]
    return [p for p in candidates if p.exists()]


def _aside(out: Path, seed: int) -> Path:
    """A new folder under <out>/replaced for files of `seed` moved aside (never deleted, never overwritten)."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    aside, k = out / "replaced" / stamp, 1
    while aside.exists():  # two starts within a second: never move onto an earlier copy
        aside, k = out / "replaced" / f"{stamp}-{k}", k + 1
    return aside


def fresh_start(out: Path, seed: int, overwrite: bool, master: bool, world: int) -> None:
    """`--resume none`: refuse to mix with an earlier run of this seed, or move it aside (never delete)."""
    earlier = seed_files(out, seed)
    if earlier and not overwrite:
        raise SystemExit(
            f"error: {out} already holds a run of seed {seed} ({earlier[0]}); "
            "use a new --out, or --overwrite to move it aside"
        )
    if earlier and master:
        aside = _aside(out, seed)
        for p in earlier:
            dest = aside / p.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            p.rename(dest)
        print(f"[pretrain] moved the earlier run of seed {seed} aside to {aside}", file=sys.stderr)
    if world > 1:
        dist.barrier()


def start_of_run(
    out: Path,
    recipe: Recipe,
    seed: int,
    decode: str,
    resume: str,
    overwrite: bool,
    exports: list[int],
    master: bool,
    world: int,
) -> tuple[int | None, dict | None, Path | None]:
    """The one rule for every start of `richreps.pretrain`, before any data or model is built.

    Every member already in `out` (of any seed: a run folder holds one recipe) and, when resuming,
    this seed's newest valid checkpoint are compared with `recipe`, field by field; the first
    difference is refused naming its flag. `--overwrite` moves this seed's earlier run to
    `replaced/` in every mode (never over it) and starts afresh; `--resume none` without it refuses
    a folder that holds this seed. A planned member that this version cannot use (unreadable, of a
    format it does not know, altered weights) is not a conflict: it is moved to `replaced/` (never trained
    over: a newer richreps's member is worth keeping) and trained again, and said so with its path.

    Returns (the step below which to resume: the first planned member still missing, or None; the
    newest valid checkpoint and its path, at any step, or None).
    """
    from richreps import members

    for path in sorted((out / "members").glob("seed*_step*.pt")):
        if overwrite and path.name.startswith(f"seed{seed}_step"):
            continue  # moved aside below
        try:
            rec = members.record(path)
        except members.CheckpointError:
            continue  # unreadable: not a conflict; a planned one is moved aside and trained again below
        if members.format_error(path, rec):
            continue  # a format this version does not read: the same
        try:
            theirs = members.recorded_recipe(path, rec)
        except members.CheckpointError as e:
            raise SystemExit(f"error: {e}; move it away, or use --overwrite") from None
        diff = recipe.diff(theirs)
        if diff:
            raise SystemExit(refusal(path, *diff))
    if overwrite or resume == "none":
        fresh_start(out, seed, overwrite, master, world)
        return None, None, None
    ckpt, ckpt_path = newest_valid_checkpoint(out / "ckpt" / f"seed{seed}", recipe, seed, decode)
    missing, unusable = [], []
    for step in exports:
        path = members.member_path(out, seed, step)
        if not path.exists():
            missing.append(step)
            continue
        try:
            members.require(path, recipe, seed, step)
        except members.CheckpointError as e:
            missing.append(step)
            unusable.append((path, e))
    if unusable and master:  # never trained over: a file this version cannot read may be worth more
        aside = _aside(out, seed)
        for path, e in unusable:
            dest = aside / path.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            path.rename(dest)
            print(f"[pretrain] {e}; moved it to {dest}, training it again", file=sys.stderr)
    return (min(missing) if missing else None), ckpt, ckpt_path


def image_listing_digest(samples: list[tuple[str, int]]) -> str:
    """sha256 of the training files' names and labels and of their folders' modification times.

    Names come from the index, which lists without a `stat` per file; one `stat` per class folder
    catches a file added, removed or renamed there (ImageNet's 1,000 folders, not its 1.28M files).
    A file rewritten in place under the same name is not caught: delete the record to check again."""
    h = hashlib.sha256()
    folders = sorted({os.path.dirname(p) for p, _ in samples})
    for folder in folders:
        h.update(f"{folder}\0{os.stat(folder).st_mtime_ns}\n".encode())
    for p, y in samples:
        h.update(f"{p}\0{y}\n".encode())
    return h.hexdigest()


def check_images(
    recipe: Recipe,
    rank: int,
    world: int,
    device: torch.device,
    out: Path | None = None,
    index: ImageIndex | None = None,
    workers: int | None = None,
) -> None:
    """Under corrupt_policy `error`, decode every training image before step 1 (each rank its share),
    so an unreadable one refuses the run naming the file and the policy instead of stopping it
    mid-epoch. Under `skip` the dataset's own scan leaves such files out and counts them.

    A passed check is recorded in `<out>/metrics/image_check.json` with `image_listing_digest`, so a
    restart or a SLURM requeue of the same run over the same files does not decode 1.28M images again.
    `index`: the start's shared listing (`data.shared_index`); `workers` processes decode each rank's share
    in parallel (default: the loader's count, `data.pipeline.default_workers`)."""
    from richreps.data.folders import first_unreadable, imagenet_index
    from richreps.data.pipeline import default_workers
    from richreps.io import write_text

    samples = (index if index is not None else imagenet_index(recipe.data_root)).train
    record = out / "metrics" / "image_check.json" if out is not None else None
    digest = image_listing_digest(samples) if record is not None else ""
    if record is not None and record.is_file():
        try:
            if json.loads(record.read_text()).get("digest") == digest:
                return
        except (json.JSONDecodeError, AttributeError):
            pass  # a damaged record: check again
    workers = default_workers() if workers is None else workers
    bad = first_unreadable(samples[rank::world], desc=f"checking images (rank {rank})", workers=workers)
    flag = torch.tensor([float(bad is not None)], device=device)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if float(flag) > 0:
        raise SystemExit(
            f"error: {bad}: unreadable image under --corrupt-policy error; nothing was trained. Replace or "
            "remove it (--corrupt-policy skip would leave it out, but is another recipe: another --out)"
            if bad
            else "error: another rank found an unreadable image under --corrupt-policy error"
        )
    if record is not None and rank == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        body = {"root": str(recipe.data_root), "files": len(samples), "digest": digest}
        write_text(record, json.dumps(body, indent=2) + "\n")
