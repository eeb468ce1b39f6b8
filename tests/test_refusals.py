"""Issue 30: nothing half-written counts as done, and no value too large or file unwritable is found after
compute. Each case asserts its one-line error (or its recovery) and that nothing outside the run's folder
changed."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from richreps import checkpoints, members, pretrain, publish, run
from richreps import params as richreps_params
from richreps.params import ParamsError, load_params

sys.path.insert(0, str(Path(__file__).parent))
from test_data import write_imagenet  # noqa: E402
from test_faults import declared, files_under, make_run, probe_main, runner_book  # noqa: E402, F401
from test_pretrain import SMALL, args_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def one_line(err: str) -> str:
    err = err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def runner(tmp_path: Path, yaml_text: str = "steps: 1\n", name: str = "trial") -> list[str]:
    """argv of the runner on a one-notebook folder, `outputs` under tmp_path, the params file `name`.yaml."""
    book = tmp_path / "notebooks"
    if not book.exists():
        runner_book(book)
    (tmp_path / f"{name}.yaml").write_text(yaml_text)
    return [str(tmp_path / f"{name}.yaml"), "--notebooks", str(book), "--outputs", str(tmp_path / "outputs")]


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only as a read-only mount is, for root too: creating a file in one fails with
    EROFS (chmod does not bind root, and the tests run as root in CI)."""
    folders: list[Path] = []
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).absolute() in folders:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return folders


# ---------------------------------------------------------------- 1. --publish: another run's folder, unwritable


def fake_run(out: Path, report: str = "# report\n") -> Path:
    out.mkdir(parents=True)
    (out / "report.md").write_text(report)
    return out


def test_publish_refuses_a_folder_holding_another_runs_publish_unless_told_to_replace(tmp_path, capsys):
    dest = tmp_path / "results"
    publish.publish(fake_run(tmp_path / "outputs" / "paper"), dest, tmp_path / "paper.yaml")
    record = json.loads((dest / "published.json").read_text())
    assert record["run"] == "paper" and record["params_file"] == str(tmp_path / "paper.yaml")
    argv = runner(tmp_path)
    before = files_under(tmp_path)
    code = run.main([*argv, "--publish", str(dest)])
    err = one_line(capsys.readouterr().err)
    assert (
        code == 2
        and f"error: --publish {dest}: holds the publish of run 'paper' ({tmp_path / 'paper.yaml'})" in err
    )
    assert "not of this run 'trial'" in err and "--publish-replace" in err
    assert files_under(tmp_path) == before and not (tmp_path / "outputs" / "trial").exists()
    with pytest.raises(publish.PublishError, match="holds the publish of run 'paper'"):  # publish itself too
        publish.publish(fake_run(tmp_path / "outputs" / "trial"), dest, tmp_path / "trial.yaml")
    # the same run name from another params file is another source; the same file is not
    with pytest.raises(
        publish.PublishError, match=r"run 'paper' \(.*paper.yaml\), not of this run 'paper' \(.*other"
    ):
        publish.check_publish(dest, tmp_path / "outputs", tmp_path / "other" / "paper.yaml")
    publish.check_publish(dest, tmp_path / "outputs", tmp_path / "paper.yaml")
    publish.check_publish(dest, tmp_path / "outputs", tmp_path / "trial.yaml", replace=True)
    publish.publish(tmp_path / "outputs" / "trial", dest, tmp_path / "trial.yaml", replace=True)
    assert json.loads((dest / "published.json").read_text())["run"] == "trial"


def test_a_publish_record_written_before_it_named_the_params_file_names_its_run_by_its_source(tmp_path):
    dest = tmp_path / "results"
    publish.publish(fake_run(tmp_path / "outputs" / "laptop"), dest)
    record = json.loads((dest / "published.json").read_text())
    del record["run"], record["params_file"]  # as results/laptop/published.json records it
    (dest / "published.json").write_text(json.dumps(record))
    publish.check_publish(dest, tmp_path / "o", ROOT / "params" / "laptop.yaml")  # the same run: allowed
    with pytest.raises(
        publish.PublishError, match="holds the publish of run 'laptop' .params file not recorded."
    ):
        publish.check_publish(dest, tmp_path / "o", ROOT / "params" / "smoke.yaml")


def test_a_params_file_in_the_repository_is_recorded_relative_to_it():
    """So a colleague's clone publishing params/laptop.yaml into results/laptop is the same source."""
    assert publish.params_name(ROOT / "params" / "laptop.yaml") == "params/laptop.yaml"


@pytest.mark.parametrize(
    "target, message",
    [
        ("{tmp}/file.txt/sub", r"--publish .*file.txt/sub: .*file.txt is a file, not a folder"),
        ("{tmp}/readonly", r"--publish .*readonly: cannot write in .*readonly \(Read-only file system\)"),
        (
            "{tmp}/readonly/new",
            r"--publish .*readonly/new: cannot write in .*readonly \(Read-only file system\)",
        ),
    ],
)
def test_a_publish_target_that_cannot_be_written_is_refused_before_any_notebook_runs(
    tmp_path, capsys, read_only, target, message
):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "readonly").mkdir()
    read_only.append(tmp_path / "readonly")
    argv = runner(tmp_path)
    before = files_under(tmp_path)
    code = run.main([*argv, "--publish", target.replace("{tmp}", str(tmp_path))])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and re_search(message, err), err
    assert files_under(tmp_path) == before and not (tmp_path / "outputs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a mode-0555 folder")
def test_a_publish_target_without_write_permission_is_refused(tmp_path, capsys):
    (tmp_path / "locked").mkdir(mode=0o555)
    code = run.main([*runner(tmp_path), "--publish", str(tmp_path / "locked")])
    assert code == 2 and "cannot write in" in one_line(capsys.readouterr().err)


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


# ---------------------------------------------------------------- 2. one live run per --out and seed


HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from richreps.checkpoints import take_run_lock
    lock = take_run_lock(Path(sys.argv[1]), 0)
    child = os.fork() if sys.argv[2] == "fork" else 0
    if child == 0 and sys.argv[2] == "fork":
        time.sleep(120)  # a loader worker outliving its parent
        os._exit(0)
    print("held", child, flush=True)
    time.sleep(120)
    """
)


def start_holder(out: Path, fork: bool = False) -> tuple[subprocess.Popen, int]:
    """A second process that holds (out, seed 0)'s run lock, as a live run does; (it, its forked child)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), "fork" if fork else "no"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    word, child = proc.stdout.readline().split()
    assert word == "held"
    return proc, int(child)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_second_live_run_into_the_same_out_and_seed_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    make_run(out, 2)
    holder, _ = start_holder(out)
    try:
        assert (
            out / "locks" / "seed0.lock"
        ).read_text() == f"pid {holder.pid} on host {socket.gethostname()}\n"
        before = files_under(tmp_path)
        cmd = [sys.executable, "-m", "richreps.pretrain", "--out", str(out), "--steps", "2", *SMALL]
        done = subprocess.run(
            [*cmd, "--resume", "none", "--overwrite"], capture_output=True, text=True, cwd=ROOT
        )
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert last.startswith(
            f"error: --out {out} --seed 0 is in use by a live run (pid {holder.pid} on host "
        )
        assert files_under(tmp_path) == before and not (out / "replaced").exists()  # nothing moved aside
        other = checkpoints.take_run_lock(out, 1)  # another seed of the same folder is another run
        assert other is not None
        other.release()
    finally:
        kill(holder.pid)
        holder.wait()
    # the holder died by SIGKILL: its lock went with it, and a run starts
    pretrain.train(args_for(out, 2, "--resume", "none", "--overwrite"))
    assert (out / "locks" / "seed0.lock").read_text().startswith(f"pid {os.getpid()} on host ")
    assert members.member_path(out, 0, 2).exists() and len(list((out / "replaced").iterdir())) == 1


def test_a_forked_child_of_a_dead_holder_does_not_keep_its_lock(tmp_path):
    holder, child = start_holder(tmp_path / "run", fork=True)
    try:
        kill(holder.pid)
        holder.wait()
        os.kill(child, 0)  # the child lives on, as a loader worker can for a moment
        lock = checkpoints.take_run_lock(tmp_path / "run", 0)
        assert lock is not None and lock.fd >= 0
        lock.release()
    finally:
        kill(child)


def test_a_run_started_again_in_the_same_process_is_not_refused_by_its_own_lock(tmp_path):
    """A notebook kernel or a test that keeps a failed run's traceback (and so its lock) may start it again."""
    out = tmp_path / "run"
    pretrain.train(args_for(out, 2))
    with pytest.raises(SystemExit, match="already holds a run of seed 0") as failed:
        pretrain.train(args_for(out, 2, "--resume", "none"))
    held = failed.value.__traceback__  # keeps the failed run's frames, and so its lock, alive
    assert checkpoints.take_run_lock(out, 0) is checkpoints.take_run_lock(out, 0)
    pretrain.train(args_for(out, 2, "--resume", "none", "--overwrite"))
    del held


# ---------------------------------------------------------------- 3. a member this version cannot read


def member_of_a_newer_version(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt["format"] = "richreps-member-3"
    ckpt["recipe"]["a_field_of_the_future"] = 1
    torch.save(ckpt, path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (member_of_a_newer_version, "format 'richreps-member-3' is not one this version of richreps reads"),
        (lambda p: p.write_bytes(b"\x00not a checkpoint" * 8), "not a loadable checkpoint"),
    ],
    ids=["newer format", "unreadable"],
)
def test_a_member_this_version_cannot_read_is_moved_to_replaced_never_overwritten(
    tmp_path, capfd, damage, message
):
    from richreps.config import Recipe

    out = tmp_path / "run"
    args = args_for(out, 2)
    pretrain.train(args)
    path = members.member_path(out, 0, 2)
    damage(path)
    kept = path.read_bytes()
    outside = files_under(tmp_path, out)
    capfd.readouterr()
    pretrain.train(args_for(out, 2))
    err = capfd.readouterr().err
    (aside,) = list((out / "replaced").iterdir())
    assert f"[pretrain] {path}: " in err and message in err and "records no recipe" not in err
    assert f"moved it to {aside / 'members' / 'seed0_step2.pt'}, training it again" in err
    assert (aside / "members" / "seed0_step2.pt").read_bytes() == kept  # never overwritten
    assert members.is_current(path, Recipe.from_namespace(args), 0, 2)
    assert files_under(tmp_path, out) == outside


def test_a_member_of_an_unknown_format_is_said_as_such_by_every_reader(tmp_path):
    from richreps.config import Recipe

    out = tmp_path / "run"
    pretrain.train(args_for(out, 2))
    path = members.member_path(out, 0, 2)
    member_of_a_newer_version(path)
    for read in (lambda: members.require(path, Recipe(), 0, 2), lambda: members.load(path)):
        with pytest.raises(members.CheckpointError, match="'richreps-member-3' is not one this version"):
            read()


# ---------------------------------------------------------------- 4. what cannot be meant, refused before compute


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--steps", "9223372036854775808"],
            r"--steps must be in \[1, 100000000\), got 9223372036854775808 \(10\^8",
        ),
        (["--steps", "100000000"], r"--steps must be in \[1, 100000000\)"),
        (["--warmup-steps", "100000000"], r"--warmup-steps must be in \[0, 100000000\)"),
        (["--global-batch", "16777216"], r"--global-batch must be in \[1, 16777216\), got 16777216 \(2\^24"),
        (["--image-size", "100000"], r"--image-size must be in \[1, 8192\), got 100000 \(8,192 pixels"),
        (["--train-size", "1000000000"], r"--train-size must be in \[0, 1000000000\).*ImageNet-21k"),
        (["--width", "65536"], r"--width must be in \[1, 65536\)"),
    ],
)
def test_a_step_count_no_run_means_is_a_one_line_error_not_a_traceback(tmp_path, flags, message):
    with pytest.raises(SystemExit) as e:
        pretrain.parse_args(["--out", str(tmp_path / "run"), *SMALL, "--steps", "4", *flags])
    assert re_search(message, str(e.value.code)) and len(str(e.value.code).splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"total_steps": 9223372036854775808},
            r"key 'total_steps' must be < 100000000, got 9223372036854775808 \(10\^8",
        ),
        ({"baseline_steps": 100_000_000}, "key 'baseline_steps' must be < 100000000"),
        ({"sweep_budgets": [10, 10**9]}, "key 'sweep_budgets' must be < 100000000"),
        ({"probe_sizes": [400, 200, 10**12]}, r"key 'probe_sizes' must be < 1000000000, .*\(10\^9 images"),
        ({"image_size": 100_000}, r"key 'image_size' must be < 8192, got 100000 \(8,192 pixels"),
        ({"global_batch": 2**30}, r"key 'global_batch' must be < 16777216"),
        ({"arch": "x" * 5000}, r"key 'arch' must be one of .*, got 'x{20,56}\.\.\."),
        ({"probe_tasks": ["y" * 5000]}, r"got 'y{20,56}\.\.\."),
        ({"lr": "z" * 100_000}, r"key 'lr' must be float .*, got str 'z{20,56}\.\.\."),
    ],
)
def test_a_param_no_plan_means_is_refused_quoting_at_most_a_short_prefix(declared, params, message):  # noqa: F811
    with pytest.raises(ParamsError) as e:
        richreps_params.validate(params, declared, "trial.yaml")
    assert re_search(message, str(e.value)) and not re_search("[xyz]{61}", str(e.value)), str(e.value)


@pytest.mark.parametrize("key", ["l1_grid", "probe_grid", "seeds", "sweep_budgets"])
def test_a_list_longer_than_any_plan_is_refused_before_anything_is_built(tmp_path, key):
    (tmp_path / "trial.yaml").write_text(f"{key}: [{', '.join(['1'] * 1001)}]\n")
    with pytest.raises(ParamsError, match=f"key '{key}' holds 1,001 values; at most 1,000"):
        load_params(tmp_path / "trial.yaml")


def test_a_plan_over_max_gpu_hours_is_refused_before_any_notebook_runs(tmp_path, monkeypatch, capsys):
    """The real notebooks' plan (notebook 03 selected), at a throughput that makes it years of GPU time."""
    monkeypatch.setattr(run, "_execute", lambda *a, **k: pytest.fail("a notebook ran"))
    (tmp_path / "trial.yaml").write_text("images_per_s_per_device: 0.001\n")
    argv = [str(tmp_path / "trial.yaml"), "--outputs", str(tmp_path / "outputs"), "--only", "03"]
    code = run.main(argv)
    err = one_line(capsys.readouterr().err)
    assert code == 1 and re_search(r"the plan needs [\d,]+ GPU-hours .*over --max-gpu-hours 10,000", err), err
    assert not (tmp_path / "outputs").exists()
    assert run.main([*argv, "--max-gpu-hours", "0"]) == 2
    assert "--max-gpu-hours must be > 0, got 0.0" in one_line(capsys.readouterr().err)


def test_publish_replace_without_publish_is_refused(tmp_path, capsys):
    assert run.main([*runner(tmp_path), "--publish-replace"]) == 2
    assert "error: --publish-replace needs --publish DIR" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------- 5. every output folder probed for writing first


@pytest.mark.parametrize(
    "out, message",
    [
        ("{tmp}/file.txt", r"--out .*file.txt: .*file.txt is not a folder"),
        ("{tmp}/file.txt/run", r"--out .*file.txt/run: .*file.txt is a file, not a folder"),
        ("{tmp}/readonly/run", r"--out .*readonly/run: cannot write in .*readonly \(Read-only file system\)"),
    ],
)
def test_pretrain_refuses_an_out_it_cannot_write_before_anything(tmp_path, read_only, out, message):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "readonly").mkdir()
    read_only.append(tmp_path / "readonly")
    before = files_under(tmp_path)
    with pytest.raises(SystemExit) as e:
        pretrain.parse_args(["--out", out.replace("{tmp}", str(tmp_path)), "--steps", "2", *SMALL])
    assert re_search(f"^error: {message}", str(e.value.code)) and len(str(e.value.code).splitlines()) == 1
    assert files_under(tmp_path) == before and not (tmp_path / "readonly" / "run").exists()


def test_the_runner_probes_outputs_for_writing(tmp_path, read_only, capsys):
    (tmp_path / "readonly").mkdir()
    read_only.append(tmp_path / "readonly")
    argv = runner(tmp_path)
    argv[argv.index("--outputs") + 1] = str(tmp_path / "readonly" / "outputs")
    before = files_under(tmp_path)
    assert run.main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert re_search(
        r"--outputs .*readonly/outputs: cannot write in .*readonly \(Read-only file system\)", err
    )
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("cache", ["{tmp}/README.md", "{tmp}/README.md/cache", "{tmp}/readonly/cache"])
def test_probe_refuses_a_cache_it_cannot_write_before_loading_anything(tmp_path, read_only, capsys, cache):
    (tmp_path / "README.md").write_text("# not a folder\n")
    (tmp_path / "readonly").mkdir()
    read_only.append(tmp_path / "readonly")
    before = files_under(tmp_path)
    cache = cache.replace("{tmp}", str(tmp_path))
    code = probe_main(["--members", str(tmp_path / "never-read.pt"), "--dataset", "cues", "--cache", cache])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and err.startswith(f"error: --cache {cache}: ") and "Traceback" not in err
    assert files_under(tmp_path) == before


# ---------------------------------------------------------------- 6. a params file is read as untrusted text


def test_a_billion_laughs_params_file_is_refused_at_once(tmp_path, monkeypatch):
    """Refused at its first alias, while the file is composed: no value is ever constructed, so nothing
    expands, and the message quotes no expanded value (only the path and a short reason)."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")

    def constructed(*args, **kwargs):
        raise AssertionError("a value was constructed before the alias was refused")

    monkeypatch.setattr(richreps_params._UniqueKeyLoader, "construct_document", constructed)
    with pytest.raises(ParamsError) as e:
        load_params(path)
    message = str(e.value).removeprefix(f"{path}: ")
    assert (
        message.startswith("line 2: alias *a: a params file may not use YAML aliases") and len(message) < 200
    )


def test_a_five_million_value_list_is_refused_quickly(tmp_path, monkeypatch):
    """Refused by its size before YAML parses a byte of it."""
    (tmp_path / "big.yaml").write_text("seeds: [" + ", ".join(["0"] * 5_000_000) + "]\n")

    def parsed(*args, **kwargs):
        raise AssertionError("the file was parsed before its size was checked")

    monkeypatch.setattr(richreps_params.yaml, "load", parsed)
    with pytest.raises(ParamsError, match=r"big.yaml: over 1,000,000 bytes"):
        load_params(tmp_path / "big.yaml")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("binary.yaml", bytes(range(256)) * 4, r"binary.yaml: not UTF-8 text \(byte 0x80 at offset 128\)"),
        ("nul.yaml", b"steps: 1\x00\n", r"nul.yaml: not valid YAML \(unacceptable character #x0000"),
        (
            os.fsdecode(b"caf\xe9.yaml"),
            b"steps: 1\n",
            r"params file name .*caf\\xe9.yaml: not UTF-8; rename it",
        ),
        ("deep.yaml", b"steps: " + b"[" * 2000 + b"]" * 2000 + b"\n", "deep.yaml: nested too deeply"),
        ("huge_int.yaml", b"steps: " + b"9" * 5000 + b"\n", "huge_int.yaml: a value YAML cannot convert"),
    ],
)
def test_a_params_file_that_is_not_yaml_text_is_refused_in_one_line(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    argv = runner(tmp_path)
    argv[0] = str(tmp_path / name)
    assert run.main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert re_search(message, err) and "Traceback" not in err, err
    assert not (tmp_path / "outputs").exists()


# ---------------------------------------------------------------- 7. ImageFolder walks no loops


def test_data_check_refuses_a_class_link_into_the_dataset_naming_it(tmp_path, capsys):
    """Refused, not ignored: a link inside the root is a loop (`train/zz_loop -> .`) or another split's
    images, and a dataset whose class count depends on how links are followed is not the one meant."""
    from richreps.data import __main__ as cli

    root = write_imagenet(tmp_path / "imagenet", classes=4, per_class=2, val_per_class=1)
    (root / "train" / "zz_loop").symlink_to(".")
    before = files_under(root)
    assert cli.main(["check", "--dataset", "imagenet", "--root", str(root)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"error: {root / 'train' / 'zz_loop'}: a link to {root / 'train'}, inside the dataset" in err
    assert files_under(root) == before
    (root / "train" / "zz_loop").unlink()
    assert cli.main(["check", "--dataset", "imagenet", "--root", str(root)]) == 0
    assert "imagenet: 4 classes" in capsys.readouterr().out


def test_a_val_class_linked_to_train_is_refused_and_a_class_linked_from_outside_is_a_class(tmp_path):
    from richreps.data import DatasetError, index_dataset

    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=2, val_per_class=1)
    wnid = sorted(p.name for p in (root / "train").iterdir())[0]
    elsewhere = write_imagenet(tmp_path / "shared", classes=4, per_class=2, val_per_class=1)
    extra = sorted(p.name for p in (elsewhere / "train").iterdir())[-1]
    (root / "train" / extra).symlink_to(elsewhere / "train" / extra)  # a dataset assembled by links
    assert len(index_dataset("imagenet", root).classes) == 4
    (root / "val" / wnid).rename(tmp_path / "val_class")
    (root / "val" / wnid).symlink_to(root / "train" / wnid)  # the training images, tested
    with pytest.raises(DatasetError, match=f"val/{wnid}: a link to .*train/{wnid}, inside the dataset"):
        index_dataset("imagenet", root)


def test_an_empty_train_class_folder_is_refused_naming_it(tmp_path):
    from richreps.data import DatasetError, index_dataset

    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=2, val_per_class=1)
    (root / "train" / "n99999999").mkdir()
    with pytest.raises(DatasetError, match="train/n99999999: no images .* in a class folder"):
        index_dataset("imagenet", root)
