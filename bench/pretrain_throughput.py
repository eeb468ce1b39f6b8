"""Training-step images/s fed by the real input pipeline vs by synthetic tensors already on the device.

    python -m bench.pretrain_throughput [--arch resnet50] [--size 224] [--batch 256] [--compile]

Both measurements run in this process on the same model and optimizer (schedule-free AdamW); the
figure is their ratio (goal on one H100/H200: >= 0.95), plus the absolute rate. On CUDA the model
runs in bf16 with channels_last, and the real pipeline decodes JPEGs with nvjpeg and augments on
the GPU; on the CPU it uses the DataLoader with PIL.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from schedulefree import AdamWScheduleFree

from bench.common import imagenet_like_folder, rate
from richreps.data import build_dataset, index_dataset, pretrain_transform
from richreps.data.pipeline import BatchAugment, JpegBytes, collate_bytes, cpu_loader, default_workers
from richreps.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n", type=int, default=512, help="JPEGs in the generated folder")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    root = imagenet_like_folder(Path(args.workdir or tempfile.mkdtemp(prefix="richreps_bench_")), args.n)

    model = build_model(args.arch, 1000).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = AdamWScheduleFree(model.parameters(), lr=0.0025, betas=(0.9, 0.99552), weight_decay=0.0812)
    opt.train()
    model.train()
    step_model = torch.compile(model) if args.compile else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)

    def step(x, y) -> int:
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            loss = loss_fn(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return len(y)

    x_syn = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if cuda:
        x_syn = x_syn.contiguous(memory_format=torch.channels_last)
    y_syn = torch.randint(1000, (args.batch,), device=device)
    synthetic = rate(lambda: step(x_syn, y_syn), args.seconds, warmup=3)

    if cuda:
        samples = index_dataset("imagenet", root).train
        loader = cpu_loader(
            JpegBytes(samples),
            args.batch,
            workers=default_workers(),
            shuffle=True,
            drop_last=True,
            collate_fn=collate_bytes,
        )
        aug = BatchAugment(args.size, device=device, channels_last=True)

        def batches():
            while True:
                for enc, y in loader:
                    yield aug(enc), y.to(device, non_blocking=True)
    else:
        ds = build_dataset("imagenet", root, "train", pretrain_transform(True, args.size), val_fraction=0.01)
        loader = cpu_loader(ds, args.batch, workers=default_workers(), shuffle=True, drop_last=True)

        def batches():
            while True:
                yield from loader

    it = batches()
    real = rate(lambda: step(*next(it)), args.seconds, warmup=2)
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(
        f"{args.arch} {args.size}px batch {args.batch} on {name}{' (compiled)' if args.compile else ''}; "
        f"loader workers {default_workers()}"
    )
    print(f"synthetic tensors on the device: {synthetic:,.0f} images/s")
    print(f"real input pipeline:             {real:,.0f} images/s")
    print(f"ratio real / synthetic:          {real / synthetic:.3f}")


if __name__ == "__main__":
    main()
