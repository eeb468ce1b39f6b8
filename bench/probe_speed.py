"""Fast probe vs scikit-learn's LogisticRegression and vs the reference protocol, on the same cached features.

    python -m bench.probe_speed [--members A.pt B.pt ...] [--task color] [--sizes 5000 1000 2000]

Without --members it uses the smoke run's CAT5 members when present, else untrained members. Figures
are time ratios measured in this one process, and accuracy differences in points.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

from richreps import experiment, features, launch, members, probe
from richreps.config import Recipe
from richreps.data import cues


def default_members(work: Path) -> list[Path]:
    """The largest CAT of the smoke run's first seed set when it exists, else five untrained members."""
    try:
        recipe, run_dir, cats = launch.read_plan("outputs/smoke/pretrain")
        n = max(cats[0])
        files = [members.member_path(run_dir, s, t) for s, t in cats[0][n]]
        for f, (s, t) in zip(files, cats[0][n]):
            members.require(f, recipe, s, t)
        print(f"members: the smoke run's CAT{n} ({cats[0][n][0][1]} steps each)")
        return files
    except (FileNotFoundError, members.CheckpointError):
        print("members: five untrained small CNNs (no current smoke run found)")
        recipe = Recipe(width=16)
        return [experiment.save_untrained(work / f"untrained{i}.pt", recipe, i) for i in range(5)]


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

    def sklearn_probe():
        xtr, xva, xte = (s.features.float().numpy() for s in (tr, va, te))
        mean, std = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xva, xte = (xtr - mean) / std, (xva - mean) / std, (xte - mean) / std
        best = None
        for wd in probe.FAST_WD:
            c = 1.0 / (wd * len(xtr)) if wd > 0 else 1e12  # same objective: mean CE + wd/2 ||w||^2
            clf = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(xtr, tr.labels.numpy())
            acc = clf.score(xva, va.labels.numpy())
            if best is None or acc > best[0]:
                best = (acc, wd, clf.score(xte, te.labels.numpy()))
        return best

    (sk_val, sk_wd, sk_test), t_sk = timed(sklearn_probe)

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
    print(f"{'scikit-learn LogisticRegression(lbfgs)':<42} {t_sk:>8.2f} {100 * sk_test:>9.2f} {sk_wd:>8g}")
    print(
        f"{'reference protocol (' + str(args.reference_epochs) + ' epochs x 4 wd)':<42} {t_ref:>8.2f} {100 * ref.test_acc:>9.2f} {ref.weight_decay:>8g}"
    )
    print(
        f"speed-up vs scikit-learn: {t_sk / t_fast:.1f}x; accuracy difference {100 * (fast.test_acc - sk_test):+.2f} points"
    )
    print(
        f"speed-up vs reference:    {t_ref / t_fast:.1f}x; accuracy difference {100 * (fast.test_acc - ref.test_acc):+.2f} points "
        f"(reference best-test-epoch, selected on test: {100 * ref.best_test_epoch_acc:.2f})"
    )


if __name__ == "__main__":
    main()
