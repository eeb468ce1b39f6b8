"""Training streams: endless, shuffled, sharded minibatches that resume exactly where they stopped.

    stream, calib, val, num_classes = make_data(recipe, seed, rank, world, device, micro)
    x, y = stream.next()
    state = stream.state_dict()          # the ResumableSampler's own format: epoch, start, seed
    stream.load_state_dict(state)

One resume API for every stream: the position is the sampler's (epoch, start), saved and
restored with `state_dict` / `load_state_dict`, as `ResumableSampler` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from richreps.config import Recipe
from richreps.data.sampler import EpochTagged, ResumableSampler

if TYPE_CHECKING:
    from richreps.data.folders import ImageIndex


class _Stream:
    """Shared position bookkeeping: the epoch and how many of this rank's samples it consumed."""

    sampler: ResumableSampler

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.restart()

    def restart(self) -> None:
        raise NotImplementedError

    def _advance(self, n: int) -> None:
        self.sampler.set_epoch(self.sampler.epoch, self.sampler.start + n)

    def _next_epoch(self) -> None:
        self.sampler.set_epoch(self.sampler.epoch + 1, 0)
        self.restart()


class CueStream(_Stream):
    """Shuffled minibatches of an in-memory tensor dataset (the multi-cue benchmark)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch: int, seed: int, rank: int, world: int
    ):
        if batch > len(labels) // world:
            raise ValueError(
                f"batch {batch} per process exceeds the {len(labels) // world} images of each shard"
            )
        self.images, self.labels, self.batch = images, labels, batch
        self.sampler = ResumableSampler(len(labels), world, rank, seed=seed, drop_last=True)
        self.order: torch.Tensor | None = None

    def restart(self) -> None:
        self.order = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self.order is None:
                self.order = torch.tensor(self.sampler.indices())
            if self.sampler.start + self.batch <= len(self.order):
                break
            self._next_epoch()
        start = self.sampler.start
        idx = self.order[start : start + self.batch]
        self._advance(self.batch)
        return self.images[idx], self.labels[idx]


class FreshCueStream:
    """A fresh cue sample for every minibatch, never repeated: ample data, so a run cannot overfit.

    Batch i of rank r is drawn from a seed fixed by (data seed, run seed, rank, i), so the stream is
    deterministic, a longer run's first t batches are a shorter run's batches (shared-prefix
    plans stay exact), and resuming needs only the count. The state has the samplers' shape
    (epoch, start, seed) so checkpoints store every stream alike; the epoch is always 0.
    """

    def __init__(self, recipe: Recipe, batch: int, seed: int, rank: int, device: torch.device | str):
        from richreps.data import cues

        self.recipe, self.batch, self.seed, self.device = recipe, batch, seed, device
        self.base = cues.split_seed(
            recipe.data_seed * 1_000_003 + seed, f"fresh/{recipe.cue_task}/{rank}", "train"
        )
        self.start = 0

    def state_dict(self) -> dict:
        return {"epoch": 0, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.start = int(state["start"])

    def draw(self, i: int):
        """Batch i of this stream, as a CueBatch."""
        from richreps.data import cues

        seed = (self.base + 7_919 * i) % (2**63 - 1)
        r = self.recipe
        if r.cue_task == "mixture":
            return cues.sample_pretrain(
                self.batch, r.cue_weights, seed, r.cue_redundant, r.cue_render, self.device
            )
        return cues.sample_task(r.cue_task, self.batch, seed, r.cue_render, self.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.draw(self.start // self.batch)
        self.start += self.batch
        return b.images, b.labels


class LoaderStream(_Stream):
    """The same interface over a DataLoader of real images (ImageNet), resumable mid-epoch.

    Without `augment`, loader workers decode with PIL and apply the reference transforms
    (`--decode cpu`). With it, workers only read JPEG bytes and `augment` decodes and augments the
    whole batch on the training device (`--decode gpu`: nvjpeg on CUDA), its crops and flips seeded by
    (seed, rank, epoch, position): each rank draws its own, and a resumed run draws the same ones.
    """

    def __init__(
        self,
        dataset,
        batch: int,
        seed: int,
        rank: int,
        world: int,
        workers: int | None,
        augment=None,
        collate_fn=None,
    ):
        from richreps.data.pipeline import cpu_loader, default_workers

        self.dataset, self.batch, self.seed, self.rank, self.augment = dataset, batch, seed, rank, augment
        self.sampler = ResumableSampler(len(dataset), world, rank, seed=seed, drop_last=True)
        # The loader reads its own copy of the position, set at every (re)start; one loader for the
        # whole run, so its persistent workers start once, not at every epoch.
        self.loader_sampler = ResumableSampler(len(dataset), world, rank, seed=seed, drop_last=True)
        self.loader = cpu_loader(
            dataset,
            batch,
            sampler=EpochTagged(self.loader_sampler),
            workers=default_workers() if workers is None else workers,
            drop_last=True,
            collate_fn=collate_fn,
        )
        self.it = None

    def restart(self) -> None:
        self.it = None

    def _next_epoch(self) -> None:
        if self.augment is not None:  # the epoch's decode fallbacks, counted and said
            self.augment.fallbacks.end_epoch(self.sampler.epoch)
        super()._next_epoch()

    def augment_seed(self) -> int:
        """The seed of the next batch's crops and flips: (seed, rank, epoch, position), so the ranks of a
        node draw different augmentations of their different images, and a resume draws the same."""
        return hash((self.seed, self.rank, self.sampler.epoch, self.sampler.start)) % (2**63)

    def next(self):
        while True:
            if self.it is None:
                self.loader_sampler.set_epoch(self.sampler.epoch, self.sampler.start)
                self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                self._next_epoch()
                continue
            if self.augment is None:
                x, y = batch
            else:
                encoded, y, paths = batch
                self.augment.g.manual_seed(self.augment_seed())
                x = self.augment(encoded, paths)
            self._advance(len(y))
            return x, y


class SeededSamples(torch.utils.data.Dataset):
    """Augmentation seeded by (seed, epoch, index): a resumed run draws the same crops."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)  # (epoch, i) from EpochTagged
        torch.manual_seed(hash((self.seed, epoch, i)) % (2**63))
        return self.base[i]


class Calibration:
    """A fixed, shuffled sample of training images in batches; iterable any number of times.

    BatchNorm statistics are recomputed from it at every export, so it must not be a
    one-shot generator, and it must not be the first classes of a class-sorted folder. Its images are
    decoded by `workers` loader processes (rank 0 calibrates while the other ranks wait); each image's
    augmentation is seeded by its index, so the batches do not depend on the number of workers.
    """

    def __init__(self, dataset, n: int, batch: int, seed: int, workers: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.subset = torch.utils.data.Subset(
            SeededSamples(dataset, seed), torch.randperm(len(dataset), generator=g)[:n].tolist()
        )
        self.batch, self.workers = batch, workers

    def __iter__(self):
        loader = torch.utils.data.DataLoader(self.subset, batch_size=self.batch, num_workers=self.workers)
        return (x for x, _ in loader)

    def __len__(self) -> int:
        return -(-len(self.subset) // self.batch)


def cue_splits(recipe: Recipe, device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """Training and validation sets of a cue recipe: the mixture, one transfer task or one OOD target
    (direct training). The mixture's pool is `data_seed`'s, or with `pool_per_seed_set` the pool of the
    seed set of `seed` (`cues.pool_seed`: the same for every run of a seed set, another for the next)."""
    from richreps.data import cues, ood

    if ood.is_ood(recipe.cue_task):  # a fixed real dataset: the partition of seed set `data_seed`, so
        # that direct training never trains on the test images of the seed set it is scored for
        render = recipe.data_seed if recipe.pool_per_seed_set else 0  # seed set k's own images
        parts = {
            s: [t.to(device) for t in ood.splits(recipe.cue_task, recipe.data_seed, render)[s]]
            for s in ("train", "val")
        }
        return {s: cues.CueBatch(*parts[s], torch.empty(0), torch.empty(0)) for s in parts}
    sizes = {"train": recipe.train_size, "val": recipe.val_size}
    if recipe.train_size == 0:  # fresh samples every step (FreshCueStream): no stored training set
        del sizes["train"]
    if recipe.cue_task == "mixture":
        return cues.pretrain_splits(
            recipe.cue_weights,
            sizes,
            seed=cues.pool_seed(recipe.data_seed, seed, recipe.pool_per_seed_set),
            redundant=recipe.cue_redundant,
            difficulty=recipe.cue_render,
            device=device,
        )
    # direct training draws its own data, independent of the probes' splits of the same task
    return {
        s: cues.sample_task(
            recipe.cue_task,
            n,
            cues.split_seed(recipe.data_seed, f"direct/{recipe.cue_task}", s),
            difficulty=recipe.cue_render,
            device=device,
        )
        for s, n in sizes.items()
    }


def skip_unreadable(datasets: list, rank: int, world: int) -> None:
    """corrupt_policy skip: leave the unreadable files out of `datasets`, each rank decoding only its
    share of them and all ranks leaving out what any found, so a start decodes every image once, not
    once per rank. The splits are drawn before, so which images are left out does not move the others."""
    import torch.distributed as dist

    from richreps.data import scan_images

    samples = [s for ds in datasets for s in ds.samples]
    shared = world > 1 and dist.is_available() and dist.is_initialized()
    mine = samples[rank::world] if shared else samples
    _, bad = scan_images(mine, "skip", desc=f"checking images (rank {rank}: {len(mine)} of {len(samples)})")
    if shared:
        found: list = [None] * world
        dist.all_gather_object(found, bad)
        bad = [p for part in found for p in part]
    drop = set(bad)
    for ds in datasets:
        ds.samples = [s for s in ds.samples if s[0] not in drop]


def make_data(
    recipe: Recipe,
    seed: int,
    rank: int,
    world: int,
    device: torch.device,
    micro: int,
    workers: int | None = None,
    decode: str = "cpu",
    index: ImageIndex | None = None,
):
    """(train stream, calibration batches, validation batches, number of classes).

    `decode` chooses how ImageNet JPEGs become training batches: `cpu` (PIL in loader workers)
    or `gpu` (bytes from the workers, batched decode and augmentation on `device`). `workers` (default:
    `default_workers()`, from the cores this process can use) decode for the training stream, and for
    BN calibration and evaluation too. `index`: ImageNet's listing when the start already has it
    (`data.shared_index`)."""
    calib_seed = seed + 7919
    if recipe.data == "cues":
        from richreps.data import cues, ood

        splits = cue_splits(recipe, device, seed)
        va = splits["val"]
        if recipe.train_size == 0 and not ood.is_ood(recipe.cue_task):
            stream = FreshCueStream(recipe, micro, seed, rank, device)
            # BN calibration draws its own fresh batches, from a stream no training step uses
            extra = FreshCueStream(recipe, micro, calib_seed, rank, device)
            calib = [extra.draw(i).images for i in range(recipe.bn_batches)]
        else:
            tr = splits["train"]
            stream = CueStream(tr.images, tr.labels, micro, seed, rank, world)
            g = torch.Generator().manual_seed(calib_seed)
            calib_idx = torch.randperm(len(tr.labels), generator=g)[: recipe.bn_batches * micro].to(
                tr.images.device
            )
            calib = [tr.images[calib_idx[i : i + micro]] for i in range(0, len(calib_idx), micro)]
        val = [(va.images[i : i + 512], va.labels[i : i + 512]) for i in range(0, len(va.labels), 512)]
        n_classes = cues.TASKS[recipe.cue_task].n_classes if recipe.cue_task in cues.TASKS else cues.N_VALUES
        return stream, calib, val, n_classes
    from richreps.data import build_dataset, index_dataset, pretrain_transform
    from richreps.data.pipeline import default_workers

    workers = default_workers() if workers is None else workers
    index = (
        index if index is not None else index_dataset("imagenet", recipe.data_root)
    )  # one listing, both splits
    common = dict(
        val_fraction=recipe.val_fraction,
        seed=0,
        corrupt_policy=recipe.corrupt_policy,
        scan=False,
        index=index,
    )
    train = build_dataset(
        "imagenet", recipe.data_root, "train", pretrain_transform(True, recipe.image_size), **common
    )
    held = build_dataset(
        "imagenet", recipe.data_root, "val", pretrain_transform(False, recipe.image_size), **common
    )
    if recipe.corrupt_policy == "skip":
        skip_unreadable([train, held], rank, world)
    if decode == "gpu":
        from richreps.data.pipeline import BatchAugment, JpegBytes, collate_bytes

        augment = BatchAugment(recipe.image_size, device, channels_last=device.type == "cuda")
        stream = LoaderStream(
            JpegBytes(train.samples), micro, seed, rank, world, workers, augment, collate_bytes
        )
    else:
        stream = LoaderStream(SeededSamples(train, seed), micro, seed, rank, world, workers)
    calib = Calibration(train, recipe.bn_batches * micro, micro, calib_seed, workers)
    val = torch.utils.data.DataLoader(held, batch_size=256, num_workers=workers)
    return stream, calib, val, len(train.classes)
