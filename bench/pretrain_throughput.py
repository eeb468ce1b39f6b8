"""Images/s of `richreps.pretrain`'s own training step, fed by its real ImageNet stream vs by a fixed batch on the device.

    python -m bench.pretrain_throughput [--arch resnet50] [--size 224] [--batch 256] [--decode cpu gpu] [--compile]

The trainer is built by `pretrain.build` and `pretrain.wrap` from a generated ImageFolder and the timed
call is `pretrain.train_step`, the step `richreps.pretrain` loops over, so the figures are that loop's.
All measurements run in this process on one trainer: a synthetic stream that returns one batch
already on the device, then, per decode path, the stream `make_data` gives it (`--decode cpu`: PIL in
loader workers; `gpu`: batched decode + augmentation on the device, nvjpeg on CUDA, made ahead in a
thread; `gpu_inline`: the same decode between steps, `--prefetch 0`, the baseline of the overlap). The figure is
the ratio real / synthetic (goal on one H100/H200 with `--decode gpu`: >= 0.95), plus the absolute rates. On CUDA the
step runs in bf16 with channels_last, as in training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench.common import imagenet_like_folder, rate
from richreps import pretrain
from richreps.data.pipeline import default_workers
from richreps.data.prefetch import Prefetcher
from richreps.data.streams import make_data


class FixedBatch:
    """The stream interface over one batch already on the device: the step without any input cost."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def trainer_for(root: Path, args: argparse.Namespace, decode: str) -> pretrain.Trainer:
    flags = ["--out", str(root / "unused"), "--steps", "1", "--data", "imagenet", "--data-root", str(root)]
    flags += ["--arch", args.arch, "--image-size", str(args.size), "--global-batch", str(args.batch)]
    flags += ["--decode", decode, *(["--workers", str(args.workers)] if args.workers is not None else [])]
    run_args = pretrain.parse_args(flags + (["--compile"] if args.compile else []))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t = pretrain.build(run_args, rank=0, world=1, device=device)
    pretrain.wrap(t, run_args.compile)
    return t


def trainer_stream(t: pretrain.Trainer, decode: str, workers: int | None, prefetch: int | None = None):
    """The training stream `richreps.pretrain` builds for a decode path (same recipe and seed), made
    ahead by its `Prefetcher` as `pretrain.build` does unless `prefetch` says otherwise (0: inline)."""
    micro = t.recipe.micro_batch or t.recipe.global_batch
    stream = make_data(t.recipe, 0, 0, 1, t.device, micro, workers, decode)[0]
    depth = pretrain.prefetch_depth(argparse.Namespace(prefetch=prefetch), decode)
    return Prefetcher(stream, depth, t.device) if depth else stream


def close(stream) -> None:
    if isinstance(stream, Prefetcher):
        stream.close()


def measure(t: pretrain.Trainer, seconds: float, warmup: int) -> float:
    def step() -> int:
        pretrain.train_step(t)
        if t.device.type == "cuda":
            torch.cuda.synchronize()
        return t.recipe.global_batch

    return rate(step, seconds, warmup)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--decode", nargs="+", choices=("cpu", "gpu"), default=["cpu", "gpu"])
    ap.add_argument("--n", type=int, default=512, help="JPEGs in the generated folder")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: from the cores)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, loader start)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    root = imagenet_like_folder(Path(args.workdir or tempfile.mkdtemp(prefix="richreps_bench_")), args.n)
    cuda = torch.cuda.is_available()
    card = torch.cuda.get_device_name() if cuda else "CPU"
    results = {"device": card, "torch": torch.__version__, "arch": args.arch, "size": args.size,
               "batch": args.batch, "compiled": args.compile, "workers": args.workers if args.workers is not None else default_workers()}  # fmt: skip
    print(f"{args.arch} {args.size}px batch {args.batch} on {card}, torch {torch.__version__}"
          f"{' (compiled)' if args.compile else ''}; loader workers {results['workers']}")  # fmt: skip
    t = trainer_for(root, args, args.decode[0])  # one model (compiled once) for every decode path
    x, y = t.stream.next()
    real_stream, t.stream = t.stream, FixedBatch(x.to(t.device), y.to(t.device))
    synthetic = measure(t, args.seconds, args.warmup)
    results["synthetic_images_per_s"] = round(synthetic, 1)
    print(f"synthetic batch on the device:        {synthetic:10,.0f} images/s")
    close(real_stream)
    # each path as pretrain runs it; `gpu_inline` is --decode gpu with --prefetch 0 (decode between steps)
    paths = [(d, None) for d in args.decode] + ([("gpu_inline", 0)] if "gpu" in args.decode else [])
    for name, prefetch in paths:
        t.stream = trainer_stream(t, name.removesuffix("_inline"), args.workers, prefetch)
        real = measure(t, args.seconds, args.warmup)
        close(t.stream)
        results[f"real_{name}_images_per_s"] = round(real, 1)
        results[f"ratio_{name}"] = round(real / synthetic, 3)
        print(
            f"real stream, --decode {name}:  {real:10,.0f} images/s  ratio real/synthetic {real / synthetic:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
