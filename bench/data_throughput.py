"""Images/s of decode + training augmentation for each input path, as ratios to PIL in one process.

    python -m bench.data_throughput [--n 256] [--size 224] [--batch 64]

Paths: PIL in the main process (the baseline); the CPU DataLoader with workers sized from the
core count; batched torchvision.io decode + batch-wise augmentation on the CPU; the same on CUDA
(nvjpeg) where a GPU exists; and the multi-cue benchmark's generator.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

import torch

from bench.common import imagenet_like_folder, rate
from richreps.data import build_dataset, cues, pretrain_transform
from richreps.data.pipeline import BatchAugment, JpegBytes, collate_bytes, cpu_loader, default_workers


def forever(loader):
    """Re-iterate a loader every epoch (itertools.cycle would replay cached batches)."""
    while True:
        yield from loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="JPEGs to generate")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workdir", default=None, help="where to write the JPEG folder (default: a temp dir)")
    args = ap.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="richreps_bench_"))
    imagenet_like_folder(root, args.n)
    ds = build_dataset(
        "imagenet", root, "train", transform=pretrain_transform(True, args.size), val_fraction=0.01
    )
    sizes = [os.path.getsize(p) for p, _ in ds.samples]
    print(
        f"{len(ds)} JPEGs, mean {sum(sizes) / len(sizes) / 1e3:.0f} KB; cores {os.cpu_count()}; "
        f"torch {torch.__version__}; size {args.size}, batch {args.batch}"
    )

    order = itertools.cycle(range(len(ds)))

    def pil_batch() -> int:
        for _ in range(args.batch):
            ds[next(order)]
        return args.batch

    results = {"PIL, main process (baseline)": rate(pil_batch, args.seconds)}

    workers = default_workers()
    if workers > 0:
        loader = cpu_loader(ds, args.batch, workers=workers, shuffle=True, drop_last=True)
        it = forever(loader)
        results[f"PIL, DataLoader x{workers} workers"] = rate(
            lambda: len(next(it)[1]), args.seconds, warmup=2
        )

    raw = cpu_loader(
        JpegBytes(ds.samples), args.batch, workers=0, shuffle=True, drop_last=True, collate_fn=collate_bytes
    )
    batches = [b for b, _ in itertools.islice(raw, 4)]
    aug = BatchAugment(size=args.size, device="cpu")
    cyc = itertools.cycle(batches)
    results["torchvision.io decode + batch augment, CPU"] = rate(
        lambda: aug(next(cyc)).shape[0], args.seconds
    )

    if torch.cuda.is_available():
        gpu = BatchAugment(size=args.size, device="cuda", channels_last=True)

        def gpu_batch() -> int:
            out = gpu(next(cyc))
            torch.cuda.synchronize()
            return out.shape[0]

        results[f"nvjpeg decode + batch augment, {torch.cuda.get_device_name()}"] = rate(
            gpu_batch, args.seconds
        )

    results["multi-cue generator, 32 px (CPU)"] = rate(
        lambda: len(cues.sample_pretrain(10_000, [1, 1, 1, 1], seed=0).labels), args.seconds
    )

    base = results["PIL, main process (baseline)"]
    print(f"{'path':<55} {'images/s':>10} {'x baseline':>10}")
    for name, r in results.items():
        print(f"{name:<55} {r:>10.0f} {r / base:>10.2f}")


if __name__ == "__main__":
    main()
