"""Linear probes on frozen CATn features, and the command line that probes member checkpoints.

    python -m richreps.probe --members A.pt B.pt --dataset cifar10 --root DATA --probe fast

Two probes. `fast`: standardised features, multinomial logistic regression by full-batch L-BFGS
(held whole where they fit, else its objective and gradient streamed block by block from the feature
files: one objective, one stopping rule; notebook 04 fits every CATn of a task with the solver of its largest CAT), weight decay chosen on the validation split. `reference`: the authors' protocol (BatchNorm1d +
Linear, SGD with Nesterov, 28 epochs with drops at 8/16/24, features recomputed every epoch
under augmentation). Model selection always uses the validation split; the reference protocol's
own best-test-epoch number is reported separately and labelled as such. Members are ours
(`richreps.members`) or AlgoPerf ResNet-50 checkpoints; features come from `richreps.features`.

(Over 450 lines because the two solvers, the reference protocol and the CLI share the solver choice, the
block-wise standardisation and the model selection; splitting them would split one decision.)
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
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

FULL_BATCH, STREAMED = "L-BFGS (full batch)", "L-BFGS (streamed full batch)"
CHUNKED = "L-BFGS (full batch, float16 on the device, in chunks)"
SOLVERS = (FULL_BATCH, CHUNKED, STREAMED)
CHUNK_BYTES = 2**31  # the float32 chunk of a CHUNKED fit: standardised rows, logits and their gradient
LBFGS_HISTORY = 20
TOLERANCE_GRAD = (
    1e-6  # a fit ends when max |gradient| of the training objective is below this (stopping_rule)
)
STALLS_MAX = (
    2  # L-BFGS restarts in a row that leave the objective where it was: the fit ends, the tolerance unmet
)


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
    objective: dict[float, float] = field(default_factory=dict)  # weight decay -> final training objective
    grad_max: dict[float, float] = field(default_factory=dict)  # weight decay -> final max |gradient|


def full_batch_bytes(n: int, d: int, k: int) -> int:
    """Memory that full-batch L-BFGS needs for n x d features and k classes: the standardised float32
    features, the logits with their softmax and gradient, and the weights' gradient and L-BFGS history."""
    return 4 * (n * d + 3 * n * k + (2 * LBFGS_HISTORY + 6) * (d + 1) * k)


def chunked_bytes(n: int, d: int, k: int) -> int:
    """Memory of a CHUNKED fit: the float16 features held whole, one float32 chunk and the L-BFGS state."""
    chunk = chunk_rows(d, k)
    return 2 * n * d + 4 * (chunk * d + 3 * chunk * k + (2 * LBFGS_HISTORY + 6) * (d + 1) * k)


def chunk_rows(d: int, k: int) -> int:
    return max(1, CHUNK_BYTES // (4 * (d + 3 * k)))


def choose_solver(
    n: int, d: int, k: int, device: torch.device | str = "cpu", ram_bytes: float | None = None
) -> str:
    """Full-batch L-BFGS. On CUDA, over the float16 features held on the device, standardised and summed
    chunk by chunk in float32 (`CHUNKED`: ImageNet's CAT5 is 26 GB, so an H100 and an H200 run the same
    solver, where float32 held whole, 68 GB, would fit the second only); on the CPU, over the float32
    features held whole. Where the rows do not fit, the same L-BFGS with its objective and gradient
    streamed block by block from the files. All minimise one objective to one stopping rule; they differ
    only in where the rows are read from.

    Fits: on CUDA, within 80 % of the device's free memory; on the CPU, within the RAM budget
    (`featstore.ram_budget`) less one streamed block. Notebook 04 calls this once per task with its
    largest CAT's size, so that every CATn of the task is fitted by the same solver.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return CHUNKED if chunked_bytes(n, d, k) <= 0.8 * torch.cuda.mem_get_info(device)[0] else STREAMED
    budget = featstore.ram_budget(ram_bytes)
    return FULL_BATCH if full_batch_bytes(n, d, k) <= budget - budget // featstore.BLOCK_SHARE else STREAMED


def _on_device(rows: featstore.Rows, device: torch.device, block: int) -> featstore.InMemory:
    """The float16 feature rows copied whole to `device`, block by block (float16 to float32 and back is exact)."""
    held = torch.empty(rows.shape, dtype=torch.float16, device=device)
    for start, b in featstore.BlockReader(rows, block):
        held[start : start + len(b)] = b.to(device, non_blocking=False).half()
    return featstore.InMemory(held)


def stopping_rule(solver: str, max_iter: int = 100, tolerance_grad: float = TOLERANCE_GRAD) -> str:
    """The rule that ends each weight decay's fit, in words: the same for both solvers, which minimise the
    same full-batch objective and differ only in where its rows come from (RAM, or the files block by block)."""
    return (
        f"training objective ({solver}): L-BFGS stops when max |gradient| <= {tolerance_grad:g}, restarting "
        f"where its line search stalls, at most {max_iter} iterations"
    )


_TF32_LOCK = threading.Lock()
_TF32_USERS = [0]  # fits inside `_tf32` now
_TF32_BEFORE: list = [None]  # the setting before the first of them


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
    # the setting is the process's, and fits run one per GPU in threads (richreps.devices): the first fit
    # in sets it, the last one out restores it, so no fit runs while another switches it back
    with _TF32_LOCK:
        if _TF32_USERS[0] == 0:
            _TF32_BEFORE[0] = matmul.fp32_precision if new_api else matmul.allow_tf32
            if new_api:
                matmul.fp32_precision = "tf32"
            else:  # pragma: no cover - torch < 2.9
                matmul.allow_tf32 = True
        _TF32_USERS[0] += 1
    try:
        yield True
    finally:
        with _TF32_LOCK:
            _TF32_USERS[0] -= 1
            if _TF32_USERS[0] == 0:
                if new_api:
                    matmul.fp32_precision = _TF32_BEFORE[0]
                else:  # pragma: no cover - torch < 2.9
                    matmul.allow_tf32 = _TF32_BEFORE[0]


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


def _lbfgs(
    objective: Callable[[], torch.Tensor], w, b, max_iter: int, tolerance_grad: float = TOLERANCE_GRAD
) -> tuple[int, bool, float, float]:
    """Fit `w`, `b` in place by L-BFGS on `objective` (it sets their gradients and returns the loss) until
    max |gradient| <= `tolerance_grad` or `max_iter` iterations in all; return (iterations, whether the
    gradient tolerance was met, the final objective, the final max |gradient|).

    Only the gradient ends a fit. torch's L-BFGS also stops when the objective or the step changes by less
    than `tolerance_change`, but a float32 objective near 1 cannot change by less than about 1e-7: a step
    that leaves it unchanged ended fits far from the optimum, at a point that depended on the rows' order,
    the block size and the CPU (an ImageNet-shaped probe stopped at max |gradient| 1.3e-5 under AVX-512 and
    3.6e-7 under AVX2, 2 points of test accuracy apart; tests/test_probe.py). So its change tolerances are
    0 here, the objectives return their value summed in float64 (each row's loss is float32: near the
    optimum a float32 sum could not tell a step's decrease from its rounding), and where its line search
    can make no more progress, L-BFGS restarts from that point with a fresh history; `STALLS_MAX` restarts
    in a row that leave the objective where it was end the fit, with the tolerance recorded as unmet."""

    def closure():
        for p in (w, b):
            p.grad = None
        return objective()

    done, stalls, before = 0, 0, math.inf
    while done < max_iter:
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1,
            max_iter=max_iter - done,
            max_eval=(max_iter - done) * 5 // 4,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
            tolerance_grad=tolerance_grad,
            tolerance_change=0.0,
        )
        opt.step(closure)
        done += max(1, int(opt.state[w].get("n_iter", 0)))
        with torch.enable_grad():
            after = float(closure().detach())  # the objective and gradient where it stopped, as recorded
        grad_max = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
        if grad_max <= tolerance_grad:
            break
        stalls = stalls + 1 if after >= before else 0
        if stalls >= STALLS_MAX:
            break
        before = after
    if done == 0:  # max_iter 0: no step, the objective and gradient where it starts
        with torch.enable_grad():
            after = float(closure().detach())
        grad_max = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    return done, grad_max <= tolerance_grad, after, grad_max


def _resident_objective(x: torch.Tensor, y: torch.Tensor, w, b, wd: float) -> Callable[[], torch.Tensor]:
    """The full-batch objective over features held whole: mean cross-entropy plus wd/2 |w|^2."""

    def objective() -> torch.Tensor:
        losses = nn.functional.cross_entropy(x @ w + b, y, reduction="none")
        (losses.mean() + 0.5 * wd * (w * w).sum()).backward()
        # the value L-BFGS's line search compares, summed in float64 (see _lbfgs)
        return losses.detach().double().sum() / len(y) + 0.5 * wd * (w.detach().double() ** 2).sum()

    return objective


def _streamed_objective(
    rows: featstore.Rows, y: torch.Tensor, w, b, wd: float, mean, std, block: int
) -> Callable[[], torch.Tensor]:
    """The same objective, its sum and gradient accumulated block by block as the rows are read from the
    files, or from the float16 rows held on the device (`CHUNKED`; float32 blocks, the loss summed in
    float64): every row counts in every step, so the solution does not depend on the rows' order on disk
    (ImageFolder's is class-sorted), on the RAM budget's block size, or on the card. Each evaluation reads
    the training features once."""
    reader = featstore.BlockReader(
        rows, block, device=w.device if isinstance(rows, featstore.InMemory) else "cpu"
    )
    n = len(rows)

    def objective() -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64, device=w.device)
        for start in reader.starts():
            xb = _standardise(reader.read(start), mean, std)
            losses = nn.functional.cross_entropy(xb @ w + b, y[start : start + len(xb)], reduction="none")
            (losses.sum() / n).backward()
            total += losses.detach().double().sum() / n
        reg = 0.5 * wd * (w * w).sum()
        reg.backward()
        return total + 0.5 * wd * (w.detach().double() ** 2).sum()  # float64, as L-BFGS compares it

    return objective


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
    tolerance_grad: float = TOLERANCE_GRAD,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features; weight decay chosen on `val`.

    Weight decays are fitted from strong to weak, each warm-started from the previous; the grid stops
    once `patience` weaker values in a row score below the best validation accuracy. `solver` is L-BFGS on
    the features held whole, or on the same objective streamed from the files (`stopping_rule`: one rule for
    both, on the objective); by default it is chosen from this probe's own size (`choose_solver`). Notebook 04
    passes the one chosen from the largest CAT of the task, so that CATn - CAT1 is never a difference
    between solvers. Features are read in blocks (`featstore`): the standardisation statistics, a streamed
    fit and every accuracy stream, and only a resident fit holds the training features whole, where they
    fit. Each weight decay's iterations, final objective, max |gradient| and whether the gradient tolerance
    was met (not the cap) are in the result. On CUDA the float32 matmuls may use TF32 (`tf32` in the result).
    """
    device = torch.device(device)
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    n, d = train.features.shape
    k = int(max(int(s.labels.max()) for s in (train, val, test))) + 1
    if solver is None:
        solver = choose_solver(n, d, k, device, ram_bytes)
        if solver == STREAMED:
            log.info(
                "fast probe: %d x %d features do not fit in memory; L-BFGS streamed from the files", n, d
            )
    block = featstore.block_rows(d, ram_bytes)
    mean, std = (t.to(device) for t in featstore.column_stats(train.features, block))
    ytr = train.labels.to(device)
    scores, states, steps, converged, objective, grad_max = {}, {}, {}, {}, {}, {}
    with _tf32(device) as tf32:
        x = _full_matrix(train.features, mean, std, block) if solver == FULL_BATCH else None
        rows = _on_device(train.features, device, block) if solver == CHUNKED else train.features
        rows_block = chunk_rows(d, k) if solver == CHUNKED else block
        w = torch.zeros(d, k, device=device, requires_grad=True)
        b = torch.zeros(k, device=device, requires_grad=True)
        for wd in sorted(grid, reverse=True):  # strong to weak regularisation: warm starts move little
            if x is not None:
                f = _resident_objective(x, ytr, w, b, wd)
            else:
                f = _streamed_objective(rows, ytr, w, b, wd, mean, std, rows_block)
            steps[wd], converged[wd], objective[wd], grad_max[wd] = _lbfgs(f, w, b, max_iter, tolerance_grad)
            scores[wd] = _accuracy(w, b, val, mean, std, block)
            states[wd] = (w.detach().clone(), b.detach().clone())
            top = max(scores.values())
            recent = list(scores.values())[-patience:]
            if patience and len(scores) > patience and all(v < top for v in recent):
                break  # validation accuracy has been falling as regularisation weakens
        del x, rows
        best = max(scores, key=lambda v: (scores[v], v))  # ties: the stronger regularisation
        test_acc = _accuracy(*states[best], test, mean, std, block)
    return ProbeResult(
        test_acc,
        scores[best],
        best,
        scores,
        solver,
        stopping=stopping_rule(solver, max_iter, tolerance_grad),
        steps=steps,
        converged=converged,
        tf32=tf32,
        objective=objective,
        grad_max=grad_max,
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


def default_device(requested: str = "auto") -> torch.device:
    """Where probes run: `auto` on CUDA when torch can use it, else on the CPU with a line on stderr saying
    why (a Table 3 probe on the CPU is not something to find out from the wall time); `cuda`: no usable GPU
    is an error; `cpu`. The same rule as pretraining's `--device` (`runtime.choose_cuda`)."""
    from richreps import runtime

    cuda, why = runtime.choose_cuda(requested)
    if not cuda and requested == "auto":
        print(f"[probe] probing on the CPU: {why}", file=sys.stderr)
    return torch.device("cuda" if cuda else "cpu")


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
    ap.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="auto: CUDA when usable, else the CPU, said on stderr; cuda: no usable GPU is an error",
    )
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
        device = default_device(args.device)
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
                    args.dataset,
                    args.root,
                    "train",
                    args.image_size,
                    True,
                    args.workers,
                    val_fraction=features.probe_val_fraction(args.dataset, args.members),
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
