"""Pretraining: the compute plan, shared-prefix exactness, kill-and-resume, BN at the evaluation point."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from richreps import budget, completion, launch, planfile, pretrain
from richreps.config import Recipe
from richreps.models import build_model, recalibrate_bn
from richreps.study import Study

SMALL = [
    "--global-batch",
    "32",
    "--train-size",
    "512",
    "--val-size",
    "128",
    "--bn-batches",
    "2",
    "--width",
    "8",
    "--log-every",
    "2",
    "--data-seed",
    "1",
]


def args_for(out, steps, *extra):
    return pretrain.parse_args(["--out", str(out), "--steps", str(steps), *SMALL, *extra])


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def member(path: Path) -> dict:
    return torch.load(path, weights_only=False)["state_dict"]


# ---------------------------------------------------------------- the plan


def test_table3_plan_costs():
    shared = budget.plan(400_000, 450_000, [2, 4, 5], "shared-prefix")
    indep = budget.plan(400_000, 450_000, [2, 4, 5], "independent")
    assert shared.training_steps == 930_000 and indep.training_steps == 1_650_000
    assert shared.cat_compute() == {1: 450_000, 2: 400_000, 4: 400_000, 5: 400_000}
    first = shared.runs[0]
    assert (first.seed, first.steps, first.exports) == (0, 450_000, [80_000, 100_000, 200_000, 450_000])
    assert first.used_by[80_000] == "CAT5" and [r.steps for r in shared.runs] == [
        450_000,
        200_000,
        100_000,
        100_000,
        80_000,
    ]
    with pytest.raises(ValueError, match="warmup fixed in steps"):
        budget.plan(400_000, 450_000, [2, 4, 5], "shared-prefix", warmup_fraction=0.02)
    assert budget.plan(400_000, 450_000, [2], "independent", warmup_fraction=0.02).training_steps == 850_000


def test_a_budget_sweep_and_a_trajectory_are_exports_of_the_shared_prefix_runs(tmp_path):
    sweep, traj = [56_250, 112_500, 225_000, 450_000], [10_000, 30_000]
    shared = budget.plan(400_000, 450_000, [2, 4, 5], "shared-prefix", sweep=sweep, trajectory=traj)
    assert shared.training_steps == 930_000  # no training beyond the main plan's
    assert shared.sweep[56_250] == {1: [(0, 56_250)], 5: [(s, 10_000) for s in range(5)]}
    assert shared.trajectory == [(0, 10_000), (0, 30_000)]
    assert shared.runs[0].used_by[10_000] == "sweep 56250: CAT5, trajectory"
    indep = budget.plan(400_000, 450_000, [2, 4, 5], "independent", sweep=sweep[:1])
    assert indep.training_steps == 1_650_000 + 56_250 + 5 * 10_000
    with pytest.raises(ValueError, match="sweep budgets must be >= 1"):
        budget.plan(400_000, 450_000, [2], sweep=[0])
    run_dir = planfile.write(tmp_path, Study(Recipe(), [shared, shared], shared, [], []))
    plan = planfile.read(tmp_path)
    assert plan.sweeps == [shared.sweep] * 2 and plan.trajectories == [shared.trajectory] * 2
    assert run_dir.name == Recipe().tag()


def test_budget_command_line(capsys):
    assert (
        budget.main(
            ["--total", "400000", "--baseline", "450000", "--cat", "2", "4", "5", "--mode", "shared-prefix"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "total training steps, shared-prefix: 930000" in out
        and "total training steps, independent: 1650000" in out
    )
    assert (
        budget.main(["--total", "400000", "--baseline", "450000", "--cat", "2", "--warmup-fraction", "0.1"])
        == 2
    )


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("data", [[], ["--train-size", "0"]], ids=["stored-set", "fresh-samples"])
def test_step_t_member_of_a_longer_run_equals_a_t_step_run(tmp_path, data):
    pretrain.train(
        args_for(tmp_path / "long", 8, "--export-at", "4", "--eval-every", "3", "--ckpt-every", "3", *data)
    )
    pretrain.train(args_for(tmp_path / "short", 4, *data))
    a = member(tmp_path / "long" / "members" / "seed0_step4.pt")
    b = member(tmp_path / "short" / "members" / "seed0_step4.pt")
    assert same_state(a, b)  # bitwise, BN statistics included
    assert not same_state(a, member(tmp_path / "long" / "members" / "seed0_step8.pt"))


def test_a_run_validates_at_its_eval_steps_and_its_end_and_at_no_other_export(tmp_path):
    pretrain.train(args_for(tmp_path, 6, "--export-at", "2", "4", "--eval-at", "3", "--ckpt-every", "6"))
    rows = [json.loads(line) for line in (tmp_path / "metrics" / "seed0.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows if "val_acc" in r) == [3, 6]
    assert sorted(p.name for p in (tmp_path / "members").glob("*.pt")) == [
        "seed0_step2.pt", "seed0_step4.pt", "seed0_step6.pt"]  # fmt: skip


def test_a_candidate_asked_for_after_the_run_passed_it_makes_the_run_unfinished_and_is_evaluated(tmp_path):
    recipe = Recipe.from_namespace(args_for(tmp_path, 6))
    pretrain.train(args_for(tmp_path, 6, "--export-at", "2", "4", "--ckpt-every", "2"))
    before = member(tmp_path / "members" / "seed0_step4.pt")
    assert completion.is_done(tmp_path, 0, recipe, 6, [2, 4, 6])
    assert not completion.is_done(tmp_path, 0, recipe, 6, [2, 4, 6], evals=[3])  # no validation at 3
    pretrain.train(args_for(tmp_path, 6, "--export-at", "2", "4", "--eval-at", "3", "--ckpt-every", "2"))
    rows = [json.loads(line) for line in (tmp_path / "metrics" / "seed0.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows if "val_acc" in r) == [3, 6]  # resumed below 3, once each
    assert completion.is_done(tmp_path, 0, recipe, 6, [2, 4, 6], evals=[3])
    assert same_state(before, member(tmp_path / "members" / "seed0_step4.pt"))


def test_a_member_earlier_than_the_run_reached_is_retrained_from_an_earlier_checkpoint(tmp_path):
    pretrain.train(args_for(tmp_path / "run", 8, "--ckpt-every", "2"))  # a plan that asked for 8 steps
    pretrain.train(args_for(tmp_path / "run", 6, "--ckpt-every", "2"))  # the plan now asks for 6
    pretrain.train(args_for(tmp_path / "ref", 6))
    assert same_state(
        member(tmp_path / "run" / "members" / "seed0_step6.pt"),
        member(tmp_path / "ref" / "members" / "seed0_step6.pt"),
    )


def test_kill_and_resume_is_bitwise(tmp_path):
    common = [*SMALL, "--steps", "24", "--ckpt-every", "4", "--export-at", "12"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(out):
        return launch.torchrun_command(["--out", str(out), *common], nproc=2)

    subprocess.run(command(tmp_path / "ref"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        command(tmp_path / "killed"),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpts = tmp_path / "killed" / "ckpt" / "seed0"
    deadline = time.time() + 120
    while not any(p.name >= "step000000008.pt" for p in ckpts.glob("step*.pt")):
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final" / "seed0.pt").exists()
    # issue 27: a resume with another world size is refused in one line (each process owns a stream shard)
    alone = [sys.executable, "-m", "richreps.pretrain", "--out", str(tmp_path / "killed"), *common]
    refused = subprocess.run(alone, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "saved by 2 processes and this start has 1" in refused.stderr
    assert len(refused.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in refused.stderr
    subprocess.run(command(tmp_path / "killed"), check=True, env=env, capture_output=True)
    ref = torch.load(tmp_path / "ref" / "final" / "seed0.pt", weights_only=False)
    res = torch.load(tmp_path / "killed" / "final" / "seed0.pt", weights_only=False)
    assert same_state(ref["model"], res["model"])
    z_ref = [s["z"] for s in ref["optimizer"]["state"].values()]
    z_res = [s["z"] for s in res["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(z_ref, z_res, strict=True))
    for name in ("seed0_step12.pt", "seed0_step24.pt"):
        assert same_state(
            member(tmp_path / "ref" / "members" / name), member(tmp_path / "killed" / "members" / name)
        )


def test_fresh_sample_stream_resumes_from_its_count_and_never_repeats_across_ranks_or_calibration():
    from richreps.config import Recipe
    from richreps.data.streams import FreshCueStream

    recipe = Recipe(train_size=0)
    a = FreshCueStream(recipe, 8, seed=3, rank=0, device="cpu")
    first = [a.next()[0] for _ in range(3)]
    b = FreshCueStream(recipe, 8, seed=3, rank=0, device="cpu")
    b.load_state_dict(copy.deepcopy(FreshCueStream(recipe, 8, 3, 0, "cpu").state_dict()) | {"start": 16})
    assert torch.equal(b.next()[0], first[2])
    assert a.state_dict() == {"epoch": 0, "start": 24, "seed": 3}
    others = [FreshCueStream(recipe, 8, 3, 1, "cpu"), FreshCueStream(recipe, 8, 4, 0, "cpu")]
    assert all(not torch.equal(o.next()[0], first[0]) for o in others)
    direct = FreshCueStream(recipe.replace(cue_task="color"), 8, 3, 0, "cpu").next()
    assert direct[1].max() < 10 and not torch.equal(direct[0], first[0])


def test_resume_refuses_a_different_configuration(tmp_path):
    pretrain.train(args_for(tmp_path, 4, "--ckpt-every", "2"))
    with pytest.raises(SystemExit, match="--lr 0.0025, this run has 0.01"):
        pretrain.train(args_for(tmp_path, 6, "--lr", "0.01"))


# one changed value per recipe field (data-root for --data imagenet: a tiny ImageFolder the test writes)
CHANGED = {
    "data": ["--data", "imagenet", "--data-root", "{imagenet}"],
    "data_root": ["--data-root", "{imagenet}"],
    "cue_task": ["--cue-task", "color"],
    "cue_weights": ["--cue-weights", "1", "1", "1", "2"],
    "cue_redundant": ["--cue-redundant", "0.9", "0.8", "0.7", "0.6"],
    "cue_render": ["--cue-render", "v1"],
    "train_size": ["--train-size", "256"],
    "val_size": ["--val-size", "64"],
    "data_seed": ["--data-seed", "2"],
    "val_fraction": ["--val-fraction", "0.02"],
    "image_size": ["--image-size", "64"],
    "corrupt_policy": ["--corrupt-policy", "skip"],
    "arch": ["--arch", "resnet18_cifar"],
    "width": ["--width", "4"],
    "last_mult": ["--last-mult", "2"],
    "tower_offsets": ["--tower-offsets", "0", "1"],
    "pool_per_seed_set": ["--pool-per-seed-set", "True"],
    "global_batch": ["--global-batch", "64"],
    "micro_batch": ["--micro-batch", "16"],
    "lr": ["--lr", "0.01"],
    "beta1": ["--beta1", "0.8"],
    "beta2": ["--beta2", "0.999"],
    "weight_decay": ["--weight-decay", "0.01"],
    "warmup_steps": ["--warmup-steps", "1"],
    "label_smoothing": ["--label-smoothing", "0.1"],
    "r_power": ["--r-power", "0.5"],
    "weight_lr_power": ["--weight-lr-power", "1.0"],
    "bn_batches": ["--bn-batches", "3"],
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run of 4 steps with members at steps 2 and 4 and checkpoints at every step, trained once."""
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain.train(args_for(out, 4, "--export-at", "2", "--ckpt-every", "1"))
    return out


def test_the_changed_values_cover_every_recipe_field():
    from dataclasses import fields

    assert set(CHANGED) == {f.name for f in fields(Recipe)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_every_recipe_flag_changed_between_two_starts_is_refused_and_no_member_changes(
    tmp_path, finished_run, field
):
    """Issue 21, item 2: a second start on the same --out that plans an earlier member (step 1, below
    every checkpoint) used to train from scratch with the new recipe and overwrite members 2 and 4."""
    import shutil

    from test_data import WNIDS, jpeg

    for c, wnid in enumerate(WNIDS):  # --data-root must be an ImageFolder root even when unused
        jpeg(tmp_path / "imagenet" / "train" / wnid / "a.JPEG", c)
        jpeg(tmp_path / "imagenet" / "val" / wnid / "b.JPEG", 10 + c)
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    flags = [f.replace("{imagenet}", str(tmp_path / "imagenet")) for f in CHANGED[field]]
    flag = "--" + field.replace("_", "-")
    with pytest.raises(SystemExit, match=f"was written with {flag} .*, this run has .*use another --out"):
        pretrain.train(args_for(out, 4, "--export-at", "1", "2", "--ckpt-every", "1", *flags))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no member changed


def test_nonfinite_loss_stops_with_step_and_checkpoint(tmp_path):
    with pytest.raises(pretrain.NonFiniteLoss, match=r"non-finite loss at step \d+ .*last good checkpoint"):
        pretrain.train(args_for(tmp_path, 30, "--lr", "1e30", "--weight-decay", "0", "--ckpt-every", "1"))
    with pytest.raises(pretrain.NonFiniteLoss):  # a restart does not retrain into the same NaN
        pretrain.train(args_for(tmp_path, 30, "--lr", "1e30", "--weight-decay", "0", "--ckpt-every", "1"))


def test_a_non_finite_step_between_two_checks_is_named_as_a_check_at_every_step_names_it(tmp_path):
    """The step no longer reads the device: the first bad step is recorded there and read at the next log,
    export or checkpoint step, before anything is written; it names the step a per-step check names."""
    nan = ["--lr", "1e30", "--weight-decay", "0"]
    steps = []
    for name, every in (("each", "1"), ("deferred", "10")):
        with pytest.raises(pretrain.NonFiniteLoss) as e:
            pretrain.train(args_for(tmp_path / name, 30, *nan, "--ckpt-every", every, "--log-every", every))
        steps.append(json.loads((tmp_path / name / "FAILED_seed0.json").read_text())["step"])
        assert f"at step {steps[-1]} " in str(e.value)
    assert steps[0] == steps[1]
    ckpts = sorted((tmp_path / "deferred" / "ckpt" / "seed0").glob("step*.pt"))
    assert all(int(p.stem[4:]) < steps[1] for p in ckpts)  # no checkpoint of a step after the bad one


def test_bad_flags_fail_before_training(tmp_path):
    with pytest.raises(SystemExit, match="--export-at 9 is outside"):
        args_for(tmp_path, 4, "--export-at", "9")
    with pytest.raises(SystemExit, match="--eval-at 0 is outside"):
        args_for(tmp_path, 4, "--eval-at", "0")
    with pytest.raises(SystemExit, match="--data-root"):
        args_for(tmp_path, 4, "--data", "imagenet", "--data-root", str(tmp_path / "none"))


# ---------------------------------------------------------------- BatchNorm at the evaluation point


def test_bn_recomputed_at_x_changes_statistics_and_lowers_val_loss(tmp_path):
    args = args_for(
        tmp_path,
        60,
        "--train-size",
        "2048",
        "--val-size",
        "1024",
        "--width",
        "16",
        "--global-batch",
        "64",
        "--bn-batches",
        "8",
        "--lr",
        "0.01",
    )
    torch.manual_seed(0)
    from richreps.data import cues

    splits = cues.pretrain_splits(args.cue_weights, {"train": 2048, "val": 1024}, seed=1)
    tr, va = splits["train"], splits["val"]
    torch.manual_seed(0)
    raw = build_model("small_cnn", 10, 16)
    opt = pretrain.AdamWScheduleFree(
        raw.parameters(), lr=0.01, betas=(0.9, 0.99552), weight_decay=0.0812, r=0.75
    )
    opt.train()
    raw.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        idx = torch.randint(len(tr.labels), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(raw(tr.images[idx]), tr.labels[idx], label_smoothing=0.2)
        loss.backward()
        opt.step()
        opt.zero_grad()
    calib = [tr.images[i : i + 64] for i in range(0, 512, 64)]
    fixed = pretrain.member_at_x(raw, opt, calib, torch.device("cpu"))
    stale = copy.deepcopy(fixed)
    stale.load_state_dict(
        {**fixed.state_dict(), **{k: v for k, v in raw.state_dict().items() if "running" in k}}
    )
    changed = [
        k
        for k in fixed.state_dict()
        if "running_mean" in k and not torch.equal(fixed.state_dict()[k], stale.state_dict()[k])
    ]
    assert changed
    val = [(va.images, va.labels)]
    after = pretrain.evaluate(fixed, val, torch.device("cpu"), amp=False)["val_loss"]
    before = pretrain.evaluate(stale.eval(), val, torch.device("cpu"), amp=False)["val_loss"]
    assert after < before, (before, after)


def test_recalibrate_bn_is_an_exact_average():
    torch.manual_seed(0)
    bn = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).eval()
    batches = [torch.randn(8, 3) + i for i in range(4)]
    assert recalibrate_bn(bn, batches) == 4
    assert torch.allclose(bn[0].running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-6)
    assert not bn.training and bn[0].momentum == 0.1  # mode and momentum restored


# ---------------------------------------------------------------- cluster script


def fake_slurm(bin_dir: Path) -> Path:
    """`sbatch` that records the script it is given and answers like SLURM; `srun` that exists."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nn=$(ls "$(dirname "$0")"/job*.sh 2>/dev/null | wc -l)\n'
        'cp "$1" "$(dirname "$0")/job$n.sh"\necho "Submitted batch job $((4242 + n))"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in ("sbatch", "srun"):
        (bin_dir / f).chmod(0o755)
    return bin_dir


def test_slurm_launch_submits_one_requeueable_ddp_job_per_run(tmp_path, monkeypatch):
    import pickle

    from richreps.config import Recipe

    bins = fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bins}:{os.environ['PATH']}")
    p = budget.plan(400_000, 450_000, [2, 4, 5], "shared-prefix", seeds=[2, 550, 23, 477, 8529])
    from test_data import jpeg

    for split in ("train", "val"):  # the header-level layout `--data-root` is checked for
        jpeg(tmp_path / "imagenet" / split / "n01440764" / "a.JPEG", 0)
    recipe = Recipe(data="imagenet", data_root=str(tmp_path / "imagenet"), arch="resnet50")
    run_dir = tmp_path / "pretrain" / recipe.tag()
    launch.launch_plans([p], run_dir, recipe, ["--compile"], "slurm", nproc=8, nodes=2)
    scripts = sorted(bins.glob("job*.sh"))
    assert len(scripts) == 5  # one job per planned run
    script = scripts[0].read_text()
    for line in (
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=10",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {line}" in script
    logs = run_dir.resolve() / "slurm"
    assert f"#SBATCH --output={logs}/%j_0_log.out" in script and logs.is_dir()  # exists before submission
    srun = next(ln for ln in script.splitlines() if ln.startswith("srun"))
    assert "--cpus-per-task 10" in srun and srun.endswith(
        f"{sys.executable} -u -m submitit.core._submit {logs}"
    )
    job = pickle.loads((logs / "4242_submitted.pkl").read_bytes()).function
    assert (
        isinstance(job, launch.PretrainJob) and job.checkpoint().function.argv == job.argv
    )  # requeues itself
    args = pretrain.parse_args(job.argv)
    assert (args.seed, args.steps, args.export_at) == (2, 450_000, [80_000, 100_000, 200_000, 450_000])
    assert args.data == "imagenet" and args.arch == "resnet50" and args.compile and args.resume == "auto"


def test_members_expose_pooled_features():
    for arch, dim in (("small_cnn", 64), ("resnet18_cifar", 512)):
        m = build_model(arch, 10, width=8)
        x = torch.randn(2, 3, 32, 32)
        assert m.features(x).shape == (2, dim) and m(x).shape == (2, 10)
    r50 = build_model("resnet50", 1000)
    assert r50.feature_dim == 2048 and float(r50.net.layer1[0].bn3.weight.detach().abs().sum()) == 0
    assert abs(float(r50.fc.weight.detach().std()) - 0.01) < 0.001


def test_resnet_convolutions_use_algoperfs_truncated_lecun_normal():
    torch.manual_seed(0)
    r50 = build_model("resnet50", 1000)
    convs = [m for m in r50.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 53
    for conv in (r50.net.conv1, r50.net.layer3[2].conv2, r50.net.layer4[0].downsample[0]):
        w = conv.weight.detach()
        fan_in = w[0].numel()
        bound = 2 * (1 / fan_in) ** 0.5 / 0.87962566103423978
        assert float(w.abs().max()) <= bound  # truncated at two (pre-truncation) standard deviations
        assert abs(float(w.std()) * fan_in**0.5 - 1) < 0.05  # LeCun: variance 1/fan_in after truncation


def test_pretrain_entry_point_runs_as_a_module(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "richreps.pretrain", "--out", str(tmp_path), "--steps", "2", *SMALL],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "members" / "seed0_step2.pt").exists()


def test_sweep_budgets_whose_members_would_sit_in_warmup_are_left_out_and_named():
    """Issue 19: no member shorter than 5 x warmup_steps. Laptop's sweep with warmup 20: CAT5 members
    of budgets 100, 200 and 400 train 18, 36 and 72 steps (< 100) and are left out; 800 and 1600 stay."""
    p = budget.plan(1440, 1600, [2, 4, 5], "shared-prefix", warmup_steps=20, sweep=[100, 200, 400, 800, 1600])
    assert sorted(p.sweep) == [800, 1600]
    assert sorted(p.left_out) == [100, 200, 400]
    assert "CAT5 members train 18 steps, under 5 x --warmup-steps 20" in p.left_out[100]
    assert all(steps >= 100 for by_n in p.sweep.values() for ms in by_n.values() for _, steps in ms)
    assert budget.plan(1440, 1600, [5], warmup_steps=0, sweep=[100]).left_out == {}  # no warmup: no rule
