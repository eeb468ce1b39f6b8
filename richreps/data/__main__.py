"""Check a dataset folder before spending GPU hours on it.

python -m richreps.data check --dataset {imagenet,inat18,cifar10,cifar100,cues} --root PATH
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from richreps.data import DATASETS, DatasetError, index_dataset, scan_images, split_counts
from richreps.data.folders import check_layout, cifar_arrays


def check(dataset: str, root: str | None, val_fraction: float, seed: int) -> list[str]:
    """Lines that describe the dataset: classes, readable images per split, and unreadable files apart
    (they are in no split's count: `skip` leaves them out, `error` refuses a run before step 1)."""
    if dataset == "cues":
        from richreps.data import cues

        glyphs = {p: len(cues.glyph_pool(p)[0]) for p in ("pretrain", "transfer")}
        lines = [f"cues: generated in memory (root is not used); cues {', '.join(cues.CUES)}, 10 values each"]
        lines += [f"  glyph pool {p}: {n} MNIST digits" for p, n in glyphs.items()]
        lines += [
            f"  task {name}: {t.n_classes} classes, label from cue '{t.cue}' ({t.grouping})"
            for name, t in cues.TASKS.items()
        ]
        return lines
    if not root:
        raise DatasetError(f"--root is required for {dataset}")
    check_layout(dataset, root)  # header level, fast: the runner's check of a *_root key
    bad_train, bad_test = [], []
    if dataset in ("cifar10", "cifar100"):
        classes, arrays = cifar_arrays(dataset, root)
        counts = split_counts(arrays["train"][1], val_fraction, seed)
        counts["test"] = len(arrays["test"][1])
    else:
        index = index_dataset(dataset, root)
        classes = index.classes
        good_train, bad_train = scan_images(index.train, "skip", desc="checking train")
        good_test, bad_test = scan_images(index.test, "skip", desc="checking test")
        counts = split_counts(
            np.array([y for _, y in good_train], dtype=np.int64), val_fraction, seed, dataset
        )
        counts["test"] = len(good_test)
        for path in (bad_train + bad_test)[:20]:
            print(f"  unreadable: {path}")
    return [
        f"{dataset}: {len(classes)} classes",
        f"  readable images: train {counts['train']}, val {counts['val']} (stratified {val_fraction:g} of "
        f"train, seed {seed}), test {counts['test']}",
        f"  unreadable files: {len(bad_train) + len(bad_test)} (train {len(bad_train)}, test {len(bad_test)}): "
        "in no count above; corrupt_policy skip leaves them out, error refuses a run before step 1",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m richreps.data", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="index a dataset and report classes, split sizes and unreadable files")
    c.add_argument("--dataset", required=True, choices=DATASETS)
    c.add_argument("--root", default=None)
    c.add_argument("--val-fraction", type=float, default=0.02)
    c.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        for line in check(args.dataset, args.root, args.val_fraction, args.seed):
            print(line)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
