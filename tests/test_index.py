"""Issue 27, item 5: a start lists ImageNet once, without a stat per file, and shares the listing; the
first start's image check decodes in parallel and finds what the serial check finds."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from test_data import write_imagenet

from richreps import data
from richreps.data import folders


def test_the_listing_stats_no_image_file(tmp_path, monkeypatch):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=5)
    stats = []
    real = os.stat

    def counted(path, *a, **kw):
        stats.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "stat", counted)
    index = folders.imagenet_index(root)
    assert len(index.train) == 15 and len(index.test) == 6
    assert [p for p in stats if p.lower().endswith(".jpeg")] == []


def _rank(rank: int, world: int, init: str, root: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    if rank > 0:  # only rank 0 may list: any other rank listing fails the test
        data.index_dataset = lambda *a, **kw: (_ for _ in ()).throw(AssertionError("rank 1 listed"))
    index = data.shared_index("imagenet", root, rank, world)
    torch.save({"train": index.train, "classes": index.classes}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_rank_0_lists_and_the_other_ranks_receive_its_index(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=4)
    init = f"file://{tmp_path / 'store'}"
    mp.start_processes(_rank, args=(2, init, str(root), str(tmp_path)), nprocs=2, start_method="spawn")
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert got[0] == got[1] and got[0]["train"] == folders.imagenet_index(root).train


def test_a_listing_error_is_raised_whole_on_rank_0_alone(tmp_path):
    with pytest.raises(data.DatasetError, match="folder not found"):
        data.shared_index("imagenet", tmp_path / "nowhere")


def test_the_parallel_image_check_finds_the_first_unreadable_file_the_serial_one_finds(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=30)
    samples = folders.imagenet_index(root).train
    for i in (70, 40):  # two broken files; the check names the first in the listing
        open(samples[i][0], "wb").write(b"not a JPEG")
    serial = folders.first_unreadable(samples, workers=0)
    assert serial == f"{samples[40][0]} (UnidentifiedImageError)"
    assert folders.first_unreadable(samples, workers=2) == serial
    assert folders.first_unreadable(samples[:40], workers=2) is None
