"""A command under a time cap whose whole process tree is killed when the cap passes.

    code, seconds, tail = run_capped([sys.executable, "-m", "richreps.run", ...], cap_s=90)

`subprocess.run(timeout=...)` kills only its direct child: papermill's kernel, torchrun's workers and
whatever they start would go on holding the GPU. Here the command starts a process group of its own
(`start_new_session`), and a timeout kills that group and every descendant with its own group, found
from /proc before anything is killed: a Jupyter kernel starts a session of its own, out of reach of
the first group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux), found before any of them is killed."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` (started with start_new_session: its own process group), its group, and every
    descendant with its group: a Jupyter kernel starts a session of its own, out of reach of the first."""
    pids = descendants(proc.pid)
    groups = {proc.pid}
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_capped(
    cmd: list[str], cap_s: float, cwd: Path | None = None, log: Path | None = None
) -> tuple[int, float, str]:
    """(exit code, seconds, last lines of output) of `cmd` run in `cwd` (on the path too) in a process
    group of its own, its output captured (or written to `log` as it comes); past `cap_s` the whole
    tree is killed and the code is 124."""
    start = time.perf_counter()
    env = {**os.environ, **({"PYTHONPATH": str(cwd)} if cwd else {})}
    sink = log.open("w") if log else subprocess.PIPE
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            text, code = proc.communicate(timeout=max(cap_s, 1.0))[0] or "", proc.returncode
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            text, code = proc.communicate()[0] or "", 124
            text += f"\nstopped at its cap of {cap_s:.0f} s (process tree killed)"
        except BaseException:  # interrupted: leave nothing running
            kill_tree(proc)
            raise
    finally:
        if log:
            sink.close()
    if log:
        text = log.read_text() + (text if code == 124 else "")
    return code, round(time.perf_counter() - start, 1), "\n".join(text.strip().splitlines()[-6:])
