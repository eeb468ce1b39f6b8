"""The control mechanism (issue 28): a control is declared in one place (`richreps.controls.register`) and
the study plans it, notebook 03's launcher trains it, the plan file records it, notebook 04 probes it with
its untrained twin, and the contrasts table sets CATmax - control beside the others."""

import pandas as pd
import pytest

from richreps import controls, experiment, launch, planfile, study, verdicts
from richreps.config import Recipe

TINY = Recipe(width=4, global_batch=16, train_size=256, val_size=64, bn_batches=1, warmup_steps=0)
VALUES = {  # notebook 03's values that the plans read: CAT1 of 4 steps, CAT2 of 2-step members, 1 seed set
    "total_steps": 4, "baseline_steps": 4, "cat_sizes": [2], "plan_mode": "shared-prefix", "seeds": [0, 1],
    "seed_sets": 1, "warmup_steps": 0, "sweep_budgets": [], "trajectory_steps": [],
}  # fmt: skip


@pytest.fixture
def narrow():
    """A dummy control, registered here and nowhere else: one network of half the members' width."""
    control = controls.register(
        controls.Control(
            "NARROW1",
            "narrow_control",
            70,
            lambda r, plans, offset: r.replace(width=r.width // 2),
            why="a dummy",
        )
    )
    yield control
    controls.unregister(control.name)


def test_a_control_declared_in_one_place_is_planned_trained_probed_and_in_the_contrasts_table(
    tmp_path, narrow
):
    st = study.plan_study({**VALUES, "narrow_control": True}, TINY)
    (planned,) = st.controls
    assert planned.name == "NARROW1" and planned.recipe == TINY.replace(width=2)
    assert planned.plans[0].cats == {1: [(70, 4)]}  # the set's first seed + its offset, CAT1's steps
    assert any(line.startswith("NARROW1: one run of 4 steps") for line in study.describe(st))

    pre = tmp_path / "pretrain"
    planfile.write(pre, st)
    wall = launch.launch_study(st, pre, ["--ckpt-every", "4"], "local", nproc=1)
    assert {w["status"] for w in wall} == {"trained"} and len(wall) == 3  # seeds 0 and 1, and NARROW1

    plan = planfile.read(pre)
    assert [c.name for c in plan.controls] == ["NARROW1"]
    reps = experiment.representations(plan.cats, plan.run_dir, plan.recipe)
    reps = experiment.add_controls(reps, plan.controls, tmp_path / "untrained")
    assert [r.method for r in reps[0]][-2:] == ["NARROW1", "untrained NARROW1"]
    sizes = {"train": 40, "val": 20, "test": 20}
    long = pd.DataFrame(
        experiment.probe_cues(reps, plan.recipe, ["color"], sizes, [0.01], [], tmp_path / "c")
    )
    assert {"NARROW1", "untrained NARROW1"} <= set(long["method"])

    calib = pd.DataFrame({"kept": [True], "why not": [""]}, index=pd.Index(["color"], name="target"))
    table = verdicts.verdicts(long[long["task"] == "color"], calib)
    assert {"CAT2 - NARROW1", "low (vs NARROW1)", "high (vs NARROW1)"} <= set(table.columns)
    assert table.loc["color", "primary"] == "CAT2 - CAT1 (no WIDE1)"  # shown beside, never the primary


def test_a_control_name_is_registered_once(narrow):
    with pytest.raises(ValueError, match="a control named 'NARROW1' is registered already"):
        controls.register(controls.Control("NARROW1", "other_switch", 71, lambda r, plans, offset: r))


def test_a_control_whose_seed_another_run_uses_is_refused_naming_it(narrow):
    with pytest.raises(ValueError, match="NARROW1 of seed set 0 would use seed 70"):
        study.plan_study({**VALUES, "seeds": [0, 70], "narrow_control": True}, TINY)


def test_no_control_is_planned_unless_its_switch_is_on():
    assert study.plan_study(VALUES, TINY).controls == []
    assert [c.name for c in study.plan_study({**VALUES, "wide_control": True}, TINY).controls] == ["WIDE1"]


@pytest.mark.parametrize("offset", [1, 100])
def test_a_seed_offset_that_could_meet_a_member_or_another_seed_set_is_refused(offset):
    """Offset 1 is untrained CAT2's second member's seed offset; 100 is the next seed set's first seed."""
    control = controls.register(controls.Control("ODD1", "odd_control", offset, lambda r, plans, offset: r))
    try:
        with pytest.raises(ValueError, match=rf"ODD1: seed offset {offset} must lie in \[2, 100\)"):
            study.plan_study({**VALUES, "odd_control": True}, TINY)
    finally:
        controls.unregister(control.name)
