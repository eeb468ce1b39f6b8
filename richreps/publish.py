"""The runner's `--publish DIR`: copy the small part of a run worth committing into a folder, never
deleting what it did not write.

The target holds a record, `published.json`, of every file a publish wrote there with its sha256. A
target that holds anything else (a colleague's results, the run's own outputs, a published file edited
since) is refused in one line, before any notebook runs; so is a target equal to `--outputs`, inside
it or around it, one this user cannot write in, and one that holds the publish of another run (its
record names the run and the params file) unless `--publish-replace` says to replace it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

from richreps.io import atomic_path, project_path, unwritable, write_json


class PublishError(ValueError):
    """A publish target that would lose or mix files; the message is one line naming the folder."""


PUBLISHED = ("report.md", "manifest.json", "tables/*", "figures/*.png")
PUBLISH_RECORD = "published.json"  # in the target: every file a publish wrote there, with its sha256


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record(dest: Path) -> dict:
    """`dest`'s publish record ({} when it has none); one that does not parse is refused."""
    record_path = dest / PUBLISH_RECORD
    if not record_path.is_file():
        return {}
    try:
        record = json.loads(record_path.read_text())
        assert isinstance(record, dict) and isinstance(record["files"], dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise PublishError(f"--publish {dest}: {PUBLISH_RECORD} is not a publish record") from None
    return record


def publish_record(dest: str | Path) -> dict[str, list[str]]:
    """What earlier publishes wrote in `dest` ({relative path: accepted sha256s}), after checking that
    `dest` holds nothing else: a file no publish wrote, or one changed since, is refused in one line."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise PublishError(f"--publish {dest}: not a folder")
    if not dest.exists():
        return {}
    written: dict[str, list[str]] = _record(dest).get("files", {})
    foreign = []
    for f in sorted(dest.rglob("*")):
        rel = f.relative_to(dest).as_posix()
        if f.is_dir() and not f.is_symlink() or rel == PUBLISH_RECORD:
            continue
        if f.is_symlink() or rel not in written or _sha256(f) not in written[rel]:
            foreign.append(rel)
    if foreign:
        raise PublishError(
            f"--publish {dest}: holds {len(foreign)} file(s) no publish wrote or changed since "
            f"({foreign[0]}); publish writes only into a new folder or one it alone has written "
            f"(its record: {PUBLISH_RECORD})"
        )
    return written


def params_name(params_file: str | Path) -> str:
    """A params file as a publish record names it: relative to the repository when inside it, so that
    a colleague's clone publishing the same file is the same source; else its absolute path."""
    path = Path(params_file).expanduser().resolve()
    root = project_path(".").resolve()  # the repository's root, as notebooks resolve output_dir
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def check_source(dest: Path, run: str, params: str | None, replace: bool) -> None:
    """Refuse, unless `replace`, a `dest` whose record names another source: another run name (the
    params file's stem, the folder under `--outputs`) or another params file. A record written before
    the params file was recorded names its run by its `source` folder alone."""
    record = _record(dest) if dest.is_dir() else {}
    if not record or replace:
        return
    their_run = record.get("run") or Path(record.get("source", "")).name
    their_params = record.get("params_file")
    if their_run != run or (None not in (their_params, params) and their_params != params):
        raise PublishError(
            f"--publish {dest}: holds the publish of run '{their_run}' "
            f"({their_params or 'params file not recorded'}), not of this run '{run}' ({params or 'unknown'}); "
            "publish into another folder, or pass --publish-replace to replace it"
        )


def check_publish(
    dest: str | Path, outputs: str | Path, params_file: str | Path | None = None, replace: bool = False
) -> None:
    """Before any notebook runs: `--publish` is not `--outputs`, inside it or around it, holds no file
    that a publish did not write, holds no publish of another run than `params_file`'s (unless
    `replace`), and is a folder this user can write in (a file is created and removed there)."""
    target, root = Path(dest).expanduser().resolve(), Path(outputs).expanduser().resolve()
    if target == root or target.is_relative_to(root):
        raise PublishError(
            f"--publish {dest} is inside --outputs {outputs}: publish copies out of a run, never into it"
        )
    if root.is_relative_to(target):
        raise PublishError(
            f"--publish {dest} holds --outputs {outputs}: publish a run into a folder of its own"
        )
    publish_record(target)
    if params_file is not None:
        check_source(target, Path(params_file).stem, params_name(params_file), replace)
    why = unwritable(target)
    if why:
        raise PublishError(f"--publish {dest}: {why}")


def publish(
    out_dir: str | Path, dest: str | Path, params_file: str | Path | None = None, replace: bool = False
) -> Path:
    """Copy a run's report, manifest, tables and PNG figures into `dest`, the small part of a run worth
    committing; members, caches and executed notebooks stay in `out_dir`.

    It never deletes what it did not write: `dest` must be new, empty, or hold only what earlier
    publishes wrote (its record, `published.json`, lists each file with its sha256). Files of an earlier
    publish that this run no longer produces are removed; the record accepts both the old and the new
    content of every file until the copy is done, so a publish killed midway can be repeated. A `dest`
    holding the publish of another run is refused unless `replace` (`check_source`); the record names
    this run (`out_dir`'s name) and its params file (`params_file`, else the one its manifest names)."""
    out_dir, dest = Path(out_dir), Path(dest)
    if not (out_dir / "report.md").is_file():
        raise RuntimeError(f"{out_dir / 'report.md'} missing: nothing to publish")
    if dest.resolve() == out_dir.resolve() or dest.resolve().is_relative_to(out_dir.resolve()):
        raise PublishError(f"--publish {dest} is inside the run's own folder {out_dir}")
    earlier = publish_record(dest)
    if params_file is None and (out_dir / "manifest.json").is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            params_file = json.loads((out_dir / "manifest.json").read_text())["params_file"]
    params = params_name(params_file) if params_file is not None else None
    check_source(dest, out_dir.name, params, replace)
    files = {
        f.relative_to(out_dir).as_posix(): f
        for pattern in PUBLISHED
        for f in sorted(out_dir.glob(pattern))
        if f.is_file()
    }
    new = {rel: _sha256(f) for rel, f in files.items()}
    both = {
        rel: sorted({*earlier.get(rel, []), *([new[rel]] if rel in new else [])}) for rel in {*earlier, *new}
    }
    record = {"written_by": "python -m richreps.run --publish", "source": str(out_dir.resolve())}
    record |= {"run": out_dir.name, "params_file": params}
    write_json(dest / PUBLISH_RECORD, {**record, "files": both})
    for rel, f in files.items():
        with atomic_path(dest / rel) as tmp:
            shutil.copy2(f, tmp)
    for rel in sorted(set(earlier) - set(new)):  # written by an earlier publish, checked unchanged
        (dest / rel).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # its folder, when now empty
            (dest / rel).parent.rmdir() if (dest / rel).parent != dest else None
    write_json(dest / PUBLISH_RECORD, {**record, "files": {rel: [h] for rel, h in sorted(new.items())}})
    return dest
