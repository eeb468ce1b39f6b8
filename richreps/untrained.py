"""The untrained twins: every representation's networks as their runs start, before any training.

    reps = add_untrained_controls(reps, plan.recipe, plan.cats, output_dir / "untrained")
    twin = untrained_control("WIDE1", wide_recipe, wide_seed, output_dir / "untrained")

Untrained CAT1 and untrained CATmax are the networks CAT1's run and CATmax's members start from (their own
seeds, step 0); a control's twin is the network its run starts from; JOINTn's towers start from CATmax's
members, so untrained JOINTn is untrained CATmax. Each has its BatchNorm statistics recomputed on
pretraining images, then is probed exactly as the trained ones: the floors of the keep rule, and the
twin that a contrast's untrained gap is measured on (training's share, `richreps.verdicts`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from richreps import members
from richreps.config import Recipe
from richreps.study import Representation


def calibration_images(recipe: Recipe) -> list[torch.Tensor]:
    """Pretraining images for an untrained control's BN statistics (cues); none for ImageNet,
    whose untrained members keep their initial statistics."""
    if recipe.data != "cues":
        return []
    from richreps.data import cues

    return [
        cues.sample_pretrain(256, recipe.cue_weights, seed=10_000 + i, difficulty=recipe.cue_render).images
        for i in range(4)
    ]


def save_untrained(path: str | Path, recipe: Recipe, seed: int) -> Path:
    """An untrained member (the 'random features' control), rewritten unless current for this recipe."""
    from richreps.models import recalibrate_bn

    path = Path(path)
    if members.is_current(path, recipe, seed, 0):
        return path
    model = members.model_for(recipe, 10, seed)
    calib = calibration_images(recipe)
    if calib:
        recalibrate_bn(model, calib)
    return members.save(model.eval(), path, recipe, seed, 0)


def untrained_path(folder: str | Path, recipe: Recipe, seed: int) -> Path:
    """Where the network a run of (recipe, seed) starts from is kept: one folder per recipe."""
    return Path(folder) / recipe.tag() / f"seed{seed}.pt"


def untrained_controls(
    recipe: Recipe, cats: list[dict[int, list[tuple[int, int]]]], folder: str | Path
) -> dict[int, list[Representation]]:
    """Per seed set, untrained CAT1 and untrained CATmax: the networks CAT1's run and CATmax's members start
    from (their own seeds, step 0), BN recomputed on pretraining images: the floors, and each trained
    representation's own twin before training. `richreps.calibrate --params` probes them before any
    member is trained; notebook 04 appends them to the trained representations (`add_untrained_controls`)."""
    out = {}
    for k, by_n in enumerate(cats):
        n_max = max(by_n)
        files = {s: str(save_untrained(untrained_path(folder, recipe, s), recipe, s)) for s, _ in by_n[n_max]}
        cat1 = by_n[1][0][0]
        if cat1 not in files:
            files[cat1] = str(save_untrained(untrained_path(folder, recipe, cat1), recipe, cat1))
        out[k] = [
            Representation("untrained CAT1", 1, 0, (files[cat1],)),
            Representation(f"untrained CAT{n_max}", n_max, 0, tuple(files[s] for s, _ in by_n[n_max])),
        ]
    return out


def add_untrained_controls(
    reps: dict[int, list[Representation]], recipe: Recipe, cats: list[dict], folder: str | Path
) -> dict[int, list[Representation]]:
    """Append untrained CAT1 and untrained CATmax to every seed set (`cats`: the plan file's, per seed set)."""
    controls = untrained_controls(recipe, [cats[k] for k in reps], folder)
    return {k: [*rs, *controls[i]] for i, (k, rs) in enumerate(reps.items())}


def untrained_control(name: str, recipe: Recipe, seed: int, folder: str | Path) -> Representation:
    """The untrained twin of control `name`: the network its run of `seed` starts from (`recipe` is the
    control's), BN recomputed on pretraining images like the other untrained controls. JOINTn's towers
    start from CATmax's members, so its twin is untrained CATmax, bitwise."""
    path = save_untrained(untrained_path(folder, recipe, seed), recipe, seed)
    return Representation(f"untrained {name}", 1, 0, (str(path),))
