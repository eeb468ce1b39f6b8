"""Issue 29, item 6: the map on each pool's own scale. A pool's budgets, steps and warmup come from its own
pilot plateau (`map_plateaus`), a fresh stream takes the main pool's, every cell holds JOINTn and the
early-stopped controls (each picked among every eighth of the cell's own runs), and the pools and the
ablation run on the main run's first `map_seed_sets` seed sets. The cells' early stops are trained and picked
end to end in tests/test_earlystop.py."""

import json

import pandas as pd
import pytest
import torch
from test_regimes import PARAMS, TINY

from richreps import experiment, planfile, regimes, study, sweep
from richreps.features import FeatureSet

MAP = {**PARAMS, "baseline_steps": 40, "total_steps": 40, "cat_sizes": [2], "seeds": [0, 1], "sweep_budgets": [20, 40],
       "plateau_step": 20, "warmup_steps": 2, "map_pools": [0, 512], "map_plateaus": [0, 10]}  # fmt: skip
RECIPE = TINY.replace(warmup_steps=2)


def test_a_pool_of_half_the_plateau_trains_every_length_halved_and_a_fresh_stream_the_main_pools():
    fresh, half = study.variants(MAP, RECIPE)
    assert [sorted(p.sweep) for p in fresh.plans] == [[20, 40], [20, 40]] and fresh.recipe.warmup_steps == 2
    assert [sorted(p.sweep) for p in half.plans] == [[10, 20], [10, 20]]
    assert half.recipe == RECIPE.replace(train_size=512, warmup_steps=1) and half.plateau == 10
    assert half.changes == {"train_size": 512, "warmup_steps": 1}
    assert half.plans[1].cats == {1: [(100, 20)], 2: [(100, 10), (101, 10)]}
    assert half.plans[0].sweep[10] == {1: [(0, 10)], 2: [(0, 5), (1, 5)]}  # 5 = 5 x its warmup of 1
    lines = study.describe(study.plan_study(MAP, RECIPE))
    assert any("pool of 512: CAT1 and CAT2 at budgets [10, 20] (its own plateau 10: warmup 1), 2 seed sets" in x
               for x in lines)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"map_plateaus": [0]}, "map_plateaus: 1 values for 2 map_pools; give one per pool"),
        (
            {"map_plateaus": [3, 10]},
            "map_plateaus: 3 for the fresh stream .pool 0., which has no plateau; use 0",
        ),
        (
            {"map_plateaus": [0, 5]},
            r"map_plateaus: pool 512's plateau 5 scales warmup_steps 2 by 5/20 to 0.5, not",
        ),
        ({"plateau_step": 0}, "map_plateaus: 10 for pool 512 needs the main pool's plateau_step"),
        ({"map_seed_sets": 3}, "map_seed_sets: 3 is more than seed_sets 2"),
    ],
)
def test_a_pool_scale_that_is_not_whole_steps_is_refused_naming_map_plateaus(change, why):
    with pytest.raises(ValueError, match=why):
        study.variants({**MAP, **change}, RECIPE)


def test_the_pools_and_the_ablation_keep_the_main_runs_first_seed_sets():
    values = {**MAP, "seed_sets": 2, "map_seed_sets": 1, "ablate_label_smoothing": [0.0]}
    st = study.plan_study(values, RECIPE)
    assert len(st.plans) == 2 and [len(v.plans) for v in st.variants] == [1, 1, 1]
    assert st.variants[0].plans[0].cats == st.plans[0].cats  # the ablation: seed set 0's own seeds


def test_a_network_listed_twice_is_fitted_once_and_both_rows_carry_its_numbers(monkeypatch):
    calls = []
    real = experiment.fast_probe

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(experiment, "fast_probe", counting)
    rng = torch.Generator().manual_seed(0)
    feats = {
        "color": {
            s: {"a.pt": fake_split(rng, 30), "b.pt": fake_split(rng, 30)} for s in ("train", "val", "test")
        }
    }
    reps = [experiment.Representation("CAT1-ES", 1, 4, ("a.pt",)), experiment.Representation("WIDE1-ES", 1, 4, ("b.pt",)),
            experiment.Representation("SINGLE-ES", 1, 4, ("a.pt",))]  # fmt: skip
    rows = experiment.probe_rows(reps, feats, ["color"], [0.01], [], 0)
    assert len(calls) == 2 and [r["method"] for r in rows] == ["CAT1-ES", "WIDE1-ES", "SINGLE-ES"]
    strip = [{k: v for k, v in r.items() if k != "method"} for r in rows]
    assert strip[0] == strip[2] != strip[1]


def fake_split(rng: torch.Generator, n: int) -> FeatureSet:
    return FeatureSet(torch.randn(n, 6, generator=rng), torch.arange(n) % 3)


def test_the_map_gives_catmax_minus_every_single_network_in_every_cell():
    rows = []
    for k in range(3):  # hand-worked: JOINT2 1 point under CAT2 in every set, CAT1-ES 2 + k points under
        for method, n, acc in (("CAT1", 1, 0.50), ("CAT2", 2, 0.60), ("JOINT2", 1, 0.59),
                               ("CAT1-ES", 1, 0.58 - 0.01 * k)):  # fmt: skip
            rows.append({"replicate": k, "method": method, "n": n, "task": "color", "shots": "all",
                         "test_acc": acc, "budget": 4})  # fmt: skip
    (row,) = sweep.budget_gains(pd.DataFrame(rows)).to_dict("records")
    assert row["gain vs JOINT2"] == pytest.approx(1.0) and row["low vs JOINT2"] == pytest.approx(1.0)
    assert row["gain vs CAT1-ES"] == pytest.approx(3.0) and row["gain"] == pytest.approx(10.0)
    half = 4.302652729911275  # t(0.975, 2) x sd 1 / sqrt(3) x sqrt(3)
    assert row["low vs CAT1-ES"] == pytest.approx(3.0 - half / 3**0.5)
    table = regimes.table(rows, [], main_pool=256)
    assert regimes.contrasts_in(table) == ["JOINT2", "CAT1-ES", "CAT1"]


def test_a_control_erases_a_gain_where_catmax_beats_cat1_and_not_the_control():
    rows = []
    for budget, joint in ((4, 0.59), (8, 0.50)):  # JOINT2 1 point under CAT2 at 4, 10 under at 8
        for k in range(3):
            for method, n, acc in (("CAT1", 1, 0.50 + 0.01 * k), ("CAT2", 2, 0.60 + 0.01 * k),
                                   ("JOINT2", 1, joint + 0.02 * k)):  # fmt: skip
                rows.append({"replicate": k, "method": method, "n": n, "task": "color", "shots": "all",
                             "test_acc": acc, "budget": budget})  # fmt: skip
    table = regimes.table(rows, [], main_pool=256)
    found = regimes.erasures(table, ["color"])
    assert found.to_dict("records") == [{"control": "JOINT2", "pool": "pool of 256",
                                         "cells with a gain over CAT1": 2, "erased": 1, "where": "color at budget 4"}]  # fmt: skip
    assert regimes.erasure_lines(found) == [
        "- **JOINT2** erases CATmax's gain over CAT1 in 1 of 2 on the pool of 256 (cells: budget x kept target)."
    ]
    assert regimes.erasures(table, [])["control"].tolist() == []


def test_the_plan_file_records_each_change_a_pool_makes_and_refuses_a_pool_of_another_scale(tmp_path):
    st = study.plan_study(MAP, RECIPE)
    planfile.write(tmp_path, st)
    fresh, half = planfile.read_variants(tmp_path, "pool")
    assert half.changes == {"train_size": 512, "warmup_steps": 1} and half.plateau == 10
    assert half.plan.recipe == RECIPE.replace(train_size=512, warmup_steps=1) and half.plan.sweeps[
        0
    ].keys() == {10, 20}
    path = tmp_path / planfile.VARIANTS_FILE
    records = json.loads(path.read_text())
    records[1]["changes"] = {"train_size": 512}  # a record that hides the warmup its pool was trained with
    path.write_text(json.dumps(records))
    with pytest.raises(
        ValueError, match="the pool train_size 512 has recipe .*, not the main run's with train_size 512"
    ):
        planfile.read_variants(tmp_path, "pool")


def test_the_map_compares_pools_at_the_same_place_on_their_own_scales():
    def rows(budgets, pool=None):
        out = []
        for budget in budgets:
            for k in range(3):
                for method, n, acc in (("CAT1", 1, 0.5 + 0.01 * k), ("CAT2", 2, 0.6 + 0.02 * k)):
                    row = {"replicate": k, "method": method, "n": n, "task": "color", "shots": "all",
                           "test_acc": acc, "budget": budget}  # fmt: skip
                    out.append(row if pool is None else {**row, "pool": pool, regimes.MAIN_SCALE: 2 * budget})
        return out

    table = regimes.table(
        rows([4, 8]), rows([2, 4], pool=512), main_pool=1024
    )  # the smaller pool: half the steps
    assert table.set_index(["pool_size", "budget"])[regimes.MAIN_SCALE].to_dict() == {
        (1024, 4): 4, (1024, 8): 8, (512, 2): 4, (512, 4): 8}  # fmt: skip
    (line,) = regimes.map_lines(table, ["color"], "CAT1")
    assert "over 2 pools x 2 budgets x 1 kept targets" in line
    assert "at main-pool budget 4: above 0 in 2, below 0 in 0, 0 inside in 0 of 2" in line


def test_the_early_stop_candidates_are_exported_but_not_probed_along_the_trajectory():
    from richreps import budget

    values = {**MAP, "trajectory_steps": [10], "early_stop_controls": True, "seed_sets": 1}
    (plan,) = budget.plans_from_params(values)
    assert plan.trajectory == [(0, 10)] and plan.candidates == [(0, s) for s in range(5, 41, 5)]
    assert {5, 10, 15, 20, 25, 30, 35, 40} <= set(plan.runs[0].exports)  # every candidate is still exported
    with pytest.raises(ValueError, match="^early_stop_controls: picks among the exports of one run"):
        study.plan_study({**values, "plan_mode": "independent"}, RECIPE)


def test_a_pool_without_a_gain_shows_0_of_0_and_a_pool_without_the_control_says_so():
    def rows(gain, pool=None, joint=True):
        out = []
        for k in range(3):
            for method, n, acc in (("CAT1", 1, 0.5 + 0.01 * k), ("CAT2", 2, 0.5 + gain + 0.02 * k),
                                   *((("JOINT2", 1, 0.5 + gain + 0.03 * k),) if joint else ())):  # fmt: skip
                row = {"replicate": k, "method": method, "n": n, "task": "color", "shots": "all",
                       "test_acc": acc, "budget": 4}  # fmt: skip
                out.append(row if pool is None else {**row, "pool": pool})
        return out

    table = regimes.table(rows(0.1), rows(0.0, pool=0) + rows(0.1, pool=512, joint=False), main_pool=1024)
    found = regimes.erasures(table, ["color"]).set_index("pool")
    assert found.loc["fresh stream", ["cells with a gain over CAT1", "erased"]].tolist() == [0, 0]
    assert found.loc["pool of 1,024", "erased"] == 1 and found.loc["pool of 512", "where"] == "not measured"
    (line,) = regimes.erasure_lines(
        found.reset_index()[["control", "pool", "cells with a gain over CAT1", "erased", "where"]]
    )
    assert "0 of 0 on the fresh stream" in line and "none measured on the pool of 512" in line
