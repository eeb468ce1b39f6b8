"""The map of regimes (issue 19, results/PLAN.md revision 3): the budget sweep (CAT1, CATmax and every control
at every sweep budget) repeated on other pretraining pools, so that CATmax minus each single network is seen
against the pool's size (epochs) and how far past CAT1's plateau the budget goes.

    study = plan_study(values); planfile.write(...)                       # notebook 03 (richreps.study)
    rows = regimes.probe(output_dir / "pretrain", tasks, sizes, grid, cache)   # notebook 04
    table = regimes.table(swept, rows, recipe.train_size)    # the main run's sweep is one pool of the map

The main run's own pool (its `train_size`) is the map's first pool: its sweep is notebook 03's. Every
other pool (0: a fresh sample every step) is a variant of the main run (`richreps.study`), trained into
its own folder `pretrain/pool-<size>` and recorded in the plan file (`richreps.planfile`), so the sweep's
readers and probes are the main run's, unchanged. A pool keeps the main plan's seeds: seed set k starts
from the same initialisations in every pool and differs in the data it sees, and, for a pool on its own scale
(`map_plateaus`), in its steps, budgets and warmup (`richreps.study.pool_values`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from richreps.keep import kept_targets
from richreps.study import pool_name
from richreps.verdicts import contrast_columns, contrasts_in

# The map's table, sentences and report section import no torch (report.md anywhere): the plan file and
# the probes are imported where the map is probed.


def probe(
    pretrain_dir: str | Path,
    tasks: list[str],
    sizes: dict[str, int],
    grid: list[float],
    cache: str | Path,
    device: str = "cpu",
) -> list[dict]:
    """Every pool's sweep probed as notebook 04 probes the main run's (`experiment.probe_extras`); each
    row carries its pool's size and its budget on the main pool's scale (`MAIN_SCALE`: a pool on its own
    scale, `map_plateaus`, trains every length times its plateau / the main pool's). No pool: no rows."""
    from richreps import experiment, planfile

    rows: list[dict] = []
    main_steps = planfile.read(pretrain_dir).cats[0][1][0][1]  # CAT1's steps on the main pool
    for v in planfile.read_variants(pretrain_dir, "pool"):
        scale = v.plan.cats[0][1][0][1] / main_steps
        breps = experiment.sweep_representations(v.plan)  # with the early-stopped controls where planned
        swept, _ = experiment.probe_extras(breps, {}, v.plan.recipe, tasks, sizes, grid, cache, device)
        rows += [{**r, "pool": v.value, MAIN_SCALE: round(r["budget"] / scale)} for r in swept]
    return rows


def table(main_swept: list[dict], rows: list[dict], main_pool: int) -> pd.DataFrame:
    """The map: `sweep.budget_gains` per pool (the main run's sweep first, as pool `main_pool`), with the
    pool's size and name in front, and each budget on the main pool's scale beside it (`MAIN_SCALE`)."""
    from richreps.sweep import budget_gains

    main = pd.DataFrame(main_swept).assign(pool=main_pool)
    long = pd.concat([main.assign(**{MAIN_SCALE: main["budget"]}), pd.DataFrame(rows)], ignore_index=True)
    parts = []
    for size, g in long.groupby("pool", sort=False):
        on_main = dict(zip(g["budget"], g[MAIN_SCALE].fillna(g["budget"])))
        gains = budget_gains(g.drop(columns=["pool", MAIN_SCALE]))
        gains.insert(1, MAIN_SCALE, gains["budget"].map(on_main).astype(int))
        gains.insert(0, "pool", pool_name(int(size)))
        gains.insert(0, "pool_size", int(size))
        parts.append(gains)
    return pd.concat(parts, ignore_index=True)


def map_lines(table: pd.DataFrame, kept: list[str], contrast: str) -> list[str]:
    """One plain sentence on one contrast of the map (`contrast`: CAT1 or a control), whatever its direction:
    how many (pool, budget, kept target) cells have their 95 % interval above 0, below 0 or across it, and
    the same counts at each pool's smallest and largest budget (pools on their own scales are compared at the
    same place on it, `MAIN_SCALE`: half of each one's plateau, say)."""
    mean, low, high = contrast_columns(contrast)
    cells = table[table["target"].isin(kept)].dropna(subset=[mean]) if mean in table else table.iloc[0:0]
    if cells.empty:
        return [f"- CATmax - {contrast}: not measured on any kept target in this run."]
    cat = f"CAT{int(cells['n_max'].max())}"

    def counts(df: pd.DataFrame) -> str:
        return (
            f"above 0 in {int((df[low] > 0).sum())}, below 0 in {int((df[high] < 0).sum())}, "
            f"0 inside in {int(((df[low] <= 0) & (df[high] >= 0)).sum())} of {len(df)}"
        )

    at = cells[MAIN_SCALE] if MAIN_SCALE in cells else cells["budget"]
    first, last = at.min(), at.max()
    worst, best = cells.loc[cells[mean].idxmin()], cells.loc[cells[mean].idxmax()]
    return [
        f"- **{cat} - {contrast}** over {cells['pool'].nunique()} pools x {at.nunique()} budgets x "
        f"{cells['target'].nunique()} kept targets: the 95 % interval is {counts(cells)} cells; at main-pool "
        f"budget {first}: {counts(cells[at == first])}; at main-pool budget {last}: {counts(cells[at == last])}. "
        f"Largest {best[mean]:+.1f} points ({best['target']}, {best['pool']}, {_where(best)}); smallest "
        f"{worst[mean]:+.1f} ({worst['target']}, {worst['pool']}, {_where(worst)})."
    ]


def _where(cell: pd.Series) -> str:
    """A cell's budget in its pool's own steps, and on the main pool's scale where that differs."""
    scale = cell.get(MAIN_SCALE, cell["budget"])
    scale = cell["budget"] if pd.isna(scale) else scale
    own = f"budget {int(cell['budget'])}"
    return own if int(scale) == int(cell["budget"]) else f"{own} (main-pool budget {int(scale)})"


MAIN_SCALE = "main-pool budget"  # a cell's budget on the main pool's scale (the same multiple of its plateau)


def figure_name(contrast: str) -> str:
    """The map's figure of CATmax - `contrast`: 04_map_vs_cat1, 04_map_vs_wide1, 04_map_vs_joint5, ..."""
    return "04_map_vs_" + contrast.lower().replace("-", "_")


def write_outputs(out_dir: str | Path, table: pd.DataFrame | None, kept: list[str]) -> list[str]:
    """tables/04_map.{csv,md} and one figure per contrast (budget on x, one panel per pool), or their
    removal when this run has no map (no stale table or figure). Returns the figures' names."""
    from richreps import figures, io

    out = Path(out_dir)
    saved = []
    if table is not None:
        io.write_table(table, out, "04_map", index=False)
        for contrast in contrasts_in(table):
            if table[contrast_columns(contrast)[0]].notna().any():
                name = figure_name(contrast)
                figures.save(figures.plot_map(table, kept, contrast), out, name)
                saved.append(name)
    stale = [p for p in [*(out / "tables").glob("04_map.*"), *(out / "figures").glob("04_map_vs_*.*")]
             if table is None or (p.parent.name == "figures" and p.stem not in saved)]  # fmt: skip
    for path in stale:  # an earlier run's map, or a contrast this run did not measure (no WIDE1)
        path.unlink()
    return saved


def compact(table: pd.DataFrame, kept: list[str], contrast: str | None = None) -> pd.DataFrame:
    """The map as one row per (pool, budget) and one column per kept target and contrast (`contrast`: that
    one only, a column per kept target): 'mean [low, high]' in points (`verdicts.fmt_interval`)."""
    from richreps.verdicts import fmt_interval

    names = contrasts_in(table) if contrast is None else [contrast]
    rows = []
    for (_, pool, steps), g in table.groupby(["pool_size", "pool", "budget"], sort=True):
        row = {"pool": pool, "budget": int(steps)}
        if MAIN_SCALE in g:  # the same place on the main pool's scale (a pool on its own scale)
            row[MAIN_SCALE] = int(g[MAIN_SCALE].iloc[0])
        for _, r in g[g["target"].isin(kept)].iterrows():
            for name in names:
                mean, low, high = contrast_columns(name)
                row[r["target"] if contrast else f"{r['target']} vs {name}"] = fmt_interval(
                    r[mean], r[low], r[high]
                )
        rows.append(row)
    return pd.DataFrame(rows)


def erasures(table: pd.DataFrame, kept: list[str]) -> pd.DataFrame:
    """results/PLAN.md revision 3's summary of the map: per control and pool, the (budget, kept target) cells
    where CATmax - CAT1's interval lies above 0 (a gain), and how many of them the control erases (CATmax -
    control's interval contains 0 or lies below it). Counts only, no test: the map is descriptive."""
    cells = table[table["target"].isin(kept) & (table["low"] > 0)]
    pools = table[["pool_size", "pool"]].drop_duplicates().sort_values("pool_size")
    rows = []
    for name in contrasts_in(table)[:-1] if kept else []:
        mean, low, _ = contrast_columns(name)
        for pool in pools["pool"]:  # a pool with no gain to erase shows 0 of 0
            g = cells[cells["pool"] == pool]
            measured = g[g[mean].notna()]
            if len(g) and not len(measured):  # gains, but this control was not trained on the pool
                gains, erased, where = len(g), None, "not measured"
            else:  # the cells where it was trained
                hit = measured[measured[low] <= 0]
                gains, erased = len(measured), len(hit)
                where = ", ".join(f"{r['target']} at {_where(r)}" for _, r in hit.iterrows())
            rows.append({"control": name, "pool": pool, "cells with a gain over CAT1": gains,
                         "erased": erased, "where": where})  # fmt: skip
    return pd.DataFrame(rows, columns=["control", "pool", "cells with a gain over CAT1", "erased", "where"])


def erasure_lines(found: pd.DataFrame) -> list[str]:
    """One sentence per control from `erasures`: in how many gain cells of each pool it erases the gain."""
    lines = []
    for name, g in found.groupby("control", sort=False):
        parts = [
            f"{int(r['erased'])} of {int(r['cells with a gain over CAT1'])} on the {r['pool']}"
            if pd.notna(r["erased"]) else f"none measured on the {r['pool']}"
            for _, r in g.iterrows()
        ]  # fmt: skip
        lines.append(
            f"- **{name}** erases CATmax's gain over CAT1 in "
            + "; ".join(parts)
            + " (cells: budget x kept target)."
        )
    return lines or [
        "- No cell shows a gain of CATmax over CAT1 on a kept target, so no control has one to erase."
    ]


def saved_lines(out_dir: str | Path) -> dict[str, list[str]] | None:
    """Per figure name, its sentence, from the tables notebook 04 wrote (`04_map`, and the kept targets of
    `04_calibration`), for notebook 05 and the report; None when this run has no map."""
    tables = Path(out_dir) / "tables"
    if not (tables / "04_map.csv").exists():
        return None
    table = pd.read_csv(tables / "04_map.csv")
    calib_path = tables / "04_calibration.csv"
    calib = pd.read_csv(calib_path, index_col=0) if calib_path.exists() else None
    kept = kept_targets(calib)
    return {figure_name(c): map_lines(table, kept, c) for c in contrasts_in(table)}
