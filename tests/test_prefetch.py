"""Issue 27, item 4: the input pipeline runs ahead of the step, and the step never waits for the host.

The overlap is tested by ordering, not by a clock: the step waits until the next batch is being
made, which can only happen if data and step run at the same time (a serial pipeline deadlocks and
the test fails at its timeout). How close the wall time per step comes to max(data, step) is measured
by `python -m bench.prefetch_overlap`, never asserted here.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from test_data import imagenet_stream, write_imagenet
from test_pretrain import args_for

from richreps import pretrain
from richreps.data.prefetch import Prefetcher
from richreps.data.streams import CueStream

WAIT_S = 30  # generous: only a serial pipeline ever reaches it


class Counting:
    """A stream whose batch i is (i, i); `making` is set while batch i is being made."""

    def __init__(self, fail_at: int | None = None):
        self.start, self.fail_at = 0, fail_at
        self.making: dict[int, threading.Event] = {}

    def event(self, i: int) -> threading.Event:
        return self.making.setdefault(i, threading.Event())

    def next(self):
        i = self.start
        self.event(i).set()
        if i == self.fail_at:
            raise OSError(f"unreadable batch {i}")
        self.start += 1
        return torch.tensor([i]), torch.tensor([i])

    def state_dict(self) -> dict:
        return {"epoch": 0, "start": self.start, "seed": 0}

    def load_state_dict(self, state: dict) -> None:
        self.start = state["start"]


def test_the_next_batch_is_made_while_the_step_runs():
    stream = Counting()
    ahead = Prefetcher(stream, depth=1, device="cpu")
    try:
        for i in range(5):
            x, _ = ahead.next()
            assert int(x) == i
            # the "step" on batch i: it cannot end until batch i + 1 is being made beside it
            assert stream.event(i + 1).wait(WAIT_S), f"batch {i + 1} was not made during step {i}"
    finally:
        ahead.close()


def test_the_position_is_what_the_step_consumed_not_what_was_made_ahead():
    stream = Counting()
    ahead = Prefetcher(stream, depth=3, device="cpu")
    for _ in range(4):
        ahead.next()
    stream.event(6).wait(WAIT_S)  # the thread has run ahead of the step
    assert ahead.state_dict()["start"] == 4 and stream.start > 4
    ahead.load_state_dict({"epoch": 0, "start": 2, "seed": 0})
    assert [int(ahead.next()[0]) for _ in range(3)] == [2, 3, 4]
    ahead.close()
    assert int(ahead.next()[0]) == 5  # after a close, next() makes ahead again from what was consumed
    ahead.close()


def test_an_error_while_making_a_batch_is_raised_in_the_training_thread():
    ahead = Prefetcher(Counting(fail_at=2), depth=2, device="cpu")
    assert [int(ahead.next()[0]) for _ in range(2)] == [0, 1]
    with pytest.raises(OSError, match="unreadable batch 2"):
        ahead.next()


def test_the_device_decode_stream_made_ahead_gives_the_same_batches_and_resumes_exactly(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=8)
    inline, ahead = imagenet_stream(root, "gpu"), Prefetcher(imagenet_stream(root, "gpu"), 2, "cpu")
    for _ in range(7):  # crosses an epoch
        xa, ya = inline.next()
        xb, yb = ahead.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert ahead.state_dict() == inline.state_dict()
    resumed = Prefetcher(imagenet_stream(root, "gpu"), 2, "cpu")
    resumed.load_state_dict(ahead.state_dict())
    for _ in range(3):
        assert torch.equal(resumed.next()[0], inline.next()[0])
    ahead.close()
    resumed.close()


SYNCS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy")


def test_a_training_step_waits_for_the_host_only_at_log_export_and_checkpoint_steps(tmp_path, monkeypatch):
    """Each tensor-to-Python conversion (the host waits for the device there) is counted by a spy, except
    inside the stream, whose sampler draws its order on the host on every device (`tolist` of a CPU
    permutation, once per epoch)."""
    counts, in_stream = {"n": 0}, threading.local()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, **kw):
            counts["n"] += not getattr(in_stream, "on", False)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    draw = CueStream.next

    def stream_next(self):
        in_stream.on = True
        try:
            return draw(self)
        finally:
            in_stream.on = False

    monkeypatch.setattr(CueStream, "next", stream_next)
    per_step: list[int] = []
    step = pretrain.train_step

    def counted_step(t):
        per_step.append(counts["n"])
        return step(t)

    monkeypatch.setattr(pretrain, "train_step", counted_step)
    pretrain.train(args_for(tmp_path, 12, "--log-every", "4", "--ckpt-every", "6", "--export-at", "12"))
    per_step.append(counts["n"])
    syncs = [b - a for a, b in zip(per_step, per_step[1:])]  # between the start of step s and of s + 1
    checks = {4, 6, 8, 12}  # log steps, the checkpoint at 6, the export at 12
    assert all(n == 0 for s, n in enumerate(syncs, 1) if s not in checks), syncs
    assert all(n > 0 for s, n in enumerate(syncs, 1) if s in checks), syncs  # the spy sees what it should


def test_prefetching_changes_no_bit_of_a_run(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=8)
    flags = ["--data", "imagenet", "--data-root", str(root), "--image-size", "24", "--global-batch", "4"]
    flags += ["--decode", "gpu", "--workers", "0", "--arch", "small_cnn", "--val-fraction", "0.1"]
    states = []
    for depth in ("0", "2"):
        pretrain.train(args_for(tmp_path / depth, 6, *flags, "--prefetch", depth))
        states.append(torch.load(tmp_path / depth / "final" / "seed0.pt", weights_only=False)["model"])
        settings = json.loads((tmp_path / depth / "metrics" / "settings_seed0.json").read_text())
        assert settings["prefetch"] == int(depth)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
