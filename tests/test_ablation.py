"""The label-smoothing ablation (issue 19): notebook 03 plans and trains CAT1, CATmax and WIDE1 with one
recipe field changed, notebook 04 probes them and sets both contrasts beside the main run's."""

import pandas as pd
import pytest

from richreps import ablation, launch, planfile, report, study, verdicts
from richreps.aggregate import IID
from richreps.config import Recipe

TINY = Recipe(width=4, global_batch=16, train_size=256, val_size=64, bn_batches=1, warmup_steps=0)
PARAMS = {  # notebook 03's values that the plans read
    "total_steps": 4, "baseline_steps": 5, "cat_sizes": [2, 4], "plan_mode": "shared-prefix",
    "seeds": [0, 1, 2, 3], "seed_sets": 2, "warmup_steps": 0, "sweep_budgets": [3], "trajectory_steps": [2],
}  # fmt: skip


def test_an_ablation_keeps_the_main_seeds_at_the_main_budget_with_only_cat1_and_catmax():
    (a,) = study.variants({**PARAMS, "ablate_label_smoothing": [0.0], "wide_control": True}, TINY)
    assert a.recipe == TINY.replace(label_smoothing=0.0) and a.controls[0].recipe == a.recipe.replace(
        last_mult=4
    )
    assert [p.cats for p in a.plans] == [{1: [(0, 5)], 4: [(0, 1), (1, 1), (2, 1), (3, 1)]},
                                         {1: [(100, 5)], 4: [(100, 1), (101, 1), (102, 1), (103, 1)]}]  # fmt: skip
    assert all(not p.sweep and not p.trajectory for p in a.plans)
    assert [p.cats[1] for p in a.controls[0].plans] == [[(50, 5)], [(150, 5)]] and a.folder == "."
    with pytest.raises(ValueError, match="ablate_label_smoothing: 0.2 is the recipe's own value"):
        study.variants({**PARAMS, "ablate_label_smoothing": [0.2]}, TINY)


def test_notebook_03_trains_the_ablation_and_notebook_04_probes_it_paired_with_the_main_run(tmp_path):
    values = {
        **PARAMS,
        "seed_sets": 1,
        "sweep_budgets": [],
        "ablate_label_smoothing": [0.0],
        "wide_control": True,
    }
    st = study.plan_study(values, TINY)
    planfile.write(tmp_path, st)
    (ablated,) = st.variants
    for c in [ablated, *ablated.controls]:  # the ablation only: the main run is not read here
        launch.launch_plans(c.plans, tmp_path / c.recipe.tag(), c.recipe, ["--ckpt-every", "5"], "local", 1)
    sizes = {"train": 40, "val": 20, "test": 20}
    rows = ablation.probe(tmp_path, ["color"], sizes, [0.01], tmp_path / "cache")
    methods = {(r["method"], r["task"]) for r in rows}
    assert methods == {
        (m, t) for m in ("CAT1 (baseline)", "CAT4", "WIDE1") for t in ("mixture (IID)", "color")
    }
    assert {r["label_smoothing"] for r in rows} == {0.0}
    assert ablation.probe(tmp_path / "none", ["color"], sizes, [0.01], tmp_path / "cache") == []


def test_the_ablation_table_sets_both_contrasts_beside_the_main_run_per_target(tmp_path):
    def rows(acc: dict[str, list[float]], **extra) -> list[dict]:
        n = {"CAT1 (baseline)": 1, "CAT5": 5, "WIDE1": 1}
        return [
            {"replicate": k, "method": m, "n": n[m], "task": "color", "shots": "all", "test_acc": a, **extra}
            for m, accs in acc.items()
            for k, a in enumerate(accs)
        ]

    main = pd.DataFrame(
        rows({"CAT1 (baseline)": [0.5, 0.6, 0.7], "CAT5": [0.6, 0.7, 0.8], "WIDE1": [0.6] * 3})
    )
    ablated = rows(
        {"CAT1 (baseline)": [0.5] * 3, "CAT5": [0.5, 0.6, 0.4], "WIDE1": [0.5] * 3}, label_smoothing=0.0
    )
    table = ablation.contrasts(main, ablated, "label_smoothing", 0.2, ["color"], ["color"]).set_index(
        ["target", "label_smoothing"]
    )
    assert table.loc[("color", 0.2), "CAT5 - CAT1"] == verdicts.fmt_interval(
        *verdicts.paired_interval([10.0] * 3)[:3]
    )
    assert table.loc[("color", 0.2), "CAT5 - WIDE1"].startswith("+10.0 [")
    assert (
        table.loc[("color", 0.0), "CAT5 - WIDE1"].startswith("+0.0 [")
        and table.loc[("color", 0.0), "seed sets"] == 3
    )
    assert table.loc[("color", 0.0), "kept"] and IID not in table.index.get_level_values("target")
    # the difference of each contrast from the main run's, paired by seed set (hand-worked): CAT5 - WIDE1 is
    # 0, 10, 20 in the main run and 0, 10, -10 with label smoothing 0; CAT5 - CAT1 is 10, 10, 10 and 0, 10, -10
    for column, change in (("CAT5 - WIDE1", [0.0, 0.0, -30.0]), ("CAT5 - CAT1", [-10.0, 0.0, -20.0])):
        expected = verdicts.fmt_interval(*verdicts.paired_interval(change)[:3])
        assert table.loc[("color", 0.0), f"{column}, setting - main"] == expected
    assert pd.isna(table.loc[("color", 0.2), "CAT5 - WIDE1, setting - main"])  # the main run has none
    ablation.write_table(
        tmp_path, table.reset_index()
    )  # the report names the ablated field, not a column beside it
    assert "at each `label_smoothing`, the main run's first" in "\n".join(report._ablation(tmp_path))


def test_a_run_without_ablation_leaves_no_ablation_table_from_an_earlier_run(tmp_path):
    ablation.write_table(tmp_path, pd.DataFrame({"target": ["color"]}))
    assert (tmp_path / "tables" / "04_ablation.csv").exists()
    ablation.write_table(tmp_path, None)
    assert not list((tmp_path / "tables").glob("04_ablation.*"))
