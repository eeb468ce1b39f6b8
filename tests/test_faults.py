"""Fault injection: untrusted files are data, bad values fail before compute, damaged state is recovered."""

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from richreps import features, members, pretrain
from richreps.data import CorruptImageError, DatasetError, build_dataset, scan_images

sys.path.insert(0, str(Path(__file__).parent))
from test_data import write_cifar  # noqa: E402
from test_pretrain import SMALL, args_for  # noqa: E402


class Evil:
    """A pickle that runs a shell command when loaded: what a crafted checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- untrusted files are data


def test_a_crafted_algoperf_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model_params": {"conv1.weight": Evil(marker)}}, tmp_path / "algoperf.pt")
    with pytest.raises(members.CheckpointError, match="algoperf.pt: not a loadable checkpoint"):
        members.load(tmp_path / "algoperf.pt")
    assert not marker.exists()


def test_a_planted_resume_checkpoint_is_skipped_and_never_runs(tmp_path, capfd):
    marker = tmp_path / "pwned"
    ckpts = tmp_path / "ckpt" / "seed0"
    ckpts.mkdir(parents=True)
    torch.save({"model": Evil(marker), "step": 2}, ckpts / "step000000002.pt")
    pretrain.train(args_for(tmp_path, 3))
    assert not marker.exists()
    assert "skipping unreadable checkpoint" in capfd.readouterr().err
    assert (tmp_path / "members" / "seed0_step3.pt").exists()


def test_a_crafted_cifar_batch_is_refused_and_never_runs(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(
        DatasetError, match=r"data_batch_3: not a CIFAR python pickle \(global 'posix.system'"
    ):
        build_dataset("cifar10", tmp_path, "train")
    assert not marker.exists()


def test_real_cifar_pickles_still_load(tmp_path):
    write_cifar(tmp_path, "cifar100", n_train=100, n_test=20, classes=20)
    assert len(build_dataset("cifar100", tmp_path, "test")) == 20


# ---------------------------------------------------------------- damaged state is recovered


def toy_batches():
    data, labels = torch.randn(100, 4), torch.arange(100) % 3
    return lambda: ((data[i : i + 10], labels[i : i + 10]) for i in range(0, 100, 10))


class Identity(torch.nn.Module):
    feature_dim = 4

    def __init__(self):
        super().__init__()
        self.seen = 0

    def features(self, x):
        self.seen += len(x)
        return x


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "malicious"])
def test_a_damaged_cache_file_is_recomputed(tmp_path, damage):
    batches = toy_batches()
    ref = features.extract({"a": Identity()}, batches, "toy", tmp_path)["a"]
    path = features.cache_path(tmp_path, "a", "toy")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "zeroed":
        path.write_bytes(bytes(len(path.read_bytes())))
    else:
        torch.save({"features": Evil(tmp_path / "pwned"), "labels": 0}, path)
    again = Identity()
    got = features.extract({"a": again}, batches, "toy", tmp_path)["a"]
    assert again.seen == 100 and torch.equal(got.features, ref.features)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_partial_chunk_is_recomputed_from_there(tmp_path):
    batches = toy_batches()

    def dies_after_7():
        for i, b in enumerate(batches()):
            if i == 7:
                raise KeyboardInterrupt
            yield b

    with pytest.raises(KeyboardInterrupt):
        features.extract({"a": Identity()}, dies_after_7, "toy", tmp_path / "c", chunk_batches=2)
    parts = sorted((tmp_path / "c" / "partial").rglob("part*.pt"))
    assert len(parts) == 3
    parts[1].write_bytes(parts[1].read_bytes()[:50])  # the second chunk is torn
    m = Identity()
    got = features.extract({"a": m}, batches, "toy", tmp_path / "c", chunk_batches=2)["a"]
    assert m.seen == 80  # chunk 0 (20 images) kept; chunks 1 and 2 and the rest recomputed
    ref = features.extract({"a": Identity()}, batches, "toy", tmp_path / "ref")["a"]
    assert torch.equal(got.features, ref.features)


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path):
    pretrain.train(args_for(tmp_path, 4, "--ckpt-every", "2"))
    metrics = tmp_path / "metrics" / "seed0.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 5, "lo')  # killed mid-write
    pretrain.train(args_for(tmp_path, 6, "--ckpt-every", "2"))
    steps = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6


def test_resume_none_refuses_an_existing_run_and_overwrite_moves_it_aside(tmp_path):
    pretrain.train(args_for(tmp_path, 2))
    with pytest.raises(SystemExit, match="already holds a run of seed 0 .*use a new --out, or --overwrite"):
        pretrain.train(args_for(tmp_path, 2, "--resume", "none"))
    old = members.member_path(tmp_path, 0, 2).read_bytes()
    pretrain.train(args_for(tmp_path, 2, "--resume", "none", "--overwrite"))
    (aside,) = list((tmp_path / "replaced").iterdir())
    assert (aside / "members" / "seed0_step2.pt").read_bytes() == old  # kept, never deleted
    assert members.member_path(tmp_path, 0, 2).exists()


def test_a_truncated_jpeg_is_caught_by_the_scan(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, quality=95)
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    samples = [(str(good), 0), (str(bad), 1)]
    with pytest.raises(CorruptImageError, match="bad.jpg: unreadable image"):
        scan_images(samples, "error")
    kept, skipped = scan_images(samples, "skip")
    assert kept == [(str(good), 0)] and skipped == [str(bad)]


# ---------------------------------------------------------------- bad values fail before compute


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "-1"], "--lr must be > 0"),
        (["--bn-batches", "0"], "--bn-batches must be >= 1"),
        (["--global-batch", "0"], "--global-batch must be >= 1"),
        (["--ckpt-every", "0"], "--ckpt-every must be >= 1"),
        (["--log-every", "0"], "--log-every must be >= 1"),
        (["--train-size", "16"], "--train-size 16 is smaller than one batch"),
        (["--warmup-steps", "-1"], "--warmup-steps must be >= 0"),
        (["--cue-weights", "0", "0", "0", "0"], "--cue-weights"),
        (["--cue-weights", "1", "-1", "1", "1"], "--cue-weights"),
        (["--cue-task", "bogus"], "--cue-task 'bogus'"),
    ],
)
def test_bad_pretrain_flags_fail_in_one_line_before_training(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        pretrain.parse_args(["--out", str(tmp_path), "--steps", "4", *SMALL, *flags])
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- params: every value checked before any notebook


@pytest.fixture(scope="module")
def declared():
    from richreps import run

    root = Path(__file__).resolve().parent.parent
    return {nb: run.declared_parameters(nb) for nb in run.notebooks_in(root / "notebooks")}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"total_steps": -5}, "key 'total_steps' must be >= 1"),
        ({"cat_sizes": [0]}, "key 'cat_sizes' must be >= 2"),
        ({"cat_sizes": [1]}, "key 'cat_sizes' must be >= 2"),
        ({"cat_sizes": []}, "key 'cat_sizes' must not be empty"),
        ({"seeds": [0, 1]}, "key 'seeds' lists 2 seeds; CAT5 .key 'cat_sizes'. needs 5"),
        ({"plan_mode": "bogus"}, "key 'plan_mode' must be one of .*'bogus'"),
        ({"global_batch": 63}, "key 'global_batch' 63 does not split into nproc x nodes = 2"),
        ({"seed_sets": 0}, "key 'seed_sets' must be >= 1"),
        ({"cue_weights": [0, 0, 0, 0]}, "key 'cue_weights' must have a positive sum"),
        ({"cue_weights": [1, -1, 1, 1]}, "key 'cue_weights' must be >= 0"),
        ({"cue_weights": [1, 1, 1]}, "key 'cue_weights' must have 4 values"),
        ({"probe_sizes": [0, 0, 0]}, "key 'probe_sizes' must be >= 1"),
        ({"probe_grid": []}, "key 'probe_grid' must not be empty"),
        ({"probe_tasks": ["colour"]}, "key 'probe_tasks' must be one of .*'colour'"),
        ({"launch": "bogus"}, "key 'launch' must be one of .*'bogus'"),
        ({"lr": 0}, "key 'lr' must be > 0"),
        ({"arch": "vit"}, "key 'arch' must be one of"),
    ],
)
def test_bad_param_values_are_refused_naming_the_key(declared, params, message):
    from richreps import run

    with pytest.raises(run.ParamsError, match=message):
        run.validate(params, declared, "trial.yaml")


def test_an_empty_params_file_is_an_error_before_anything_runs(tmp_path, capsys):
    from richreps import run

    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    assert run.main([str(tmp_path / "empty.yaml"), "--outputs", str(tmp_path / "out")]) == 2
    assert "empty.yaml: empty; a params file must set at least one key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- integrity: checksums catch finite corruption


def tamper(path: Path, key: str) -> None:
    """Change one finite value of the first float tensor under `key`; save again with the old checksum."""
    ckpt = torch.load(path, weights_only=True)
    state = ckpt[key]
    name = next(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point())
    flat = state[name].clone().reshape(-1)
    flat[0] = 0.125 if flat[0] != 0.125 else 0.25
    state[name] = flat.reshape(state[name].shape)
    torch.save(ckpt, path)


def test_a_finitely_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    pretrain.train(args_for(tmp_path / "ref", 8, "--ckpt-every", "2"))
    pretrain.train(args_for(tmp_path / "run", 6, "--ckpt-every", "2"))
    newest = sorted((tmp_path / "run" / "ckpt" / "seed0").glob("step*.pt"))[-1]
    assert newest.name == "step000000004.pt"
    tamper(newest, "model")
    pretrain.train(args_for(tmp_path / "run", 8, "--ckpt-every", "2"))
    assert f"skipping corrupt checkpoint {newest} (payload checksum mismatch)" in capfd.readouterr().err
    ref = torch.load(members.member_path(tmp_path / "ref", 0, 8), weights_only=True)["state_dict"]
    got = torch.load(members.member_path(tmp_path / "run", 0, 8), weights_only=True)["state_dict"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # resumed from step 2: bitwise the uninterrupted run


def test_a_finitely_corrupted_member_is_refused(tmp_path):
    from richreps import experiment
    from richreps.config import Recipe

    path = experiment.save_untrained(tmp_path / "m.pt", Recipe(width=8), 0)
    tamper(path, "state_dict")
    with pytest.raises(members.CheckpointError, match="m.pt: payload checksum mismatch"):
        members.load(path)


def test_a_damaged_member_is_not_current_so_the_plan_trains_it_again(tmp_path):
    from richreps.config import Recipe

    args = args_for(tmp_path, 2)
    pretrain.train(args)
    path, recipe = members.member_path(tmp_path, 0, 2), Recipe.from_namespace(args)
    assert members.is_current(path, recipe, 0, 2)
    tamper(path, "state_dict")
    assert not members.is_current(path, recipe, 0, 2)
    with pytest.raises(members.CheckpointError, match="payload checksum mismatch"):
        members.require(path, recipe, 0, 2)


def test_a_finitely_corrupted_cache_file_is_recomputed(tmp_path):
    batches = toy_batches()
    ref = features.extract({"a": Identity()}, batches, "toy", tmp_path)["a"]
    path = features.cache_path(tmp_path, "a", "toy")
    data = torch.load(path, weights_only=True)
    data["features"][0, 0] += 1
    torch.save(data, path)
    again = Identity()
    assert torch.equal(features.extract({"a": again}, batches, "toy", tmp_path)["a"].features, ref.features)
    assert again.seen == 100


def test_the_nonfinite_marker_allows_a_start_from_another_checkpoint(tmp_path, capfd):
    nan = ["--lr", "1e30", "--weight-decay", "0", "--ckpt-every", "1"]
    with pytest.raises(pretrain.NonFiniteLoss):
        pretrain.train(args_for(tmp_path, 30, *nan))
    marker = json.loads((tmp_path / "FAILED_seed0.json").read_text())
    assert marker["step"] >= 1 and "checkpoint" in marker
    with pytest.raises(pretrain.NonFiniteLoss, match="restarting from the same checkpoint would repeat it"):
        pretrain.train(args_for(tmp_path, 30, *nan))
    if marker["checkpoint"] != "none":  # the checkpoint it recorded turns out corrupt: an older one is tried
        tamper(Path(marker["checkpoint"]), "model")
        with pytest.raises(pretrain.NonFiniteLoss) as e:
            pretrain.train(args_for(tmp_path, 30, *nan))
        assert "would repeat" not in str(e.value) and "so it is allowed" in capfd.readouterr().err
    pretrain.train(
        args_for(tmp_path, 3, "--resume", "none", "--overwrite")
    )  # a fresh start is always allowed
    assert members.member_path(tmp_path, 0, 3).exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--total", "-5", "--baseline", "10", "--cat", "2"], "--total and --baseline must be positive"),
        (["--total", "10", "--baseline", "10", "--cat", "0"], "--cat sizes must be >= 1"),
        (["--total", "10", "--baseline", "10", "--cat", "5", "--seeds", "1", "2"], "CAT5 needs 5"),
        (
            ["--total", "10", "--baseline", "10", "--cat", "2", "--warmup-steps", "-1"],
            "--warmup-steps must be >= 0",
        ),
        (
            [
                "--total",
                "10",
                "--baseline",
                "10",
                "--cat",
                "2",
                "--mode",
                "independent",
                "--warmup-fraction",
                "2",
            ],
            "in \\[0, 1\\)",
        ),
    ],
)
def test_bad_budget_values_fail_in_one_line(argv, message, capsys):
    from richreps import budget

    try:
        code = budget.main(argv)
    except SystemExit as e:  # argparse's own error exit
        code = e.code
    assert code == 2 and re_search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset", "cues", "--task", "colour"], "--task 'colour' is neither"),
        (["--dataset", "cues", "--sizes", "0", "10", "10"], "--sizes and --image-size must be >= 1"),
        (["--dataset", "cifar10", "--root", "x", "--workers", "-1"], "--workers must be >= 0"),
        (["--dataset", "cifar10"], "--root is required"),
    ],
)
def test_bad_probe_values_fail_before_loading_anything(tmp_path, extra, message, capsys):
    with pytest.raises(SystemExit) as e:
        probe_main(["--members", str(tmp_path / "never-read.pt"), *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def probe_main(argv):
    from richreps import probe

    return probe.main(argv)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--label-smoothing", "0.1"], "--label-smoothing 0.2, this run has 0.1"),
        (["--cue-redundant", "0.9", "0.8", "0.7", "0.6"], "--cue-redundant None, this run has"),
        (["--image-size", "64"], "--image-size 224, this run has 64"),
        (["--corrupt-policy", "skip"], "--corrupt-policy error, this run has skip"),
    ],
)
def test_resume_refuses_every_flag_that_changes_the_trajectory(tmp_path, flags, message):
    pretrain.train(args_for(tmp_path, 2, "--ckpt-every", "1", "--steps", "3"))
    with pytest.raises(SystemExit, match=message):
        pretrain.train(args_for(tmp_path, 4, *flags))
