"""Child processes that die with their parent: no training outlives the runner that started it.

The chain from `python -m richreps.run` to a training step is runner -> Jupyter kernel -> torchrun's agent
-> torchrun's workers. Killing the runner (SIGTERM, SIGKILL, its process group, a SLURM cancel) does not
reach the others by itself: jupyter_client starts the kernel in a session of its own, and torchrun starts
each worker in a session of its own (`start_new_session=True`), so no group signal reaches them. Each link is
therefore tied to the one above it with Linux's `PR_SET_PDEATHSIG` (the kernel sends SIGKILL to a process
when the thread that started it exits, however it exits):

- the kernel: `richreps.run` starts it with `preexec_fn=die_with_parent_preexec()` (ipykernel's own parent
  poller would notice only a second later, and not at all under a subreaper);
- torchrun's agent: `launch.run_local` starts it the same way from the kernel;
- each worker: `richreps.pretrain` ties itself to the agent on its first line (`tie_torchrun_worker`), so the
  agent's death, even by SIGKILL when it cannot clean up, ends it.

Jobs that `launch: slurm` submits are the cluster's, not the runner's: they are meant to outlive it (the
runner submits and returns; a later run with `launch: none` reads their members), and `scancel` stops them.

Writes are atomic everywhere (`richreps.io.atomic_path`), so a SIGKILL mid-export leaves the earlier file
or none; a torn metrics line is dropped on the next read. On systems other than Linux there is no
`PR_SET_PDEATHSIG`: the functions do nothing and say so in their return value.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _find_prctl():
    """libc's prctl, looked up once at import: a `preexec_fn` runs between fork and exec in a process that may
    have threads, where loading a library (dlopen takes locks) could deadlock."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when the thread that started it exits. False where the
    platform has no such request (not Linux) or it failed."""
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent_preexec(parent: int | None = None) -> Callable[[], None]:
    """A `subprocess.Popen(preexec_fn=...)` that ties the child to the process that starts it: the child
    gets SIGKILL when its parent dies, and exits at once if the parent died before the tie was made."""
    parent = os.getpid() if parent is None else parent

    def preexec() -> None:
        die_with_parent()
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def tie_torchrun_worker() -> None:
    """Called first by a distributed worker (torchrun's, or a SLURM task's: `LOCAL_RANK` is set), before its
    heavy imports: die with the process that started it. A worker already re-parented (its agent died first:
    its parent is now init) exits."""
    if "LOCAL_RANK" not in os.environ:
        return
    die_with_parent()
    if os.getppid() == 1:
        os._exit(1)
