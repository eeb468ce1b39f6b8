"""A distributed sampler that is deterministic per (seed, epoch) and resumes inside an epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Shuffles with a generator seeded by seed + epoch, shards across ranks, and can skip
    the first `start` indices of this rank's shard, so a resumed run sees exactly the data it
    would have seen. Like DistributedSampler, it pads the permutation so every rank gets the
    same number of indices (or drops the tail with drop_last)."""

    def __init__(
        self,
        n: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.n, self.num_replicas, self.rank = n, num_replicas, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start = 0, 0
        self.per_rank = n // num_replicas if drop_last else math.ceil(n / num_replicas)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch, and how many of this rank's indices were already consumed."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start {start} is not in [0, {self.per_rank}]")
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.num_replicas
        order = order[:total] if self.drop_last else (order * math.ceil(total / max(self.n, 1)))[:total]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler seed {self.seed} differs from the checkpoint's {state['seed']}")
        self.set_epoch(state["epoch"], state["start"])


class EpochTagged(torch.utils.data.Sampler):
    """Yields (epoch, index) pairs of a ResumableSampler, so that datasets whose augmentation is
    seeded by the epoch see the right one inside persistent loader workers, which keep their
    own copy of the dataset and never see an attribute set on it after they start."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
