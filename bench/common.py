"""Helpers shared by the benchmarks: a generated JPEG folder and a timing loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def imagenet_like_folder(root: Path, n: int, classes: int = 4, seed: int = 0) -> Path:
    """ImageFolder of JPEGs with ImageNet-like sizes (about 400x350, about 110 KB each)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        split = "val" if i % 8 == 0 else "train"
        path = root / split / f"n{i % classes:08d}" / f"img_{i}.JPEG"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(360, 440)), int(rng.integers(310, 390))
        # smooth colour field plus texture noise: compresses like a photograph, not like white noise
        base = rng.random((h // 16 + 1, w // 16 + 1, 3)) * 255
        img = np.kron(base, np.ones((16, 16, 1)))[:h, :w] + rng.normal(0, 34, (h, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=95)
    return root


def rate(fn: Callable[[], int], min_seconds: float = 3.0, warmup: int = 1) -> float:
    """Items per second of fn (which returns how many items it processed), after warm-up calls."""
    for _ in range(warmup):
        fn()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        done += fn()
    return done / (time.perf_counter() - start)
