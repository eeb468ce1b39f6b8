"""Fault injection: untrusted files are data, bad values fail before compute, damaged state is recovered."""

import json
import logging
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from richreps import features, members, pretrain, untrained
from richreps import params as richreps_params
from richreps.data import CorruptImageError, DatasetError, build_dataset, scan_images

sys.path.insert(0, str(Path(__file__).parent))
from test_data import imagenet, write_cifar  # noqa: E402, F401 - imagenet: a fixture
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
    ref = features.extract({"a": Identity()}, batches, "toy", tmp_path)["a"].features.tensor()
    path = features.cache_path(tmp_path, "a", "toy")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "zeroed":
        path.write_bytes(bytes(len(path.read_bytes())))
    else:
        torch.save({"features": Evil(tmp_path / "pwned"), "labels": 0}, path)
    again = Identity()
    got = features.extract({"a": again}, batches, "toy", tmp_path)["a"]
    assert again.seen == 100 and torch.equal(got.features.tensor(), ref)
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
    (growing,) = (tmp_path / "c" / "partial").rglob("a.npy")  # 3 chunks of 20 rows x 4 float16
    assert len(growing.read_bytes()) == 128 + 60 * 8
    growing.write_bytes(growing.read_bytes()[: 128 + 30 * 8])  # the second chunk is torn
    m = Identity()
    got = features.extract({"a": m}, batches, "toy", tmp_path / "c", chunk_batches=2)["a"]
    assert m.seen == 80  # chunk 0 (20 images) kept; chunks 1 and 2 and the rest recomputed
    ref = features.extract({"a": Identity()}, batches, "toy", tmp_path / "ref")["a"]
    assert torch.equal(got.features.tensor(), ref.features.tensor())


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
        (["--global-batch", "0"], r"--global-batch must be in \[1, 16777216\)"),
        (["--ckpt-every", "0"], "--ckpt-every must be >= 1"),
        (["--log-every", "0"], "--log-every must be >= 1"),
        (["--train-size", "16"], "--train-size 16 is smaller than one batch"),
        (["--warmup-steps", "-1"], r"--warmup-steps must be in \[0, 100000000\), got -1"),
        (["--cue-weights", "0", "0", "0", "0"], "--cue-weights"),
        (["--cue-weights", "1", "-1", "1", "1"], "--cue-weights"),
        (["--cue-task", "bogus"], "--cue-task 'bogus'"),
        # issue 21: each of these used to be accepted, or to fail after data, model or training
        (["--val-fraction", "0"], r"--val-fraction must be in \(0, 1\), got 0.0"),
        (["--val-fraction", "1.5"], r"--val-fraction must be in \(0, 1\), got 1.5"),
        (["--val-fraction", "-0.1"], r"--val-fraction must be in \(0, 1\), got -0.1"),
        (["--workers", "-2"], "--workers must be >= 0, got -2"),
        (["--label-smoothing", "2"], r"--label-smoothing must be in \[0, 1\), got 2.0"),
        (["--cue-redundant", "2", "1", "1", "1"], r"--cue-redundant must be in \[0, 1\], got \[2.0, 1.0"),
        (["--beta1", "0"], r"--beta1 must be in \(0, 1\), got 0.0"),
        (["--beta1", "2"], r"--beta1 must be in \(0, 1\), got 2.0"),
        (["--beta2", "2"], r"--beta2 must be in \(0, 1\), got 2.0"),
        (["--seed", "18446744073709551615"], r"--seed must be in \[0, 9223372036854775807\]"),
        (["--data-seed", "-1"], r"--data-seed must be in \[0, 9223372036854775807\]"),
        (["--lr", "inf"], "--lr must be finite, got inf"),
        (["--lr", "nan"], "--lr must be finite, got nan"),
        (["--ckpt-minutes", "-1"], "--ckpt-minutes must be > 0, got -1.0"),
        (["--data", "imagenet"], "--data imagenet needs --data-root"),
    ],
)
def test_bad_pretrain_flags_fail_in_one_line_before_training(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        pretrain.parse_args(["--out", str(tmp_path), "--steps", "4", *SMALL, *flags])
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- params: every value checked before any notebook


@pytest.fixture(scope="module")
def declared():

    root = Path(__file__).resolve().parent.parent
    return {
        nb: richreps_params.declared_parameters(nb) for nb in richreps_params.notebooks_in(root / "notebooks")
    }


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

    with pytest.raises(richreps_params.ParamsError, match=message):
        richreps_params.validate(params, declared, "trial.yaml")


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
    from richreps.config import Recipe

    path = untrained.save_untrained(tmp_path / "m.pt", Recipe(width=8), 0)
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
    ref = features.extract({"a": Identity()}, batches, "toy", tmp_path)["a"].features.tensor()
    path = features.cache_path(tmp_path, "a", "toy")
    data = np.load(path, mmap_mode="r+")  # a finite value changed in place: the file still parses
    data[0, 0] += 1
    data.flush()
    del data
    again = Identity()
    assert torch.equal(features.extract({"a": again}, batches, "toy", tmp_path)["a"].features.tensor(), ref)
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
        (["--total", "10", "--baseline", "10", "--cat", "2", "--seeds", "7", "7"], "seed 7 more than once"),
        (
            ["--total", "100", "--baseline", "100", "--cat", "2", "--warmup-steps", "500"],
            "--warmup-steps 500 is longer than the shortest member .CAT2: 50 steps.",
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
        (["--dataset", "cues", "--sizes", "1", "1", "1"], "--sizes 1 1 1: each must be >= 10"),
        (["--dataset", "cues", "--task", "position_row", "--sizes", "99", "99", "1"], "each must be >= "),
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


# ---------------------------------------------------------------- nothing lost, nothing mislabelled (issue 21)
# Each case asserts its one-line error or its recovery, and that no file outside the run's own folder changed.


def files_under(root: Path, but: Path | None = None) -> dict[str, bytes]:
    """Every file under `root`, except under `but` (the run's own folder), with its bytes. A run's lock
    files (<out>/locks/seed<S>.lock: who runs it now, written by every start) are not what it wrote."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not (but is not None and p.is_relative_to(but))
        and not (p.parent.name == "locks" and p.suffix == ".lock")
    }


def runner_book(folder: Path) -> Path:
    """One notebook declaring the keys the runner cases need."""
    from test_run import make_notebook

    folder.mkdir()
    params = "\n".join(
        [
            'output_dir: str = "out"',
            "steps: int = 1",
            'pretrain_data: str = "cues"',
            'data_root: str = ""',
            'cifar10_root: str = ""',
            'imagenet_root: str = ""',
            'inat18_root: str = ""',
        ]
    )
    make_notebook(folder / "01_ok.ipynb", params, "print('steps', steps)")
    return folder


@pytest.mark.parametrize(
    "yaml_text, extra, message",
    [
        ("steps: 1\nsteps: 2\n", [], r"trial.yaml: key 'steps' is given twice \(lines 1 and 2\)"),
        ("cifar10_root: {tmp}/file.txt\n", [], r"key 'cifar10_root': .*file.txt is not a folder"),
        ("imagenet_root: {tmp}/empty\n", [], r"key 'imagenet_root': .*empty/train: folder not found"),
        ("inat18_root: {tmp}/empty\n", [], r"key 'inat18_root': .*train2018.json: file not found"),
        ("pretrain_data: imagenet\ndata_root: {tmp}/empty\n", [], r"key 'data_root': .*folder not found"),
        ("steps: 1\n", ["--outputs", "{tmp}/file.txt"], r"--outputs .*file.txt: not a folder"),
        ("steps: 1\n", ["--publish", "."], r"--publish \. holds --outputs"),
        ("steps: 1\n", ["--publish", "{tmp}/outputs"], r"--publish .*outputs is inside --outputs"),
        ("steps: 1\n", ["--publish", "{tmp}/outputs/trial"], r"--publish .*trial is inside --outputs"),
        ("steps: 1\n", ["--publish", "{tmp}/file.txt"], r"--publish .*file.txt: not a folder"),
        (
            "steps: 1\n",
            ["--publish", "{tmp}/results"],
            r"--publish .*results: holds 1 file\(s\) no publish wrote or changed since \(colleague.csv\)",
        ),
    ],
)
def test_the_runner_refuses_before_any_notebook_runs_and_changes_nothing(
    tmp_path, monkeypatch, capsys, yaml_text, extra, message
):
    """Issue 21 items 1, 4, 6: publish targets, duplicate keys, roots that are files or empty folders, a
    file as --outputs: each used to run (or fail after the notebooks ran, or delete what it found)."""
    from richreps import run

    book = runner_book(tmp_path / "notebooks")
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "colleague.csv").write_text("a colleague's numbers\n")
    (tmp_path / "trial.yaml").write_text(yaml_text.replace("{tmp}", str(tmp_path)))
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    argv = ["trial.yaml", "--notebooks", str(book), "--outputs", str(tmp_path / "outputs")]
    code = run.main([*argv, *(a.replace("{tmp}", str(tmp_path)) for a in extra)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re_search(message, err), err
    assert files_under(tmp_path) == before and not (tmp_path / "outputs").exists()  # nothing ran


def test_publish_into_a_folder_holding_a_file_it_did_not_write_keeps_the_file(tmp_path):
    """Issue 21 item 1: `publish` removed the target whole before copying."""
    from richreps import run

    out = tmp_path / "outputs" / "trial"
    (out / "tables").mkdir(parents=True)
    (out / "report.md").write_text("# report\n")
    (out / "tables" / "t.csv").write_text("a\n1\n")
    dest = tmp_path / "results"
    run.publish(out, dest)
    (dest / "notes.txt").write_text("mine, not the runner's\n")
    with pytest.raises(run.PublishError, match=r"holds 1 file\(s\) no publish wrote .*notes.txt"):
        run.publish(out, dest)
    assert (dest / "notes.txt").read_text() == "mine, not the runner's\n"
    assert (dest / "report.md").read_text() == "# report\n"


def make_run(out: Path, steps: int, *extra) -> dict[str, bytes]:
    pretrain.train(args_for(out, steps, *extra))
    return files_under(out)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--label-smoothing", "0.1"], "--label-smoothing 0.2, this run has 0.1"),
        (["--cue-redundant", "0.9", "0.8", "0.7", "0.6"], "--cue-redundant None, this run has"),
        (["--data-root", "{tmp}"], "--data-root , this run has"),
        (["--image-size", "64"], "--image-size 224, this run has 64"),
        (["--data-seed", "3"], "--data-seed 1, this run has 3"),
        (["--seed", "1", "--lr", "0.01"], "seed0_step2.pt was written with --lr 0.0025, this run has 0.01"),
    ],
)
def test_a_recipe_change_with_an_early_export_planned_is_refused_before_training(tmp_path, flags, message):
    """Issue 21 item 2: a plan exporting a member below every checkpoint never met the recipe check."""
    out = tmp_path / "run"
    members_before = make_run(out, 4, "--export-at", "2", "--ckpt-every", "1")
    outside = files_under(tmp_path, out)
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    with pytest.raises(SystemExit, match=message):
        pretrain.train(args_for(out, 4, "--export-at", "1", "2", "--ckpt-every", "1", *flags))
    assert files_under(out) == members_before and files_under(tmp_path, out) == outside


@pytest.mark.parametrize("resume", ["auto", "none"])
def test_overwrite_moves_the_old_run_to_replaced_in_either_resume_mode(tmp_path, resume):
    """Issue 21 item 2: `--overwrite` without `--resume none` trained over the old run with no replaced/."""
    out = tmp_path / "run"
    old = make_run(out, 2)
    outside = files_under(tmp_path, out)
    pretrain.train(args_for(out, 2, "--lr", "0.01", "--overwrite", "--resume", resume))
    (aside,) = list((out / "replaced").iterdir())
    assert files_under(aside) == old  # every file of the old run kept, byte for byte
    recipe = members.recorded_recipe(members.member_path(out, 0, 2))
    assert recipe["lr"] == 0.01 and files_under(tmp_path, out) == outside


def rewrite_record(path: Path, key: str, value) -> None:
    """Set a checkpoint's or member's recorded recipe to `value`, keeping every checksum valid."""
    from richreps.io import payload_digest

    ckpt = torch.load(path, weights_only=True)
    ckpt[key] = value
    if "model" in ckpt:  # a training checkpoint: its digest covers the whole payload
        ckpt.pop("digest")
        ckpt["digest"] = payload_digest(ckpt)
    torch.save(ckpt, path)


def test_a_checkpoint_whose_recipe_is_not_a_mapping_is_skipped_and_the_run_finishes_bitwise(tmp_path, capfd):
    """Issue 21 item 6: a recorded recipe that is a string stopped the resume with a traceback."""
    ref = make_run(tmp_path / "ref", 6)
    out = tmp_path / "run"
    pretrain.train(args_for(out, 4, "--ckpt-every", "1"))
    newest = sorted((out / "ckpt" / "seed0").glob("step*.pt"))[-1]
    rewrite_record(newest, "recipe", "small_cnn")
    outside = files_under(tmp_path, out)
    pretrain.train(args_for(out, 6, "--ckpt-every", "1"))
    assert f"skipping damaged checkpoint {newest} (its recipe is a str)" in capfd.readouterr().err
    got = torch.load(members.member_path(out, 0, 6), weights_only=True)["state_dict"]
    want = torch.load(tmp_path / "ref" / "members" / "seed0_step6.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(got[k], want[k]) for k in want) and files_under(tmp_path, out) == outside
    assert files_under(tmp_path / "ref") == ref


@pytest.mark.parametrize("record", ["mixture", ["mixture"]], ids=["string", "list"])
def test_a_member_whose_recipe_is_not_a_mapping_is_refused_naming_the_file(tmp_path, capsys, record):
    """Issue 21 item 6: the probe raised TypeError; a start of the run on its folder trained over it."""
    out = tmp_path / "run"
    pretrain.train(args_for(out, 2))
    path = members.member_path(out, 0, 2)
    rewrite_record(path, "recipe", record)
    before = files_under(tmp_path)
    with pytest.raises(SystemExit, match=f"{path}: damaged member file .its recorded recipe is a"):
        pretrain.train(args_for(out, 4))
    capsys.readouterr()
    code = probe_main(["--members", str(path), "--dataset", "cues", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"error: {path}: damaged member file" in err and len(err.splitlines()) == 1
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("reader", ["read_metrics", "resume"])
def test_a_torn_metrics_line_is_dropped_with_a_warning_wherever_metrics_are_read(tmp_path, capfd, reader):
    """Issue 21 item 6: launch.read_metrics (notebook 03, after a killed SLURM job) raised on a torn line."""
    from richreps import launch

    out = tmp_path / "run"
    pretrain.train(args_for(out, 4, "--ckpt-every", "2"))
    metrics = out / "metrics" / "seed0.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 5, "lo')  # killed mid-write
    capfd.readouterr()
    outside = files_under(tmp_path, out)
    if reader == "read_metrics":
        table = launch.read_metrics(out)
        assert table["step"].max() == 4 and set(table["seed"]) == {0}
    else:
        pretrain.train(args_for(out, 6, "--ckpt-every", "2"))
        assert [json.loads(ln)["step"] for ln in metrics.read_text().splitlines()][-1] == 6
    assert f"warning: {metrics}: dropped 1 unreadable line(s)" in capfd.readouterr().err
    assert files_under(tmp_path, out) == outside


@pytest.mark.parametrize("how", ["same path", "another path", "byte copy"])
def test_one_member_given_twice_is_not_a_cat2(tmp_path, capsys, how):
    """Issue 21 item 3: `probe --members m.pt m.pt` reported CAT2."""
    from richreps.config import Recipe

    a = untrained.save_untrained(tmp_path / "m.pt", Recipe(width=8), 0)
    (tmp_path / "sub").mkdir()
    paths = {"same path": a, "another path": tmp_path / "sub" / ".." / "m.pt", "byte copy": tmp_path / "c.pt"}
    b = paths[how]
    if how == "byte copy":
        b.write_bytes(a.read_bytes())
    before = files_under(tmp_path)
    with pytest.raises(SystemExit) as e:
        probe_main(["--members", str(a), str(b), "--dataset", "cues", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--members {a} and {b} are the same member" in err
    assert files_under(tmp_path) == before and not (tmp_path / "cache").exists()


def test_replicate_seed_sets_that_would_share_a_seed_are_refused():
    """Issue 21 item 3: seed sets shift the seeds by 100 k, so seeds 0 and 100 put one run in two sets."""
    from richreps import budget

    with pytest.raises(ValueError, match="seed sets 0 and 1 share seed 100"):
        budget.replicate_plans(10, 10, [2], "shared-prefix", [0, 100], 2)
    assert len(budget.replicate_plans(10, 10, [2], "shared-prefix", [0, 1], 2)) == 2


@pytest.fixture
def imagenet_with_a_text_file(imagenet):  # noqa: F811 - test_data's ImageNet folder
    from test_data import WNIDS

    bad = imagenet / "train" / WNIDS[1] / "notes.JPEG"
    bad.write_text("a text file named like a JPEG\n")
    return imagenet, bad


IMAGENET_TINY = ["--image-size", "16", "--global-batch", "4", "--bn-batches", "1", "--val-fraction", "0.2"]


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_unreadable_images_are_found_before_step_1_under_either_policy(
    tmp_path, imagenet_with_a_text_file, caplog, policy
):
    """Issue 21 item 5: under `error` the run stopped mid-epoch with a traceback."""
    root, bad = imagenet_with_a_text_file
    out = tmp_path / "run"
    flags = ["--data", "imagenet", "--data-root", str(root), "--workers", "0", "--corrupt-policy", policy]
    args = pretrain.parse_args(["--out", str(out), "--steps", "2", "--width", "4", *IMAGENET_TINY, *flags])
    outside = files_under(tmp_path, out)
    if policy == "error":
        with pytest.raises(SystemExit, match=f"{bad} .UnidentifiedImageError.: unreadable image under "
                           "--corrupt-policy error; nothing was trained"):  # fmt: skip
            pretrain.train(args)
        assert not (out / "members").exists() and not (out / "ckpt").exists()
    else:
        with caplog.at_level(logging.WARNING):
            pretrain.train(args)
        assert f"skipped 1 unreadable images (corrupt_policy=skip): {bad}" in caplog.text
        assert members.member_path(out, 0, 2).exists()
    assert files_under(tmp_path, out) == outside


def test_data_check_counts_readable_and_unreadable_files_apart(imagenet_with_a_text_file, capsys):
    """Issue 21 item 8: the unreadable file was counted in the split's total."""
    from richreps.data import __main__ as cli

    root, bad = imagenet_with_a_text_file
    before = files_under(root)
    assert cli.main(["check", "--dataset", "imagenet", "--root", str(root), "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "readable images: train 15, val 3" in out and "test 3" in out  # 18 readable in train
    assert "unreadable files: 1 (train 1, test 0)" in out and str(bad) in out
    assert files_under(root) == before


def test_a_damaged_member_is_trained_again_and_said_with_its_path(tmp_path, capfd):
    """Issue 21 item 8: a damaged member in a run folder was retrained without a word."""
    from richreps.config import Recipe

    out = tmp_path / "run"
    args = args_for(out, 2)
    pretrain.train(args)
    path = members.member_path(out, 0, 2)
    tamper(path, "state_dict")
    outside = files_under(tmp_path, out)
    capfd.readouterr()
    pretrain.train(args_for(out, 2))
    err = capfd.readouterr().err
    assert f"[pretrain] {path}: payload checksum mismatch" in err and "training it again" in err
    assert members.is_current(path, Recipe.from_namespace(args), 0, 2)
    assert files_under(tmp_path, out) == outside


def test_a_passed_image_check_is_not_repeated_at_a_restart_until_the_files_change(
    tmp_path, imagenet_with_a_text_file, monkeypatch
):
    """Issue 20 item 7: every start and requeue decoded all of ImageNet again before step 1."""
    from richreps import checkpoints
    from richreps.config import Recipe
    from richreps.data import folders

    root, bad = imagenet_with_a_text_file
    bad.unlink()  # a clean folder
    recipe = Recipe(data="imagenet", data_root=str(root))
    out = tmp_path / "run"
    decoded = []
    real = folders.first_unreadable
    monkeypatch.setattr(
        folders, "first_unreadable", lambda s, desc="", **kw: decoded.append(len(s)) or real(s, **kw)
    )
    checkpoints.check_images(recipe, 0, 1, torch.device("cpu"), out)
    checkpoints.check_images(recipe, 0, 1, torch.device("cpu"), out)  # a restart: the record stands
    assert decoded == [18] and (out / "metrics" / "image_check.json").is_file()
    bad.write_text("a text file named like a JPEG\n")  # a file added: the folder's listing changed
    with pytest.raises(SystemExit, match="unreadable image under --corrupt-policy error"):
        checkpoints.check_images(recipe, 0, 1, torch.device("cpu"), out)
    assert decoded == [18, 19]


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        (
            "warmup_steps: 500\n",
            r"the plan of keys .*warmup_steps: --warmup-steps 500 is longer than the shortest",
        ),
        ("seeds: [0, 1, 2, 3, 100]\n", r"the plan of keys .*: seed sets 0 and 1 share seed 100"),
        (
            "probe_sizes: [5, 300, 1000]\n",
            r"key 'probe_sizes' \[5, 300, 1000\]: every split needs at least 10",
        ),
    ],
)
def test_a_plan_or_probe_size_that_would_fail_after_training_is_refused_before_notebook_01(
    tmp_path, capsys, yaml_text, message
):
    """Review of issue 21 item 4: notebook 03's plan and notebook 04's probe sizes were checked only when
    those notebooks ran (a traceback from notebook 03, or a failure after training)."""
    from richreps import run

    (tmp_path / "trial.yaml").write_text(yaml_text)
    code = run.main([str(tmp_path / "trial.yaml"), "--outputs", str(tmp_path / "outputs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re_search(message, err), err
    assert not (tmp_path / "outputs").exists()
