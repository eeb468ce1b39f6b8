"""Verdicts follow paired intervals over seed sets, and only on targets that can discriminate."""

import math

import pandas as pd
import pytest

from richreps import sweep, verdicts
from richreps.aggregate import IID


def long_table(
    task: str, accs: dict[str, list[float]], chance: float = 0.1, plateaued: bool = True
) -> pd.DataFrame:
    """Rows in notebook 04's long format: one per method and seed set, all labelled examples; direct
    training's rows carry whether its best validation export was before the last one."""
    n_of = {"CAT1 (baseline)": 1, "CAT5": 5, "WIDE1": 1, "direct training": 1}
    rows = [
        {
            "replicate": k,
            "method": m,
            "n": n_of.get(m.removeprefix("untrained "), 1),
            "task": task,
            "shots": "all",
            "test_acc": a,
            "chance": chance,
            **({"plateaued": plateaued} if m == "direct training" else {}),
        }
        for m, values in accs.items()
        for k, a in enumerate(values)
    ]
    return pd.DataFrame(rows)


def decided(task: str, accs: dict[str, list[float]], bayes=None, **kw) -> pd.Series:
    long = long_table(task, accs, **kw)
    calib = verdicts.calibration(long, bayes)
    return verdicts.verdicts(long, calib).loc[task]


BASE = {
    "untrained CAT1": [0.50, 0.52, 0.51],
    "untrained CAT5": [0.55, 0.54, 0.56],
    "untrained WIDE1": [0.53, 0.55, 0.54],
    "direct training": [0.97] * 3,
}
CAT1_ = [0.80, 0.82, 0.81]
UP = [0.85, 0.88, 0.86]  # CAT5 above CAT1 in every seed set, by a steady margin


def test_paired_interval_is_the_student_t_interval():
    mean, lo, hi, n = verdicts.paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) x sd 1 / sqrt(3)
    assert (mean, n) == (2.0, 3) and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert math.isnan(verdicts.paired_interval([1.5])[1])  # one seed set: no interval


def test_agrees_when_catmax_beats_both_wide1_and_cat1():
    r = decided("color", {**BASE, "CAT1 (baseline)": CAT1_, "WIDE1": [0.81, 0.83, 0.82], "CAT5": UP})
    assert r["verdict"] == "agrees" and r["low (vs WIDE1)"] > 0 and r["low"] > 0
    assert r["primary"] == "CAT5 - WIDE1"


def test_dimension_explains_it_when_catmax_beats_cat1_but_not_wide1():
    r = decided("color", {**BASE, "CAT1 (baseline)": CAT1_, "WIDE1": [0.84, 0.89, 0.86], "CAT5": UP})
    assert r["verdict"] == "dimension explains it" and r["low"] > 0 and r["low (vs WIDE1)"] <= 0


def test_differs_when_catmax_lies_below_wide1_whatever_cat1_says():
    r = decided("color", {**BASE, "CAT1 (baseline)": CAT1_, "WIDE1": [0.90, 0.93, 0.91], "CAT5": UP})
    assert r["verdict"] == "differs" and r["high (vs WIDE1)"] < 0 and r["low"] > 0


def test_inconclusive_when_an_interval_straddles_zero_or_there_is_one_seed_set():
    r = decided(
        "color", {**BASE, "CAT1 (baseline)": [0.80, 0.86, 0.81], "WIDE1": CAT1_, "CAT5": [0.84, 0.82, 0.83]}
    )
    assert r["verdict"] == "inconclusive" and r["low"] < 0 < r["high"]
    one = {k: v[:1] for k, v in BASE.items()} | {"direct training": BASE["direct training"]}  # kept
    r = decided("color", {**one, "CAT1 (baseline)": [0.80], "WIDE1": [0.80], "CAT5": [0.90]})
    assert r["verdict"] == "inconclusive" and r["seed sets"] == 1


def test_without_wide1_catmax_minus_cat1_alone_decides_and_the_lines_say_so():
    no_wide = {k: v for k, v in BASE.items() if "WIDE1" not in k}
    long = long_table("color", {**no_wide, "CAT1 (baseline)": CAT1_, "CAT5": UP})
    table = verdicts.verdicts(long, verdicts.calibration(long))
    assert table.loc["color", "verdict"] == "agrees" and "CAT5 - WIDE1" not in table.columns
    assert table.loc["color", "primary"] == "CAT5 - CAT1 (no WIDE1)"
    assert "No WIDE1 in this run" in verdicts.verdict_lines(table)[0]
    down = long_table("color", {**no_wide, "CAT1 (baseline)": UP, "CAT5": CAT1_})
    assert verdicts.verdicts(down, verdicts.calibration(down)).loc["color", "verdict"] == "differs"


def test_trainings_share_is_the_trained_gap_minus_the_untrained_twins_gap_paired_by_seed_set():
    """Issue 29: what CATmax and a control differ by before any training is not TIME-CONCAT's. Untrained
    CAT5 - untrained WIDE1 is +2, -1 and +2 points in the three seed sets, trained CAT5 - WIDE1 +4, +5
    and +4: training's share is +2, +6 and +2 points, with the paired t interval of those. Against CAT1:
    trained +5, +6, +5, untrained +5, +2, +5, so +0, +4, +0."""
    r = decided("color", {**BASE, "CAT1 (baseline)": CAT1_, "WIDE1": [0.81, 0.83, 0.82], "CAT5": UP})
    for name, diffs in (("WIDE1", [2.0, 6.0, 2.0]), ("CAT1", [0.0, 4.0, 0.0])):
        got = (r[f"training's share vs {name}"], r[f"low (share vs {name})"], r[f"high (share vs {name})"])
        assert got == pytest.approx(verdicts.paired_interval(diffs)[:3], abs=1e-9), name


def test_untrained_wide1_is_a_floor():
    r = verdicts.calibration(
        long_table(
            "color",
            {**BASE, "untrained WIDE1": [0.90] * 3, "CAT1 (baseline)": CAT1_, "WIDE1": CAT1_, "CAT5": UP},
        )
    ).loc["color"]
    assert r["floor: untrained WIDE1"] == pytest.approx(0.90) and not r["kept"]
    assert "of the floor" in r["why not"]


@pytest.mark.parametrize(
    "change, kw, why",
    [
        ({"direct training": [0.70] * 3}, {}, "of the floor"),
        ({"untrained CAT5": [0.85, 0.86, 0.87]}, {}, "of the floor"),
        ({"direct training": []}, {}, "no ceiling measured"),
        ({"direct training": [0.97] * 2}, {}, "from 2 seeds"),
        ({}, {"plateaued": False}, "still rising"),
    ],
)
def test_uninformative_targets_are_never_counted(change, kw, why):
    accs = {**BASE, "CAT1 (baseline)": CAT1_, "WIDE1": CAT1_, "CAT5": UP, **change}
    accs = {k: v for k, v in accs.items() if v}
    r = decided("texture", accs, **kw)
    assert r["verdict"] == "uninformative" and why in r["why"] and r["survives Holm"] == ""
    long = long_table("texture", accs, **kw)
    lines = verdicts.verdict_lines(verdicts.verdicts(long, verdicts.calibration(long)))
    assert "0 agrees, 0 dimension explains it, 0 differs, 0 inconclusive, 1 uninformative" in lines[-2]


def test_saturated_ood_targets_are_listed_and_never_judged():
    r = decided("digits_uci", {**BASE, "CAT1 (baseline)": CAT1_, "WIDE1": CAT1_, "CAT5": UP})
    assert r["verdict"] == "saturated" and "saturated" in r["why"] and math.isnan(r["p"])


def test_a_verdict_whose_primary_contrast_does_not_survive_holm_is_labelled_so():
    # three kept targets, each CAT5 - WIDE1 interval above 0 with p near 0.03: uncorrected they agree,
    # but Holm's smallest threshold is 0.05 / 3, so none survives
    wide = [0.80, 0.80, 0.80, 0.80]
    cat5 = [0.81, 0.815, 0.84, 0.822]
    p = verdicts.paired_p([(c - w) * 100 for c, w in zip(cat5, wide)])
    assert 0.05 / 3 < p < 0.05
    accs = {
        "untrained CAT1": [0.5] * 4,
        "untrained CAT5": [0.5] * 4,
        "untrained WIDE1": [0.5] * 4,
        "direct training": [0.97] * 4,
        "CAT1 (baseline)": [0.70] * 4,
        "WIDE1": wide,
        "CAT5": cat5,
    }
    long = pd.concat([long_table(t, accs) for t in ("color", "texture", "position")])
    table = verdicts.verdicts(long, verdicts.calibration(long))
    assert list(table["verdict"]) == ["agrees"] * 3 and list(table["survives Holm"]) == ["no"] * 3
    assert set(table["verdict (Holm)"]) == {"inconclusive (agrees does not survive Holm)"}
    assert table["p (Holm)"].tolist() == pytest.approx([3 * p] * 3)
    assert "color does not survive" in verdicts.verdict_lines(table)[-1]
    one = long_table("color", accs)  # alone, the same contrast is its own family and survives
    assert verdicts.verdicts(one, verdicts.calibration(one)).loc["color", "survives Holm"] == "yes"


def test_the_mixture_is_calibrated_against_its_bayes_accuracy():
    accs = {
        "untrained CAT1": [0.20] * 3,
        "untrained CAT5": [0.22] * 3,
        "WIDE1": [0.44, 0.45, 0.46],
        "CAT5": [0.40, 0.41, 0.42],
    }
    learned = decided(IID, {**accs, "CAT1 (baseline)": [0.43, 0.44, 0.45]}, bayes={IID: 0.469})
    assert learned["verdict"] == "differs"
    barely = decided(IID, {**accs, "CAT1 (baseline)": [0.30, 0.31, 0.32]}, bayes={IID: 0.469})
    assert barely["verdict"] == "uninformative" and "did not learn" in barely["why"]


# ---------------------------------------------------------------- beyond the paper: budgets and trajectories


def sweep_long(gains: dict[int, list[float]], task: str = "color", wide: float | None = None) -> pd.DataFrame:
    """Sweep rows: per budget and seed set, CAT1 at 0.6 and CAT5 at 0.6 + the given gain (and WIDE1 at
    `wide` when given)."""
    rows = []
    reps = [("CAT1", 1, 0.6), ("CAT5", 5, None), *([("WIDE1", 1, wide)] if wide is not None else [])]
    for b, diffs in gains.items():
        for k, d in enumerate(diffs):
            for method, n, acc in reps:
                acc = 0.6 + d if acc is None else acc
                rows.append(
                    {"budget": b, "replicate": k, "method": method, "n": n, "task": task, "shots": "all",
                     "test_acc": acc}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_budget_gains_are_paired_intervals_per_budget():
    gains = sweep.budget_gains(sweep_long({100: [0.01, 0.03, 0.02], 400: [-0.02, 0.01, 0.04]}))
    row = gains.set_index("budget").loc[100]
    assert row["gain"] == pytest.approx(2.0) and row["n_max"] == 5 and row["sets"] == 3
    assert (row["low"], row["high"]) == pytest.approx(verdicts.paired_interval([1.0, 3.0, 2.0])[1:3])
    assert gains.set_index("budget").loc[400, "low"] < 0


def test_budget_gains_set_catmax_minus_wide1_beside_catmax_minus_cat1_at_each_budget():
    gains = sweep.budget_gains(sweep_long({100: [0.01, 0.03, 0.02]}, wide=0.63)).set_index("budget")
    assert gains.loc[100, "gain vs WIDE1"] == pytest.approx(-1.0) and gains.loc[100, "gain"] == pytest.approx(
        2.0
    )
    assert gains.loc[100, "WIDE1"] == pytest.approx(0.63) and gains.loc[100, "CAT1"] == pytest.approx(0.6)
    assert "CAT5 - WIDE1 by budget = 100: -1.0" in "\n".join(
        sweep.sweep_lines(gains.reset_index(), ["color"])
    )
    assert "gain vs WIDE1" not in sweep.budget_gains(sweep_long({100: [0.01, 0.03]}))


def test_sweep_lines_say_when_no_budget_shows_an_effect_and_where_one_does():
    none = sweep.budget_gains(sweep_long({100: [-0.02, 0.01, 0.04], 400: [0.01, -0.01, 0.0]}))
    assert any("No budget shows an effect" in line for line in sweep.sweep_lines(none, ["color"]))
    some = sweep.budget_gains(sweep_long({100: [0.02, 0.03, 0.025], 400: [0.01, -0.01, 0.0]}))
    assert sweep.sweep_lines(some, ["color"])[-1] == "- Intervals wholly above 0: color at 100."
    assert "cannot say" in sweep.sweep_lines(some, ["shape"])[0]  # a target that is not kept is not read


def test_a_cue_falls_only_when_its_last_interval_lies_below_its_peak():
    def traj(last: list[float]) -> pd.DataFrame:
        rows = [
            {"steps_per_member": s, "replicate": k, "task": "texture", "shots": "all", "test_acc": a}
            for s, accs in ((10, [0.5, 0.52, 0.51]), (100, [0.8, 0.82, 0.81]), (1000, last))
            for k, a in enumerate(accs)
        ]
        return sweep.trajectory_table(pd.DataFrame(rows))

    assert sweep.rise_and_fall(traj([0.6, 0.62, 0.61])).loc["texture", "falls"]
    assert not sweep.rise_and_fall(traj([0.7, 0.95, 0.8])).loc["texture", "falls"]  # within its interval
    assert sweep.trajectory_lines(traj([0.6, 0.62, 0.61]), ["texture"])[-1] == "- Rise then fall on texture."


def test_the_mixture_ceiling_is_its_exact_bayes_accuracy_only_for_component_mixtures():
    from richreps.config import Recipe
    from richreps.experiment import bayes_ceilings

    assert bayes_ceilings(Recipe(cue_weights=(0.1, 0.2, 0.3, 0.4))) == {IID: pytest.approx(0.469)}
    assert bayes_ceilings(Recipe(cue_redundant=(0.9, 0.5, 0.5, 0.5))) == {}
    assert bayes_ceilings(Recipe(data="imagenet")) == {}


def test_ood_lines_compare_the_ood_verdicts_with_the_cue_verdicts():
    kept = {
        **BASE,
        "CAT1 (baseline)": [0.70, 0.71, 0.72],
        "WIDE1": [0.70, 0.71, 0.72],
        "CAT5": [0.75, 0.76, 0.77],
    }
    long = pd.concat([long_table(t, kept) for t in ("texture", "mnist_clutter")])
    table = verdicts.verdicts(long, verdicts.calibration(long))
    lines = verdicts.ood_lines(table)
    assert lines[0].startswith("- Out of distribution: mnist_clutter agrees (CAT5 - WIDE1 = +5.0")
    assert lines[1] == "- The OOD columns (agrees) agree with the kept cue columns (agrees)."
    at_ceiling = {**kept, "untrained CAT5": [0.95] * 3}
    long = pd.concat([long_table("texture", kept), long_table("uci_plasma", at_ceiling)])
    lines = verdicts.ood_lines(verdicts.verdicts(long, verdicts.calibration(long)))
    assert "uci_plasma uninformative" in lines[0] and "No OOD target can discriminate" in lines[1]
    assert verdicts.ood_lines(table.drop(index=["mnist_clutter"])) == []


def test_trajectory_lines_say_so_when_no_kept_target_was_probed():
    rows = [{"steps_per_member": 10, "replicate": 0, "task": "shape", "shots": "all", "test_acc": 0.3}]
    table = sweep.trajectory_table(pd.DataFrame(rows))
    assert sweep.trajectory_lines(table, []) == ["- No kept target was probed along the run."]
    assert sweep.rise_and_fall(table.iloc[:0]).empty


# ---------------------------------------------------------------- issue 19: the range keep rule and Holm


@pytest.mark.parametrize(
    "floor, ceiling, chance, seeds, plateaued, kept, why",
    [
        (0.14, math.nan, 0.1, 3, True, False, "no ceiling"),
        (math.nan, 0.87, 0.1, 3, True, False, "no floor"),
        (0.14, 0.87, 0.1, 2, True, False, "from 2 seeds"),
        (0.14, 0.87, 0.1, 3, False, False, "still rising"),
        (0.70, 0.87, 0.1, 3, True, False, "of the floor"),
        (0.10, 0.65, 0.5, 3, True, False, "of chance"),
        (0.14, 0.87, 0.1, 3, True, True, ""),
    ],
)
def test_the_range_keep_rule_keeps_a_wide_range_and_names_the_first_failing_reason(
    floor, ceiling, chance, seeds, plateaued, kept, why
):
    got, reason = verdicts.range_keep_rule(floor, ceiling, chance, seeds, plateaued)
    assert got is kept and why in reason and (reason == "") is kept


def test_the_range_keep_rule_keeps_shape_which_the_fixed_90_percent_cut_dropped():
    # the committed laptop calibration: shape's floor 0.144, ceiling 0.874 (below the old 90 % cut)
    assert verdicts.keep_rule(0.144, 0.874)[0] is False
    assert verdicts.range_keep_rule(0.144, 0.874, 0.1, 3, True) == (True, "")


def test_holm_matches_a_hand_worked_family_of_four():
    # sorted: 0.005 <= 0.05/4 reject; 0.01 <= 0.05/3 reject; 0.03 > 0.05/2 stop (0.04 not rejected either)
    # adjusted: 4 x 0.005 = 0.02, max(0.02, 3 x 0.01) = 0.03, max(0.03, 2 x 0.03) = 0.06, max(0.06, 0.04)
    rejected, adjusted = verdicts.holm([0.01, 0.04, 0.03, 0.005])
    assert rejected == [True, False, False, True]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_never_rejects_a_missing_p_value_and_does_not_count_it():
    rejected, adjusted = verdicts.holm([0.02, math.nan])
    assert rejected == [True, False] and adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def test_paired_p_is_the_two_sided_one_sample_t_test():
    from scipy import stats

    d = [1.0, 2.5, 0.5, 1.5]
    assert verdicts.paired_p(d) == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert math.isnan(verdicts.paired_p([1.0]))


def test_a_calibration_of_floors_and_ceilings_alone_keeps_by_range_and_leaves_the_mixture_pending():
    """`richreps.calibrate --params` has untrained controls and direct training, no trained member."""
    calib = verdicts.calibration(long_table("color", BASE))
    assert calib.loc["color", "kept"] and calib.loc["color", "floor: untrained WIDE1"] == pytest.approx(0.54)
    iid = long_table(IID, {k: v for k, v in BASE.items() if k != "direct training"})
    row = verdicts.calibration(iid, {IID: 0.469}).loc[IID]
    assert not row["kept"] and row["why not"].startswith("no trained CAT1 yet")
