"""Issue 30 items 1 and 2: nothing outlives its runner, nothing half-written counts as done.

The runner itself (`python -m richreps.run ... --only 03`) is killed at three moments: during training, right
after an export, and before a run's final evaluation (its last member written). Each time, every process of the run (kernel, torchrun's
agent, its workers, found from /proc before the kill) is gone within seconds, and a re-run writes notebook 03's
tables equal to those of an uninterrupted run: the killed seed is finished, never reported "done earlier".
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from bench.processes import descendants
from richreps import completion
from richreps import run as run_module
from richreps.config import Recipe

# notebook 03 at its smallest: CAT1 (seed 0, 16 steps) and CAT2 (seeds 0 and 1, 8 steps each), one process
TINY = {
    "width": 4, "image_size": 16, "val_size": 64, "baseline_steps": 16, "total_steps": 16, "cat_sizes": [2],
    "seeds": [0, 1], "sweep_budgets": [], "trajectory_steps": [], "seed_sets": 1, "wide_control": False,
    "joint_control": False, "early_stop_controls": False,
    "global_batch": 32, "warmup_steps": 1, "bn_batches": 2, "eval_every": 8, "ckpt_every": 4, "nproc": 1,
}  # fmt: skip
TABLES = ("03_plan.csv", "03_members.csv", "03_final_eval.csv")


def runner(tmp: Path, outputs: Path, **env) -> subprocess.Popen:
    params = tmp / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY))
    cmd = [sys.executable, "-m", "richreps.run", str(params), "--only", "03", "--outputs", str(outputs)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **env},
    )


def run_dir(outputs: Path) -> Path | None:
    found = sorted((outputs / "tiny" / "pretrain").glob("recipe-*"))
    return found[0] if found else None


def tables(outputs: Path) -> dict[str, str]:
    return {name: (outputs / "tiny" / "tables" / name).read_text() for name in TABLES}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"  # a zombie has ended; its reaper has not looked yet


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = runner(tmp, tmp / "o")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    return tables(tmp / "o")


def moment_reached(outputs: Path, moment: str) -> bool:
    """Seed 0 paused by pretrain's fault hook: after step 5 (training), right after its first member (the
    export at step 8: found on disk, no hook), or before its final evaluation (its last member written)."""
    folder = run_dir(outputs)
    if folder is None:
        return False
    if moment == "export":
        return (folder / "members" / "seed0_step8.pt").exists()
    return (folder / "paused_seed0").exists()


PAUSE = {"training": "step:5", "final-eval": "final-eval"}


@pytest.mark.parametrize(
    "moment, how",
    [
        ("training", "SIGTERM to the runner"),
        ("export", "SIGKILL to its group"),
        ("final-eval", "SIGKILL to it"),
    ],
)
def test_a_killed_runner_leaves_no_process_and_a_rerun_finishes_its_tables(
    tmp_path, uninterrupted, moment, how
):
    outputs = tmp_path / "o"
    env = {"RICHREPS_TEST_PAUSE": PAUSE[moment]} if moment in PAUSE else {}
    proc = runner(tmp_path, outputs, **env)
    deadline = time.time() + 300
    while not moment_reached(outputs, moment):
        assert proc.poll() is None, (
            f"the runner ended before {moment}: " + proc.stderr.read().decode()[-1500:]
        )
        assert time.time() < deadline, f"{moment} not reached in 300 s"
        time.sleep(0.01)
    tree = descendants(proc.pid)
    assert len(tree) >= 3, "expected the kernel, torchrun's agent and a worker below the runner"
    if how == "SIGTERM to the runner":
        os.kill(proc.pid, signal.SIGTERM)
    elif how == "SIGKILL to its group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 20
    while any(alive(p) for p in tree) and time.time() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if alive(p)], f"processes of the run outlived the runner ({moment}, {how})"
    folder = run_dir(outputs)
    if moment == "training":
        assert not (folder / "members").exists()
    if moment == "final-eval":  # every member of seed 0 is written, its final evaluation is not
        assert (folder / "members" / "seed0_step16.pt").exists()
        assert not completion.done_path(folder, 0).exists()

    again = runner(tmp_path, outputs)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err.decode()[-2000:]
    assert tables(outputs) == uninterrupted
    # nothing of the killed runner is left outside its run folder: the re-run removed its kernel sockets
    assert not list(Path(tempfile.gettempdir()).glob(f"{run_module.KERNELS_PREFIX}{proc.pid}-*"))


def test_a_run_is_done_by_its_record_or_by_the_two_files_an_older_run_wrote_last(tmp_path):
    recipe = Recipe()
    assert not completion.is_done(tmp_path, 0, recipe, 16, [8, 16])
    completion.mark_done(tmp_path, 0, recipe, 16, [8, 16])
    assert completion.is_done(tmp_path, 0, recipe, 16, [8, 16])
    assert not completion.is_done(tmp_path, 0, recipe, 32, [8, 16, 32])  # the plan now runs longer
    assert not completion.is_done(tmp_path, 0, recipe.replace(lr=0.1), 16, [8, 16])  # another recipe
    completion.clear_done(tmp_path, 0)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "seed0.jsonl").write_text('{"step": 16, "loss": 1.0}\n')  # killed before its eval
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "seed0.pt").write_bytes(b"state")
    assert not completion.is_done(tmp_path, 0, recipe, 16, [8, 16])
    with (tmp_path / "metrics" / "seed0.jsonl").open("a") as f:
        f.write('{"step": 16, "val_loss": 2.0, "val_acc": 0.3}\n')
    assert completion.is_done(tmp_path, 0, recipe, 16, [8, 16])


def test_only_kernel_folders_of_dead_runners_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{run_module.KERNELS_PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{run_module.KERNELS_PREFIX}{os.getpid()}-def"
    other = tmp_path / "richreps-kernels-notapid"
    for folder in (stale, live, other):
        folder.mkdir()
    assert run_module.remove_stale_kernel_folders(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
