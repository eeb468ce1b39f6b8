"""Execute the numbered notebooks with one params file through papermill.

    python -m richreps.run params/smoke.yaml [--only 01 02]

Every key of the YAML file is checked against the notebooks' `parameters` cells
(`papermill.inspect_notebook`) before any notebook starts: papermill itself only warns
on an unknown key, which would silently run the defaults. A key given twice is an error,
and paths are checked for what they mean (`*_root`: a folder in its dataset's layout,
`*_file`: a file), as are `--outputs` and `--publish`. Executed notebooks, tables and
figures go to outputs/<params name>/, with a manifest of what ran. The kernels talk to
the runner over IPC sockets in a private folder, not over plain-text TCP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from richreps.io import unwritable, write_json
from richreps.lifeline import die_with_parent_preexec
from richreps.params import (
    ParamsError,
    declared_parameters,
    defaults,
    load_params,
    notebooks_in,
    validate,
)
from richreps.publish import PublishError, check_publish, publish


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout
        return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Installed versions of richreps and of every package it pins (read from its own metadata)."""
    out = {"python": platform.python_version()}
    try:
        pins = [re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in metadata.requires("richreps") or []]
    except metadata.PackageNotFoundError:
        pins = []
    for name in ["richreps", *pins]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


KERNELS_PREFIX = "richreps-kernels-"  # + the runner's pid: a folder whose runner is gone is stale


def remove_stale_kernel_folders(root: str | Path | None = None) -> list[Path]:
    """Remove this user's kernel-socket folders whose runner is gone: a runner killed by SIGKILL could not
    remove its own. Each folder is named by its runner's pid; a live pid's folder is left alone."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{KERNELS_PREFIX}*"):
        pid = folder.name[len(KERNELS_PREFIX) :].split("-")[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)  # alive (or not ours to signal): keep it
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (PermissionError, OSError):
            continue
    return removed


@contextlib.contextmanager
def ipc_kernels() -> Iterator[type]:
    """A kernel manager class for papermill (`kernel_manager_class`) whose kernels talk over IPC
    sockets in a private temporary folder (mode 0700), removed afterwards: by default jupyter_client
    uses TCP on localhost, in plain text, and every kernel warns that anyone on the machine could
    read it."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    remove_stale_kernel_folders()
    with tempfile.TemporaryDirectory(prefix=f"{KERNELS_PREFIX}{os.getpid()}-") as folder:

        class IPCKernelManager(AsyncKernelManager):
            @default("transport")
            def _transport_default(self) -> str:
                return "ipc"

            @default("connection_file")
            def _connection_file_default(self) -> str:  # absolute: the IPC sockets sit beside it
                return str(Path(folder) / f"kernel-{uuid.uuid4().hex[:12]}.json")

            async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
                # the kernel dies with the runner at once (SIGKILL, SIGTERM, OOM), not a second later when
                # ipykernel's parent poller notices, and its training processes with it (richreps.lifeline)
                kw["preexec_fn"] = die_with_parent_preexec()
                await super()._async_launch_kernel(kernel_cmd, **kw)

        yield IPCKernelManager


MAX_GPU_HOURS = 10_000.0  # --max-gpu-hours: 250 times the paper's plan (about 40); more is a typo's plan


def check_outputs(outputs: str | Path) -> None:
    """`--outputs` must be a folder, or a path where one can be made, that this user can write in (a
    file is created and removed there, or in its nearest existing parent), before any notebook runs."""
    path = Path(outputs).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ParamsError(f"--outputs {outputs}: not a folder")
    why = unwritable(path)
    if why:
        raise ParamsError(f"--outputs {outputs}: {why}")


def run(
    params_file: str | Path,
    only: list[str] | None = None,
    notebooks: str | Path = "notebooks",
    outputs: str | Path = "outputs",
    publish_to: str | Path | None = None,
    publish_replace: bool = False,
    max_gpu_hours: float = MAX_GPU_HOURS,
) -> Path:
    """Validate (params, `outputs`, `publish_to` when given, and notebook 03's plan against
    `max_gpu_hours`), then execute each notebook; return the manifest's path. Publishing itself is
    `publish`, after the run."""
    params_file = Path(params_file)
    params = load_params(params_file)
    all_nbs = notebooks_in(notebooks)
    if not all_nbs:
        raise ParamsError(f"no numbered notebooks (NN_name.ipynb) in {notebooks}")
    declared = {nb: declared_parameters(nb) for nb in all_nbs}
    checked = validate(params, declared, str(params_file))
    selected = notebooks_in(notebooks, only)
    check_outputs(outputs)
    if publish_to is not None:
        check_publish(publish_to, outputs, params_file, publish_replace)

    out_dir = (Path(outputs) / params_file.stem).resolve()
    if any(nb.name.startswith("03") for nb in selected):  # GPU-hours, RAM and disk, before any is spent
        from richreps.resources import check_resources  # refuses when the disk is short or the hours many

        values = {k: v for spec in declared.values() for k, v in defaults(spec).items()}
        print(check_resources(values | checked, out_dir, max_gpu_hours))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "params_file": str(params_file),
        "parameters": checked,
        "git_commit": git_commit(),
        "versions": versions(),
        "platform": platform.platform(),
        "notebooks": [],
    }
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():  # keep the entries of notebooks not re-run this time (--only)
        try:
            earlier = json.loads(manifest_path.read_text())["notebooks"]
            names = {nb.name for nb in selected}
            manifest["notebooks"] = [e for e in earlier if e["notebook"] not in names]
        except (json.JSONDecodeError, KeyError):
            pass
    with ipc_kernels() as kernel_manager:
        _execute(selected, declared, checked, out_dir, manifest, manifest_path, params_file, kernel_manager)
    from richreps.report import write_report

    write_report(out_dir)
    return manifest_path


def _execute(
    selected, declared, checked, out_dir, manifest, manifest_path, params_file, kernel_manager
) -> None:
    """Run `selected` in order, recording each in the manifest; the first failure stops the run."""
    import papermill as pm
    from tqdm.auto import tqdm

    bar = tqdm(selected, desc=f"notebooks ({params_file.stem})", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.name)
        spec = declared[nb]
        nb_params = {k: v for k, v in checked.items() if k in spec}
        if "output_dir" in spec:
            nb_params["output_dir"] = str(out_dir)
        target = out_dir / nb.name
        start = time.perf_counter()
        entry = {"notebook": nb.name, "output": str(target), "parameters": nb_params}
        try:
            pm.execute_notebook(
                str(nb),
                str(target),
                parameters=nb_params,
                kernel_name="python3",
                cwd=str(nb.parent),
                progress_bar=True,
                kernel_manager_class=kernel_manager,
            )
        except pm.PapermillExecutionError as e:
            entry.update(status="failed", error=f"{e.ename}: {e.evalue}")
            manifest["notebooks"].append(entry)
            write_json(manifest_path, manifest)
            raise RuntimeError(
                f"{nb.name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                f"see the executed notebook: {target}"
            ) from None
        entry.update(status="ok", wall_time_s=round(time.perf_counter() - start, 1))
        manifest["notebooks"].append(entry)
        manifest["notebooks"].sort(key=lambda e: e["notebook"])
        write_json(manifest_path, manifest)


def refresh_committed(notebooks: str | Path = "notebooks", only: list[str] | None = None) -> None:
    """Re-execute the committed notebooks with their defaults (the smoke values), each replaced at once.

    Papermill writes its output as cells run, so each notebook is executed into a hidden file beside it
    and moved over the committed one only when it is complete: a refresh killed midway leaves the
    committed notebook as it was. Papermill's per-run timing metadata is stripped so a refresh diffs
    only real changes.
    """
    import nbformat
    import papermill as pm

    for nb in notebooks_in(notebooks, only):
        fresh = nb.with_name(f".{nb.stem}.refresh.ipynb")
        try:
            with ipc_kernels() as kernel_manager:
                pm.execute_notebook(
                    str(nb),
                    str(fresh),
                    kernel_name="python3",
                    cwd=str(nb.parent),
                    progress_bar=True,
                    kernel_manager_class=kernel_manager,
                )
            book = nbformat.read(fresh, as_version=4)
            book.metadata.pop("papermill", None)
            for cell in book.cells:
                cell.metadata.pop("papermill", None)
                cell.metadata.pop("execution", None)
            nbformat.write(book, fresh)
            os.replace(fresh, nb)
        finally:
            fresh.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", help="a params YAML file, e.g. params/smoke.yaml")
    ap.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose name starts with these")
    ap.add_argument("--notebooks", default="notebooks", help="folder of numbered notebooks")
    ap.add_argument(
        "--outputs", default="outputs", help="outputs root; results go to <outputs>/<params name>"
    )
    ap.add_argument(
        "--refresh-committed",
        action="store_true",
        help="re-execute notebooks/ in place with their defaults (must equal the params file)",
    )
    ap.add_argument(
        "--publish",
        metavar="DIR",
        help="afterwards, copy report, manifest, tables and PNG figures into DIR (new, or written only by "
        "earlier publishes: checked before any notebook runs; nothing else in it is ever deleted)",
    )
    ap.add_argument(
        "--publish-replace",
        action="store_true",
        help="let --publish replace a folder that holds the publish of another run (another params file)",
    )
    ap.add_argument(
        "--max-gpu-hours",
        type=float,
        default=MAX_GPU_HOURS,
        metavar="H",
        help=f"refuse, before any notebook runs, a notebook-03 plan estimated above H GPU-hours (default {MAX_GPU_HOURS:g})",
    )
    args = ap.parse_args(argv)
    try:
        if args.publish_replace and not args.publish:
            raise ParamsError("--publish-replace needs --publish DIR")
        if not args.max_gpu_hours > 0:  # nan and negatives; inf: no cap
            raise ParamsError(f"--max-gpu-hours must be > 0, got {args.max_gpu_hours}")
        if args.refresh_committed:
            params = load_params(args.params)
            for nb in notebooks_in(args.notebooks, args.only):
                spec = declared_parameters(nb)
                diff = {k: v for k, v in params.items() if k in spec and defaults(spec)[k] != v}
                if diff:
                    raise ParamsError(f"{nb.name}: defaults differ from {args.params} for {sorted(diff)}")
            refresh_committed(args.notebooks, args.only)
            return 0
        manifest = run(
            args.params, args.only, args.notebooks, args.outputs, args.publish, args.publish_replace,
            args.max_gpu_hours,
        )  # fmt: skip
        if args.publish:
            print(f"published {publish(manifest.parent, args.publish, args.params, args.publish_replace)}")
    except (ParamsError, PublishError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, RuntimeError) else 2
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
