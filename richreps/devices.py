"""Every device of the node at work: one worker thread per device, results in the order of the work.

    for result in ordered_map(fn, items, node_devices("cuda")):   # fn(item, i): i, the worker's device index

Extraction (`features.extract`) hands its batches round-robin to the node's GPUs, so every image is
decoded once and every GPU runs every member on its share; the probes (`experiment.probe_rows`) hand
out one (representation, target, labelled examples) fit per GPU, its weight-decay path whole (each fit
starts from the previous weight decay's solution). Threads, not processes: the features and members
are already in this process, the GPU kernels release the GIL, and the results come back in order
without a file per fit. With one device nothing changes: the work runs in the calling thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
Devices = str | torch.device | Sequence[str | torch.device]


def node_devices(device: Devices) -> list[torch.device]:
    """The devices a call may use: "cuda" without an index is every visible GPU; a list is taken as is
    (tests pass ["cpu", "cpu"] to run the parallel path on the CPU); anything else is itself alone."""
    if isinstance(device, (list, tuple)):
        return [torch.device(d) for d in device]
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [device]


def ordered_map(
    fn: Callable[[T, torch.device], R], items: Iterable[T], devices: Sequence[torch.device]
) -> Iterator[R]:
    """fn(item, device) for every item, one thread per device, yielded in the items' order.

    At most two items per device are taken from `items` ahead of the results read, so a lazy source (a
    data loader) is never drained faster than the results are used. An exception in a worker is raised
    here, in the caller's thread; the other workers finish the item they hold and take no more."""
    devices = list(devices)
    if len(devices) == 1:
        yield from (fn(item, 0) for item in items)
        return
    todo: queue.Queue = queue.Queue(maxsize=2 * len(devices))
    done: dict[int, tuple[bool, object]] = {}
    ready = threading.Condition()
    stop = threading.Event()

    def work(worker: int) -> None:
        while not stop.is_set():
            got = todo.get()
            if got is None:
                return
            i, item = got
            try:
                result = (True, fn(item, worker))
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                result = (False, e)
                stop.set()
            with ready:
                done[i] = result
                ready.notify_all()

    threads = [
        threading.Thread(target=work, args=(i,), daemon=True, name=f"richreps-{d}")
        for i, d in enumerate(devices)
    ]
    for t in threads:
        t.start()
    source, given, wanted = iter(items), 0, 0
    try:
        exhausted = False
        while True:
            while not exhausted and given - wanted < 2 * len(devices):
                try:
                    todo.put((given, next(source)))
                    given += 1
                except StopIteration:
                    exhausted = True
            if exhausted and wanted == given:
                return
            with ready:
                ready.wait_for(lambda w=wanted: w in done or stop.is_set())
                if wanted not in done:  # another item failed first: wait for that one's error
                    ready.wait_for(lambda: any(not ok for ok, _ in done.values()))
                    ok, value = next(v for v in done.values() if not v[0])
                else:
                    ok, value = done.pop(wanted)
            if not ok:
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
            wanted += 1
    finally:
        stop.set()
        while True:  # what no worker took is dropped, then each worker is told to end
            try:
                todo.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            todo.put_nowait(None)
