"""Datasets: real ImageNet / iNat18 / CIFAR loaders, splits, samplers, and the multi-cue benchmark.

    ds = build_dataset("cifar100", root, split="val", transform=probe_transform("cifar100", False))

Splits: `train` and `val` are a deterministic stratified split of the official training set;
`test` is the official test (ImageNet val, iNat18 val2018.json, CIFAR test). Model selection
uses `val`, never `test`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from richreps.data.folders import (
    POLICIES,
    ArrayDataset,
    CorruptImageError,
    DatasetError,
    FileDataset,
    ImageIndex,
    cifar_arrays,
    imagenet_index,
    inat18_index,
    scan_images,
    stratified_split,
)
from richreps.data.transforms import pretrain_transform, probe_transform

DATASETS = ("imagenet", "inat18", "cifar10", "cifar100", "cues")
SPLITS = ("train", "val", "test")

__all__ = [
    "DATASETS",
    "SPLITS",
    "POLICIES",
    "DatasetError",
    "CorruptImageError",
    "ImageIndex",
    "build_dataset",
    "index_dataset",
    "shared_index",
    "stratified_split",
    "probe_transform",
    "pretrain_transform",
    "scan_images",
]


def index_dataset(name: str, root: str | Path) -> ImageIndex:
    """The file index of a folder dataset (imagenet, inat18)."""
    if name == "imagenet":
        return imagenet_index(root)
    if name == "inat18":
        return inat18_index(root)
    raise ValueError(f"dataset {name!r} has no file index; folder datasets are imagenet and inat18")


def shared_index(name: str, root: str | Path, rank: int = 0, world: int = 1) -> ImageIndex:
    """The file index of a start, listed once by rank 0 and broadcast to the other ranks, so that N
    processes do not each list (and stat) 1.28M files. A listing error on rank 0 is raised on every rank."""
    import torch.distributed as dist

    index: ImageIndex | DatasetError | None = None
    if rank == 0:
        try:
            index = index_dataset(name, root)
        except DatasetError as e:
            index = e
    if world > 1:
        box = [index]
        dist.broadcast_object_list(box, src=0)
        index = box[0]
    if isinstance(index, DatasetError):
        raise DatasetError(str(index))
    return index


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    transform: Callable | None = None,
    val_fraction: float = 0.02,
    seed: int = 0,
    corrupt_policy: str = "error",
    scan: bool | None = None,
    index: ImageIndex | None = None,
) -> torch.utils.data.Dataset:
    """One split of a real dataset, ready for a DataLoader.

    `scan` opens every file first (default: only under the `skip` policy, where it is needed to
    know what to leave out); under `error` an unreadable file otherwise stops the run when it is
    first decoded, with its path. `index`: the folder's index when already built, so that two
    splits of 1.28M files are listed once.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if corrupt_policy not in POLICIES:
        raise ValueError(f"corrupt_policy must be one of {POLICIES}, got {corrupt_policy!r}")
    if name in ("cifar10", "cifar100"):
        _, arrays = cifar_arrays(name, root)
        x, y = arrays["test" if split == "test" else "train"]
        if split != "test":
            tr, va = stratified_split(y, val_fraction, seed)
            keep = tr if split == "train" else va
            x, y = x[keep], y[keep]
        return ArrayDataset(x, y, transform)
    index = index if index is not None else index_dataset(name, root)
    samples = index.test if split == "test" else index.train
    if split != "test":
        tr, va = stratified_split(index.labels("train"), val_fraction, seed, one_per_class=name != "inat18")
        samples = [samples[i] for i in (tr if split == "train" else va)]
    if scan or (scan is None and corrupt_policy == "skip"):
        samples, _ = scan_images(samples, corrupt_policy, desc=f"checking {name}/{split}")
    ds = FileDataset(samples, transform)
    ds.classes = index.classes
    return ds


def split_counts(labels: np.ndarray, val_fraction: float, seed: int, dataset: str = "") -> dict[str, int]:
    """How many training images `build_dataset` keeps for train and for val (iNat18 by its share alone)."""
    tr, va = stratified_split(labels, val_fraction, seed, one_per_class=dataset != "inat18")
    return {"train": len(tr), "val": len(va)}
