"""Concatenate members into CATn representations and measure transfer by linear probing.

    python -m richreps.probe --members A.pt B.pt --dataset cifar100 --root /data --probe fast

Features are computed once per (member, dataset, split, transform), cached on disk in float16
and reused; a CATn reads its members' cached features and never re-runs a network. Two probes:
`fast` (standardised features, multinomial logistic regression by full-batch L-BFGS, weight decay
chosen on the validation split) and `reference` (the authors' protocol: BatchNorm1d + Linear,
SGD with Nesterov, 28 epochs with drops at 8/16/24, features recomputed every epoch under
augmentation). Model selection always uses the validation split; the reference protocol's own
best-test-epoch number is reported separately and labelled as such.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from richreps.io import atomic_path
from richreps.models import Member, build_model

log = logging.getLogger(__name__)

# The authors' weight-decay grids (richreps-timecat), and ours for the fast probe.
REFERENCE_WD = {
    "cifar10": [1e-2, 5e-2, 1e-4, 5e-4, 1e-3, 5e-3],
    "cifar100": [1e-2, 5e-2, 1e-4, 5e-4, 1e-3, 5e-3],
    "imagenet": [5e-4, 1e-4],
    "inat18": [1e-6, 1e-5, 1e-4],
    "cues": [1e-4, 5e-4, 1e-3, 5e-3],
}
FAST_WD = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 0.0]


class CheckpointError(ValueError):
    """A member checkpoint that cannot join a CAT; the message names the file and the key."""


# ---------------------------------------------------------------- members


def algoperf_key(key: str) -> str | None:
    """Map an AlgoPerf / richreps-timecat ResNet-50 key to torchvision's name (None: not backbone)."""
    while True:
        stripped = re.sub(r"^(_orig_mod\.|module\.)", "", key)
        if stripped == key:
            break
        key = stripped
    if key.startswith("fc."):
        return None
    return key.replace(".downsample.conv.", ".downsample.0.").replace(".downsample.bn.", ".downsample.1.")


def load_member(path: str | Path) -> Member:
    """A member from our own export or from an AlgoPerf-format ResNet-50 checkpoint, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a torch checkpoint ({type(e).__name__})") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == "richreps-member-1":
        member = build_model(ckpt["arch"], ckpt["num_classes"], ckpt.get("width", 32))
        _load_backbone(member, ckpt["state_dict"], path, strip=lambda k: k)
    elif isinstance(ckpt, dict) and "model_params" in ckpt:
        member = build_model("resnet50", 1000)
        _load_backbone(member.net, ckpt["model_params"], path, strip=algoperf_key)
    else:
        raise CheckpointError(
            f"{path}: neither a richreps member (format key) nor an AlgoPerf checkpoint (model_params key)"
        )
    member.source = str(path)
    return member.eval()


def _load_backbone(module: nn.Module, state: dict, path: Path, strip: Callable[[str], str | None]) -> None:
    """Load every backbone tensor; the classifier (fc) is not needed for probing."""
    mapped = {}
    for k, v in state.items():
        name = strip(k)
        if name is not None:
            mapped[name] = v
    current = module.state_dict()
    expected = {k for k in current if ".fc." not in f".{k}"}
    missing = sorted(expected - set(mapped))
    unexpected = sorted(k for k in mapped if k not in current)
    if missing:
        raise CheckpointError(f"{path}: missing backbone key '{missing[0]}' ({len(missing)} missing)")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected)")
    for k in expected:
        if mapped[k].shape != current[k].shape:
            raise CheckpointError(
                f"{path}: key '{k}' has shape {tuple(mapped[k].shape)}, expected {tuple(current[k].shape)}"
            )
    module.load_state_dict({**current, **{k: mapped[k] for k in expected}})


def check_cat(members: list[Member]) -> None:
    """All members of a CAT share the architecture and the feature width."""
    first = members[0]
    for m in members[1:]:
        if type(m) is not type(first) or m.feature_dim != first.feature_dim:
            raise CheckpointError(
                f"{m.source}: {type(m).__name__} with {m.feature_dim} features differs from "
                f"{first.source} ({type(first).__name__}, {first.feature_dim}) in this CAT"
            )
        first_keys, keys = list(first.state_dict()), list(m.state_dict())
        if first_keys != keys:
            diff = next(a for a, b in zip(keys + [""], first_keys + [""]) if a != b)
            raise CheckpointError(f"{m.source}: key '{diff}' differs from {first.source}")


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- features, computed once


@dataclass
class FeatureSet:
    features: torch.Tensor  # (N, D) float16
    labels: torch.Tensor  # (N,) int64


def cache_path(cache_dir: str | Path, member_key: str, data_key: str) -> Path:
    return Path(cache_dir) / member_key / f"{hashlib.sha256(data_key.encode()).hexdigest()[:16]}.pt"


@torch.no_grad()
def extract(
    members: dict[str, Member],
    batches: Callable[[], Iterable],
    data_key: str,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
    chunk_batches: int = 50,
    desc: str = "features",
) -> dict[str, FeatureSet]:
    """Features of every member on one dataset split, from the cache where present.

    `members` maps a content key (the checkpoint's hash) to the model. The missing members share
    one pass over the data: each batch is decoded once and run through all of them (bf16 on CUDA).
    Progress is written in chunks, so a killed extraction resumes where it stopped.
    """
    device = torch.device(device)
    out, todo = {}, {}
    for key, m in members.items():
        path = cache_path(cache_dir, key, data_key)
        if path.exists():
            out[key] = FeatureSet(**torch.load(path, weights_only=True))
        else:
            todo[key] = m.to(device).eval()
    if not todo:
        return out
    part_dir = (
        Path(cache_dir)
        / "partial"
        / hashlib.sha256(("|".join(sorted(todo)) + data_key).encode()).hexdigest()[:16]
    )
    part_dir.mkdir(parents=True, exist_ok=True)
    done = sorted(part_dir.glob("part*.pt"))
    start = len(done) * chunk_batches
    feats = {k: [] for k in todo}
    labels: list[torch.Tensor] = []
    amp = device.type == "cuda"

    def flush(index: int) -> None:
        with atomic_path(part_dir / f"part{index:06d}.pt") as tmp:
            torch.save(
                {"features": {k: torch.cat(v) for k, v in feats.items()}, "labels": torch.cat(labels)}, tmp
            )
        for v in feats.values():
            v.clear()
        labels.clear()

    chunk = len(done)
    for b, (x, y) in enumerate(tqdm(batches(), desc=desc, unit="batch", leave=False)):
        if b < start:
            continue  # already in a part file
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            for k, m in todo.items():
                feats[k].append(m.features(x).float().half().cpu())
        labels.append(torch.as_tensor(y).cpu())
        if (b + 1) % chunk_batches == 0:
            flush(chunk)
            chunk += 1
    if labels:
        flush(chunk)
    parts = [torch.load(p, weights_only=True) for p in sorted(part_dir.glob("part*.pt"))]
    all_labels = torch.cat([p["labels"] for p in parts])
    for k in todo:
        fs = FeatureSet(torch.cat([p["features"][k] for p in parts]), all_labels)
        with atomic_path(cache_path(cache_dir, k, data_key)) as tmp:
            torch.save({"features": fs.features, "labels": fs.labels}, tmp)
        out[k] = fs
    for p in part_dir.glob("part*.pt"):
        p.unlink()
    part_dir.rmdir()
    return out


def concat(sets: list[FeatureSet]) -> FeatureSet:
    """CATn: the concatenation of its members' features."""
    for s in sets[1:]:
        if not torch.equal(s.labels, sets[0].labels):
            raise ValueError("members' cached features were computed on different samples")
    return FeatureSet(torch.cat([s.features for s in sets], dim=1), sets[0].labels)


# ---------------------------------------------------------------- the fast probe


@dataclass
class ProbeResult:
    test_acc: float
    val_acc: float
    weight_decay: float
    grid: dict[float, float]  # weight decay -> validation accuracy
    solver: str
    best_test_epoch_acc: float | None = (
        None  # reference protocol only; selected on test, as the authors report
    )


def _standardise(train: torch.Tensor, *others: torch.Tensor):
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def _accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x @ w + b).argmax(1) == y).float().mean())


def fast_probe(
    train: FeatureSet,
    val: FeatureSet,
    test: FeatureSet,
    grid: list[float] = FAST_WD,
    device: torch.device | str = "cpu",
    max_iter: int = 100,
    patience: int = 2,
    max_full_batch_bytes: float = 4e9,
    minibatch: int = 4096,
    epochs: int = 10,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features; weight decay chosen on `val`.

    Full-batch L-BFGS, warm-started from the previous (stronger) weight decay along the grid;
    the grid stops once `patience` weaker values in a row score below the best validation accuracy.
    When the training features do not fit `max_full_batch_bytes` as float32 (ImageNet CAT5:
    1.28M x 10,240), it switches to minibatch Adam and says so in the log.
    """
    device = torch.device(device)
    xtr, xva, xte = _standardise(*(s.features.float() for s in (train, val, test)))
    ytr, yva, yte = train.labels.to(device), val.labels.to(device), test.labels.to(device)
    n, d = xtr.shape
    k = int(max(int(ytr.max()), int(yva.max()), int(yte.max()))) + 1
    full = n * d * 4 <= max_full_batch_bytes
    if not full:
        log.warning(
            "fast probe: %d x %d features exceed %.1f GB; switching from full-batch L-BFGS to minibatch Adam",
            n,
            d,
            max_full_batch_bytes / 1e9,
        )
    xtr, xva, xte = (t.to(device) if full else t for t in (xtr, xva, xte))
    w = torch.zeros(d, k, device=device, requires_grad=True)
    b = torch.zeros(k, device=device, requires_grad=True)
    scores, states = {}, {}
    for wd in sorted(grid, reverse=True):  # strong to weak regularisation: warm starts move little
        if full:
            opt = torch.optim.LBFGS(
                [w, b],
                lr=1,
                max_iter=max_iter,
                history_size=20,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-6,
                tolerance_change=1e-9,
            )

            def closure(opt=opt, wd=wd):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(xtr @ w + b, ytr) + 0.5 * wd * (w * w).sum()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam([w, b], lr=1e-3)
            g = torch.Generator().manual_seed(0)
            for _ in range(epochs):
                for idx in torch.randperm(n, generator=g).split(minibatch):
                    xb, yb = xtr[idx].to(device), ytr[idx.to(device)]
                    loss = nn.functional.cross_entropy(xb @ w + b, yb) + 0.5 * wd * (w * w).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        with torch.no_grad():
            scores[wd] = _accuracy(w, b, xva.to(device), yva)
            states[wd] = (w.detach().clone(), b.detach().clone())
        top = max(scores.values())
        recent = list(scores.values())[-patience:]
        if patience and len(scores) > patience and all(v < top for v in recent):
            break  # validation accuracy has been falling as regularisation weakens
    best = max(scores, key=lambda v: (scores[v], v))  # ties: the stronger regularisation
    wb, bb = states[best]
    return ProbeResult(
        _accuracy(wb, bb, xte.to(device), yte),
        scores[best],
        best,
        scores,
        "L-BFGS (full batch)" if full else "Adam (minibatch)",
    )


# ---------------------------------------------------------------- the reference protocol


def reference_probe(
    members: list[Member],
    train_batches: Callable[[int], Iterable],
    val: FeatureSet,
    test: FeatureSet,
    grid: list[float],
    device: torch.device | str = "cpu",
    epochs: int = 28,
    milestones: tuple[int, ...] = (8, 16, 24),
    lr: float = 0.01,
    augmented: bool = True,
) -> ProbeResult:
    """The authors' linear probe: BatchNorm1d(n x d) + Linear on frozen members in eval mode.

    SGD (lr 0.01, momentum 0.9, Nesterov; no weight decay on BN), MultiStepLR at 8/16/24.
    Training features are recomputed every epoch from `train_batches(epoch)` (augmented images);
    when the training data has no augmentation (`augmented=False`) they are computed once, which
    gives the same result. The weight decay is selected on the validation split at the last epoch;
    the best test accuracy over epochs (the authors' reported number) is kept separately.
    """
    device = torch.device(device)
    for m in members:
        m.to(device).eval()
    k = int(max(int(val.labels.max()), int(test.labels.max()))) + 1
    d = sum(m.feature_dim for m in members)

    @torch.no_grad()
    def feats(x):
        return torch.cat([m.features(x.to(device)).float() for m in members], 1)

    cached = None if augmented else [(feats(x), y.to(device)) for x, y in train_batches(0)]
    xva, xte = val.features.float().to(device), test.features.float().to(device)
    yva, yte = val.labels.to(device), test.labels.to(device)
    scores, tests, best_epoch_tests = {}, {}, {}
    for wd in grid:
        torch.manual_seed(0)
        head = nn.Sequential(nn.BatchNorm1d(d), nn.Linear(d, k)).to(device)
        nn.init.normal_(head[1].weight, std=0.01)
        nn.init.zeros_(head[1].bias)
        params = [
            {"params": head[0].parameters(), "weight_decay": 0.0},
            {"params": head[1].parameters(), "weight_decay": wd},
        ]
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=0.1)
        best_test = 0.0
        for epoch in range(epochs):
            head.train()
            for x, y in (
                cached if cached is not None else ((feats(x), y.to(device)) for x, y in train_batches(epoch))
            ):
                loss = nn.functional.cross_entropy(head(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            head.eval()
            with torch.no_grad():
                best_test = max(best_test, float((head(xte).argmax(1) == yte).float().mean()))
        with torch.no_grad():
            scores[wd] = float((head(xva).argmax(1) == yva).float().mean())
            tests[wd] = float((head(xte).argmax(1) == yte).float().mean())
        best_epoch_tests[wd] = best_test
    best = max(scores, key=lambda v: (scores[v], v))
    return ProbeResult(
        tests[best],
        scores[best],
        best,
        scores,
        "SGD reference protocol",
        best_test_epoch_acc=max(best_epoch_tests.values()),
    )


# ---------------------------------------------------------------- command line


def _folder_batches(
    dataset: str, root: str, split: str, size: int, train: bool, workers: int | None, seed: int = 0
):
    from richreps.data import build_dataset, probe_transform
    from richreps.data.pipeline import cpu_loader

    ds = build_dataset(dataset, root, split, probe_transform(dataset, train, size))
    batch = 256 if dataset.startswith("cifar") else 128

    def batches(epoch: int = 0):
        torch.manual_seed(seed + epoch)
        return cpu_loader(ds, batch, workers=workers, shuffle=train)

    return batches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m richreps.probe", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--members", nargs="+", required=True, help="member checkpoints (ours or AlgoPerf format)"
    )
    ap.add_argument("--dataset", required=True, choices=("cifar10", "cifar100", "imagenet", "inat18", "cues"))
    ap.add_argument("--root", default="", help="dataset root (not used for cues)")
    ap.add_argument("--task", default="color", help="cues: transfer task")
    ap.add_argument("--probe", choices=("fast", "reference"), default="fast")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--cache", default="outputs/feature_cache")
    ap.add_argument(
        "--sizes", type=int, nargs=3, default=[5000, 1000, 2000], help="cues: train/val/test sizes"
    )
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    from richreps.data import DatasetError

    try:
        members = [load_member(p) for p in args.members]
        check_cat(members)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if args.dataset == "cues":
            sizes = dict(zip(("train", "val", "test"), args.sizes))
            per_split = cue_features(args.members, [args.task], sizes, 0, args.cache, device)[args.task]
        else:
            per_split = folder_features(
                args.members, args.dataset, args.root, args.image_size, args.cache, device, args.workers
            )
        feature_sets = {
            s: concat([per_split[s][str(p)] for p in args.members]) for s in ("train", "val", "test")
        }
        if args.probe == "fast":
            result = fast_probe(
                feature_sets["train"], feature_sets["val"], feature_sets["test"], device=device
            )
        else:
            grid = REFERENCE_WD[args.dataset]
            if args.dataset == "cues":
                source = cue_batches(args.task, args.sizes[0], "train", 0, batch=256)
                train_batches, augmented = (lambda epoch: source()), False
            else:
                loader = _folder_batches(
                    args.dataset, args.root, "train", args.image_size, True, args.workers
                )
                train_batches, augmented = loader, True
            result = reference_probe(
                members,
                train_batches,
                feature_sets["val"],
                feature_sets["test"],
                grid,
                device,
                augmented=augmented,
            )
    except (CheckpointError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"CAT{len(members)} {args.dataset}{'/' + args.task if args.dataset == 'cues' else ''} [{args.probe}]: "
        f"test accuracy {100 * result.test_acc:.2f}% (val {100 * result.val_acc:.2f}%, weight decay {result.weight_decay:g}, "
        f"{result.solver})"
    )
    if result.best_test_epoch_acc is not None:
        print(
            f"  reference protocol's best-test-epoch accuracy (selected on test): {100 * result.best_test_epoch_acc:.2f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- experiments on the multi-cue benchmark


def subsample_per_class(fs: FeatureSet, per_class: int, seed: int = 0) -> FeatureSet:
    """The first `per_class` examples of each class under a seeded shuffle (few-shot probes)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(fs.labels), generator=g)
    keep = torch.cat([order[fs.labels[order] == c][:per_class] for c in fs.labels.unique()])
    keep = keep.sort().values
    return FeatureSet(fs.features[keep], fs.labels[keep])


def cue_batches(task: str, size: int, split: str, seed: int, batch: int = 500):
    """A re-iterable batch source for one split of a cue task ('mixture' is the pretraining mixture)."""
    from richreps.data import cues

    if task.startswith("mixture"):
        weights = [float(w) for w in task.split(":")[1].split(",")]
        data = cues.sample_pretrain(size, weights, cues.split_seed(seed, "probe-mixture", split))
    else:
        data = cues.sample_task(task, size, cues.split_seed(seed, task, split))
    return lambda: ((data.images[i : i + batch], data.labels[i : i + batch]) for i in range(0, size, batch))


def cue_features(
    member_files: list[str | Path],
    tasks: list[str],
    sizes: dict[str, int],
    seed: int,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, dict[str, FeatureSet]]]:
    """features[task][split][member file] for every member, each image run once through all members."""
    members = {str(p): load_member(p) for p in member_files}
    keys = {str(p): file_hash(p) for p in member_files}
    out: dict[str, dict[str, dict[str, FeatureSet]]] = {}
    for task in tasks:
        out[task] = {}
        for split, n in sizes.items():
            data_key = f"cues/{task}/{split}/{n}/seed{seed}"
            got = extract(
                {keys[p]: m for p, m in members.items()},
                cue_batches(task, n, split, seed),
                data_key,
                cache_dir,
                device,
                desc=f"{task} {split}",
            )
            out[task][split] = {p: got[keys[p]] for p in members}
    return out


def save_untrained(path: str | Path, arch: str, width: int, seed: int, calib: list[torch.Tensor]) -> Path:
    """An untrained member (the control for 'closer to random features'), BN statistics from `calib`."""
    from richreps.models import recalibrate_bn

    path = Path(path)
    if path.exists():
        return path
    torch.manual_seed(seed)
    m = build_model(arch, 10, width)
    recalibrate_bn(m, calib)
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format": "richreps-member-1",
                "arch": arch,
                "width": width,
                "num_classes": 10,
                "feature_dim": m.feature_dim,
                "seed": seed,
                "step": 0,
                "data": "none (untrained)",
                "state_dict": m.eval().state_dict(),
            },
            tmp,
        )
    return path


def direct_train(
    task: str,
    arch: str,
    width: int,
    steps: int,
    batch: int,
    train_size: int,
    sizes: dict[str, int],
    seed: int,
    lr: float = 0.0025,
    eval_every: int = 100,
) -> dict[str, float]:
    """Train a member from scratch on the target task itself: the paper's upper bound.

    Uses the same validation and test splits as the probes; the evaluation point with the best
    validation accuracy gives the test number.
    """
    from schedulefree import AdamWScheduleFree

    from richreps.data import cues
    from richreps.pretrain import evaluate, member_at_x

    # a training set of its own (the paper assumes ample data for direct training), same val/test as the probes
    train = cues.sample_task(task, train_size, cues.split_seed(seed + 7, task, "train"))
    val = list(cue_batches(task, sizes["val"], "val", seed)())
    test = list(cue_batches(task, sizes["test"], "test", seed)())
    n_classes = cues.TASKS[task].n_classes
    torch.manual_seed(seed)
    model = build_model(arch, n_classes, width)
    opt = AdamWScheduleFree(model.parameters(), lr=lr, betas=(0.9, 0.99552), weight_decay=0.0812, r=0.75)
    opt.train()
    model.train()
    g = torch.Generator().manual_seed(seed)
    calib = [train.images[i : i + batch] for i in range(0, min(train_size, 10 * batch), batch)]
    best = {"val_acc": -1.0}
    for step in range(1, steps + 1):
        idx = torch.randint(train_size, (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(train.images[idx]), train.labels[idx], label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            member = member_at_x(model, opt, calib, torch.device("cpu"))
            v = evaluate(member, val, torch.device("cpu"), amp=False)
            if v["val_acc"] > best["val_acc"]:
                best = {
                    "val_acc": v["val_acc"],
                    "test_acc": evaluate(member, test, torch.device("cpu"), amp=False)["val_acc"],
                    "step": step,
                }
    return best


def folder_features(
    member_files: list[str | Path],
    dataset: str,
    root: str | Path,
    image_size: int,
    cache_dir: str | Path,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, dict[str, FeatureSet]]:
    """features[split][member file] on a real dataset (evaluation transform), cached per member."""
    members = {str(p): load_member(p) for p in member_files}
    check_cat(list(members.values()))
    keys = {str(p): file_hash(p) for p in member_files}
    out = {}
    for split in splits:
        batches = _folder_batches(dataset, str(root), split, image_size, False, workers)
        data_key = f"{dataset}/{Path(root).resolve()}/{split}/eval{image_size}"
        got = extract(
            {keys[p]: m for p, m in members.items()},
            batches,
            data_key,
            cache_dir,
            device,
            desc=f"{dataset} {split}",
        )
        out[split] = {p: got[keys[p]] for p in members}
    return out


@dataclass(frozen=True)
class Representation:
    """One row of Table 3's shape: a method and the member files it concatenates."""

    method: str
    n: int
    steps_per_member: int
    files: tuple[str, ...]

    @property
    def total_steps(self) -> int:
        return self.n * self.steps_per_member


def plan_representations(plan, run_dir: str | Path) -> list[Representation]:
    """CAT1 (the baseline) and every CATn of a compute plan, as member files."""
    reps = []
    for n, members in plan.cats.items():
        files = tuple(str(Path(run_dir) / "members" / f"seed{s}_step{t}.pt") for s, t in members)
        reps.append(Representation("CAT1 (baseline)" if n == 1 else f"CAT{n}", n, members[0][1], files))
    return reps


def probe_representations(
    reps: list[Representation],
    features: dict,
    tasks: list[str],
    grid: list[float],
    shots: list[int],
    replicate: int,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Fast-probe every representation on every task, at every number of labelled examples per class."""
    rows = []
    for rep in reps:
        for task in tasks:
            sets = {s: concat([features[task][s][f] for f in rep.files]) for s in ("train", "val", "test")}
            for k in [*shots, 0]:
                train = sets["train"] if k == 0 else subsample_per_class(sets["train"], k, seed=replicate)
                r = fast_probe(train, sets["val"], sets["test"], grid=grid, device=device)
                rows.append(
                    {
                        "replicate": replicate,
                        "method": rep.method,
                        "n": rep.n,
                        "steps_per_member": rep.steps_per_member,
                        "total_steps": rep.total_steps,
                        "task": task,
                        "shots": "all" if k == 0 else k,
                        "test_acc": r.test_acc,
                        "val_acc": r.val_acc,
                        "weight_decay": r.weight_decay,
                    }
                )
    return rows


def cat_gains(long):
    """CATn - CAT1 test accuracy per (replicate, task) for every n > 1: columns replicate, task, n, gain."""
    import pandas as pd

    cats = long[long["method"].str.match(r"^CAT\d")]
    acc = cats.pivot_table(index=["replicate", "task"], columns="n", values="test_acc")
    return pd.concat(
        [(acc[n] - acc[1]).rename("gain").reset_index().assign(n=n) for n in acc.columns if n != 1],
        ignore_index=True,
    )


def mean_sd_table(
    long, index: list[str], column: str = "task", value: str = "test_acc", scale: float = 100.0
):
    """Wide table of 'mean ± sd' strings over replicates (sd omitted with one replicate)."""
    import pandas as pd

    g = long.groupby([*index, column], sort=False)[value]
    stats = pd.DataFrame({"mean": g.mean() * scale, "sd": g.std(ddof=1) * scale, "n": g.size()})

    def fmt(r) -> str:
        return f"{r['mean']:.1f}" if r["n"] < 2 or pd.isna(r["sd"]) else f"{r['mean']:.1f} ± {r['sd']:.1f}"

    return stats.apply(fmt, axis=1).unstack(column)
