"""Execute the numbered notebooks with one params file through papermill.

    python -m richreps.run params/smoke.yaml [--only 01 02]

Every key of the YAML file is checked against the notebooks' `parameters` cells
(`papermill.inspect_notebook`) before any notebook starts: papermill itself only warns
on an unknown key, which would silently run the defaults. Executed notebooks, tables
and figures go to outputs/<params name>/, with a manifest of what ran.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml

from richreps.io import write_json

RUNNER_KEYS = {"output_dir"}  # set by the runner, never by a params file
PATH_SUFFIXES = ("_root", "_file", "_path")  # values that must name an existing path
SCALARS = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict, "list": list}


class ParamsError(ValueError):
    """A params file that cannot run; the message is one line naming the key or file."""


def notebooks_in(folder: str | Path, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order, optionally filtered by prefix."""
    nbs = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = [o for o in only if not any(p.name.startswith(o) for p in nbs)]
        if unknown:
            raise ParamsError(f"--only {unknown[0]}: no notebook in {folder} starts with it")
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
    return nbs


def declared_parameters(notebook: Path) -> dict[str, dict]:
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def type_ok(value, type_name: str) -> bool:
    """Does `value` (from YAML) match a parameters-cell annotation like 'list[float]'?"""
    base, _, inner = type_name.partition("[")
    expected = SCALARS.get(base.strip())
    if expected is None:
        return True  # an annotation we do not model; papermill passes the value through
    if base in ("int", "float") and isinstance(value, bool):
        return False
    if not isinstance(value, expected):
        return False
    if base == "list" and inner:
        return all(type_ok(v, inner.rstrip("]")) for v in value)
    return True


def rules_of(spec: dict) -> list[str]:
    """The value rules declared at the start of a parameter's comment, e.g. `# {non-empty; min 1} ...`:
    `min X` (each value >= X), `positive` (> 0), `in: a, b` (each value one of these), `len N`, `non-empty`."""
    m = re.match(r"\s*\{([^}]*)\}", spec.get("help") or "")
    return [r.strip() for r in m.group(1).split(";")] if m else []


def check_rules(key: str, value, rules: list[str]) -> str | None:
    """Why `value` breaks one of `rules`, or None."""
    items = value if isinstance(value, list) else [value]
    for rule in rules:
        if rule == "non-empty" and not items:
            return "must not be empty"
        if rule.startswith("len ") and len(items) != int(rule[4:]):
            return f"must have {rule[4:]} values, got {len(items)}"
        if rule.startswith("min ") and any(v < float(rule[4:]) for v in items):
            return f"must be >= {rule[4:]}, got {value!r}"
        if rule == "positive" and any(not v > 0 for v in items):
            return f"must be > 0, got {value!r}"
        if rule.startswith("in:"):
            choices = [c.strip() for c in rule[3:].split(",")]
            bad = [v for v in items if v not in choices]
            if bad:
                return f"must be one of {choices}, got {bad[0]!r}"
    return None


def cross_key_errors(values: dict) -> list[str]:
    """Rules between keys, on the values a run will use (params over notebook defaults)."""
    errors = []
    if "seeds" in values and values.get("cat_sizes") and len(values["seeds"]) < max(values["cat_sizes"]):
        errors.append(
            f"key 'seeds' lists {len(values['seeds'])} seeds; CAT{max(values['cat_sizes'])} "
            f"(key 'cat_sizes') needs {max(values['cat_sizes'])}"
        )
    if {"global_batch", "nproc", "nodes"} <= set(values) and values["global_batch"] % (
        values["nproc"] * values["nodes"]
    ):
        errors.append(
            f"key 'global_batch' {values['global_batch']} does not split into nproc x nodes = "
            f"{values['nproc'] * values['nodes']} processes"
        )
    if (
        "cue_weights" in values
        and values.get("pretrain_data", "cues") == "cues"
        and not sum(values["cue_weights"]) > 0
    ):
        errors.append("key 'cue_weights' must have a positive sum")
    return errors


def load_params(path: str | Path) -> dict:
    """Read a params YAML file; it must be a non-empty mapping of names to values."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if params is None:
        raise ParamsError(f"{path}: empty; a params file must set at least one key (see params/smoke.yaml)")
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter names to values")
    return params


def validate(params: dict, declared: dict[Path, dict[str, dict]], source: str) -> dict:
    """Check every key against the notebooks that declare it; return paths made absolute."""
    checked = {}
    for key, value in params.items():
        if key in RUNNER_KEYS:
            raise ParamsError(f"{source}: key '{key}' is set by the runner, remove it")
        owners = {nb.name: spec[key] for nb, spec in declared.items() if key in spec}
        if not owners:
            raise ParamsError(f"{source}: unknown key '{key}': no notebook declares it")
        for nb_name, spec in owners.items():
            type_name = spec["inferred_type_name"]
            if not type_ok(value, type_name):
                raise ParamsError(
                    f"{source}: key '{key}' must be {type_name} (as in {nb_name}), "
                    f"got {type(value).__name__} {value!r}"
                )
            why = check_rules(key, value, rules_of(spec))
            if why:
                raise ParamsError(f"{source}: key '{key}' {why} (as declared in {nb_name})")
        if key.endswith(PATH_SUFFIXES) and value:
            path = Path(value).expanduser().resolve()
            if not path.exists():
                raise ParamsError(f"{source}: key '{key}': path does not exist: {path}")
            value = str(path)
        checked[key] = value
    for nb, spec in declared.items():
        errors = cross_key_errors({**defaults(spec), **{k: v for k, v in checked.items() if k in spec}})
        if errors:
            raise ParamsError(f"{source}: {errors[0]} (for {nb.name})")
    return checked


def defaults(spec: dict[str, dict]) -> dict:
    """The default values of a parameters cell, evaluated as Python literals."""
    return {k: ast.literal_eval(v["default"]) for k, v in spec.items()}


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


def run(
    params_file: str | Path,
    only: list[str] | None = None,
    notebooks: str | Path = "notebooks",
    outputs: str | Path = "outputs",
) -> Path:
    """Validate, then execute each notebook; return the manifest's path."""
    import papermill as pm
    from tqdm.auto import tqdm

    params_file = Path(params_file)
    params = load_params(params_file)
    all_nbs = notebooks_in(notebooks)
    if not all_nbs:
        raise ParamsError(f"no numbered notebooks (NN_name.ipynb) in {notebooks}")
    declared = {nb: declared_parameters(nb) for nb in all_nbs}
    checked = validate(params, declared, str(params_file))
    selected = notebooks_in(notebooks, only)

    out_dir = (Path(outputs) / params_file.stem).resolve()
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
    from richreps.report import write_report

    write_report(out_dir)
    return manifest_path


PUBLISHED = ("report.md", "manifest.json", "tables/*", "figures/*.png")


def publish(out_dir: str | Path, dest: str | Path) -> Path:
    """Copy a run's report, manifest, tables and PNG figures to `dest` (replaced whole), the small part
    of a run worth committing; members, caches and executed notebooks stay in `out_dir`."""
    out_dir, dest = Path(out_dir), Path(dest)
    if not (out_dir / "report.md").is_file():
        raise RuntimeError(f"{out_dir / 'report.md'} missing: nothing to publish")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for pattern in PUBLISHED:
        for f in sorted(out_dir.glob(pattern)):
            (tmp / f.relative_to(out_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / f.relative_to(out_dir))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def refresh_committed(notebooks: str | Path = "notebooks", only: list[str] | None = None) -> None:
    """Re-execute the committed notebooks in place with their defaults (the smoke values).

    Papermill's per-run timing metadata is stripped so a refresh diffs only real changes.
    """
    import nbformat
    import papermill as pm

    for nb in notebooks_in(notebooks, only):
        pm.execute_notebook(str(nb), str(nb), kernel_name="python3", cwd=str(nb.parent), progress_bar=True)
        book = nbformat.read(nb, as_version=4)
        book.metadata.pop("papermill", None)
        for cell in book.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nbformat.write(book, nb)


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
        "--publish", metavar="DIR", help="afterwards, copy report, manifest, tables and PNG figures to DIR"
    )
    args = ap.parse_args(argv)
    try:
        if args.refresh_committed:
            params = load_params(args.params)
            for nb in notebooks_in(args.notebooks, args.only):
                spec = declared_parameters(nb)
                diff = {k: v for k, v in params.items() if k in spec and defaults(spec)[k] != v}
                if diff:
                    raise ParamsError(f"{nb.name}: defaults differ from {args.params} for {sorted(diff)}")
            refresh_committed(args.notebooks, args.only)
            return 0
        manifest = run(args.params, args.only, args.notebooks, args.outputs)
        if args.publish:
            print(f"published {publish(manifest.parent, args.publish)}")
    except (ParamsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ParamsError) else 1
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
