"""Out-of-distribution probe targets: real handwriting from outside the cue renderer.

The paper probes ImageNet features on other datasets (iNat18, CIFAR). The cue tasks are new readings of
the pretraining renderer; these two targets are not drawn by it at all, and both ship offline:

- `digits_uci`: scikit-learn's `load_digits`, 1,797 handwritten digits from another source (UCI), 8x8
  with 17 grey levels. Resized to the members' 32x32 input by bilinear interpolation (antialiased,
  `align_corners=False`), grey levels scaled to [0, 1], ink bright on a black background.
- `mnist_plain`: the cue benchmark's transfer-pool MNIST digits (never seen in pretraining) as plain
  images: the 20x20 glyph centred on a black 32x32 canvas, no colour, texture or position cue. The same
  objects in another rendering, as CIFAR is to ImageNet.

Both are grey, replicated to 3 channels, and split once: a fixed stratified train / validation / test split
(scikit-learn's `train_test_split`, seed 0), the same for every run, so the targets are datasets, not samples.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
N_CLASSES = 10
SPLIT_SEED = 0
# test and validation sizes per target; the rest trains the probe (and direct training)
HELD_OUT = {"digits_uci": {"test": 450, "val": 300}, "mnist_plain": {"test": 600, "val": 400}}
TARGETS = tuple(HELD_OUT)


def is_ood(task: str) -> bool:
    return task in HELD_OUT


def _digits_uci() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(0, 1), torch.from_numpy(d.target.astype(np.int64))


def _mnist_plain() -> tuple[torch.Tensor, torch.Tensor]:
    from richreps.data.cues import GLYPH, glyph_pool

    glyphs, labels = glyph_pool("transfer")
    x = torch.zeros(len(glyphs), 1, SIZE, SIZE)
    off = (SIZE - GLYPH) // 2
    x[:, 0, off : off + GLYPH, off : off + GLYPH] = glyphs
    return x, labels.clone()


@lru_cache(maxsize=2)
def splits(task: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train' | 'val' | 'test': (images (N, 3, 32, 32) in [0, 1], labels (N,))}, fixed and stratified."""
    from sklearn.model_selection import train_test_split

    if not is_ood(task):
        raise ValueError(f"unknown OOD target {task!r}; known: {list(TARGETS)}")
    x, y = _digits_uci() if task == "digits_uci" else _mnist_plain()
    idx = np.arange(len(y))
    sizes = HELD_OUT[task]
    rest, test = train_test_split(idx, test_size=sizes["test"], stratify=y, random_state=SPLIT_SEED)
    train, val = train_test_split(rest, test_size=sizes["val"], stratify=y[rest], random_state=SPLIT_SEED)
    out = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        part = torch.from_numpy(np.sort(part))
        out[name] = (x[part].expand(-1, 3, -1, -1).contiguous(), y[part])
    return out
