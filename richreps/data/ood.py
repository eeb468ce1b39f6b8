"""Out-of-distribution probe targets: real handwriting from outside the cue renderer.

The paper probes ImageNet features on other datasets (iNat18, CIFAR). The cue tasks are new readings of
the pretraining renderer; these two targets are not drawn by it at all, and both ship offline:

- `digits_uci`: scikit-learn's `load_digits`, 1,797 handwritten digits from another source (UCI), 8x8
  with 17 grey levels. Resized to the members' 32x32 input by bilinear interpolation (antialiased,
  `align_corners=False`), grey levels scaled to [0, 1], ink bright on a black background.
- `mnist_plain`: the cue benchmark's transfer-pool MNIST digits (never seen in pretraining) as plain
  images: the 20x20 glyph centred on a black 32x32 canvas, no colour, texture or position cue. The same
  objects in another rendering, as CIFAR is to ImageNet.

Two more are built to be read only by features that were learned, not by random ones (issue 19: the
plain digits above are read at 94-99 % by untrained networks, so they cannot discriminate). Each puts the
digit under a shift that the pretraining renderer never makes:

- `mnist_clutter`: the transfer-pool MNIST glyphs rotated (+-15 degrees), scaled (1.0-1.3) and moved
  anywhere on the canvas, in saturated hues outside the tab10 palette, over clutter: two half-opaque
  fragments of other transfer-pool glyphs in other hues, and a smooth colour field.
- `uci_plasma`: scikit-learn's UCI digits at a random size (14-26 px) and place, drawn dark on a bright
  low-pass noise texture ("plasma"; the renderer only draws gratings), with no colour cue.

Both are rendered once from a fixed seed (`RENDER_SEED`): datasets, not samples.

The first two are grey, replicated to 3 channels, and all are split once: a fixed stratified train / validation / test split
(scikit-learn's `train_test_split`, seed 0), the same for every run, so the targets are datasets, not samples.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from richreps.targets import HELD_OUT, OOD_TARGETS, SATURATED  # noqa: F401  (re-exported)

SIZE = 32
SPLIT_SEED = 0
RENDER_SEED = 20261130
TARGETS = OOD_TARGETS


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


def _hues(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3) fully saturated, full-value colours of random hue: none is a (muted) tab10 colour."""
    h = torch.rand(n, generator=g)[:, None] * 6
    k = (torch.tensor([5.0, 3.0, 1.0]) + h) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _place(
    masks: torch.Tensor, g: torch.Generator, rotate: float, scale: tuple[float, float]
) -> torch.Tensor:
    """Masks (N, 1, s, s) rotated, scaled and moved to a random place on a SIZE x SIZE canvas."""
    n, _, s, _ = masks.shape
    canvas = torch.zeros(n, 1, SIZE, SIZE)
    off = (SIZE - s) // 2
    canvas[:, :, off : off + s, off : off + s] = masks
    angle = (2 * torch.rand(n, generator=g) - 1) * rotate * torch.pi / 180
    zoom = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g)
    # room left to move once scaled (in the [-1, 1] coordinates of affine_grid)
    room = (1 - zoom * s / SIZE).clamp_min(0)
    shift = (2 * torch.rand(n, 2, generator=g) - 1) * room[:, None]
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, -shift[:, 0]], 1), torch.stack([sin, cos, -shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, SIZE, SIZE), align_corners=False)
    return F.grid_sample(canvas, grid, align_corners=False).clamp_(0, 1)


def _smooth_field(n: int, g: torch.Generator, channels: int, cells: int) -> torch.Tensor:
    """(n, channels, SIZE, SIZE) low-pass noise in [0, 1]: uniform noise on a coarse grid, upsampled."""
    coarse = torch.rand(n, channels, cells, cells, generator=g)
    return F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp_(0, 1)


def _mnist_clutter(render: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from richreps.data.cues import glyph_pool

    glyphs, labels = glyph_pool("transfer")
    n, g = len(glyphs), torch.Generator().manual_seed(RENDER_SEED + 1_000 * render)
    img = 0.35 + 0.3 * _smooth_field(n, g, 3, 4)
    for _ in range(2):  # fragments of other glyphs: a random 8x8 crop of a random glyph, half opaque
        other = glyphs[torch.randint(n, (n,), generator=g)]
        y0, x0 = torch.randint(2, 11, (2,), generator=g).tolist()
        frag = torch.zeros(n, 1, 20, 20)
        frag[:, :, 6:14, 6:14] = other[:, None, y0 : y0 + 8, x0 : x0 + 8]
        mask = 0.5 * _place(frag, g, 180.0, (0.8, 1.0))
        img = torch.lerp(img, _hues(n, g)[:, :, None, None].expand_as(img), mask)
    mask = _place(glyphs[:, None], g, 15.0, (1.0, 1.3))
    img = torch.lerp(img, _hues(n, g)[:, :, None, None].expand_as(img), mask)
    return img.add_(0.05 * torch.randn(img.shape, generator=g)).clamp_(0, 1), labels.clone()


def _uci_plasma(render: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits_uci()
    n, g = len(y), torch.Generator().manual_seed(RENDER_SEED + 1 + 1_000 * render)
    field = 0.55 + 0.45 * _smooth_field(n, g, 1, 8)
    mask = _place(x, g, 0.0, (14 / SIZE, 26 / SIZE))
    img = field * (1 - 0.85 * mask)  # dark ink on a bright texture
    img = img.expand(-1, 3, -1, -1) + 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return img.clamp_(0, 1), y


_BUILDERS = {
    "digits_uci": _digits_uci,
    "mnist_plain": _mnist_plain,
    "mnist_clutter": _mnist_clutter,
    "uci_plasma": _uci_plasma,
}


RENDERED = ("mnist_clutter", "uci_plasma")  # drawn with random placement and clutter: a render per seed set


@lru_cache(maxsize=8)
def images(task: str, render: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a target's images (N, C, 32, 32) and labels, before any split (rendered once per `render`).

    `render` k > 0 draws the rendered targets' placement, clutter and texture afresh (seed set k's own
    images, `Recipe.pool_per_seed_set`); the plain ones (digits_uci, mnist_plain) are the same images."""
    if not is_ood(task):
        raise ValueError(f"unknown OOD target {task!r}; known: {list(TARGETS)}")
    return _BUILDERS[task](render) if task in RENDERED else _BUILDERS[task]()


@lru_cache(maxsize=16)
def splits(
    task: str, seed: int = SPLIT_SEED, render: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train' | 'val' | 'test': (images (N, 3, 32, 32) in [0, 1], labels (N,))}, stratified.

    `seed` draws the partition of the images of `render` (`images`). The probes of seed set k and direct
    training scored for seed set k (`Recipe.data_seed` k) use seed k, so that each seed set has its own probe
    sample and direct training never sees that sample's test images."""
    from sklearn.model_selection import train_test_split

    if not is_ood(task):
        raise ValueError(f"unknown OOD target {task!r}; known: {list(TARGETS)}")
    x, y = images(task, render)
    idx = np.arange(len(y))
    sizes = HELD_OUT[task]
    rest, test = train_test_split(idx, test_size=sizes["test"], stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=sizes["val"], stratify=y[rest], random_state=seed)
    out = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        part = torch.from_numpy(np.sort(part))
        out[name] = (x[part].expand(-1, 3, -1, -1).contiguous(), y[part])  # grey or colour
    return out
