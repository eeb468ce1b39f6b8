"""Run a stream's next batches ahead of the training step, in a background thread.

    stream = Prefetcher(stream, depth=2, device=device)
    x, y = stream.next()                 # ready: made while the previous step ran
    stream.state_dict()                  # the position of what the step consumed, not of what was made

With `--decode gpu` the JPEG decode and the batch-wise augmentation (`data.pipeline.BatchAugment`)
used to run inline, in the training thread, between two steps. Here a thread makes up to `depth`
batches ahead: on CUDA on a side stream, each batch handed over with an event the step's stream waits
on (no host synchronisation), so decode, augmentation and the host-to-device copy overlap the step.
The thread releases the GIL wherever the work is in torch or in file reads, which is nearly all of it.

Nothing the batches hold depends on when they are made: every stream draws its order and its
augmentation from its own seeded generators (never the global ones), so a run with prefetching is
bitwise a run without it, and a resume from `state_dict()` is exact.

Why not NVIDIA DALI, MLPerf's choice: see the README's "Input pipeline" section. This path keeps one
decoder for both decode paths' corrupt-file policy, runs unchanged on the CPU in `make test`, and
needs no 200 MB extra; DALI's crop-decode is its real advantage, and `bench/gpu_check.py` measures
this path against synthetic data so the gap can be seen on a card.
"""

from __future__ import annotations

import copy
import queue
import threading
from contextlib import nullcontext

import torch

_POLL_S = 0.1  # how often a blocked producer looks at its stop flag


class Prefetcher:
    """`next()` / `state_dict()` / `load_state_dict()` of `stream`, with `depth` batches made ahead."""

    def __init__(self, stream, depth: int, device: torch.device | str):
        if depth < 1:
            raise ValueError(f"prefetch depth {depth}: must be at least 1 (0 means: no Prefetcher)")
        self.stream, self.depth, self.device = stream, depth, torch.device(device)
        self.side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.consumed = copy.deepcopy(stream.state_dict())
        self.thread: threading.Thread | None = None
        self._start()

    def __getattr__(self, name: str):  # the wrapped stream's other attributes (e.g. `loader`)
        if "stream" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["stream"], name)

    def _start(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="richreps-prefetch", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            with torch.cuda.stream(self.side) if self.side is not None else nullcontext():
                while not self.stop.is_set():
                    x, y = self.stream.next()
                    x = x.to(self.device, non_blocking=True)
                    y = y.to(self.device, non_blocking=True)
                    ready = None
                    if self.side is not None:
                        ready = torch.cuda.Event()
                        ready.record(self.side)
                    if not self._put((x, y, ready, copy.deepcopy(self.stream.state_dict()))):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the training thread, raised there
            self._put(e)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.thread is None:  # closed: make ahead again from what was consumed
            self.load_state_dict(self.consumed)
        item = self.queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        x, y, ready, self.consumed = item
        if ready is not None:  # the step's stream waits on the GPU, the host does not
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            x.record_stream(current)
            y.record_stream(current)
        return x, y

    def state_dict(self) -> dict:
        return copy.deepcopy(self.consumed)

    def load_state_dict(self, state: dict) -> None:
        """Drop what was made ahead, move the stream to `state`, and make ahead from there."""
        self.close()
        self.stream.load_state_dict(state)
        self.consumed = copy.deepcopy(state)
        self._start()

    def close(self) -> None:
        """Stop the thread and drop the batches made ahead (the stream is left past them)."""
        if self.thread is None:
            return
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        self.thread = None
