"""Issue 29, item 1: JOINTn has CATmax's architecture exactly and its training FLOPs, and starts from its
members' initial weights, so that CATmax - JOINTn measures what independent, shorter runs add beyond
architecture, dimension and compute."""

import torch
from test_controls import TINY, VALUES

from richreps import experiment, launch, members, planfile, study, untrained
from richreps.data import cues
from richreps.models import Joint

JOINT = {**VALUES, "joint_control": True}  # CAT2 of 2-step members, seeds 0 and 1


def test_untrained_joint_features_equal_untrained_catmax_features_bitwise(tmp_path):
    st = study.plan_study(JOINT, TINY)
    (joint,) = st.controls
    assert joint.name == "JOINT2" and joint.plans[0].cats == {1: [(60, 2)]}  # a CAT2 member's steps
    assert joint.recipe.tower_offsets == (-60, -59)  # towers 0 and 1 start as the runs of seeds 0 and 1 do
    twin = untrained.untrained_control(joint.name, joint.recipe, 60, tmp_path)
    (cat2,) = [
        r for r in untrained.untrained_controls(TINY, [p.cats for p in st.plans], tmp_path)[0] if r.n == 2
    ]
    x = cues.sample_pretrain(64, TINY.cue_weights, seed=5).images
    with torch.no_grad():
        joint_features = members.load(twin.files[0]).features(x)
        cat_features = torch.cat([members.load(f).features(x) for f in cat2.files], 1)
    assert joint_features.shape == (64, 2 * 8 * TINY.width) and torch.equal(joint_features, cat_features)


def test_joint_training_flops_equal_catmax_training_flops():
    st = study.plan_study(JOINT, TINY)
    (joint,) = st.controls
    table = launch.compute_table(
        TINY, st.plans[0].cats, [(joint.name, joint.recipe, joint.plans[0].cats[1][0][1])]
    )
    assert table.loc["JOINT2", "training FLOPs"] == table.loc["CAT2", "training FLOPs"]
    assert table.loc["JOINT2", "FLOPs per image"] == 2 * table.loc["CAT1", "FLOPs per image"]


def test_joint_is_trained_probed_and_its_tower_starts_are_its_members_starts(tmp_path):
    st = study.plan_study(JOINT, TINY)
    pre = tmp_path / "pretrain"
    planfile.write(pre, st)
    wall = launch.launch_study(st, pre, ["--ckpt-every", "4"], "local", nproc=1)
    assert {w["status"] for w in wall} == {"trained"}
    plan = planfile.read(pre)
    (record,) = plan.controls
    reps = experiment.add_controls(
        experiment.representations(plan.cats, plan.run_dir, plan.recipe),
        plan.controls,
        tmp_path / "untrained",
    )
    assert [r.method for r in reps[0]][-2:] == ["JOINT2", "untrained JOINT2"]
    trained = members.load(reps[0][-2].files[0])
    assert isinstance(trained, Joint) and trained.feature_dim == 2 * 8 * TINY.width
    start = members.model_for(record.recipe, 10, record.members[0][0])
    for i, seed in enumerate((0, 1)):  # tower i starts as member i's run does
        member_start = members.model_for(TINY, 10, seed)
        tower = start.towers[i].state_dict()
        assert all(torch.equal(v, member_start.state_dict()[k]) for k, v in tower.items())
