"""Ablations of the study's recipe (issue 19): CAT1, CATmax and WIDE1 retrained at the main budget with one
recipe field changed, probed like the main run, both contrasts set beside the main run's.

    abls = ablation.plan(recipe, "label_smoothing", [0.0], params, wide=True)    # notebook 03
    ablation.write(output_dir / "pretrain", abls)
    wall = launch.launch_variant(abls[0], output_dir / "pretrain", extra, "local", nproc=1)  # each one
    rows = ablation.probe(output_dir / "pretrain", tasks, sizes, grid, cache)      # notebook 04
    table = ablation.contrasts(long, rows, "label_smoothing", recipe.label_smoothing, tasks)

The field the study asks about is label smoothing: the paper's recipe (AlgoPerf's) uses 0.2, which is known
to change how transferable penultimate features are. An ablation keeps the main plan's seeds, so seed set k
of the ablation pairs with seed set k of the main run, and each seed set probes the same sample as there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from richreps import budget, experiment, verdicts
from richreps.budget import Plan
from richreps.config import Recipe
from richreps.io import write_json

FILE = "ablations.json"  # beside notebook 03's plan file, written by notebook 03, read by notebook 04


@dataclass(frozen=True)
class Ablation:
    key: str
    value: float
    recipe: Recipe
    plans: list[Plan]  # per seed set: CAT1 and CATmax at the main budget, the main plan's seeds
    wide_recipe: Recipe | None
    wide_plans: list[Plan]
    folder: str = "."  # its run folders sit beside the main run's, named by their recipes' tags


def plan(recipe: Recipe, key: str, values: list, params: Mapping, wide: bool) -> list[Ablation]:
    """One ablation per value of recipe field `key`; `params` are notebook 03's parameter values."""
    n_max = max(params["cat_sizes"])
    plans = budget.plans_from_params(
        {**params, "cat_sizes": [n_max], "sweep_budgets": [], "trajectory_steps": []}
    )
    out = []
    for value in values:
        changed = recipe.replace(**{key: value})
        if changed == recipe:
            raise ValueError(f"ablate_{key}: {value!r} is the recipe's own value; nothing to compare")
        wide_recipe = changed.replace(last_mult=n_max) if wide else None
        wide_plans = budget.wide_plans(plans, params["baseline_steps"]) if wide else []
        out.append(Ablation(key, value, changed, plans, wide_recipe, wide_plans))
    return out


def write(pretrain_dir: str | Path, abls: list[Ablation]) -> Path:
    """The ablations' recipes, run folders and members, for notebook 04 (an empty list when none)."""
    record = [
        {
            "key": a.key,
            "value": a.value,
            "recipe": a.recipe.to_dict(),
            "run_dir": a.recipe.tag(),
            "seed_sets": [{str(n): [list(m) for m in ms] for n, ms in p.cats.items()} for p in a.plans],
            "wide": None
            if a.wide_recipe is None
            else {
                "recipe": a.wide_recipe.to_dict(),
                "run_dir": a.wide_recipe.tag(),
                "members": [list(p.cats[1][0]) for p in a.wide_plans],
            },
        }
        for a in abls
    ]
    return write_json(Path(pretrain_dir) / FILE, record)


def probe(
    pretrain_dir: str | Path,
    tasks: list[str],
    sizes: dict[str, int],
    grid: list[float],
    cache: str | Path,
    device: str = "cpu",
) -> list[dict]:
    """Every ablation's CAT1, CATmax and WIDE1 probed on `tasks` (and the mixture), all labelled
    examples; each row carries the ablated field and its value. No file: no ablation, no rows."""
    path = Path(pretrain_dir) / FILE
    rows: list[dict] = []
    for rec in json.loads(path.read_text()) if path.exists() else []:
        recipe = Recipe.from_dict(rec["recipe"])
        cats = [{int(n): [tuple(m) for m in ms] for n, ms in s.items()} for s in rec["seed_sets"]]
        reps = experiment.representations(cats, Path(pretrain_dir) / rec["run_dir"], recipe)
        if rec["wide"]:
            wide = rec["wide"]
            ms = [tuple(m) for m in wide["members"]]
            if len(ms) != len(reps):
                raise ValueError(f"{path}: WIDE1 listed for {len(ms)} seed sets, the CATs for {len(reps)}")
            wide_recipe, wide_dir = Recipe.from_dict(wide["recipe"]), Path(pretrain_dir) / wide["run_dir"]
            reps = {k: [*rs, experiment.wide_rep(ms[k], wide_dir, wide_recipe)] for k, rs in reps.items()}
        found = experiment.probe_cues(reps, recipe, tasks, sizes, grid, [], cache, device)
        rows += [{**r, rec["key"]: rec["value"]} for r in found]
    return rows


def contrasts(
    long: pd.DataFrame,
    rows: list[dict],
    key: str,
    main_value,
    tasks: list[str],
    kept: list[str] | None = None,
) -> pd.DataFrame:
    """Per target and value of `key` (the main run's first): CATmax - WIDE1 and CATmax - CAT1 in
    points, mean and 95 % paired t interval over seed sets (`verdicts.paired_interval`), and whether
    the target is kept (`kept`: the calibration's; only kept targets are read, the others shown)."""
    settings = [(main_value, long), *pd.DataFrame(rows).groupby(key, sort=True)]
    out = []
    for value, table in settings:
        full = verdicts.all_labels(table)
        acc = full.groupby(["method", "task", "replicate"])["test_acc"].mean()  # per seed set
        have = set(acc.index.droplevel("replicate"))
        n_max = verdicts.largest_cat(full)
        cat = f"CAT{n_max}"
        for task in [verdicts.IID, *tasks]:
            row = {"target": task, "kept": None if kept is None else task in kept, key: value}
            for other in (verdicts.WIDE1, verdicts.CAT1):
                if (cat, task) not in have or (other, task) not in have:
                    continue
                diffs = (acc.loc[(cat, task)] - acc.loc[(other, task)]).dropna() * 100
                mean, lo, hi, n = verdicts.paired_interval(diffs)
                name = "CAT1" if other == verdicts.CAT1 else other
                row[f"{cat} - {name}"] = verdicts.fmt_interval(mean, lo, hi)
                row["seed sets"] = min(row.get("seed sets", n), n)  # the fewer pairs of the two
            if "seed sets" in row:  # a target with no contrast (not probed in this run) has no row
                out.append(row)
    return pd.DataFrame(out)


def write_table(out_dir: str | Path, table: pd.DataFrame | None) -> None:
    """tables/04_ablation.{csv,md}, or their removal when this run has no ablation (no stale table)."""
    from richreps import io

    if table is None:
        for path in (Path(out_dir) / "tables").glob("04_ablation.*"):
            path.unlink()
    else:
        io.write_table(table, out_dir, "04_ablation", index=False)
