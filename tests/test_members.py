"""One member format and one recipe: what a member records, and nothing stale is ever reused."""

import argparse
import os
import stat

import pytest
import torch

from richreps import budget, direct, experiment, launch, members, planfile, pretrain, untrained
from richreps.aggregate import DIRECT, DIRECT_EQUAL
from richreps.config import Recipe
from richreps.io import atomic_path, write_text
from richreps.study import Study

TINY = Recipe(width=8, global_batch=32, train_size=512, val_size=128, bn_batches=2)


def test_recipe_round_trips_through_the_pretrain_flags():
    recipe = TINY.replace(cue_redundant=(0.9, 0.8, 0.7, 0.6), lr=0.01, label_smoothing=0.0)
    args = pretrain.parse_args(["--out", "x", "--steps", "1", *recipe.flags()])
    assert Recipe.from_namespace(args) == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_every_recipe_field_is_a_pretrain_flag_and_changes_the_tag():
    ap = argparse.ArgumentParser()
    Recipe.add_arguments(ap)
    dests = {a.dest for a in ap._actions}
    for name, value in TINY.to_dict().items():
        assert name in dests
        other = {
            "cue_weights": [1, 1, 1, 1],
            "cue_redundant": [1, 1, 1, 1],
            "tower_offsets": [0, 1],
            "pool_per_seed_set": True,
        }.get(name)
        if other is None:
            other = (
                value + 1 if isinstance(value, int | float) and not isinstance(value, bool) else value + "x"
            )
        changed = TINY.replace(**{name: other})
        assert changed.tag() != TINY.tag() and TINY.diff(changed.to_dict())[0] == name


def test_a_member_records_its_recipe_and_a_stale_one_is_refused_naming_the_key(tmp_path):
    path = untrained.save_untrained(tmp_path / "m.pt", TINY, seed=3)
    rec = members.record(path)
    assert rec["recipe"] == TINY.to_dict() and rec["seed"] == 3 and rec["step"] == 0
    members.require(path, TINY, 3, 0)
    with pytest.raises(
        members.CheckpointError, match=r"m.pt: trained with another recipe \(lr: 0.0025 vs 0.01"
    ):
        members.require(path, TINY.replace(lr=0.01), 3, 0)
    with pytest.raises(members.CheckpointError, match="m.pt: seed is 3, expected 4"):
        members.require(path, TINY, 4, 0)


def test_an_untrained_control_is_rewritten_when_the_recipe_changes(tmp_path):
    path = untrained.save_untrained(tmp_path / "u.pt", TINY, seed=1)
    before = path.stat().st_mtime_ns
    assert untrained.save_untrained(path, TINY, seed=1).stat().st_mtime_ns == before  # current: reused
    untrained.save_untrained(path, TINY.replace(width=16), seed=1)
    assert members.record(path)["width"] == 16 and members.load(path).feature_dim == 128


def test_editing_a_params_value_between_two_runs_never_probes_the_old_members(tmp_path):
    """Notebook 03's path: the plan, run_local (torchrun), then notebook 04's member check."""
    plans = budget.replicate_plans(4, 4, [], "shared-prefix", [0], 1)
    pre = tmp_path / "pretrain"
    run_dir = planfile.write(pre, Study(TINY, plans, plans[0], [], []))
    assert [r["status"] for r in launch.run_local(plans[0], run_dir, TINY, [], nproc=1)] == ["trained"]
    assert [r["status"] for r in launch.run_local(plans[0], run_dir, TINY, [], nproc=1)] == ["done earlier"]
    plan = planfile.read(pre)
    recipe, read_dir, cats = plan.recipe, plan.run_dir, plan.cats
    assert recipe == TINY and read_dir == run_dir
    experiment.representations(cats, run_dir, TINY)

    edited = TINY.replace(lr=0.005)  # the user edits `lr` in the params file and runs again
    new_dir = planfile.write(pre, Study(edited, plans, plans[0], [], []))
    assert (
        new_dir != run_dir
    )  # another recipe trains into another folder, so nothing is resumed from the old one
    with pytest.raises(members.CheckpointError, match=r"lr: 0.0025 vs 0.005"):
        experiment.representations(cats, run_dir, edited)  # the old members, asked for under the new recipe
    assert [r["status"] for r in launch.run_local(plans[0], new_dir, edited, [], nproc=1)] == ["trained"]
    plan = planfile.read(pre)
    recipe, read_dir, cats = plan.recipe, plan.run_dir, plan.cats
    assert recipe == edited and read_dir == new_dir
    experiment.representations(cats, read_dir, recipe)


def test_direct_training_reuses_the_pretraining_loop_and_recipe(tmp_path):
    rows = direct.direct_training(
        TINY,
        ["shape_parity"],
        steps=4,
        train_size=256,
        sizes={"val": 64, "test": 64},
        seed_sets=1,
        folder=tmp_path,
    )
    (row,) = rows
    assert row["method"] == "direct training" and 0 <= row["test_acc"] <= 1 and row["step"] in (1, 2, 3, 4)
    (run_dir,) = list(tmp_path.iterdir())
    rec = members.record(members.member_path(run_dir, 0, 4))
    assert (
        rec["recipe"]["cue_task"] == "shape_parity"
        and rec["recipe"]["lr"] == TINY.lr
        and rec["num_classes"] == 2
    )
    assert (run_dir / "metrics" / "seed0.jsonl").exists()  # pretrain.train's own log


@pytest.mark.parametrize("task", ["mnist_clutter", "uci_plasma"])
def test_direct_training_on_an_ood_target_trains_on_its_fixed_train_split(tmp_path, task):
    (row,) = direct.direct_training(
        TINY.replace(train_size=0), [task], steps=2, train_size=0, sizes={"val": 64, "test": 64}, seed_sets=1,
        folder=tmp_path,
    )  # fmt: skip
    assert row["task"] == task and row["chance"] == 0.1 and 0 <= row["test_acc"] <= 1


def test_saturated_targets_get_no_direct_training_since_they_are_never_judged(tmp_path):
    rows = direct.direct_training(
        TINY.replace(train_size=0), ["digits_uci", "mnist_plain"], steps=2, train_size=0,
        sizes={"val": 64, "test": 64}, seed_sets=1, folder=tmp_path,
    )  # fmt: skip
    assert rows == [] and not any(tmp_path.iterdir())


def test_atomic_writes_keep_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "t.txt", "x")
        with atomic_path(tmp_path / "m.pt") as tmp:
            torch.save({"a": 1}, tmp)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o644


def test_member_loading_never_unpickles_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": members.FORMAT, "state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(members.CheckpointError, match="evil.pt: not a loadable checkpoint"):
        members.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_report_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, richreps.report, richreps.aggregate; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_our_members_load_with_their_classifier(tmp_path):
    torch.manual_seed(0)
    from richreps.models import build_model

    model = build_model("small_cnn", 2, 8).eval()
    members.save(model, tmp_path / "d.pt", TINY, 0, 5)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(members.load(tmp_path / "d.pt")(x), model(x))  # head included, not re-initialised


def test_wide1_has_the_feature_dimension_of_catmax_and_reports_its_compute():
    """Issue 19: one network as wide as CATmax's concatenation (8 x width x n features), with its FLOPs."""
    from richreps.models import build_model, train_flops_per_image

    one = build_model("small_cnn", 10, width=16)
    wide = build_model("small_cnn", 10, width=16, last_mult=5)
    x = torch.zeros(3, 3, 32, 32)
    assert one.features(x).shape == (3, 128) and wide.features(x).shape == (3, 5 * 128)
    assert wide.fc.in_features == 640
    assert train_flops_per_image(wide, 32) > train_flops_per_image(one, 32) > 0
    with pytest.raises(ValueError, match="small_cnn only"):
        build_model("resnet50", 10, last_mult=2)


@pytest.mark.parametrize("record", ["small_cnn", ["small_cnn"], 3], ids=["string", "list", "number"])
def test_a_recorded_recipe_that_is_not_a_mapping_is_a_damaged_file_named(tmp_path, record):
    """Its checksum covers the weights, not the record, so it loads; reading its recipe must not crash."""
    path = untrained.save_untrained(tmp_path / "m.pt", TINY, seed=0)
    ckpt = torch.load(path, weights_only=True)
    ckpt["recipe"] = record
    torch.save(ckpt, path)
    with pytest.raises(members.CheckpointError, match="m.pt: damaged member file .its recorded recipe is a"):
        members.recorded_recipe(path)
    assert not members.is_current(path, TINY, 0, 0)


def test_ceilings_train_on_the_probe_s_labels_beside_ample_data_and_reuse_an_ood_target_s_run(tmp_path):
    sizes = {"train": 48, "val": 64, "test": 64}
    rows = direct.ceilings(
        TINY, ["shape_parity", "mnist_clutter"], steps=3, train_size=256, sizes=sizes, seed_sets=1,
        folder=tmp_path, equal_labels=True, equal_steps=2,
    )  # fmt: skip
    by = {(r["method"], r["task"]): r for r in rows}
    assert set(by) == {(m, t) for m in (DIRECT, DIRECT_EQUAL) for t in ("shape_parity", "mnist_clutter")}
    assert by[(DIRECT_EQUAL, "shape_parity")]["steps_per_member"] == 2  # equal_steps, on 48 images
    assert by[(DIRECT_EQUAL, "mnist_clutter")]["test_acc"] == by[(DIRECT, "mnist_clutter")]["test_acc"]
    sizes_trained = sorted(members.record(p)["recipe"]["train_size"] for p in tmp_path.glob("*/members/*.pt"))
    assert 48 in sizes_trained and 256 in sizes_trained


def test_direct_training_on_an_ood_target_never_trains_on_the_test_images_of_its_seed_set():
    from richreps.data import ood, streams

    for k in (0, 3):
        train = streams.cue_splits(Recipe(cue_task="mnist_clutter", data_seed=k))["train"].images
        test = ood.splits("mnist_clutter", k)["test"][0]
        assert not {x.numpy().tobytes() for x in train} & {x.numpy().tobytes() for x in test}
