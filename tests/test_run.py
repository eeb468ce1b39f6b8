"""The papermill runner: validation before compute, failures that point at the notebook."""

import hashlib
import json
from pathlib import Path

import nbformat
import pytest
import yaml

from richreps import params, run

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def make_notebook(path: Path, params_src: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params_src)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def book(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    make_notebook(
        folder / "01_ok.ipynb",
        'output_dir: str = "out"\nsteps: int = 1\ndata_root: str = ""',
        "print('steps', steps)",
    )
    make_notebook(folder / "02_fail.ipynb", "rate: float = 0.1", "raise ValueError('boom')")
    return folder


def write_params(tmp_path, params) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(
    "params, message",
    [
        ({"stpes": 3}, "unknown key 'stpes'"),
        ({"steps": "3"}, "key 'steps' must be int"),
        ({"steps": True}, "key 'steps' must be int"),
        ({"rate": [1]}, "key 'rate' must be float"),
        ({"data_root": "/no/such/folder"}, "key 'data_root': path does not exist"),
        ({"output_dir": "x"}, "key 'output_dir' is set by the runner"),
    ],
)
def test_bad_params_fail_in_one_line_before_anything_runs(tmp_path, book, capsys, params, message):
    out = tmp_path / "outputs"
    code = run.main([str(write_params(tmp_path, params)), "--notebooks", str(book), "--outputs", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing ran, nothing was written


def test_not_a_mapping_and_missing_file(tmp_path, book, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert run.main([str(bad), "--notebooks", str(book)]) == 2
    assert run.main([str(tmp_path / "none.yaml"), "--notebooks", str(book)]) == 2
    err = capsys.readouterr().err
    assert "list.yaml: expected a mapping" in err and "params file not found" in err


def test_failing_notebook_stops_with_its_path_and_manifest(tmp_path, book, capsys):
    params = write_params(tmp_path, {"steps": 2, "data_root": str(tmp_path)})
    code = run.main([str(params), "--notebooks", str(book), "--outputs", str(tmp_path / "outputs")])
    err = capsys.readouterr().err
    assert code == 1
    executed = tmp_path / "outputs" / "trial" / "02_fail.ipynb"
    assert str(executed) in err and "ValueError: boom" in err
    manifest = json.loads((tmp_path / "outputs" / "trial" / "manifest.json").read_text())
    assert [n["status"] for n in manifest["notebooks"]] == ["ok", "failed"]
    first = manifest["notebooks"][0]
    assert first["parameters"]["steps"] == 2 and first["parameters"]["output_dir"].endswith("trial")
    assert manifest["versions"]["torch"] and manifest["git_commit"] and "wall_time_s" in first
    ok = nbformat.read(tmp_path / "outputs" / "trial" / "01_ok.ipynb", as_version=4)
    assert "steps 2" in ok.cells[-1].outputs[0]["text"]


def test_only_selects_by_prefix(tmp_path, book):
    given = write_params(tmp_path, {"steps": 2})
    assert (
        run.main([str(given), "--notebooks", str(book), "--outputs", str(tmp_path / "o"), "--only", "01"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "o" / "trial").glob("*.ipynb")) == ["01_ok.ipynb"]
    with pytest.raises(params.ParamsError, match="--only 07"):
        params.notebooks_in(book, ["07"])


@pytest.mark.parametrize("name", ["smoke", "laptop", "laptop_map", "small", "paper"])
def test_shipped_params_files_validate(name):
    declared = {nb: params.declared_parameters(nb) for nb in NOTEBOOKS}
    given = params.load_params(ROOT / "params" / f"{name}.yaml")
    params.validate({k: v for k, v in given.items() if not k.endswith(params.PATH_SUFFIXES)}, declared, name)


def test_committed_notebooks_default_to_the_smoke_values():
    """nbval checks the committed outputs, so the defaults must be what smoke.yaml runs."""
    smoke = params.load_params(ROOT / "params" / "smoke.yaml")
    for nb in NOTEBOOKS:
        spec = params.declared_parameters(nb)
        assert all(v["inferred_type_name"] != "None" for v in spec.values()), f"{nb.name}: untyped parameter"
        defaults = params.defaults(spec)
        for key in set(spec) & set(smoke):
            assert defaults[key] == smoke[key], f"{nb.name}: {key}"
        # nbval and `make notebooks` write here; `make reproduce` writes outputs/smoke: never the same folder
        assert defaults.get("output_dir", "outputs/nbval") == "outputs/nbval"


def test_type_ok():
    assert params.type_ok([0.1, 1], "list[float]") and not params.type_ok([0.1, "a"], "list[float]")
    assert params.type_ok(3, "float") and not params.type_ok(3.5, "int") and not params.type_ok(1, "bool")


def test_publish_copies_the_small_part_of_a_run_and_replaces_only_what_it_wrote(tmp_path, book):
    params = write_params(tmp_path, {"steps": 2})
    out = tmp_path / "o" / "trial"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "fig.png").write_bytes(b"png")
    (out / "figures" / "fig.pdf").write_bytes(b"pdf")
    dest = tmp_path / "results" / "trial"
    (dest / "empty").mkdir(parents=True)  # an empty folder holds nothing to lose
    argv = [str(params), "--notebooks", str(book), "--outputs", str(tmp_path / "o"), "--only", "01"]
    assert run.main([*argv, "--publish", str(dest)]) == 0
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["figures/fig.png", "manifest.json", "published.json", "report.md"]
    (out / "figures" / "fig.png").unlink()  # no longer made: the copy an earlier publish wrote goes
    assert run.main([*argv, "--publish", str(dest)]) == 0
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["manifest.json", "published.json", "report.md"]
    record = json.loads((dest / "published.json").read_text())["files"]
    assert sorted(record) == ["manifest.json", "report.md"] and all(len(h) == 1 for h in record.values())
    with pytest.raises(RuntimeError, match="report.md missing"):
        run.publish(tmp_path / "nothing", dest)


def test_a_published_file_edited_since_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("# report\n")
    dest = run.publish(out, tmp_path / "results")
    (dest / "report.md").write_text("# report, with my notes\n")
    with pytest.raises(run.PublishError, match=r"changed since \(report.md\)"):
        run.publish(out, dest)
    assert (dest / "report.md").read_text() == "# report, with my notes\n"


def test_a_publish_killed_midway_can_be_repeated(tmp_path):
    """The record accepts the old and the new content of every file until the copy is done."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("one\n")
    dest = run.publish(out, tmp_path / "results")
    (out / "report.md").write_text("two\n")
    record = json.loads((dest / "published.json").read_text())
    two = hashlib.sha256(b"two\n").hexdigest()
    record["files"]["report.md"].append(two)  # what publish records before it copies
    (dest / "published.json").write_text(json.dumps(record))
    (dest / "report.md").write_text("two\n")  # killed after this copy, before the final record
    assert run.publish(out, dest) == dest and (dest / "report.md").read_text() == "two\n"


def test_the_kernels_papermill_starts_use_ipc_not_plain_tcp(tmp_path, book):
    """Issue 21 item 9: every papermill run printed that kernel messages go over TCP in plain text."""
    import os
    import subprocess
    import sys

    params = write_params(tmp_path, {"steps": 2})
    cmd = [sys.executable, "-m", "richreps.run", str(params), "--notebooks", str(book), "--only", "01"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*cmd, "--outputs", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Use IPC transport" not in done.stderr and "without encryption" not in done.stderr
    ok = nbformat.read(tmp_path / "o" / "trial" / "01_ok.ipynb", as_version=4)
    assert "steps 2" in ok.cells[-1].outputs[0]["text"]


def test_each_path_suffix_is_checked_for_what_it_means(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert params.path_error("weights_file", tmp_path, None) == f"{tmp_path} is not a file"
    assert params.path_error("weights_file", tmp_path / "f.txt", None) is None
    assert (
        params.path_error("cifar10_root", tmp_path / "f.txt", "cifar10")
        == f"{tmp_path / 'f.txt'} is not a folder"
    )
    assert "cifar-10-batches-py: folder not found" in params.path_error("cifar10_root", tmp_path, "cifar10")
    assert params.path_error("other_root", tmp_path, None) is None  # a folder; no layout known for it


def test_a_refresh_that_fails_midway_leaves_the_committed_notebook_as_it_was(book):
    """A killed or failing `make notebooks` used to leave a half-executed committed notebook."""
    from papermill.exceptions import PapermillExecutionError

    before = (book / "02_fail.ipynb").read_bytes()
    with pytest.raises(PapermillExecutionError):
        run.refresh_committed(book, ["02"])
    assert (book / "02_fail.ipynb").read_bytes() == before
    assert sorted(p.name for p in book.iterdir()) == ["01_ok.ipynb", "02_fail.ipynb"]  # no hidden copy
    run.refresh_committed(book, ["01"])
    assert "steps 1" in (book / "01_ok.ipynb").read_text()
