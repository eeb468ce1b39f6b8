"""Atomic file writes and table export: nothing already written is lost if a run dies."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; fsync it and rename it over `path` only on success.

    The file gets the mode any new file gets under the process umask (mkstemp alone would make
    it 0600, unreadable to colleagues on a shared cluster), and the rename is made durable by
    syncing the folder too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwritable(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in `folder` (existing, or to be made), or None when they can.

    Probed by creating and removing a file in `folder`, or in its nearest existing parent when it does
    not exist yet: permission bits do not tell (root ignores them, a read-only mount refuses root too),
    and a write refused after hours of compute loses them. Nothing is left behind."""
    path = parent = Path(folder).expanduser().absolute()
    try:
        if path.exists() and not path.is_dir():
            return f"{path} is not a folder"
        parent = next(p for p in [path, *path.parents] if p.exists() or p.is_symlink())
        if not parent.is_dir():
            return f"{parent} is {'a broken link' if parent.is_symlink() else 'a file'}, not a folder"
        fd, probe = tempfile.mkstemp(prefix=".richreps-write-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot write in {parent} ({e.strerror or type(e).__name__})"
    return None


def project_path(path: str | os.PathLike) -> Path:
    """A relative path taken from the repository root (the folder holding pyproject.toml above this
    package), else from the working directory. Notebooks resolve `output_dir` with it, so papermill
    run from the repository root or from notebooks/ writes to the same place."""
    path = Path(path)
    if path.is_absolute():
        return path
    root = Path(__file__).resolve().parents[1]
    return (root if (root / "pyproject.toml").is_file() else Path.cwd()) / path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log (one object a line). A line that does not parse as one, the
    torn last line of a process killed mid-write for instance, is dropped with a warning naming the
    file and the line: every reader of the metrics logs reads them through here."""
    import sys

    path = Path(path)
    rows, torn = [], []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            torn.append(i)
    if torn:
        print(
            f"warning: {path}: dropped {len(torn)} unreadable line(s) (line {', '.join(map(str, torn[:5]))}; "
            "a torn write of a killed run)",
            file=sys.stderr,
        )
    return rows


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def to_markdown(df: pd.DataFrame, index: bool = True, floatfmt: str = "{:g}") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""

    def cell(v) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return str(v).replace("|", "\\|")

    frame = df.reset_index() if index else df
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, out_dir: str | os.PathLike, name: str, index: bool = True) -> list[Path]:
    """Write `name`.csv and `name`.md under out_dir/tables."""
    base = Path(out_dir) / "tables"
    csv = base / f"{name}.csv"
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=index)
    md = write_text(base / f"{name}.md", to_markdown(df, index=index))
    return [csv, md]


def payload_digest(obj) -> str:
    """sha256 of a checkpoint payload: every tensor's dtype, shape and bytes, and every other value's
    repr, walked in a fixed order. Written beside the payload and compared on load, it catches a
    corrupted tensor that still loads, finite or not."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def walk(o) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            for k in sorted(o, key=repr):
                h.update(f"K{k!r}".encode())
                walk(o[k])
        elif isinstance(o, list | tuple):
            h.update(f"L{len(o)}".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"V{o!r}".encode())

    walk(obj)
    return h.hexdigest()


def append_rows(path: str | Path, rows: list[dict]) -> Path:
    """Append rows to a CSV record (created if missing), atomically: the one writer of the committed
    records that `richreps.calibrate` and `richreps.tune` keep."""
    path = Path(path)
    table = pd.DataFrame(rows)
    if path.exists():
        table = pd.concat([pd.read_csv(path), table], ignore_index=True)
    with atomic_path(path) as tmp:
        table.round(4).to_csv(tmp, index=False)
    return path


def parse_assignments(items: list[str], known: set[str], flag: str = "--set") -> dict:
    """`key=value` items (values parsed as JSON: true, 0.2, [1, 2]) with keys in `known`; a bad item
    is a one-line SystemExit naming it."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"error: {flag} {item!r}: expected key=value with key one of {sorted(known)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(
                f"error: {flag} {item!r}: the value is not JSON (quote strings: key='\"text\"')"
            ) from None
    return out
