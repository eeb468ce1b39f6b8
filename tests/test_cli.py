"""Every command line of the README and the docstrings, run as a subprocess the way a user types it."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from richreps import untrained
from richreps.config import Recipe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from test_data import write_cifar  # noqa: E402

PY = sys.executable
MODULES = [
    "richreps.run",
    "richreps.data",
    "richreps.budget",
    "richreps.resources",
    "richreps.pretrain",
    "richreps.probe",
    "richreps.calibrate",
    "richreps.tune",
    "bench.data_throughput",
    "bench.pretrain_throughput",
    "bench.probe_speed",
    "bench.prefetch_overlap",
    "bench.gpu_check",
]


def sh(cmd: str | list[str], cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command line as typed (a string is split like a shell would), `python` being this venv's."""
    args = shlex.split(cmd) if isinstance(cmd, str) else cmd
    args = [PY if a == "python" else a for a in args]
    if args[0] in ("torchrun", "papermill"):  # the venv's own, whatever PATH holds
        args = [PY, "-m", {"torchrun": "torch.distributed.run", "papermill": "papermill"}[args[0]], *args[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def documented_modules() -> set[str]:
    """Every `python -m X` / `torchrun ... -m X` in the README and in docstrings of the package and benches."""
    texts = [(ROOT / "README.md").read_text()]
    texts += [p.read_text() for p in [*(ROOT / "richreps").rglob("*.py"), *(ROOT / "bench").glob("*.py")]]
    found = set()
    for text in texts:
        found |= set(re.findall(r"python -m ((?:richreps|bench)[\w.]*)", text))
        found |= set(re.findall(r"torchrun [^\n]*?-m ((?:richreps|bench)[\w.]*)", text))
    return found


def test_every_documented_command_is_one_this_file_runs():
    assert documented_modules() <= set(MODULES), documented_modules() - set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_help_works(module):
    out = sh(f"python -m {module} --help", timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-1500:]


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [str(untrained.save_untrained(folder / f"m{i}.pt", Recipe(width=8), i)) for i in range(2)]


def test_probe_on_a_cifar_folder_as_the_readme_shows(tmp_path, two_members):
    write_cifar(tmp_path, "cifar10", n_train=200, n_test=50)
    a, b = two_members
    out = sh(
        f"python -m richreps.probe --members {a} {b} --dataset cifar10 --root {tmp_path} --image-size 32 "
        f"--cache {tmp_path / 'cache'} --workers 0"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CAT2 cifar10 [fast]: test accuracy" in out.stdout


def test_probe_on_cues_and_its_errors(tmp_path, two_members):
    a, b = two_members
    common = f"--dataset cues --sizes 200 100 200 --cache {tmp_path / 'cache'}"
    out = sh(f"python -m richreps.probe --members {a} {b} --task color {common}")
    assert out.returncode == 0 and "CAT2 cues/color [fast]: test accuracy" in out.stdout, out.stderr[-2000:]
    out = sh(f"python -m richreps.probe --members {a} --task mixture {common}")
    assert out.returncode == 0 and "CAT1 cues/mixture [fast]" in out.stdout, out.stderr[-2000:]
    out = sh(f"python -m richreps.probe --members {tmp_path / 'nope.pt'} {common}")
    assert out.returncode == 2 and "nope.pt: checkpoint not found" in out.stderr
    out = sh(f"python -m richreps.probe --members {a} --dataset cifar10")
    assert out.returncode == 2 and "--root is required" in out.stderr
    out = sh(f"python -m richreps.probe --members {a} {a} --task color {common}")  # one member, twice
    assert out.returncode == 2 and f"--members {a} and {a} are the same member" in out.stderr


def test_budget_refuses_one_seed_twice_and_a_warmup_longer_than_a_member():
    out = sh("python -m richreps.budget --total 100 --baseline 100 --cat 2 --seeds 7 7")
    assert out.returncode == 2 and "seed 7 more than once" in out.stderr and not out.stdout
    out = sh("python -m richreps.budget --total 100 --baseline 100 --cat 2 --warmup-steps 500")
    assert out.returncode == 2 and "--warmup-steps 500 is longer than the shortest member" in out.stderr


def test_budget_as_the_readme_shows():
    out = sh("python -m richreps.budget --total 400000 --baseline 450000 --cat 2 4 5 --mode shared-prefix")
    assert (
        out.returncode == 0 and "shared-prefix: 930000" in out.stdout and "independent: 1650000" in out.stdout
    )


def test_data_check_on_cues():
    out = sh("python -m richreps.data check --dataset cues")
    assert out.returncode == 0 and "task shape_parity" in out.stdout, out.stderr[-1500:]


def test_pretrain_docstring_command_with_torchrun(tmp_path):
    import richreps.pretrain

    line = " ".join(richreps.pretrain.__doc__.split("\n\n")[1].replace("\\\n", " ").split())
    assert line.startswith("torchrun --standalone --nproc_per_node 2 -m richreps.pretrain")
    out = sh(line, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "runs" / "demo" / "members").iterdir()) == [
        "seed0_step10.pt",
        "seed0_step20.pt",
    ]


def test_benchmarks_run_at_tiny_size(tmp_path):
    out = sh(
        f"python -m bench.data_throughput --n 16 --size 64 --batch 8 --seconds 0.2 --workdir {tmp_path / 'd'}"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    out = sh(
        f"python -m bench.pretrain_throughput --arch small_cnn --size 32 --batch 8 --n 16 --seconds 0.5 "
        f"--workdir {tmp_path / 'p'}"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    out = sh("python -m bench.prefetch_overlap --data-ms 2 --step-ms 3 --steps 5")
    assert out.returncode == 0 and "made ahead" in out.stdout, out.stderr[-2000:]
    out = sh("python -m bench.probe_speed --sizes 200 100 200 --reference-epochs 1", cwd=tmp_path)
    assert out.returncode == 0 and "speed-up vs scikit-learn" in out.stdout, out.stderr[-2000:]


def test_calibrate_docstring_command_runs_as_written(tmp_path):
    from richreps import calibrate

    line = next(ln.strip() for ln in calibrate.__doc__.splitlines() if ln.strip().startswith("python -m"))
    out = sh(line, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs" / "calibration.csv").exists()


def test_calibrate_params_docstring_command_writes_the_study_calibration_before_any_member(tmp_path):
    from richreps import calibrate

    line = next(ln.strip() for ln in calibrate.__doc__.splitlines() if "--params" in ln and "python -m" in ln)
    (tmp_path / "params").mkdir()
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())  # its calibration, cut for time:
    smoke |= {"probe_tasks": ["color", "digits_uci"], "direct_steps": 20}  # a cue and a saturated OOD target
    (tmp_path / "params" / "smoke.yaml").write_text(yaml.safe_dump(smoke))
    out = sh(line, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import pandas as pd

    folder = tmp_path / "runs" / "calib" / "smoke"
    table = pd.read_csv(folder / "tables" / "00_calibration.csv", index_col=0)
    assert {
        "floor: untrained CAT1",
        "floor: untrained CAT5",
        "floor: untrained WIDE1",
        "ceiling",
        "kept",
    } <= set(table)
    assert not (folder / "pretrain").exists()  # floors and ceilings only: no member trained yet
    assert table.loc["digits_uci", "why not"].startswith("saturated")
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe_tasks: [nonsense]\n")
    refused = sh(f"python -m richreps.calibrate --params {bad}", cwd=tmp_path)
    assert refused.returncode == 2 and "probe_tasks" in refused.stderr.strip().splitlines()[-1]


def test_calibrate_appends_floors_and_ceilings_to_its_record(tmp_path):
    record = tmp_path / "calibration.csv"
    for label in ("first", "second"):
        out = sh(
            f"python -m richreps.calibrate --label {label} --tasks color position_row --steps 3 --sizes 60 30 30 "
            f"--n-max 2 --set texture_contrast=0.2 --out {record}"
        )
        assert out.returncode == 0, out.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(record)
    assert table["label"].tolist() == ["first", "first", "second", "second"]
    assert {"floor: untrained CAT1", "floor: untrained CATmax", "ceiling", "kept", "difficulty"} <= set(table)
    assert '"texture_contrast": 0.2' in table["difficulty"][0]
    bad = sh(f"python -m richreps.calibrate --label x --set nonsense=1 --out {record}")
    assert bad.returncode != 0 and "--set 'nonsense=1'" in bad.stderr


def test_tune_docstring_command_records_each_evaluation_and_refuses_an_unknown_key(tmp_path):
    from richreps import tune

    line = next(ln.strip() for ln in tune.__doc__.splitlines() if ln.strip().startswith("python -m"))
    out = sh(line, cwd=tmp_path)  # appending to an existing record: io.append_rows, tested with calibrate
    assert out.returncode == 0, out.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(tmp_path / "runs" / "tune.csv")
    assert table["step"].tolist() == [10, 20] and set(table["changes"]) == {
        "width=8 global_batch=32 bn_batches=2 val_size=200"
    }
    assert (table["share of Bayes"] * 0.469 - table["val_acc"]).abs().max() < 1e-3
    bad = sh(
        f"python -m richreps.tune --label x --set widht=8 --steps 2 --eval-every 1 --out {tmp_path}/x.csv"
    )
    assert bad.returncode != 0 and "--set 'widht=8'" in bad.stderr and not (tmp_path / "x.csv").exists()
    bad = sh(f"python -m richreps.tune --label x --set lr=-1 --steps 2 --eval-every 1 --out {tmp_path}/x.csv")
    assert bad.returncode != 0 and "--lr must be > 0" in bad.stderr


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="with a GPU, make gpu-check runs for real"
)
def test_make_gpu_check_as_the_readme_shows_refuses_without_a_gpu():
    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("make gpu-check"))
    out = sh(line.split("  #")[0].strip())
    assert out.returncode != 0 and "error: no CUDA device here" in out.stderr


def test_gpu_check_dry_run_exercises_its_parts_and_resumes(tmp_path):
    # every part but `notebooks`, which is richreps.run on notebooks 03-04: tests/test_paper_path.py runs that
    parts = "throughput decode end_to_end probe"
    out = sh(f"make gpu-check ARGS='--dry-run --parts {parts} --out {tmp_path}'", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    done = summary["parts"]
    assert set(done) == set(parts.split())
    assert all(p["device"] and p["torch"] for p in done.values())  # every figure names its card and torch
    e2e = done["end_to_end"]
    assert e2e["pretrain_exit"] == 0 and e2e["probe_exit"] == 0 and e2e["bn_recalibrated"]
    assert "CAT2 imagenet [fast]: test accuracy" in e2e["probe_output"]
    assert "ResNet-50" in (tmp_path / "summary.md").read_text()
    again = sh(f"python -m bench.gpu_check --dry-run --parts {parts} --out {tmp_path}")
    assert again.returncode == 0 and again.stdout.count("done earlier") == 4


def test_papermill_from_the_repository_root_writes_inside_it():
    target, book = ROOT / "outputs" / "papermill-test", ROOT / "outputs" / "02_papermill-test.ipynb"
    out = sh(
        f"papermill notebooks/02_literature_evidence.ipynb outputs/{book.name} -f params/smoke.yaml "
        "-p output_dir outputs/papermill-test"
    )
    try:
        assert out.returncode == 0, out.stderr[-2000:]
        assert (target / "tables" / "02_claims.csv").exists() and book.exists()
    finally:
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        book.unlink(missing_ok=True)


def readme_block(heading: str) -> list[str]:
    """The command lines of the first ```bash block after `heading` in the README (continuations joined)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(heading) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [ln.split("  #")[0].strip() for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]


def test_the_readme_command_lines_run_as_written_in_an_empty_folder(tmp_path):
    lines = readme_block("## Command lines")
    assert len(lines) == 4
    for line in lines:
        out = sh(line, cwd=tmp_path)
        assert out.returncode == 0, f"{line}\n{out.stderr[-2000:]}"
    assert "CAT2 cues/color [fast]: test accuracy" in out.stdout


def test_the_readme_runner_line_runs_as_written(tmp_path):
    line = readme_block("## Running")[0]
    assert line.startswith(".venv/bin/python -m richreps.run params/smoke.yaml --only 01")
    out = sh(line.replace(".venv/bin/python", "python") + f" --outputs {tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "smoke" / "report.md").exists() and (
        tmp_path / "smoke" / "tables" / "01_sweep.csv"
    ).exists()


def test_the_readme_laptop_line_runs_as_written_up_to_its_length_and_publishes(tmp_path):
    """The laptop study takes about an hour: here its line runs as written but for notebook 02 only,
    into a temporary outputs root, publishing into a temporary folder instead of results/laptop."""
    line = next(ln for ln in readme_block("## Running") if "params/laptop.yaml" in ln)
    assert line == ".venv/bin/python -m richreps.run params/laptop.yaml --publish results/laptop"
    dest = tmp_path / "published"
    line = line.replace(".venv/bin/python", "python").replace("results/laptop", str(dest))
    out = sh(f"{line} --only 02 --outputs {tmp_path / 'outputs'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (dest / "report.md").exists() and (dest / "tables" / "02_claims.csv").exists()
    assert not list(dest.rglob("*.ipynb"))


def test_the_readme_map_line_runs_as_written_for_notebook_02_only_and_publishes(tmp_path):
    """The map takes over an hour: its line runs as written but for notebook 02 only (a later --only wins),
    into a temporary outputs root, publishing into a temporary folder instead of results/laptop_map."""
    line = next(ln for ln in readme_block("## Running") if "params/laptop_map.yaml" in ln)
    assert line == (
        ".venv/bin/python -m richreps.run params/laptop_map.yaml --only 03 04 05 --publish results/laptop_map"
    )
    dest = tmp_path / "published"
    line = line.replace(".venv/bin/python", "python").replace("results/laptop_map", str(dest))
    out = sh(f"{line} --only 02 --outputs {tmp_path / 'outputs'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (dest / "report.md").exists() and (
        tmp_path / "outputs" / "laptop_map" / "02_literature_evidence.ipynb"
    ).exists()


@pytest.mark.parametrize("failing", ["test", "nbval-other-isa"])
def test_make_ci_fails_when_either_of_its_steps_fails(failing, tmp_path):
    """`make ci` (what .ci/run runs) times each step; the timing must not swallow the step's exit status.
    A stand-in for make fails on `failing` only (`-o` keeps the venv's install step from running)."""
    stub = tmp_path / "make"
    stub.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = {failing} ] && exit 3; done; exit 0\n')
    stub.chmod(0o755)
    out = sh(f"make --no-print-directory -o .venv/.installed ci MAKE={stub}")
    assert out.returncode != 0 and f"make {failing}: " in out.stdout, out.stdout + out.stderr
