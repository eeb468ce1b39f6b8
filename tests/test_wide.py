"""WIDE1, the single network of CATmax's feature dimension (issue 19): its recipe field, its plan, its
member files and its place beside the CATs in notebook 04's representations."""

import argparse
import hashlib
import json

import pytest
import torch

from richreps import budget, controls, experiment, launch, members, planfile, pretrain
from richreps.config import Recipe
from richreps.members import member_path
from richreps.models import SmallCNN
from richreps.study import ControlPlan, Study

SMALL = Recipe(width=4, global_batch=8, bn_batches=1)


def test_last_mult_round_trips_through_flags_records_and_old_records():
    wide = SMALL.replace(last_mult=5)
    ap = argparse.ArgumentParser()
    Recipe.add_arguments(ap)
    assert ["--last-mult", "5"] == wide.flags()[wide.flags().index("--last-mult") :][:2]
    assert Recipe.from_namespace(ap.parse_args(wide.flags())) == wide
    assert Recipe.from_dict(wide.to_dict()) == wide and wide.tag() != SMALL.tag()
    old = {k: v for k, v in SMALL.to_dict().items() if k != "last_mult"}  # a record from before WIDE1
    assert Recipe.from_dict(old).last_mult == 1


def test_a_widened_recipe_on_another_arch_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="widens small_cnn's last stage only; --arch is resnet50") as e:
        Recipe(arch="resnet50", last_mult=2)
    assert "\n" not in str(e.value)
    base = ["--out", str(tmp_path), "--steps", "1"]
    with pytest.raises(SystemExit, match="^error: --last-mult 2 widens small_cnn's last stage only"):
        pretrain.parse_args([*base, "--arch", "resnet50", "--last-mult", "2"])
    with pytest.raises(SystemExit, match="^error: --last-mult must be >= 1, got 0"):
        pretrain.parse_args([*base, "--last-mult", "0"])


def test_wide1_trains_cat1s_steps_with_a_seed_no_other_run_uses():
    plans = budget.replicate_plans(270, 300, [2, 5], "shared-prefix", [0, 1, 2, 3, 4], 3, 5, [100, 200], [25])
    wide = controls.WIDE1.plans(
        plans, {"baseline_steps": 300}
    )  # budget 100 is left out (CAT5 members of 18 steps < 5 x 5)
    seeds = [p.runs[0].seed for p in wide]
    assert seeds == [50, 150, 250] and len(set(seeds)) == len(seeds)
    assert not set(seeds) & {r.seed for p in plans for r in p.runs}
    assert all(p.cats == {1: [(s, 300)]} and p.runs[0].exports == [200, 300] for s, p in zip(seeds, wide))
    assert all(p.sweep == {200: {1: [(s, 200)]}} for s, p in zip(seeds, wide))  # CATmax - WIDE1 by budget


def test_wide1_refuses_a_seed_that_another_run_uses():
    plans = budget.replicate_plans(270, 300, [2], "shared-prefix", [0, 50], 1)
    with pytest.raises(ValueError, match="WIDE1 of seed set 0 would use seed 50"):
        controls.WIDE1.plans(plans, {"baseline_steps": 300})


def test_the_plan_records_wide1_in_its_own_recipe_folder(tmp_path):
    plans = budget.replicate_plans(270, 300, [2, 5], "shared-prefix", [0, 1, 2, 3, 4], 2, 5)
    wide_recipe = SMALL.replace(last_mult=5)
    wide = ControlPlan(
        controls.WIDE1, wide_recipe, controls.WIDE1.plans(plans, {"baseline_steps": 300}), "WIDE1"
    )
    planfile.write(tmp_path, Study(SMALL, plans, plans[0], [wide], []))
    record = planfile.read(tmp_path).control("WIDE1")
    assert (
        record.recipe == wide_recipe
        and record.run_dir == tmp_path / wide_recipe.tag() != tmp_path / SMALL.tag()
    )
    assert record.members == [(50, 300), (150, 300)]
    assert record.sweeps == [{}, {}]  # no sweep budget: WIDE1 at CAT1's steps only
    planfile.write(tmp_path, Study(SMALL, plans, plans[0], [], []))  # wide_control false: no WIDE1 recorded
    assert planfile.read(tmp_path).control("WIDE1") is None


def test_a_wide_member_loads_wide_and_an_old_file_without_the_key_loads_narrow(tmp_path):
    torch.manual_seed(0)
    wide = SMALL.replace(last_mult=3)
    path = members.save(SmallCNN(10, 4, last_mult=3), tmp_path / "w.pt", wide, 0, 1)
    assert members.load(path).feature_dim == 8 * 4 * 3 and members.record(path)["last_mult"] == 3
    narrow = members.save(SmallCNN(10, 4), tmp_path / "n.pt", SMALL, 0, 1)
    ckpt = torch.load(narrow, weights_only=True)
    del ckpt["last_mult"]
    torch.save(ckpt, narrow)
    assert members.load(narrow).feature_dim == 8 * 4


def test_wide1_and_its_untrained_control_join_every_seed_set_and_a_stale_member_is_refused(tmp_path):
    wide = SMALL.replace(last_mult=2)
    for seed in (50, 150):
        members.save(SmallCNN(10, 4, last_mult=2), member_path(tmp_path / "w", seed, 30), wide, seed, 30)
    reps = {k: [experiment.Representation("CAT1 (baseline)", 1, 30, ("a",))] for k in range(2)}
    record = planfile.ControlRecord("WIDE1", wide, tmp_path / "w", [(50, 30), (150, 30)], [{}, {}], 50)
    got = experiment.add_controls(reps, [record], tmp_path / "untrained")
    assert [r.method for r in got[1]] == ["CAT1 (baseline)", "WIDE1", "untrained WIDE1"]
    untrained = members.load(got[1][2].files[0])
    # the untrained twin is the network WIDE1's own run of seed set 1 (seed 150) starts from
    assert untrained.feature_dim == 8 * 4 * 2 and members.record(got[1][2].files[0])["seed"] == 150
    assert got[0][1].files != got[1][1].files and experiment.add_controls(reps, [], tmp_path) is reps
    with pytest.raises(members.CheckpointError, match="trained with another recipe"):
        stale = planfile.ControlRecord(
            "WIDE1", wide.replace(lr=0.1), tmp_path / "w", [(50, 30), (150, 30)], [], 50
        )
        experiment.add_controls(reps, [stale], tmp_path)


def test_the_compute_table_counts_wide1s_flops_beside_cat1s():
    cats = {1: [(0, 300)], 5: [(i, 54) for i in range(5)]}
    table = launch.compute_table(SMALL, cats, [("WIDE1", SMALL.replace(last_mult=5), 300)])
    assert list(table.index) == ["CAT1", "CAT5", "WIDE1"] and table.loc["CAT1", "x CAT1"] == 1
    assert table.loc["WIDE1", "FLOPs per image"] > table.loc["CAT1", "FLOPs per image"]
    assert table.loc["CAT5", "steps (summed)"] == 270


def test_a_field_added_later_keeps_old_run_folders_and_old_records_current():
    """last_mult came with WIDE1: at its old meaning (1) it stays out of the folder's hash, and a member
    recorded before it existed is not a recipe change (runs already trained are not orphaned)."""
    from richreps.config import LATER_FIELDS, Recipe

    r = Recipe(arch="small_cnn", width=16)
    old_record = {k: v for k, v in r.to_dict().items() if k not in LATER_FIELDS}  # before any of them
    assert r.diff(old_record) is None
    assert r.replace(last_mult=5).diff(old_record)[0] == "last_mult"
    assert r.tag() != r.replace(last_mult=5).tag()
    blob = json.dumps(old_record, sort_keys=True).encode()  # how a folder was named before last_mult
    assert r.tag() == "recipe-" + hashlib.sha256(blob).hexdigest()[:10]
