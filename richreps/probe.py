"""Linear probes on frozen CATn features, and the command line that probes member checkpoints.

    python -m richreps.probe --members A.pt B.pt --dataset cifar10 --root DATA --probe fast

Two probes. `fast`: standardised features, multinomial logistic regression by full-batch L-BFGS
(minibatch Adam over blocks read from the feature files when they do not fit; notebook 04 fits every
CATn of a task with the solver of its largest CAT), weight decay chosen on the validation split. `reference`: the authors' protocol (BatchNorm1d +
Linear, SGD with Nesterov, 28 epochs with drops at 8/16/24, features recomputed every epoch
under augmentation). Model selection always uses the validation split; the reference protocol's
own best-test-epoch number is reported separately and labelled as such. Members are ours
(`richreps.members`) or AlgoPerf ResNet-50 checkpoints; features come from `richreps.features`.

(About 480 lines: the two solvers, the reference protocol and the CLI share the solver choice, the
block-wise standardisation and the model selection; splitting them would split one decision.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from richreps import featstore
from richreps.features import FeatureSet
from richreps.models import Member

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
DATASETS = ("cifar10", "cifar100", "imagenet", "inat18", "cues")


# ---------------------------------------------------------------- the fast probe

FULL_BATCH, MINIBATCH = "L-BFGS (full batch)", "Adam (minibatch)"
SOLVERS = (FULL_BATCH, MINIBATCH)
LBFGS_HISTORY = 20


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
    stopping: str = ""  # the fast probe's stopping rule, in words
    steps: dict[float, int] = field(default_factory=dict)  # weight decay -> L-BFGS iterations or epochs
    converged: dict[float, bool] = field(
        default_factory=dict
    )  # weight decay -> stopped by the rule, not the cap
    tf32: bool = False  # float32 matmuls allowed to use TF32 (CUDA only)


def full_batch_bytes(n: int, d: int, k: int) -> int:
    """Memory that full-batch L-BFGS needs for n x d features and k classes: the standardised float32
    features, the logits with their softmax and gradient, and the weights' gradient and L-BFGS history."""
    return 4 * (n * d + 3 * n * k + (2 * LBFGS_HISTORY + 6) * (d + 1) * k)


def choose_solver(
    n: int, d: int, k: int, device: torch.device | str = "cpu", ram_bytes: float | None = None
) -> str:
    """Full-batch L-BFGS when an n x d, k-class problem fits where it runs, else minibatch Adam on blocks.

    Fits: on CUDA, `full_batch_bytes` within 80 % of the device's free memory; on the CPU, within the
    RAM budget (`featstore.ram_budget`) less one streamed block. Notebook 04 calls this once per task
    with its largest CAT's size, so that every CATn of the task is fitted by the same solver.
    """
    device = torch.device(device)
    if device.type == "cuda":
        room = 0.8 * torch.cuda.mem_get_info(device)[0]
    else:
        budget = featstore.ram_budget(ram_bytes)
        room = budget - budget // featstore.BLOCK_SHARE
    return FULL_BATCH if full_batch_bytes(n, d, k) <= room else MINIBATCH


def stopping_rule(solver: str, max_iter: int = 100, max_epochs: int = 30, tol: float = 1e-3) -> str:
    """The rule that ends each weight decay's fit, in words (both stop on the training objective)."""
    if solver == FULL_BATCH:
        return (
            "training objective: L-BFGS stops when max |gradient| <= 1e-6 or the objective or step "
            f"changes by <= 1e-9, at most {max_iter} iterations"
        )
    return (
        "training objective: Adam stops when an epoch's mean objective falls by less than "
        f"{tol:g} of the previous epoch's, at most {max_epochs} epochs"
    )


@contextmanager
def _tf32(device: torch.device) -> Iterator[bool]:
    """TF32 for the probe's float32 matmuls on CUDA (float32 accumulation; inputs rounded to 10-bit
    mantissas), restored afterwards. The same switch as `richreps.runtime`: torch refuses to read a
    setting made through both its legacy and its new name."""
    if device.type != "cuda":
        yield False
        return
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")
    before = matmul.fp32_precision if new_api else matmul.allow_tf32
    if new_api:
        matmul.fp32_precision = "tf32"
    else:  # pragma: no cover - torch < 2.9
        matmul.allow_tf32 = True
    try:
        yield True
    finally:
        if new_api:
            matmul.fp32_precision = before
        else:  # pragma: no cover - torch < 2.9
            matmul.allow_tf32 = before


def _standardise(block: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A float32 block (a `featstore.BlockReader` buffer) standardised with the training split's
    statistics, on their device: in place on the CPU. The same arithmetic for rows in RAM, in a file or
    in a CAT view, so the probes agree exactly."""
    x = block if block.device == mean.device else block.to(mean.device)
    return x.sub_(mean).div_(std)


def _full_matrix(rows: featstore.Rows, mean: torch.Tensor, std: torch.Tensor, block: int) -> torch.Tensor:
    """The standardised training features, whole, on the statistics' device, filled block by block."""
    x = torch.empty(rows.shape, device=mean.device)
    for start, b in featstore.BlockReader(rows, block):
        x[start : start + len(b)] = _standardise(b, mean, std)
    return x


@torch.no_grad()
def _accuracy(w: torch.Tensor, b: torch.Tensor, fs: FeatureSet, mean, std, block: int) -> float:
    correct = 0
    for start, x in featstore.BlockReader(fs.features, block):
        pred = (_standardise(x, mean, std) @ w + b).argmax(1)
        correct += int((pred == fs.labels[start : start + len(x)].to(w.device)).sum())
    return correct / len(fs.labels)


def _lbfgs(x: torch.Tensor, y: torch.Tensor, w, b, wd: float, max_iter: int) -> tuple[int, bool]:
    """Fit in place by full-batch L-BFGS; return (iterations, whether a tolerance stopped it). torch
    also stops at `max_eval` function evaluations (5/4 of `max_iter`), before `max_iter` iterations
    when line searches take several: that is a cap too, not convergence."""
    max_eval = max_iter * 5 // 4
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        max_eval=max_eval,
        history_size=LBFGS_HISTORY,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ w + b, y) + 0.5 * wd * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[w]
    n_iter, evals = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
    return n_iter, n_iter < max_iter and evals < max_eval


def _adam(
    rows: featstore.Rows,
    y,
    w,
    b,
    wd: float,
    mean,
    std,
    block: int,
    minibatch: int,
    max_epochs: int,
    tol: float,
) -> tuple[int, bool]:
    """Fit in place by minibatch Adam over blocks read in a shuffled order (rows shuffled within each
    block); return (epochs, whether the objective stopped falling by `tol` relative before the cap)."""
    opt = torch.optim.Adam([w, b], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    reader = featstore.BlockReader(rows, block)
    shuffled = torch.empty(reader.block, rows.shape[1], device=w.device)
    starts = list(reader.starts())
    previous = None
    for epoch in range(1, max_epochs + 1):
        total = torch.zeros((), dtype=torch.float64, device=w.device)
        for i in torch.randperm(len(starts), generator=g).tolist():
            xb = _standardise(reader.read(starts[i]), mean, std)
            order = torch.randperm(len(xb), generator=g).to(w.device)
            xs = torch.index_select(xb, 0, order, out=shuffled[: len(xb)])
            ys = y[starts[i] : starts[i] + len(xb)][order]
            for j in range(0, len(xs), minibatch):
                loss = (
                    nn.functional.cross_entropy(xs[j : j + minibatch] @ w + b, ys[j : j + minibatch])
                    + 0.5 * wd * (w * w).sum()
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.detach().double() * len(ys[j : j + minibatch])
        objective = float(total) / len(rows)
        if previous is not None and previous - objective < tol * abs(previous):
            return epoch, True
        previous = objective
    return max_epochs, False


def fast_probe(
    train: FeatureSet,
    val: FeatureSet,
    test: FeatureSet,
    grid: list[float] = FAST_WD,
    device: torch.device | str = "cpu",
    max_iter: int = 100,
    patience: int = 2,
    solver: str | None = None,
    ram_bytes: float | None = None,
    minibatch: int = 4096,
    max_epochs: int = 30,
    tol: float = 1e-3,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features; weight decay chosen on `val`.

    Weight decays are fitted from strong to weak, each warm-started from the previous; the grid stops
    once `patience` weaker values in a row score below the best validation accuracy. `solver` is
    full-batch L-BFGS or minibatch Adam over blocks of the training rows (`stopping_rule` says when
    each stops); by default it is chosen from this probe's own size (`choose_solver`). Notebook 04
    passes the one chosen from the largest CAT of the task, so that CATn - CAT1 is never a difference
    between solvers. Features are read in blocks (`featstore`): the standardisation statistics, the
    minibatch epochs and every accuracy stream, and only a full-batch fit holds the training features
    whole, where they fit. On CUDA the float32 matmuls may use TF32 (`tf32` in the result).
    """
    device = torch.device(device)
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    n, d = train.features.shape
    k = int(max(int(s.labels.max()) for s in (train, val, test))) + 1
    if solver is None:
        solver = choose_solver(n, d, k, device, ram_bytes)
        if solver == MINIBATCH:
            log.info("fast probe: %d x %d features do not fit a full-batch solve; minibatch Adam", n, d)
    block = featstore.block_rows(d, ram_bytes)
    mean, std = (t.to(device) for t in featstore.column_stats(train.features, block))
    ytr = train.labels.to(device)
    scores, states, steps, converged = {}, {}, {}, {}
    with _tf32(device) as tf32:
        x = _full_matrix(train.features, mean, std, block) if solver == FULL_BATCH else None
        w = torch.zeros(d, k, device=device, requires_grad=True)
        b = torch.zeros(k, device=device, requires_grad=True)
        for wd in sorted(grid, reverse=True):  # strong to weak regularisation: warm starts move little
            if x is not None:
                steps[wd], converged[wd] = _lbfgs(x, ytr, w, b, wd, max_iter)
            else:
                steps[wd], converged[wd] = _adam(
                    train.features, ytr, w, b, wd, mean, std, block, minibatch, max_epochs, tol
                )
            scores[wd] = _accuracy(w, b, val, mean, std, block)
            states[wd] = (w.detach().clone(), b.detach().clone())
            top = max(scores.values())
            recent = list(scores.values())[-patience:]
            if patience and len(scores) > patience and all(v < top for v in recent):
                break  # validation accuracy has been falling as regularisation weakens
        del x
        best = max(scores, key=lambda v: (scores[v], v))  # ties: the stronger regularisation
        test_acc = _accuracy(*states[best], test, mean, std, block)
    return ProbeResult(
        test_acc,
        scores[best],
        best,
        scores,
        solver,
        stopping=stopping_rule(solver, max_iter, max_epochs, tol),
        steps=steps,
        converged=converged,
        tf32=tf32,
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
    xva, xte = val.features.tensor().float().to(device), test.features.tensor().float().to(device)
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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> int:
    from richreps import features, members
    from richreps.data import DatasetError
    from richreps.io import unwritable

    ap = argparse.ArgumentParser(prog="python -m richreps.probe", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--members", nargs="+", required=True, help="member checkpoints (ours or AlgoPerf format)"
    )
    ap.add_argument("--dataset", required=True, choices=DATASETS)
    ap.add_argument("--root", default="", help="dataset root (not used for cues)")
    ap.add_argument("--task", default="color", help="cues: transfer task, or 'mixture' (the members' own)")
    ap.add_argument("--probe", choices=("fast", "reference"), default="fast")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--cache", default="outputs/feature_cache")
    ap.add_argument(
        "--sizes", type=int, nargs=3, default=[5000, 1000, 2000], help="cues: train/val/test sizes"
    )
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    if args.dataset != "cues" and not args.root:
        ap.error(f"--root is required for --dataset {args.dataset}")
    if min(args.sizes) < 1 or args.image_size < 1:
        ap.error("--sizes and --image-size must be >= 1")
    if args.workers is not None and args.workers < 0:
        ap.error(f"--workers must be >= 0, got {args.workers}")
    if args.dataset == "cues":
        from richreps.data.cues import N_VALUES, TASKS

        if args.task != "mixture" and args.task not in TASKS:
            ap.error(f"--task {args.task!r} is neither 'mixture' nor one of {sorted(TASKS)}")
        classes = TASKS[args.task].n_classes if args.task in TASKS else N_VALUES
        if min(args.sizes) < classes:  # a split smaller than the classes cannot hold one of each
            sizes = " ".join(map(str, args.sizes))
            ap.error(f"--sizes {sizes}: each must be >= {classes}, the number of classes of {args.task}")
    why = unwritable(args.cache)  # before any member is loaded or feature extracted
    if why:
        print(f"error: --cache {args.cache}: {why}", file=sys.stderr)
        return 2
    seen: dict[str, str] = {}
    for p in args.members:  # a CATn is n distinct members: the same file twice, or a copy, is refused
        if Path(p).is_file():
            key = members.file_hash(p)
            if key in seen:
                ap.error(f"--members {seen[key]} and {p} are the same member (content {key}): not a CAT")
            seen[key] = p

    try:
        for p in args.members:
            members.recorded_recipe(p)  # a record that is not a mapping is a damaged file, named
        models = [members.load(p) for p in args.members]
        members.check_cat(models)
        device = default_device()
        if args.dataset == "cues":
            # the images the members were trained on: their recorded mixture weights and renderer
            recipe = members.recorded_recipe(args.members[0])
            if args.task == "mixture" and not recipe:
                raise members.CheckpointError(f"{args.members[0]}: records no recipe, so no mixture weights")
            weights = recipe["cue_weights"] if args.task == "mixture" else None
            render = (recipe or {}).get("cue_render", "v1")  # members older than the field were drawn by v1
            sizes = dict(zip(("train", "val", "test"), args.sizes))
            per_split = features.cue_features(
                args.members, [args.task], sizes, 0, args.cache, device, weights, render
            )[args.task]
        else:
            per_split = features.folder_features(
                args.members, args.dataset, args.root, args.image_size, args.cache, device, args.workers
            )
        sets = {
            s: features.concat([per_split[s][str(p)] for p in args.members]) for s in ("train", "val", "test")
        }
        if args.probe == "fast":
            result = fast_probe(sets["train"], sets["val"], sets["test"], device=device)
        else:
            if args.dataset == "cues":
                source = features.cue_batches(args.task, args.sizes[0], "train", 0, weights, 256, render)
                train_batches, augmented = (lambda epoch: source()), False
            else:
                train_batches = features.folder_batches(
                    args.dataset, args.root, "train", args.image_size, True, args.workers
                )
                augmented = True
            result = reference_probe(
                models,
                train_batches,
                sets["val"],
                sets["test"],
                REFERENCE_WD[args.dataset],
                device,
                augmented=augmented,
            )
    except (members.CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.dataset + ("/" + args.task if args.dataset == "cues" else "")
    print(
        f"CAT{len(models)} {name} [{args.probe}]: test accuracy {100 * result.test_acc:.2f}% "
        f"(val {100 * result.val_acc:.2f}%, weight decay {result.weight_decay:g}, {result.solver})"
    )
    if result.best_test_epoch_acc is not None:
        print(
            "  reference protocol's best-test-epoch accuracy (selected on test): "
            f"{100 * result.best_test_epoch_acc:.2f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
