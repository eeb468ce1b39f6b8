"""Where a training process runs, and what it saves when SLURM stops it.

    rank, world, device = pretrain.setup("cuda")   # an unusable GPU is an error, not a CPU run
    settings = gpu_settings(device)                # cudnn.benchmark and TF32, recorded with the run

Nothing here decides what a member is (that is `richreps.config.Recipe`): the device, the backend and
the kernels' settings are how a run is computed, recorded with it (`<out>/metrics/settings_seed<S>.json`)
but not part of its identity.

A preempted or timed-out SLURM job is requeued by submitit, which first calls `PretrainJob.checkpoint`
in the signal handler of global rank 0. `save_live_checkpoint` writes the running trainer's state there
as of its last completed step: `train_step` records the few things a step changes before its update
(stream position, RNG state, BatchNorm buffers) and defers the preemption handler while the optimizer
updates the weights, so the handler never sees a half-updated model. Kept apart from `pretrain` so that
`launch` reaches the live run without importing the training loop's module state.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

DEVICES = ("auto", "cuda", "cpu")
# submitit's requeue signal (sbatch --signal=USR2@<delay>): deferred while the optimizer updates the weights
PREEMPTION_SIGNALS = {signal.SIGUSR2} if hasattr(signal, "SIGUSR2") else set()
GPU_NODE = Path("/dev/nvidia0")  # the driver's device file: there when a GPU is, whatever torch says


def choose_cuda(requested: str) -> tuple[bool, str]:
    """(train on CUDA, why not when not) for `--device auto|cuda|cpu`.

    `torch.cuda.is_available()` is False both without a GPU and with a driver older than this torch
    build's CUDA; under `auto` either trains on the CPU (and says why), under `cuda` it is an error.
    """
    if requested not in DEVICES:
        raise SystemExit(f"error: --device must be one of {DEVICES}, got {requested!r}")
    if requested == "cpu":
        return False, "--device cpu"
    if torch.cuda.is_available():
        return True, ""
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is built without CUDA"
    elif GPU_NODE.exists():
        why = f"a GPU is present but unusable: a driver older than this torch's CUDA {torch.version.cuda}?"
    else:
        why = "no CUDA device visible"
    if requested == "cuda":
        raise SystemExit(f"error: --device cuda, but torch.cuda.is_available() is False ({why})")
    return False, f"{why}; --device cuda makes this an error"


def gpu_settings(device: torch.device) -> dict:
    """Turn on the fast kernels for training on `device` and return them for the run's record.

    On CUDA: cudnn.benchmark (convolution kernels chosen by timing at the first steps: faster, but the
    choice may differ after a restart, so a resumed run agrees with an uninterrupted one to rounding, not
    bitwise) and TF32 for float32 matmuls and convolutions (under bf16 autocast only what runs in float32).
    On the CPU nothing changes, and the run stays bitwise reproducible across restarts.
    """
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    if cuda:
        allow_tf32()
    return {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": tf32_allowed() if cuda else False,
    }


def allow_tf32() -> None:
    """TF32 for float32 matmuls and cuDNN convolutions (torch >= 2.9 names it `fp32_precision`)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def tf32_allowed() -> bool:
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)  # pragma: no cover - older torch


def say(rank: int, world: int, backend: str | None, device: torch.device, why: str) -> None:
    """The one line a run starts with: how many processes, which backend and device, and why not CUDA."""
    if rank == 0:
        how = f"{world} processes, backend {backend}" if backend else "1 process (no torchrun)"
        print(f"[pretrain] {how}, device {device}" + (f" ({why})" if why else ""), file=sys.stderr)


# ---------------------------------------------------------------- the live run, for the preemption handler


@dataclass
class StepStart:
    """What a step changes before its optimizer update, as it was when the step began."""

    step: int
    stream: dict
    rng: dict
    buffers: list[torch.Tensor]


_live = None  # the trainer `pretrain.wrap` registered: this process trains one run at a time


def register(trainer) -> None:
    global _live
    _live = trainer


def _buffers(t) -> list[torch.Tensor]:
    return list(t.raw.buffers())


def step_started(t) -> None:
    """Record the step's starting point (called by `train_step` before its first micro-batch)."""
    from richreps.checkpoints import rng_states

    bufs = _buffers(t)
    if t.at_start is None:
        copies = [b.detach().clone() for b in bufs]
    else:
        copies = t.at_start.buffers
        torch._foreach_copy_(copies, [b.detach() for b in bufs])
    stream = t.stream.state_dict() if hasattr(t.stream, "state_dict") else {}  # a bench's fixed batch: none
    t.at_start = StepStart(completed_steps(t), stream, rng_states(t.device), copies)
    t.in_step = True


@contextmanager
def update(t):
    """The optimizer update, with the preemption handler deferred until the step is complete.

    Python runs signal handlers in the main thread between bytecodes, so submitit's handler could run
    halfway through `opt.step()`. While the weights are updated, a Python handler of the preemption
    signal is swapped for one that only records the signal; the real one runs once the step is done.
    (Masking the signal would not do: the kernel delivers it to any thread that does not mask it.)
    """
    pending: list = []
    deferred = {}
    for sig in PREEMPTION_SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler):
            deferred[sig] = handler
            signal.signal(sig, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
        t.in_step = False
    finally:
        for sig, handler in deferred.items():
            signal.signal(sig, handler)
        for signum, frame in pending:
            deferred[signum](signum, frame)


def completed_steps(t) -> int:
    """Optimizer steps taken (schedule-free counts them in `k`, saved with the optimizer's state)."""
    return int(t.opt.param_groups[0].get("k", 0))


class _Frozen:
    """`state_dict()` of an object as it was recorded: what `save_checkpoint` asks of a model or a stream."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def save_live_checkpoint(out: str | Path | None = None, seed: int | None = None) -> Path | None:
    """Save the live run's state as of its last completed step; the path, or None with nothing to save
    (no run going, none of `out` and `seed` when given, or no step taken yet).

    Between steps (or while a member is exported) the state is the trainer's own; inside a step, before
    the update, the weights and the optimizer are still those of the last step, and the stream position,
    RNG state and BatchNorm buffers are taken from the step's start. Only this rank's RNG state is saved
    (a signal handler cannot gather the others'); no training step draws from the global generators.
    """
    from richreps.checkpoints import rng_states, save_checkpoint

    t = _live
    if t is None or t.out is None:
        return None
    if (
        out is not None
        and Path(out).resolve() != Path(t.out).resolve()
        or seed is not None
        and seed != t.seed
    ):
        return None  # the live run is another job's
    step = completed_steps(t)
    if step == 0:
        return None
    bad = getattr(t, "first_bad", None)
    if bad is not None and int(bad):  # a non-finite step since the last check: its weights are not saved
        print(
            f"[preempt] step {int(bad)} had a non-finite loss: no checkpoint saved",
            file=sys.stderr,
            flush=True,
        )
        return None
    model, stream, rng = t.raw, t.stream, rng_states(t.device)
    if t.in_step and t.at_start is not None:
        state = t.raw.state_dict()
        for (name, _), saved in zip(t.raw.named_buffers(), t.at_start.buffers):
            if name in state:  # persistent buffers only, as the state dict holds them
                state[name] = saved
        model, stream, rng = _Frozen(state), _Frozen(t.at_start.stream), t.at_start.rng
    folder = Path(t.out) / "ckpt" / f"seed{t.seed}"
    return save_checkpoint(folder, model, t.opt, step, stream, [rng], t.recipe, t.seed, t.decode)


def environment_note() -> str:
    """SLURM's job and task, when there is one (for the preemption message)."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"SLURM job {job}, task {os.environ.get('SLURM_PROCID', '?')}" if job else "no SLURM job"
