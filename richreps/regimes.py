"""The map of regimes (issue 19): the budget sweep (CAT1, CATmax and WIDE1 at every sweep budget) repeated
on other pretraining pools, so that CATmax - CAT1 and CATmax - WIDE1 are seen against the pool's size
(epochs) and how far past CAT1's plateau the budget goes.

    pools = regimes.plan(recipe, map_pools, params, wide=True)         # notebook 03
    regimes.write(output_dir / "pretrain", pools)
    wall = launch.launch_variant(pools[0], output_dir / "pretrain", extra, "local", nproc=1)  # each one
    rows = regimes.probe(output_dir / "pretrain", tasks, sizes, grid, cache)   # notebook 04
    table = regimes.table(swept, rows, recipe.train_size)    # the main run's sweep is one pool of the map

The main run's own pool (its `train_size`) is the map's first pool: its sweep is notebook 03's. Every
other pool (0: a fresh sample every step) gets its own folder `pretrain/pool-<size>` with the plan file
notebook 03 writes for the main run (`launch.write_plan`), so the sweep's readers and probes are the main
run's, unchanged. A pool keeps the main plan's seeds: seed set k starts from the same initialisations
in every pool and differs only in the data it sees.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from richreps import budget
from richreps.budget import Plan
from richreps.io import write_json

if TYPE_CHECKING:  # the map's table, sentences and report section import no torch (report.md anywhere)
    from richreps.config import Recipe

FILE = "pools.json"  # beside notebook 03's plan file: the pools of this run, in order
CONTRASTS = {"WIDE1": ("gain vs WIDE1", "low vs WIDE1", "high vs WIDE1"), "CAT1": ("gain", "low", "high")}


@dataclass(frozen=True)
class Pool:
    size: int  # images in the pretraining pool; 0: a fresh sample every step
    recipe: Recipe
    plans: list[Plan]  # per seed set: CAT1 and CATmax at the sweep budgets, the main plan's seeds
    wide_recipe: Recipe | None
    wide_plans: list[Plan]

    @property
    def folder(self) -> str:
        return f"pool-{self.size}"


def pool_name(size: int) -> str:
    """How a pool is named in tables and figures."""
    return "fresh stream" if size == 0 else f"pool of {size:,}"


def plan(recipe: Recipe, sizes: list[int], params: Mapping, wide: bool) -> list[Pool]:
    """One pool per size in `sizes` (`map_pools`); `params` are notebook 03's parameter values. Refused,
    naming `map_pools`, before anything trains: the main run's own `train_size` (its sweep is already the
    map's first pool), a size twice, a pool smaller than one batch, data other than cue images (an
    ImageNet run has no pool to resize), and a map with no sweep budget left (none given, or all left out
    by the warmup rule)."""
    if not sizes:
        return []
    why = None
    if recipe.data != "cues":
        why = f"pools resize the cue-image pretraining set; pretrain_data is {recipe.data!r}"
    elif recipe.train_size in sizes or len(set(sizes)) < len(sizes):
        why = f"lists a size twice or train_size {recipe.train_size} itself (the main run's sweep)"
    elif any(0 < s < recipe.global_batch for s in sizes):
        why = f"a pool must hold at least one batch (global_batch {recipe.global_batch})"
    n_max = max(params["cat_sizes"])
    plans = budget.plans_from_params({**params, "cat_sizes": [n_max], "trajectory_steps": []})
    if why is None and not plans[0].sweep:
        why = "the map is the budget sweep on each pool, and no sweep budget is left " + (
            f"(left out: {plans[0].left_out})" if plans[0].left_out else "(sweep_budgets is empty)"
        )
    if why is not None:
        raise ValueError(f"map_pools {list(sizes)}: {why}")
    out = []
    for size in sizes:
        changed = recipe.replace(train_size=size)
        wide_recipe = changed.replace(last_mult=n_max) if wide else None
        wide_plans = budget.wide_plans(plans, params["baseline_steps"]) if wide else []
        out.append(Pool(size, changed, plans, wide_recipe, wide_plans))
    return out


def write(pretrain_dir: str | Path, pools: list[Pool]) -> Path:
    """Each pool's plan file in its own folder, and the list of this run's pools (empty when none, so that
    an earlier run's pool folders are not read as this run's)."""
    from richreps import launch

    for p in pools:
        wide = (p.wide_recipe, p.wide_plans) if p.wide_recipe is not None else None
        launch.write_plan(Path(pretrain_dir) / p.folder, p.recipe, p.plans, wide)
    return write_json(Path(pretrain_dir) / FILE, [{"size": p.size, "folder": p.folder} for p in pools])


def probe(
    pretrain_dir: str | Path,
    tasks: list[str],
    sizes: dict[str, int],
    grid: list[float],
    cache: str | Path,
    device: str = "cpu",
) -> list[dict]:
    """Every pool's sweep probed as notebook 04 probes the main run's (`experiment.probe_extras`); each
    row carries its pool's size. No file or no pool: no rows."""
    from richreps import experiment, launch

    path = Path(pretrain_dir) / FILE
    rows: list[dict] = []
    main, _, _ = launch.read_plan(pretrain_dir)
    for rec in json.loads(path.read_text()) if path.exists() else []:
        folder = Path(pretrain_dir) / rec["folder"]
        recipe, run_dir, _ = launch.read_plan(folder)
        if recipe != main.replace(train_size=rec["size"]):  # a pool of another run, beside this one's plan
            raise ValueError(
                f"{folder / launch.PLAN_FILE}: recipe {recipe.tag()} is not the main run's with train_size "
                f"{rec['size']} ({main.replace(train_size=rec['size']).tag()}); run notebook 03 again"
            )
        sweeps, _ = launch.read_extras(folder)
        breps = experiment.budget_representations(sweeps, run_dir, recipe, launch.read_wide_sweeps(folder))
        swept, _ = experiment.probe_extras(breps, {}, recipe, tasks, sizes, grid, cache, device)
        rows += [{**r, "pool": rec["size"]} for r in swept]
    return rows


def table(main_swept: list[dict], rows: list[dict], main_pool: int) -> pd.DataFrame:
    """The map: `sweep.budget_gains` per pool (the main run's sweep first, as pool `main_pool`), with the
    pool's size and name in front."""
    from richreps.sweep import budget_gains

    long = pd.concat([pd.DataFrame(main_swept).assign(pool=main_pool), pd.DataFrame(rows)], ignore_index=True)
    parts = []
    for size, g in long.groupby("pool", sort=False):
        gains = budget_gains(g.drop(columns="pool"))
        gains.insert(0, "pool", pool_name(int(size)))
        gains.insert(0, "pool_size", int(size))
        parts.append(gains)
    return pd.concat(parts, ignore_index=True)


def map_lines(table: pd.DataFrame, kept: list[str], contrast: str) -> list[str]:
    """One plain sentence on one contrast of the map (`contrast`: WIDE1 or CAT1), whatever its direction:
    how many (pool, budget, kept target) cells have their 95 % interval above 0, below 0 or across it, and
    the same counts at the smallest and the largest budget."""
    mean, low, high = CONTRASTS[contrast]
    cells = table[table["target"].isin(kept)].dropna(subset=[mean]) if mean in table else table.iloc[0:0]
    if cells.empty:
        return [f"- CATmax - {contrast}: not measured on any kept target in this run."]
    cat = f"CAT{int(cells['n_max'].max())}"

    def counts(df: pd.DataFrame) -> str:
        return (
            f"above 0 in {int((df[low] > 0).sum())}, below 0 in {int((df[high] < 0).sum())}, "
            f"0 inside in {int(((df[low] <= 0) & (df[high] >= 0)).sum())} of {len(df)}"
        )

    first, last = cells["budget"].min(), cells["budget"].max()
    worst, best = cells.loc[cells[mean].idxmin()], cells.loc[cells[mean].idxmax()]
    return [
        f"- **{cat} - {contrast}** over {cells['pool'].nunique()} pools x {cells['budget'].nunique()} budgets x "
        f"{cells['target'].nunique()} kept targets: the 95 % interval is {counts(cells)} cells; at budget "
        f"{first}: {counts(cells[cells['budget'] == first])}; at budget {last}: "
        f"{counts(cells[cells['budget'] == last])}. Largest {best[mean]:+.1f} points ({best['target']}, "
        f"{best['pool']}, budget {best['budget']}); smallest {worst[mean]:+.1f} ({worst['target']}, "
        f"{worst['pool']}, budget {worst['budget']})."
    ]


FIGURES = {"WIDE1": "04_map_vs_wide1", "CAT1": "04_map_vs_cat1"}  # one figure per contrast


def write_outputs(out_dir: str | Path, table: pd.DataFrame | None, kept: list[str]) -> list[str]:
    """tables/04_map.{csv,md} and one figure per contrast (budget on x, one panel per pool), or their
    removal when this run has no map (no stale table or figure). Returns the figures' names."""
    from richreps import figures, io

    out = Path(out_dir)
    saved = []
    if table is not None:
        io.write_table(table, out, "04_map", index=False)
        for contrast, name in FIGURES.items():
            if CONTRASTS[contrast][0] in table and table[CONTRASTS[contrast][0]].notna().any():
                figures.save(figures.plot_map(table, kept, contrast), out, name)
                saved.append(name)
    stale = [*(["04_map"] if table is None else []), *(n for n in FIGURES.values() if n not in saved)]
    for stem in stale:  # an earlier run's map, or a contrast this run did not measure (no WIDE1)
        for path in [*(out / "tables").glob(f"{stem}.*"), *(out / "figures").glob(f"{stem}.*")]:
            path.unlink()
    return saved


def compact(table: pd.DataFrame, kept: list[str]) -> pd.DataFrame:
    """The map as one row per (pool, budget) and one column per kept target and contrast:
    'mean [low, high]' in points (`verdicts.fmt_interval`), for the report."""
    from richreps.verdicts import fmt_interval

    rows = []
    for (_, pool, steps), g in table.groupby(["pool_size", "pool", "budget"], sort=True):
        row = {"pool": pool, "budget": int(steps)}
        for _, r in g[g["target"].isin(kept)].iterrows():
            for contrast, (mean, low, high) in CONTRASTS.items():
                if mean in r:
                    row[f"{r['target']} vs {contrast}"] = fmt_interval(r[mean], r[low], r[high])
        rows.append(row)
    return pd.DataFrame(rows)


def saved_lines(out_dir: str | Path) -> dict[str, list[str]] | None:
    """Per figure name, its sentence, from the tables notebook 04 wrote (`04_map`, and the kept targets of
    `04_calibration`), for notebook 05 and the report; None when this run has no map."""
    tables = Path(out_dir) / "tables"
    if not (tables / "04_map.csv").exists():
        return None
    table = pd.read_csv(tables / "04_map.csv")
    calib_path = tables / "04_calibration.csv"
    calib = pd.read_csv(calib_path, index_col=0) if calib_path.exists() else None
    kept = [] if calib is None else list(calib.index[calib["kept"].astype(bool)])
    return {name: map_lines(table, kept, contrast) for contrast, name in FIGURES.items()}
