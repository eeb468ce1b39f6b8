"""Images/s of each ImageNet input path `richreps.pretrain` can use, as ratios to PIL in one process.

    python -m bench.data_throughput [--n 256] [--size 224] [--batch 64]

Every path timed is the product's own: the training dataset's `__getitem__` in the main process (PIL
decode + the reference transforms; the baseline), and the stream `richreps.data.streams.make_data`
returns for `--decode cpu` (PIL in DataLoader workers, sized from the core count) and `--decode gpu`
(bytes from the workers, batched decode + augmentation on the device: the CPU here, nvjpeg on CUDA
where a GPU exists). The multi-cue benchmark's generator is timed for comparison.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

import torch

from bench.common import imagenet_like_folder, rate
from richreps.config import Recipe
from richreps.data import cues
from richreps.data.pipeline import default_workers
from richreps.data.streams import make_data


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="JPEGs to generate")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workdir", default=None, help="where to write the JPEG folder (default: a temp dir)")
    args = ap.parse_args(argv)

    root = imagenet_like_folder(Path(args.workdir or tempfile.mkdtemp(prefix="richreps_bench_")), args.n)
    recipe = Recipe(data="imagenet", data_root=str(root), image_size=args.size, global_batch=args.batch)
    cpu = torch.device("cpu")

    def stream(decode: str, device: torch.device, workers: int | None = None):
        return make_data(recipe, 0, 0, 1, device, args.batch, workers, decode)[0]

    dataset = stream("cpu", cpu, 0).dataset  # the training dataset, augmentation seeded per sample
    sizes = [os.path.getsize(p) for p, _ in dataset.base.samples]
    print(
        f"{len(dataset)} JPEGs, mean {sum(sizes) / len(sizes) / 1e3:.0f} KB; cores {os.cpu_count()}; "
        f"torch {torch.__version__}; size {args.size}, batch {args.batch}"
    )
    order = itertools.cycle(range(len(dataset)))

    def pil_batch() -> int:
        for _ in range(args.batch):
            dataset[next(order)]
        return args.batch

    results = {"PIL dataset, main process (baseline)": rate(pil_batch, args.seconds)}
    workers = default_workers()
    paths = [("cpu", cpu, f"--decode cpu stream: PIL, DataLoader x{workers} workers")]
    paths.append(("gpu", cpu, f"--decode gpu stream on the CPU: batched decode, x{workers} readers"))
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        paths.append(("gpu", torch.device("cuda"), f"--decode gpu stream: nvjpeg on {name}"))
    for decode, device, label in paths:
        s = stream(decode, device)

        def batch(s=s, device=device) -> int:
            x, _ = s.next()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return len(x)

        results[label] = rate(batch, args.seconds, warmup=2)

    results["multi-cue generator, 32 px (CPU)"] = rate(
        lambda: len(cues.sample_pretrain(10_000, [1, 1, 1, 1], seed=0).labels), args.seconds
    )
    base = results["PIL dataset, main process (baseline)"]
    print(f"{'path':<62} {'images/s':>10} {'x baseline':>10}")
    for name, r in results.items():
        print(f"{name:<62} {r:>10.0f} {r / base:>10.2f}")
    return results


if __name__ == "__main__":
    main()
