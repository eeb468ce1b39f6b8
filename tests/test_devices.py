"""Issue 27, item 2: every device of the node works, and the numbers do not depend on how many.

The parallel path is run on the CPU with two workers on "cpu" (`devices.node_devices` takes a list as
is), the path a node's GPUs take with one worker per GPU."""

from __future__ import annotations

import threading

import pytest
import torch
from test_faults import Identity, toy_batches
from test_probe import wide_blobs

from richreps import experiment, features
from richreps.devices import node_devices, ordered_map

TWO = ["cpu", "cpu"]


def test_results_come_back_in_order_and_a_lazy_source_is_never_drained_ahead():
    taken = []

    def source():
        for i in range(20):
            taken.append(i)
            yield i

    both = threading.Barrier(2, timeout=30)  # items 0 and 1 end only if two workers hold them at once

    def fn(x, worker):
        if x < 2:
            both.wait()
        return x * x, worker

    seen = []
    for i, (square, worker) in enumerate(ordered_map(fn, source(), node_devices(TWO))):
        assert square == i * i
        assert len(taken) <= i + 1 + 2 * 2  # at most two items per worker taken ahead of the results read
        seen.append(worker)
    assert set(seen[:2]) == {0, 1}


def test_an_error_in_one_worker_is_raised_in_the_caller():
    def fn(x, worker):
        if x == 5:
            raise ValueError("item 5")
        return x

    with pytest.raises(ValueError, match="item 5"):
        list(ordered_map(fn, range(10), node_devices(TWO)))


def test_one_device_runs_in_the_calling_thread():
    names = list(ordered_map(lambda x, w: threading.current_thread().name, range(3), node_devices("cpu")))
    assert names == [threading.current_thread().name] * 3


def test_extraction_on_two_devices_writes_the_features_of_one(tmp_path):
    batches = toy_batches()
    one = features.extract({"a": Identity()}, batches, "toy", tmp_path / "one", "cpu", chunk_batches=3)
    two = features.extract({"a": Identity()}, batches, "toy", tmp_path / "two", TWO, chunk_batches=3)
    assert torch.equal(one["a"].features.tensor(), two["a"].features.tensor())
    assert torch.equal(one["a"].labels, two["a"].labels)


def test_probes_on_two_devices_give_the_rows_of_one():
    feats = {
        "t": {
            s: wide_blobs(n, i, members=3)
            for i, (s, n) in enumerate([("train", 300), ("val", 100), ("test", 100)])
        }
    }
    reps = [
        experiment.Representation("CAT1 (baseline)", 1, 10, ("m0",)),
        experiment.Representation("CAT3", 3, 3, ("m0", "m1", "m2")),
    ]
    one = experiment.probe_rows(reps, feats, ["t"], [1e-2, 1e-3], [5], 0, "cpu")
    two = experiment.probe_rows(reps, feats, ["t"], [1e-2, 1e-3], [5], 0, TWO)
    assert [(r["method"], r["shots"]) for r in two] == [(r["method"], r["shots"]) for r in one]
    assert two == one


def test_a_partial_extraction_in_batches_of_another_size_starts_afresh_instead_of_skipping_rows(tmp_path):
    data, labels = torch.randn(100, 4), torch.arange(100) % 3

    def batches(size: int, fail_at: int | None = None):
        def source():
            for b, i in enumerate(range(0, 100, size)):
                if b == fail_at:
                    raise OSError("killed")
                yield data[i : i + size], labels[i : i + size]

        return source

    with pytest.raises(OSError, match="killed"):  # 6 batches of 10 rows kept in two chunks on disk
        features.extract({"a": Identity()}, batches(10, fail_at=7), "toy", tmp_path, chunk_batches=3)
    got = features.extract({"a": Identity()}, batches(20), "toy", tmp_path, chunk_batches=3)["a"]
    assert torch.equal(got.features.tensor(), data.half()) and torch.equal(got.labels, labels)
