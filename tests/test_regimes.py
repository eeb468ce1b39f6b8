"""The map of regimes (issue 19): notebook 03 repeats the budget sweep on other pretraining pools (a fresh
stream among them), notebook 04 probes every pool's sweep and draws one figure per contrast, one panel
per pool."""

import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest

from richreps import launch, params, planfile, regimes, report, study
from richreps.config import Recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = Recipe(width=4, global_batch=16, train_size=256, val_size=64, bn_batches=1, warmup_steps=0)
PARAMS = {  # notebook 03's values that the plans read
    "total_steps": 8, "baseline_steps": 5, "cat_sizes": [2, 4], "plan_mode": "shared-prefix",
    "seeds": [0, 1, 2, 3], "seed_sets": 2, "warmup_steps": 0, "sweep_budgets": [5, 10], "trajectory_steps": [2],
}  # fmt: skip


def test_a_pool_changes_only_the_pretraining_set_and_keeps_the_main_seeds_and_sweep():
    fresh, big = study.variants({**PARAMS, "map_pools": [0, 512], "wide_control": True}, TINY)
    assert fresh.recipe == TINY.replace(train_size=0) and big.recipe == TINY.replace(train_size=512)
    assert big.controls[0].recipe == big.recipe.replace(last_mult=4) and fresh.folder == "pool-0"
    assert [sorted(p.sweep) for p in fresh.plans] == [[5, 10], [5, 10]]
    assert fresh.plans[1].sweep[10][4] == [(100, 4), (101, 4), (102, 4), (103, 4)]  # the main plan's seeds
    assert set(fresh.plans[0].cats) == {1, 4} and not fresh.plans[0].trajectory
    assert [sorted(p.sweep) for p in fresh.controls[0].plans] == [[5, 10], [5, 10]]
    assert regimes.pool_name(0) == "fresh stream" and regimes.pool_name(5000) == "pool of 5,000"


@pytest.mark.parametrize(
    ("sizes", "change", "why"),
    [
        ([256], {}, "lists a size twice or train_size 256 itself"),
        ([0, 0], {}, "lists a size twice"),
        ([8], {}, "a pool must hold at least one batch"),
        ([0], {"sweep_budgets": []}, "the map is the budget sweep on each pool, and no sweep budget is left"),
        ([0], {"sweep_budgets": [3], "warmup_steps": 1}, "the map is .* no sweep budget is left .left out"),
    ],
)
def test_a_pool_notebook_03_could_not_train_is_refused_naming_map_pools(sizes, change, why):
    recipe = TINY.replace(warmup_steps=change.get("warmup_steps", 0))
    with pytest.raises(ValueError, match=f"map_pools {re.escape(str(sizes))}: {why}"):
        study.variants({**PARAMS, **change, "map_pools": sizes}, recipe)


def test_the_runner_refuses_a_bad_pool_in_a_params_file_before_any_notebook_runs():
    values = {}
    for nb in sorted((ROOT / "notebooks").glob("0[34]_*.ipynb")):
        values.update(params.defaults(params.declared_parameters(nb)))
    assert params.cross_key_errors({**values, "map_pools": [500]}) == []
    (err,) = params.cross_key_errors({**values, "map_pools": [0]})  # smoke's train_size is 0: a fresh stream
    assert err.startswith("key map_pools [0]: lists a size twice or train_size 0 itself")
    (err,) = params.cross_key_errors({**values, "map_pools": [500], "pretrain_data": "imagenet"})
    assert "pools resize the cue-image pretraining set" in err


def test_notebook_03_trains_each_pool_and_notebook_04_probes_its_sweep_with_the_pool_named(tmp_path):
    values = {
        **PARAMS,
        "seed_sets": 1,
        "cat_sizes": [2],
        "seeds": [0, 1],
        "map_pools": [0],
        "wide_control": True,
    }
    st = study.plan_study(values, TINY)
    planfile.write(tmp_path, st)  # the main run's plan and its pools
    for folder, recipe, plans in st.trained():
        if folder == "pool-0":  # the pool and its WIDE1 only: the main run is not read here
            launch.launch_plans(
                plans, tmp_path / folder / recipe.tag(), recipe, ["--ckpt-every", "5"], "local", 1
            )
    sizes = {"train": 40, "val": 20, "test": 20}
    rows = regimes.probe(tmp_path, ["color"], sizes, [0.01], tmp_path / "cache")
    assert {(r["method"], r["budget"]) for r in rows if r["task"] == "color"} == {
        (m, b) for m in ("CAT1", "CAT2", "WIDE1") for b in (5, 10)
    }
    assert {r["pool"] for r in rows} == {0}
    planfile.write(
        tmp_path, dataclasses.replace(st, recipe=TINY.replace(lr=0.01))
    )  # another main run, old pools
    with pytest.raises(
        ValueError,
        match="variants.json: the pool train_size 0 has recipe .*, not the main run's with train_size 0",
    ):
        regimes.probe(tmp_path, ["color"], sizes, [0.01], tmp_path / "cache")
    planfile.write(
        tmp_path, dataclasses.replace(st, variants=[])
    )  # a later run without a map reads no old pool
    assert regimes.probe(tmp_path, ["color"], sizes, [0.01], tmp_path / "cache") == []


def _swept(gain: float, pool: int | None = None) -> list[dict]:
    """Sweep rows of three seed sets at budgets 3 and 5: CAT4 `gain` above CAT1, WIDE1 at CAT1's level."""
    rows = []
    for budget in (3, 5):
        for k in range(3):
            for method, n, acc in (("CAT1", 1, 0.5 + 0.01 * k), ("CAT4", 4, 0.5 + 0.01 * k + gain),
                                   ("WIDE1", 1, 0.5 + 0.01 * k)):  # fmt: skip
                row = {"replicate": k, "method": method, "n": n, "task": "color", "shots": "all",
                       "test_acc": acc, "budget": budget}  # fmt: skip
                rows.append(row if pool is None else {**row, "pool": pool})
    return rows


def test_the_map_sets_the_main_sweep_beside_each_pool_and_one_sentence_counts_each_contrast(tmp_path):
    table = regimes.table(_swept(0.1), _swept(-0.1, pool=0), main_pool=256)
    assert list(dict.fromkeys(table["pool"])) == ["pool of 256", "fresh stream"]
    by = table.set_index(["pool_size", "budget"])
    assert by.loc[(256, 3), "gain"] == pytest.approx(10.0) and by.loc[
        (0, 5), "gain vs WIDE1"
    ] == pytest.approx(-10.0)
    (line,) = regimes.map_lines(table, ["color"], "WIDE1")
    assert "CAT4 - WIDE1** over 2 pools x 2 budgets x 1 kept targets" in line
    assert "above 0 in 2, below 0 in 2, 0 inside in 0 of 4 cells" in line
    assert regimes.map_lines(table, [], "CAT1") == [
        "- CATmax - CAT1: not measured on any kept target in this run."
    ]
    assert regimes.write_outputs(tmp_path, table, ["color"]) == ["04_map_vs_wide1", "04_map_vs_cat1"]
    pd.DataFrame({"kept": [True]}, index=["color"]).to_csv(tmp_path / "tables" / "04_calibration.csv")
    assert list(regimes.saved_lines(tmp_path)) == ["04_map_vs_wide1", "04_map_vs_cat1"]
    cells = regimes.compact(table, ["color"])
    assert (
        list(cells.columns) == ["pool", "budget", "main-pool budget", "color vs WIDE1", "color vs CAT1"]
        and len(cells) == 4
    )
    section = "\n".join(report._map(tmp_path))  # the report: both figures, a sentence each, every cell
    assert "![04_map_vs_wide1](figures/04_map_vs_wide1.png)" in section and "| fresh stream | 5 |" in section
    no_wide = table.drop(columns=["gain vs WIDE1", "low vs WIDE1", "high vs WIDE1"])
    assert regimes.write_outputs(tmp_path, no_wide, ["color"]) == ["04_map_vs_cat1"]  # no WIDE1 this time:
    assert not list(tmp_path.glob("figures/04_map_vs_wide1.*"))  # the earlier run's WIDE1 figure is gone
    regimes.write_outputs(tmp_path, None, [])  # a run without a map leaves no map of an earlier run
    assert not list(tmp_path.glob("*/04_map*")) and regimes.saved_lines(tmp_path) is None
    assert report._map(tmp_path)[0].startswith("- Not run: notebook 03's `map_pools` is empty")
