"""Features of members on a dataset split, computed once, cached on disk and read in blocks.

    sets = cue_features(files, ["color"], {"train": 1000, "val": 500, "test": 1000}, seed=0, cache_dir=c)
    cat = concat([sets["color"]["train"][f] for f in files])      # CATn: a view over the members' files

Each member's features on a split are one float16 `.npy` file, `cache_dir/<member content hash>/<data key
hash>.npy`, beside its labels (`.labels.npy`) and its record (`.json`: the data key, the shape, a sha256 per
written chunk), all checked on load. A member retrained with other parameters has another hash, so its old
features are never reused; a record of another data key, format or shape, and a file that fails a checksum,
are recomputed. Extraction runs each batch once through all the missing members and appends it to growing
files in `cache_dir/partial/`, recording each chunk's checksum, so a killed extraction resumes after its last
intact chunk; a finished file is renamed into place. Nothing is concatenated in RAM: the chunks held there are
bounded by half of `featstore.ram_budget()`, and a CATn reads its members' files block by block (`featstore`).
Over 450 lines because the cache's writing, resuming and checking stay together here, with the data sources.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from richreps import featstore
from richreps import members as member_files
from richreps.devices import node_devices, ordered_map
from richreps.io import atomic_path, write_json
from richreps.models import Member

log = logging.getLogger(__name__)

FORMAT = 2  # cache records; format 1 was one torch.save file per (member, split), held whole in RAM


@dataclass
class FeatureSet:
    """Features (N, d) and labels (N,). `features` is read in blocks (`featstore.Rows`): in RAM, one
    member's cache file, or a CATn view over files. A tensor given here is wrapped, in RAM."""

    features: featstore.Rows
    labels: torch.Tensor  # (N,) int64

    def __post_init__(self):
        if isinstance(self.features, torch.Tensor):
            self.features = featstore.InMemory(self.features)
        if len(self.features) != len(self.labels):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.labels)} labels")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | Path, member_key: str, data_key: str) -> Path:
    """One member's features file on one split; its labels and record sit beside it."""
    return Path(cache_dir) / member_key / f"{_hash(data_key)}.npy"


def _companions(path: Path) -> tuple[Path, Path]:
    return path.with_suffix(".labels.npy"), path.with_suffix(".json")


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def _load(cache_dir: str | Path, member_key: str, data_key: str) -> FeatureSet | None:
    """A cached member's features, or None when absent; a file that is torn, corrupt, not plain data or
    recorded for another configuration is removed (and so recomputed), with a warning."""
    path = cache_path(cache_dir, member_key, data_key)
    labels_path, record_path = _companions(path)
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        rows = featstore.StoredRows(path)
        expected = (FORMAT, data_key, member_key, list(rows.shape))
        if (
            record.get("format"),
            record.get("data_key"),
            record.get("member"),
            record.get("shape"),
        ) != expected:
            reason = "recorded for another data key, member, format or shape"
        elif featstore.file_digests(path, rows.offset, record["chunks"], rows.row_bytes) != record["sha256"]:
            reason = "payload checksum mismatch"
        else:
            labels = np.load(labels_path, allow_pickle=False)
            if labels.shape != (len(rows),) or _digest(labels) != record["labels_sha256"]:
                reason = "labels do not match their record"
            else:
                return FeatureSet(rows, torch.from_numpy(labels.astype(np.int64)))
    except Exception as e:  # noqa: BLE001 - any unreadable cache file is recomputed, never trusted
        reason = type(e).__name__
    log.warning("feature cache: %s is unreadable (%s); recomputing it", path, reason)
    for p in (record_path, path, labels_path):
        p.unlink(missing_ok=True)
    return None


class _Partial:
    """The growing files of one extraction (every missing member, and the labels) and its progress record:
    for each chunk written, the batches and rows done and each file's sha256 of the chunk."""

    def __init__(self, folder: Path, data_key: str, keys: list[str], batch: int = 0):
        self.folder, self.data_key, self.keys, self.batch = folder, data_key, keys, batch
        self.progress = folder / "progress.json"
        self.files: dict[str, featstore.GrowingArray] | None = None
        self.chunks: list[dict] = []
        self._resume()

    @property
    def batches(self) -> int:
        return self.chunks[-1]["batches"] if self.chunks else 0

    def _resume(self) -> None:
        """Keep the chunks whose bytes match their checksums in every file, up to the first that does not."""
        try:
            rec = json.loads(self.progress.read_text())
            ok = (rec["format"], rec["data_key"], rec["keys"], rec.get("batch")) == (
                FORMAT,
                self.data_key,
                self.keys,
                self.batch,
            )
            dims, chunks = rec["dims"], rec["chunks"] if ok else []
        except (OSError, ValueError, KeyError, TypeError):
            dims, chunks = {}, []
        good = len(chunks)
        if chunks:
            ends = [c["rows"] for c in chunks]
            specs = {k: (np.float16, dims[k]) for k in self.keys} | {"labels": (np.int64, None)}
            for name, (dtype, dim) in specs.items():
                try:
                    got = featstore.file_digests(
                        self.folder / f"{name}.npy",
                        len(featstore.npy_header(dtype, dim, 0)),
                        ends,
                        np.dtype(dtype).itemsize * (dim or 1),
                    )
                except OSError:
                    got = []
                intact = 0
                while intact < min(good, len(got)) and got[intact] == chunks[intact]["sha256"][name]:
                    intact += 1
                good = intact
            if good < len(chunks):
                log.warning(
                    "feature cache: %s: chunk %d is damaged; recomputing from there", self.folder, good
                )
        if not good:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            return
        self.chunks = chunks[:good]
        rows = self.chunks[-1]["rows"]
        self.files = {
            k: featstore.GrowingArray(self.folder / f"{k}.npy", np.float16, dims[k], rows) for k in self.keys
        }
        self.files["labels"] = featstore.GrowingArray(self.folder / "labels.npy", np.int64, None, rows)
        self._write_progress()

    def _write_progress(self) -> None:
        dims = {k: self.files[k].dim for k in self.keys} if self.files else {}
        write_json(
            self.progress,
            {
                "format": FORMAT,
                "data_key": self.data_key,
                "keys": self.keys,
                "batch": self.batch,  # the rows of a batch: the count of batches done means nothing without it
                "dims": dims,
                "chunks": self.chunks,
            },
        )

    def write(self, feats: dict[str, list[np.ndarray]], labels: list[np.ndarray], batches: int) -> None:
        """Append one chunk to every file, sync them, then record it."""
        if self.files is None:
            self.files = {
                k: featstore.GrowingArray(self.folder / f"{k}.npy", np.float16, feats[k][0].shape[1])
                for k in self.keys
            }
            self.files["labels"] = featstore.GrowingArray(self.folder / "labels.npy", np.int64, None)
        digests = {k: self.files[k].append(feats[k]) for k in self.keys}
        digests["labels"] = self.files["labels"].append(labels)
        for f in self.files.values():
            f.sync()
        self.chunks.append({"batches": batches, "rows": self.files["labels"].rows, "sha256": digests})
        self._write_progress()

    def finish(self, cache_dir: str | Path) -> dict[str, FeatureSet]:
        """Close every file with its final header and move it into the cache with its labels and record."""
        if self.files is None:
            raise ValueError(f"features {self.data_key}: the batch source yielded no images")
        for f in self.files.values():
            f.close(finish=True)
        labels = np.load(self.folder / "labels.npy", allow_pickle=False)
        ends = [c["rows"] for c in self.chunks]
        out = {}
        for k in self.keys:
            dest = cache_path(cache_dir, k, self.data_key)
            labels_dest, record_dest = _companions(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            record_dest.unlink(missing_ok=True)  # no record points at a file being replaced
            os.replace(self.folder / f"{k}.npy", dest)
            with atomic_path(labels_dest) as tmp, open(tmp, "wb") as fh:
                np.save(fh, labels)
            rows = featstore.StoredRows(dest)
            write_json(
                record_dest,
                {
                    "format": FORMAT,
                    "data_key": self.data_key,
                    "member": k,
                    "shape": list(rows.shape),
                    "chunks": ends,
                    "sha256": [c["sha256"][k] for c in self.chunks],
                    "labels_sha256": _digest(labels),
                },
            )
            out[k] = FeatureSet(rows, torch.from_numpy(labels))
        shutil.rmtree(self.folder, ignore_errors=True)
        return out


@torch.no_grad()
def extract(
    members: dict[str, Member],
    batches: Callable[[], Iterable],
    data_key: str,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
    chunk_batches: int = 50,
    desc: str = "features",
    ram_bytes: float | None = None,
) -> dict[str, FeatureSet]:
    """Features of every member on one dataset split, from the cache where present.

    `members` maps a content key (the checkpoint's hash) to the model. The missing members share
    one pass over the data: each batch is decoded once and run through all of them (bf16 on CUDA).
    A chunk is written every `chunk_batches` batches, or sooner when the chunk buffers, half of
    `featstore.ram_budget(ram_bytes)` allocated once and reused, are full.
    """
    devices = node_devices(device)
    out, todo = {}, {}
    for key, m in members.items():
        cached = _load(cache_dir, key, data_key)
        if cached is not None:
            out[key] = cached
        else:
            todo[key] = m.to(devices[0]).eval()
            if devices[0].type == "cuda":
                todo[key] = todo[key].to(memory_format=torch.channels_last)
    if not todo:
        return out
    # every device runs every member on its share of the batches (devices.ordered_map)
    replicas = [todo] + [{k: copy.deepcopy(m).to(d) for k, m in todo.items()} for d in devices[1:]]

    def run(batch: tuple, worker: int) -> tuple[dict[str, np.ndarray], torch.Tensor, int]:
        x, y = batch
        x = x.to(devices[worker], non_blocking=True)
        amp = devices[worker].type == "cuda"
        if amp:  # the layout the inference rate of the resource plan was measured with
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(devices[worker].type, torch.bfloat16, enabled=amp):
            got = {k: m.features(x).float().half().cpu().numpy() for k, m in replicas[worker].items()}
        return got, y, len(x)

    source = iter(tqdm(batches(), desc=desc, unit="batch", leave=False))
    first = next(source, None)
    # a partial extraction resumes by its batch count, so it is kept only for the same batch size (CUDA
    # extracts 1,024 at a time, the CPU 128): another size starts it afresh instead of skipping rows
    size = 0 if first is None else len(first[1])
    partial = _Partial(
        Path(cache_dir) / "partial" / _hash("|".join(sorted(todo)) + data_key), data_key, sorted(todo), size
    )
    flush_bytes = featstore.ram_budget(ram_bytes) // 2
    bufs: dict[str, np.ndarray] = {}  # one chunk buffer per member, filled batch by batch, reused
    labels = np.empty(0, np.int64)
    fill, start, done = 0, partial.batches, partial.batches
    every = itertools.chain([] if first is None else [first], source)
    wanted = (batch for b, batch in enumerate(every) if b >= start)  # earlier ones: in a chunk on disk
    for b, (got, y, rows) in enumerate(ordered_map(run, wanted, devices), start):
        if fill + rows > len(labels):  # the buffers are full: write them out, or make them
            if fill:
                partial.write({k: [v[:fill]] for k, v in bufs.items()}, [labels[:fill]], done)
                fill = 0
            if rows > len(labels):
                cap = max(rows, flush_bytes // (sum(v.shape[1] * 2 for v in got.values()) + 8))
                bufs = {k: np.empty((cap, v.shape[1]), np.float16) for k, v in got.items()}
                labels = np.empty(cap, np.int64)
        for k, v in got.items():
            bufs[k][fill : fill + rows] = v
        labels[fill : fill + rows] = np.asarray(torch.as_tensor(y).cpu(), dtype=np.int64)
        fill, done = fill + rows, b + 1
        if done % chunk_batches == 0:
            partial.write({k: [v[:fill]] for k, v in bufs.items()}, [labels[:fill]], done)
            fill = 0
    if fill:
        partial.write({k: [v[:fill]] for k, v in bufs.items()}, [labels[:fill]], done)
    return out | partial.finish(cache_dir)


def concat(sets: list[FeatureSet]) -> FeatureSet:
    """CATn: its members' features side by side, as a view (`featstore.ConcatRows`) read in blocks."""
    for s in sets[1:]:
        if not torch.equal(s.labels, sets[0].labels):
            raise ValueError("members' cached features were computed on different samples")
    return FeatureSet(featstore.ConcatRows([s.features for s in sets]), sets[0].labels)


def subsample_per_class(fs: FeatureSet, per_class: int, seed: int = 0) -> FeatureSet:
    """The first `per_class` examples of each class under a seeded shuffle (few-shot probes), in RAM."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(fs.labels), generator=g)
    keep = torch.cat([order[fs.labels[order] == c][:per_class] for c in fs.labels.unique()])
    keep = keep.sort().values
    return FeatureSet(fs.features.take(keep), fs.labels[keep])


# ---------------------------------------------------------------- data sources


def cue_batches(
    task: str,
    size: int,
    split: str,
    seed: int,
    weights=None,
    batch: int = 500,
    render: str | None = None,
    ood_render: bool = False,
):
    """A re-iterable batch source for one split of a cue task.

    'mixture' is the pretraining mixture with the given `weights` (the members' own, from their
    recorded recipe); the OOD targets of `richreps.data.ood` are their fixed splits; the other tasks
    are the transfer tasks of `cues.TASKS`. `render` is the renderer preset (the members' own;
    default `cues.DEFAULT_RENDER`). `ood_render`: the OOD targets rendered afresh for seed set `seed`
    (`Recipe.pool_per_seed_set`), not only re-partitioned.
    """
    from richreps.data import cues, ood

    render = render or cues.DEFAULT_RENDER
    if ood.is_ood(task):  # a fixed real dataset: `size` and the renderer do not apply
        x, y = ood.splits(task, seed, seed if ood_render else 0)[split]  # the seed set's own split
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
    ood_render: bool = False,
) -> dict[str, dict[str, dict[str, FeatureSet]]]:
    """features[task][split][member file] for every member, each image run once through all members
    (images drawn with the renderer preset `render`: the members' own; `ood_render`: `cue_batches`')."""
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
                f"ood/{task}/{split}/seed{seed}" + ("/own-render" if ood_render else "")
                if is_ood(task)
                else f"cues-{render}/{task}{mix}/{split}/{n}/seed{seed}"
            )
            got = extract(
                {keys[p]: m for p, m in models.items()},
                cue_batches(task, n, split, seed, weights, render=render, ood_render=ood_render),
                key,
                cache_dir,
                device,
                desc=f"{task} {split}",
            )
            out[task][split] = {p: got[keys[p]] for p in models}
    return out


PROBE_VAL_FRACTION = 0.02  # of a training set, held out to choose the probe's weight decay


def probe_val_fraction(dataset: str, member_paths: list[str | Path]) -> float:
    """The share of `dataset`'s training set that the probe holds out for choosing its weight decay.

    On ImageNet probed by members pretrained on it, their own pretraining hold-out (the recorded recipe's
    `val_fraction`; `build_dataset` splits with the same seed and per-class rule), so that no image that
    chooses the probe's weight decay was trained on: with 2 % against pretraining's 1 %, half of them were.
    Elsewhere (CIFAR, iNat18, members without a recipe such as AlgoPerf's) `PROBE_VAL_FRACTION`."""
    if dataset != "imagenet":
        return PROBE_VAL_FRACTION
    recipes = [member_files.recorded_recipe(p) or {} for p in member_paths]
    held = {r.get("val_fraction") for r in recipes if r.get("data") == "imagenet"}
    if len(held) > 1:
        raise ValueError(
            f"the members held out different shares of ImageNet ({sorted(held)}): no split is clean"
        )
    return held.pop() if held else PROBE_VAL_FRACTION


EXTRACT_BATCH = 1024  # images per batch on CUDA: the batch the resource plan's inference rate was measured at


def extract_batch(device) -> int | None:
    """`EXTRACT_BATCH` where extraction runs on CUDA (with channels_last, as `extract` does there), else the
    CPU's default (None): the setting `resources.INFERENCE_IMAGES_PER_S` was measured at."""
    return EXTRACT_BATCH if node_devices(device)[0].type == "cuda" else None


def folder_batches(
    dataset: str,
    root: str,
    split: str,
    size: int,
    train: bool,
    workers: int | None,
    seed: int = 0,
    val_fraction: float = PROBE_VAL_FRACTION,
    batch: int | None = None,
):
    """A batch source over a real dataset split with the probe's transform (augmented when `train`);
    `val_fraction` of the training set is the validation split (`probe_val_fraction`). `batch`: by default
    256 for CIFAR and 128 otherwise (the CPU's); extraction on CUDA passes `EXTRACT_BATCH`."""
    from richreps.data import build_dataset, probe_transform
    from richreps.data.pipeline import cpu_loader

    ds = build_dataset(dataset, root, split, probe_transform(dataset, train, size), val_fraction=val_fraction)
    batch = batch or (256 if dataset.startswith("cifar") else 128)

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
    held = probe_val_fraction(dataset, member_paths)
    out = {}
    for split in splits:
        part = split if split == "test" else f"{split}-val{held:g}"  # the cache names the split it holds
        got = extract(
            {keys[p]: m for p, m in models.items()},
            folder_batches(
                dataset,
                str(root),
                split,
                image_size,
                False,
                workers,
                val_fraction=held,
                batch=extract_batch(device),
            ),
            f"{dataset}/{Path(root).resolve()}/{part}/eval{image_size}",
            cache_dir,
            device,
            desc=f"{dataset} {split}",
        )
        out[split] = {p: got[keys[p]] for p in models}
    return out
