"""Fast probe vs scikit-learn's LogisticRegression and vs the reference protocol, on the same cached features.

    python -m bench.probe_speed [--members A.pt B.pt ...] [--task color] [--sizes 5000 1000 2000]

The headline ratio is against scikit-learn on the same protocol (grid, order, warm starts, iteration
cap, stopping rule); the ratio against a cold full grid at max_iter=1000 is printed separately and
labelled, since it compares protocols as much as solvers.

Without --members it uses the smoke run's CAT5 members when present, else untrained members. Figures
are time ratios measured in this one process, and accuracy differences in points.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from richreps import features, members, planfile, probe, untrained
from richreps.config import Recipe
from richreps.data import cues


def default_members(work: Path) -> list[Path]:
    """The largest CAT of the smoke run's first seed set when it exists, else five untrained members."""
    try:
        plan = planfile.read("outputs/smoke/pretrain")
        recipe, run_dir, cats = plan.recipe, plan.run_dir, plan.cats
        n = max(cats[0])
        files = [members.member_path(run_dir, s, t) for s, t in cats[0][n]]
        for f, (s, t) in zip(files, cats[0][n]):
            members.require(f, recipe, s, t)
        print(f"members: the smoke run's CAT{n} ({cats[0][n][0][1]} steps each)")
        return files
    except (FileNotFoundError, ValueError, members.CheckpointError):
        print("members: five untrained small CNNs (no current smoke run found)")
        recipe = Recipe(width=16)
        return [untrained.save_untrained(work / f"untrained{i}.pt", recipe, i) for i in range(5)]


def sklearn_probe(tr, va, te, warm_start: bool, max_iter: int, patience: int) -> tuple[float, float, float]:
    """scikit-learn's LogisticRegression(lbfgs) on the fast probe's problem: the same standardised
    features, the same objective (mean cross-entropy + wd/2 ||w||^2, intercept unpenalised: C = 1/(wd n)),
    and, like-for-like, the same grid order (strong to weak), warm starts, iteration cap and stopping rule.
    Returns (validation accuracy, weight decay, test accuracy) of the value chosen on validation."""
    xtr, xva, xte = (s.features.tensor().float() for s in (tr, va, te))
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xva, xte = (((x - mean) / std).numpy() for x in (xtr, xva, xte))
    ytr, yva, yte = (s.labels.numpy() for s in (tr, va, te))
    clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=1e-6, warm_start=warm_start)
    scores = {}
    for wd in sorted(probe.FAST_WD, reverse=True):
        clf.set_params(**({"C": 1.0 / (wd * len(xtr))} if wd > 0 else {"C": np.inf}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the cap is part of the protocol
            clf.fit(xtr, ytr)
        scores[wd] = (clf.score(xva, yva), clf.score(xte, yte))
        top = max(v for v, _ in scores.values())
        recent = [v for v, _ in list(scores.values())[-patience:]]
        if patience and len(scores) > patience and all(v < top for v in recent):
            break  # the fast probe's rule: validation accuracy falling as regularisation weakens
    best = max(scores, key=lambda w: (scores[w][0], w))
    return scores[best][0], best, scores[best][1]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", nargs="*", default=None)
    ap.add_argument("--task", default="color")
    ap.add_argument("--sizes", type=int, nargs=3, default=[5000, 1000, 2000])
    ap.add_argument("--reference-epochs", type=int, default=28)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="richreps_probe_bench_"))
    files = [Path(p) for p in args.members] if args.members else default_members(work)
    sizes = dict(zip(("train", "val", "test"), args.sizes))
    feats = features.cue_features(files, [args.task], sizes, seed=0, cache_dir=work / "cache")[args.task]
    sets = {s: features.concat([feats[s][str(f)] for f in files]) for s in sizes}
    tr, va, te = sets["train"], sets["val"], sets["test"]
    print(
        f"CAT{len(files)} on cues/{args.task}: {len(tr.labels)} train x {tr.features.shape[1]} features; "
        f"torch threads {torch.get_num_threads()}"
    )

    fast, t_fast = timed(lambda: probe.fast_probe(tr, va, te))

    like, t_like = timed(lambda: sklearn_probe(tr, va, te, warm_start=True, max_iter=100, patience=2))
    cold, t_cold = timed(lambda: sklearn_probe(tr, va, te, warm_start=False, max_iter=1000, patience=0))

    models = [members.load(f) for f in files]
    data = cues.sample_task(args.task, sizes["train"], cues.split_seed(0, args.task, "train"))

    def batches(epoch):
        return ((data.images[i : i + 256], data.labels[i : i + 256]) for i in range(0, sizes["train"], 256))

    ref, t_ref = timed(
        lambda: probe.reference_probe(
            models, batches, va, te, probe.REFERENCE_WD["cues"], epochs=args.reference_epochs, augmented=True
        )
    )
    print(f"{'probe':<42} {'seconds':>8} {'test acc':>9} {'wd':>8}")
    print(
        f"{'fast (L-BFGS, ' + str(len(fast.grid)) + ' of ' + str(len(probe.FAST_WD)) + ' grid values)':<42} {t_fast:>8.2f} {100 * fast.test_acc:>9.2f} {fast.weight_decay:>8g}"
    )
    print(
        f"{'scikit-learn, same protocol (warm, cap 100)':<42} {t_like:>8.2f} {100 * like[2]:>9.2f} {like[1]:>8g}"
    )
    print(
        f"{'scikit-learn, cold full grid (cap 1000)':<42} {t_cold:>8.2f} {100 * cold[2]:>9.2f} {cold[1]:>8g}"
    )
    print(
        f"{'reference protocol (' + str(args.reference_epochs) + ' epochs x 4 wd)':<42} {t_ref:>8.2f} {100 * ref.test_acc:>9.2f} {ref.weight_decay:>8g}"
    )
    print(
        f"speed-up vs scikit-learn, like-for-like: {t_like / t_fast:.1f}x; accuracy difference "
        f"{100 * (fast.test_acc - like[2]):+.2f} points"
    )
    print(f"speed-up vs scikit-learn, cold full grid (not like-for-like): {t_cold / t_fast:.1f}x")
    print(
        f"speed-up vs reference:    {t_ref / t_fast:.1f}x; accuracy difference {100 * (fast.test_acc - ref.test_acc):+.2f} points "
        f"(reference best-test-epoch, selected on test: {100 * ref.best_test_epoch_acc:.2f})"
    )


if __name__ == "__main__":
    main()
