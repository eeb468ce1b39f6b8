"""Input pipelines: a CPU DataLoader sized from the machine, and a batched JPEG path for CUDA.

With 16 cores, PIL decoding tops out near 410 images/s per core while a compiled ResNet-50
consumes ~6,700 images/s on an H200, so on GPUs the JPEG bytes are decoded by nvjpeg and the
training augmentation runs batch-wise on the device. The same code runs on the CPU (tests, here).
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from richreps.data.folders import CorruptImageError, load_rgb
from richreps.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def local_world_size() -> int:
    """Processes on this node (torchrun and submitit set LOCAL_WORLD_SIZE); 1 without a launcher."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def usable_cores() -> int:
    """The cores this process may run on: under SLURM with per-task binding, only its own task's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(local_processes: int | None = None) -> int:
    """Loader workers per process: the cores it can use, minus one for its main loop, at most 16.

    `os.sched_getaffinity` already counts only this task's cores when SLURM binds each task to its
    own (10 of a node's 80 for one of 8 GPUs: 9 workers), which SLURM_CPUS_PER_TASK confirms. In
    every other case the node's processes share what they see (torchrun on a workstation, a
    container's cpuset smaller than the host, a SLURM job without per-task binding, seen as more
    cores than SLURM_CPUS_PER_TASK), and only the processes on this node count: 4 nodes x 8 GPUs
    still have 8 per node. Dividing when unsure costs workers; not dividing would oversubscribe.
    """
    local_processes = local_world_size() if local_processes is None else local_processes
    cores = usable_cores()
    per_task = int(os.environ.get("SLURM_CPUS_PER_TASK", 0) or 0)
    shared = not (per_task and cores <= per_task)
    share = cores // max(local_processes, 1) if shared else cores
    return max(0, min(16, share - 1))


def cpu_loader(
    dataset,
    batch_size: int,
    sampler=None,
    workers: int | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    collate_fn=None,
) -> torch.utils.data.DataLoader:
    """DataLoader with workers, pinned memory, persistent workers and prefetch."""
    workers = default_workers() if workers is None else workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle and sampler is None,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
        collate_fn=collate_fn,
    )


class JpegBytes(torch.utils.data.Dataset):
    """(encoded JPEG bytes as a uint8 tensor, label, path): workers only read files, never decode."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]):
        path, label = self.samples[key[1] if isinstance(key, tuple) else key]  # (epoch, i) from EpochTagged
        data = Path(path).read_bytes()
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, path


def collate_bytes(batch):
    """(list of encoded images, labels, paths): images of different sizes cannot be stacked."""
    return [b for b, _, _ in batch], torch.tensor([y for _, y, _ in batch]), [p for _, _, p in batch]


class DecodeFallbacks:
    """What the batched device decode could not do, counted per epoch with the reasons, and said.

    A fallback gives the same pixels as the CPU path but is slow: a batch with one unusual file is
    decoded one image at a time, and a file nvjpeg rejects (ImageNet's train set holds a PNG and CMYK
    JPEGs named .JPEG) is decoded by PIL. A few per epoch are expected; many mean the GPU path is not
    running as it should, so the first of each reason is printed when it happens and each epoch's
    counts when it ends (`end_epoch`); `history` keeps them by epoch.
    """

    def __init__(self) -> None:
        self.batches = 0  # batched calls that failed (decoded one image at a time)
        self.pil: Counter[str] = Counter()  # images decoded by PIL, by reason
        self.history: dict[int, dict] = {}

    def batch_failed(self, error: Exception) -> None:
        if not self.batches:
            print(f"[data] batched decode failed ({_reason(error)}): decoding that batch one image at a time",
                  file=sys.stderr)  # fmt: skip
        self.batches += 1

    def used_pil(self, path: str, error: Exception) -> None:
        reason = _reason(error)
        if reason not in self.pil:
            print(f"[data] {path}: decoded by PIL instead of on the device ({reason})", file=sys.stderr)
        self.pil[reason] += 1

    def end_epoch(self, epoch: int) -> dict:
        """This epoch's counts (said when there were any), then zeroed for the next epoch."""
        counts = {
            "batches_one_by_one": self.batches,
            "pil_images": sum(self.pil.values()),
            "pil_reasons": dict(self.pil),
        }
        if self.batches or self.pil:
            why = "; ".join(f"{n} x {r}" for r, n in self.pil.most_common())
            print(f"[data] epoch {epoch}: {counts['pil_images']} images decoded by PIL ({why or 'none'}), "
                  f"{self.batches} batches decoded one image at a time", file=sys.stderr)  # fmt: skip
        self.history[epoch] = counts
        self.batches, self.pil = 0, Counter()
        return counts


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:160]}"


def is_out_of_memory(error: BaseException) -> bool:
    """A device out-of-memory error: never a reason to fall back to another decoder."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def decode_batch(
    encoded: list[torch.Tensor],
    paths: list[str],
    device: torch.device,
    fallbacks: DecodeFallbacks | None = None,
) -> list[torch.Tensor]:
    """RGB uint8 CHW images, decoded in one batched call (nvjpeg on CUDA).

    When the batched call fails, each file is decoded alone; a file `decode_jpeg` rejects (a PNG
    named .JPEG, which ImageNet's train set holds, or a corrupt file) is decoded by PIL exactly as
    the CPU path decodes it, so an image is unreadable on this path iff it is on the CPU path, and
    the corrupt-file policy (`error` raises naming the file; `skip` scanned it out up front) is the same.
    Every fallback is counted in `fallbacks` with its reason; an out-of-memory error is raised, not
    taken for an unusual file.
    """
    fallbacks = fallbacks if fallbacks is not None else DecodeFallbacks()
    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        if is_out_of_memory(e):
            raise
        fallbacks.batch_failed(e)
    images = []
    for data, path in zip(encoded, paths):
        try:
            images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            continue
        except RuntimeError as e:
            if is_out_of_memory(e):
                raise
            fallbacks.used_pil(path, e)
        try:
            rgb = np.asarray(load_rgb(path))
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
            raise CorruptImageError(
                f"{path}: unreadable image ({type(e).__name__}); set corrupt_policy: skip to leave it out"
            ) from None
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).to(device))
    return images


def _crop_box(h: int, w: int, scale, ratio, g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box sampling, with an explicit generator."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
        aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio, generator=g)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    in_ratio = w / h  # fallback: central crop
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        ch, cw = h, round(h * ratio[1])
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class BatchAugment:
    """Decode a list of JPEG byte tensors on `device`, then RandomResizedCrop + flip + normalise
    batch-wise. Decoding happens in one batched call (nvjpeg on CUDA)."""

    def __init__(
        self,
        size: int = 224,
        device: str | torch.device = "cpu",
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        seed: int = 0,
        channels_last: bool = False,
    ):
        self.size, self.device, self.scale, self.ratio = size, torch.device(device), scale, ratio
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.g = torch.Generator().manual_seed(seed)
        self.channels_last = channels_last
        self.fallbacks = DecodeFallbacks()

    def __call__(self, encoded: list[torch.Tensor], paths: list[str] | None = None) -> torch.Tensor:
        images = decode_batch(encoded, paths or ["<bytes>"] * len(encoded), self.device, self.fallbacks)
        out = torch.empty(len(images), 3, self.size, self.size, device=self.device)
        for i, img in enumerate(images):
            top, left, ch, cw = _crop_box(img.shape[1], img.shape[2], self.scale, self.ratio, self.g)
            crop = img[None, :, top : top + ch, left : left + cw].float()
            out[i] = F.interpolate(
                crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )[0]
        flip = (torch.rand(len(images), generator=self.g) < 0.5).to(self.device, non_blocking=True)
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)  # a mask index would sync the host
        out = out.div_(255.0).sub_(self.mean).div_(self.std)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
