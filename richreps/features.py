"""Features of members on a dataset split, computed once and cached on disk.

    sets = cue_features(files, ["color"], {"train": 1000, "val": 500, "test": 1000}, seed=0, cache_dir=c)
    cat = concat([sets["color"]["train"][f] for f in files])      # CATn

Features are cached in float16 per (member content hash, data key): a member retrained with
other parameters has another hash, so its old features are never reused. A CATn reads its
members' cached features and never re-runs a network. Extraction writes progress in chunks,
so a killed extraction resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from richreps import members as member_files
from richreps.io import atomic_path, payload_digest
from richreps.models import Member

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    features: torch.Tensor  # (N, D) float16
    labels: torch.Tensor  # (N,) int64


def _load(path: Path) -> dict | None:
    """A cache file's tensors, or None when it is torn, corrupt or not plain data (then it is recomputed)."""
    try:
        data = torch.load(path, weights_only=True)
        if not (isinstance(data, dict) and {"labels", "features", "digest"} <= set(data)):
            reason = "unexpected content"
        elif data.pop("digest") != payload_digest(data):
            reason = "payload checksum mismatch"
        else:
            return data
    except Exception as e:  # noqa: BLE001 - any unreadable cache file is recomputed, never trusted
        reason = type(e).__name__
    log.warning("feature cache: %s is unreadable (%s); recomputing it", path, reason)
    path.unlink(missing_ok=True)
    return None


def cache_path(cache_dir: str | Path, member_key: str, data_key: str) -> Path:
    return Path(cache_dir) / member_key / f"{hashlib.sha256(data_key.encode()).hexdigest()[:16]}.pt"


@torch.no_grad()
def extract(
    members: dict[str, Member],
    batches: Callable[[], Iterable],
    data_key: str,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
    chunk_batches: int = 50,
    desc: str = "features",
) -> dict[str, FeatureSet]:
    """Features of every member on one dataset split, from the cache where present.

    `members` maps a content key (the checkpoint's hash) to the model. The missing members share
    one pass over the data: each batch is decoded once and run through all of them (bf16 on CUDA).
    """
    device = torch.device(device)
    out, todo = {}, {}
    for key, m in members.items():
        path = cache_path(cache_dir, key, data_key)
        cached = _load(path) if path.exists() else None
        if cached is not None:
            out[key] = FeatureSet(cached["features"], cached["labels"])
        else:
            todo[key] = m.to(device).eval()
    if not todo:
        return out
    part_dir = (
        Path(cache_dir)
        / "partial"
        / hashlib.sha256(("|".join(sorted(todo)) + data_key).encode()).hexdigest()[:16]
    )
    part_dir.mkdir(parents=True, exist_ok=True)
    parts: list[dict] = []
    for p in sorted(
        part_dir.glob("part*.pt")
    ):  # keep the readable prefix; a bad chunk and those after it rerun
        part = _load(p) if len(parts) == int(p.stem[4:]) else None
        if part is None or set(part["features"]) != set(todo):
            for later in sorted(part_dir.glob("part*.pt")):
                if int(later.stem[4:]) >= len(parts):
                    later.unlink()
            break
        parts.append(part)
    start = len(parts) * chunk_batches
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in todo}
    labels: list[torch.Tensor] = []
    amp = device.type == "cuda"

    def flush(index: int) -> None:
        part = {"features": {k: torch.cat(v) for k, v in feats.items()}, "labels": torch.cat(labels)}
        with atomic_path(part_dir / f"part{index:06d}.pt") as tmp:
            torch.save({**part, "digest": payload_digest(part)}, tmp)
        parts.append(part)
        for v in feats.values():
            v.clear()
        labels.clear()

    chunk = len(parts)
    for b, (x, y) in enumerate(tqdm(batches(), desc=desc, unit="batch", leave=False)):
        if b < start:
            continue  # already in a part file
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            for k, m in todo.items():
                feats[k].append(m.features(x).float().half().cpu())
        labels.append(torch.as_tensor(y).cpu())
        if (b + 1) % chunk_batches == 0:
            flush(chunk)
            chunk += 1
    if labels:
        flush(chunk)
    all_labels = torch.cat([p["labels"] for p in parts])
    for k in todo:
        fs = FeatureSet(torch.cat([p["features"][k] for p in parts]), all_labels)
        payload = {"features": fs.features, "labels": fs.labels}
        with atomic_path(cache_path(cache_dir, k, data_key)) as tmp:
            torch.save({**payload, "digest": payload_digest(payload)}, tmp)
        out[k] = fs
    for p in part_dir.glob("part*.pt"):
        p.unlink()
    part_dir.rmdir()
    return out


def concat(sets: list[FeatureSet]) -> FeatureSet:
    """CATn: the concatenation of its members' features."""
    for s in sets[1:]:
        if not torch.equal(s.labels, sets[0].labels):
            raise ValueError("members' cached features were computed on different samples")
    return FeatureSet(torch.cat([s.features for s in sets], dim=1), sets[0].labels)


def subsample_per_class(fs: FeatureSet, per_class: int, seed: int = 0) -> FeatureSet:
    """The first `per_class` examples of each class under a seeded shuffle (few-shot probes)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(fs.labels), generator=g)
    keep = torch.cat([order[fs.labels[order] == c][:per_class] for c in fs.labels.unique()])
    keep = keep.sort().values
    return FeatureSet(fs.features[keep], fs.labels[keep])


# ---------------------------------------------------------------- data sources


def cue_batches(
    task: str, size: int, split: str, seed: int, weights=None, batch: int = 500, render: str | None = None
):
    """A re-iterable batch source for one split of a cue task.

    'mixture' is the pretraining mixture with the given `weights` (the members' own, from their
    recorded recipe); the OOD targets of `richreps.data.ood` are their fixed splits; the other tasks
    are the transfer tasks of `cues.TASKS`. `render` is the renderer preset (the members' own;
    default `cues.DEFAULT_RENDER`).
    """
    from richreps.data import cues, ood

    render = render or cues.DEFAULT_RENDER
    if ood.is_ood(task):  # a fixed real dataset: `size` and the renderer do not apply
        x, y = ood.splits(task)[split]
        return lambda: ((x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch))
    if task == "mixture":
        if weights is None:
            raise ValueError("task 'mixture' needs the mixture weights")
        data = cues.sample_pretrain(
            size, weights, cues.split_seed(seed, "probe-mixture", split), difficulty=render
        )
    else:
        data = cues.sample_task(task, size, cues.split_seed(seed, task, split), difficulty=render)
    return lambda: ((data.images[i : i + batch], data.labels[i : i + batch]) for i in range(0, size, batch))


def _members(member_paths: list[str | Path]) -> tuple[dict[str, Member], dict[str, str]]:
    models = {str(p): member_files.load(p) for p in member_paths}
    return models, {str(p): member_files.file_hash(p) for p in member_paths}


def cue_features(
    member_paths: list[str | Path],
    tasks: list[str],
    sizes: dict[str, int],
    seed: int,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
    weights=None,
    render: str | None = None,
) -> dict[str, dict[str, dict[str, FeatureSet]]]:
    """features[task][split][member file] for every member, each image run once through all members
    (images drawn with the renderer preset `render`: the members' own)."""
    from richreps.data.cues import DEFAULT_RENDER
    from richreps.data.ood import is_ood

    render = render or DEFAULT_RENDER
    models, keys = _members(member_paths)
    out: dict[str, dict[str, dict[str, FeatureSet]]] = {}
    for task in tasks:
        out[task] = {}
        mix = "" if task != "mixture" else ":" + ",".join(f"{float(w):g}" for w in weights or [])
        for split, n in sizes.items():
            key = (
                f"ood/{task}/{split}" if is_ood(task) else f"cues-{render}/{task}{mix}/{split}/{n}/seed{seed}"
            )
            got = extract(
                {keys[p]: m for p, m in models.items()},
                cue_batches(task, n, split, seed, weights, render=render),
                key,
                cache_dir,
                device,
                desc=f"{task} {split}",
            )
            out[task][split] = {p: got[keys[p]] for p in models}
    return out


def folder_batches(
    dataset: str, root: str, split: str, size: int, train: bool, workers: int | None, seed: int = 0
):
    """A batch source over a real dataset split with the probe's transform (augmented when `train`)."""
    from richreps.data import build_dataset, probe_transform
    from richreps.data.pipeline import cpu_loader

    ds = build_dataset(dataset, root, split, probe_transform(dataset, train, size))
    batch = 256 if dataset.startswith("cifar") else 128

    def batches(epoch: int = 0):
        torch.manual_seed(seed + epoch)
        return cpu_loader(ds, batch, workers=workers, shuffle=train)

    return batches


def folder_features(
    member_paths: list[str | Path],
    dataset: str,
    root: str | Path,
    image_size: int,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, dict[str, FeatureSet]]:
    """features[split][member file] on a real dataset (evaluation transform), cached per member."""
    models, keys = _members(member_paths)
    member_files.check_cat(list(models.values()))
    out = {}
    for split in splits:
        got = extract(
            {keys[p]: m for p, m in models.items()},
            folder_batches(dataset, str(root), split, image_size, False, workers),
            f"{dataset}/{Path(root).resolve()}/{split}/eval{image_size}",
            cache_dir,
            device,
            desc=f"{dataset} {split}",
        )
        out[split] = {p: got[keys[p]] for p in models}
    return out
