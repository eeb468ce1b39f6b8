"""Choose the members' recipe: how well a recipe learns the pretraining mixture, step by step, on record.

    python -m richreps.tune --label demo --set width=8 global_batch=32 bn_batches=2 val_size=200 --steps 20 --eval-every 10 --out runs/tune.csv

(a seconds-long demo; the committed record, `richreps/data/member_sweep.csv`, is the sweep that chose the
smoke and laptop recipes, and notebook 04 shows it)

Each call trains one member on the mixture with `richreps.pretrain` itself (the same loop,
schedule-free AdamW and evaluation at x with BN recomputed as every member), on fresh samples
unless `--set train_size=...` says otherwise, and appends one row per evaluation to `--out`: the
recipe's changes from the defaults, the step, the accuracy on the mixture's validation split, its
share of the mixture's exact Bayes accuracy, and the wall time so far on this machine. Recipes are
compared on the validation split only; the probes' test splits are never drawn here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from richreps import pretrain
from richreps.config import Recipe
from richreps.data import cues
from richreps.io import append_rows, parse_assignments, read_jsonl

RECORD = Path(__file__).parent / "data" / "member_sweep.csv"
BASE = Recipe(train_size=0)  # fresh samples: the recipe that is tuned, before `--set`


def record_table(path: str | Path = RECORD) -> pd.DataFrame:
    """The sweep record: one row per (recipe, evaluation step)."""
    path = Path(path)
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def parse_set(items: list[str]) -> Recipe:
    """`key=value` recipe changes (values parsed as JSON) on top of `BASE`, checked like the flags."""
    changes = parse_assignments(items, set(BASE.to_dict()))
    bad = Recipe.bound_error(changes)
    if bad:
        raise SystemExit(f"error: --set: {bad}")
    return BASE.replace(**changes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m richreps.tune", description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="what this recipe is, for the record")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe changes (Recipe fields)"
    )
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--eval-every", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RECORD))
    args = ap.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1:
        ap.error("--steps and --eval-every must be >= 1")
    recipe = parse_set(args.set)
    if recipe.data != "cues" or recipe.cue_task != "mixture":
        raise SystemExit("error: --set: tune trains on the cue mixture (data=cues, cue_task=mixture)")
    bayes = cues.bayes_accuracy(recipe.cue_weights)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        flags = ["--out", work, "--seed", str(args.seed), "--steps", str(args.steps), *recipe.flags()]
        flags += ["--eval-every", str(args.eval_every), "--ckpt-every", str(args.steps), "--log-every", "50"]
        pretrain.train(pretrain.parse_args(flags))
        metrics = pd.DataFrame(read_jsonl(Path(work) / "metrics" / f"seed{args.seed}.jsonl"))
    wall = time.perf_counter() - start
    evals = metrics.dropna(subset=["val_acc"])
    changes = " ".join(args.set)
    rows = [
        {"label": args.label, "changes": changes, "seed": args.seed, "step": int(r.step), "val_acc": r.val_acc,
         "share of Bayes": r.val_acc / bayes, "wall_s (whole run)": round(wall, 1)}
        for r in evals.itertuples()
    ]  # fmt: skip
    for r in rows:
        print(f"step {r['step']:>6}: val {r['val_acc']:.3f} ({r['share of Bayes']:.0%} of Bayes)")
    print(f"appended {len(rows)} rows to {append_rows(args.out, rows)} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
