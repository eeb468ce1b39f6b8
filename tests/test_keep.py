"""Issue 29, items 4, 5 and 8: the revised plan's keep rules, the pool per seed set, and the margin of the
direct-versus-probe comparison, each branch on a hand-made case (no experimental outcome asserted)."""

import json
import math

import pandas as pd
import pytest
import torch

from richreps import features, keep, verdicts
from richreps.config import Recipe
from richreps.data import ood
from richreps.data.streams import cue_splits
from richreps.targets import IID


def curve(*accs: float) -> str:
    return json.dumps({str(100 * (i + 1)): a for i, a in enumerate(accs)})


def test_the_plateau_is_judged_on_the_seed_mean_curve_within_one_point():
    # two of three seeds score their best at the last export, by about one image of 300: plateaued
    flat = [curve(0.60, 0.700, 0.703), curve(0.61, 0.705, 0.708), curve(0.62, 0.710, 0.705)]
    assert keep.seed_mean_plateaued(flat)
    rising = [curve(0.50, 0.60, 0.64), curve(0.52, 0.61, 0.63), curve(0.51, 0.60, 0.62)]
    assert not keep.seed_mean_plateaued(rising)  # the mean still rises by 2.7 points at the last export
    falling = [curve(0.50, 0.70, 0.60)] * 3
    assert keep.seed_mean_plateaued(falling)


def test_the_mixture_is_judged_at_cat1s_best_pretraining_validation_export():
    row = {
        "ceiling": 0.80,
        "chance": 0.1,
        "trained CAT1": 0.55,
        "trained CAT1-ES": 0.62,
        "ceiling seeds": math.nan,
    }
    kept, why = keep._keep(IID, 0.2, row, True)  # 0.62 >= 0.75 x 0.80 = 0.60: CAT1-ES learned it
    assert kept, why
    kept, why = keep._keep(IID, 0.2, {**row, "trained CAT1-ES": math.nan}, True)  # version 1: CAT1 at its end
    assert not kept and "CAT1 below 75%" in why
    kept, why = keep._keep(IID, 0.2, {**row, "trained CAT1-ES": 0.59}, True)
    assert not kept and "CAT1-ES below 75%" in why


def test_the_calibration_takes_the_seed_mean_plateau_where_the_curves_were_recorded():
    rows = [
        {"replicate": k, "method": "direct training", "task": "t", "shots": "all", "test_acc": 0.9, "chance": 0.1,
         "n": 1, "plateaued": k != 0, "val curve": c}
        for k, c in enumerate([curve(0.60, 0.700, 0.703), curve(0.61, 0.705, 0.708), curve(0.62, 0.710, 0.705)])
    ]  # fmt: skip
    rows += [
        {"replicate": k, "method": m, "task": "t", "shots": "all", "test_acc": 0.3, "chance": 0.1, "n": n}
        for k in range(3)
        for m, n in (("CAT1 (baseline)", 1), ("CAT2", 2), ("untrained CAT1", 1), ("untrained CAT2", 2))
    ]
    calib = keep.calibration(pd.DataFrame(rows))
    assert bool(calib.loc["t", "plateaued"]) and bool(calib.loc["t", "kept"])
    calib = keep.calibration(pd.DataFrame(rows).drop(columns=["val curve"]))  # version 1's rule, seed by seed
    assert not bool(calib.loc["t", "plateaued"]) and not bool(calib.loc["t", "kept"])


def test_a_direct_versus_probe_gap_agrees_with_the_paper_only_within_the_stated_margin():
    assert (
        verdicts.direct_gap_agrees(0.0)
        and verdicts.direct_gap_agrees(7.5)
        and verdicts.direct_gap_agrees(12.0)
    )
    assert not verdicts.direct_gap_agrees(-0.1) and not verdicts.direct_gap_agrees(48.8)


def test_each_seed_set_draws_its_own_pool_and_every_run_of_a_set_shares_it():
    r = Recipe(width=4, train_size=64, val_size=16, pool_per_seed_set=True)

    def pool(seed: int, recipe: Recipe = r) -> torch.Tensor:
        return cue_splits(recipe, "cpu", seed)["train"].images

    assert torch.equal(pool(0), pool(4)) and torch.equal(pool(0), pool(50))  # members and WIDE1 of set 0
    assert torch.equal(pool(100), pool(160)) and not torch.equal(pool(0), pool(100))  # set 1: its own pool
    shared = r.replace(pool_per_seed_set=False)
    assert torch.equal(pool(0, shared), pool(100, shared))  # version 1: one pool for every seed set


def test_each_seed_set_probes_its_own_rendering_of_the_ood_targets():
    def test_images(k: int, own: bool) -> torch.Tensor:
        return torch.cat([x for x, _ in features.cue_batches("uci_plasma", 0, "test", k, ood_render=own)()])

    assert torch.equal(test_images(1, True), test_images(1, True))  # the same within a seed set
    a, b = ood.images("uci_plasma", 1)[0], ood.images("uci_plasma", 2)[0]
    assert a.shape == b.shape and not torch.equal(a, b)  # drawn afresh, not re-partitioned
    assert torch.equal(ood.images("uci_plasma", 0)[0], ood.images("uci_plasma")[0])  # version 1's images


def test_a_seed_set_whose_runs_would_draw_another_sets_pool_is_refused_naming_seeds():
    from test_controls import TINY, VALUES

    from richreps import study

    with pytest.raises(
        ValueError, match=r"^seeds: pool_per_seed_set draws seed set 0's pool from seed // 100"
    ):
        study.plan_study(
            {**VALUES, "seeds": [60, 61], "wide_control": True}, TINY.replace(pool_per_seed_set=True)
        )
    study.plan_study({**VALUES, "seeds": [0, 1], "wide_control": True}, TINY.replace(pool_per_seed_set=True))
