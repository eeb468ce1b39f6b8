"""Beyond the paper: where does TIME-CONCAT help? CATmax - CAT1 across budgets, and cues along a run.

    plan = planfile.read(output_dir / "pretrain")
    breps = experiment.sweep_representations(plan)  # CAT1, CATmax and every control at each budget
    treps = experiment.trajectory_representations(plan.trajectories, plan.run_dir, plan.recipe)
    swept, along = experiment.probe_extras(breps, treps, recipe, tasks, sizes, grid, cache)
    gains = budget_gains(pd.DataFrame(swept))      # CATmax - CAT1 per budget, paired t interval
    traj = trajectory_table(pd.DataFrame(along))   # probe accuracy along CAT1's run

The paper measures one budget. Notebook 03's plan can add other budgets (CAT1's steps; each
CATmax gets the same share of them as in the main plan) and more exports of CAT1's own run. In
shared-prefix mode both are exports of runs the plan trains anyway. Whether a minor cue's
decodability rises and then falls along one run is the mechanism the paper's argument needs.

pandas only (no torch), so report.md can be written anywhere.
"""

from __future__ import annotations

import pandas as pd

from richreps.verdicts import (
    all_labels,
    contrast_columns,
    contrasts_in,
    largest_cat,
    paired_interval,
    single_networks,
)


def budget_gains(long: pd.DataFrame) -> pd.DataFrame:
    """Per budget and target: CATmax - CAT1 in points, mean and 95 % paired t interval over seed sets,
    and CATmax - each other single network exported at that budget (WIDE1, JOINTn, the early-stopped
    controls: `verdicts.single_networks`) beside it, its columns named by `verdicts.contrast_columns`."""
    full = all_labels(long)
    rows = []
    for (budget, task), g in full.groupby(["budget", "task"], sort=True):
        per_set = g.pivot_table(index="replicate", columns="method", values="test_acc")
        n_max = largest_cat(g)
        cat = f"CAT{n_max}"
        mean, lo, hi, sets = paired_interval((per_set[cat] - per_set["CAT1"]) * 100)
        row = {"budget": int(budget), "target": task, "n_max": n_max, "CAT1": per_set["CAT1"].mean(),
               cat: per_set[cat].mean(), "gain": mean, "low": lo, "high": hi, "sets": sets}  # fmt: skip
        for name in single_networks(per_set.columns, n_max)[:-1]:
            mean, lo, hi, _ = paired_interval((per_set[cat] - per_set[name]) * 100)
            row |= {name: per_set[name].mean(), **dict(zip(contrast_columns(name), (mean, lo, hi)))}
        rows.append(row)
    return pd.DataFrame(rows)


def trajectory_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per step and target: CAT1's probe accuracy (%), mean and 95 % t interval over seed sets."""
    full = all_labels(long)
    rows = []
    for (step, task), g in full.groupby(["steps_per_member", "task"], sort=True):
        mean, lo, hi, sets = paired_interval(g["test_acc"] * 100)
        rows.append({"step": int(step), "target": task, "acc": mean, "low": lo, "high": hi, "sets": sets})
    return pd.DataFrame(rows)


def rise_and_fall(traj: pd.DataFrame, margin: float = 0.0) -> pd.DataFrame:
    """Per target: its peak along the run and its last value; `falls` when the final value's interval
    lies wholly below the peak's mean minus `margin` points (a drop the seed sets agree on)."""
    rows = []
    for task, g in traj.sort_values("step").groupby("target", sort=False):
        peak = g.loc[g["acc"].idxmax()]
        first, last = g.iloc[0], g.iloc[-1]
        rows.append(
            {
                "target": task,
                "first step": int(first["step"]),
                "first": first["acc"],
                "peak step": int(peak["step"]),
                "peak": peak["acc"],
                "last step": int(last["step"]),
                "last": last["acc"],
                "falls": bool(pd.notna(last["high"]) and last["high"] < peak["acc"] - margin),
            }
        )
    columns = ["target", "first step", "first", "peak step", "peak", "last step", "last", "falls"]
    return pd.DataFrame(rows, columns=columns).set_index("target")


def sweep_lines(gains: pd.DataFrame, kept: list[str]) -> list[str]:
    """What the budget sweep shows on the kept targets, in plain sentences."""
    g = gains[gains["target"].isin(kept)]
    if g.empty:
        return ["- No kept target was measured across budgets: the sweep cannot say where TIME-CONCAT helps."]
    n = int(g["n_max"].max())
    lines = []
    for task, t in g.groupby("target", sort=False):
        parts = [f"{int(r.budget)}: {r.gain:+.1f} [{r.low:+.1f}, {r.high:+.1f}]" for r in t.itertuples()]
        lines.append(f"- **{task}**: CAT{n} - CAT1 by budget (CAT1's steps) = " + "; ".join(parts) + ".")
        for name in contrasts_in(t)[:-1]:
            y, lo, hi = contrast_columns(name)
            cells = [f"{int(r['budget'])}: {r[y]:+.1f} [{r[lo]:+.1f}, {r[hi]:+.1f}]" for _, r in t.iterrows()
                     if pd.notna(r[y])]  # fmt: skip
            if cells:
                lines.append(f"  CAT{n} - {name} by budget = " + "; ".join(cells) + ".")
    above = g[g["low"] > 0]
    below = g[g["high"] < 0]
    if above.empty and below.empty:
        lines.append(
            f"- No budget shows an effect: every CAT{n} - CAT1 interval on a kept target contains 0."
        )
    else:
        for name, part in (("above", above), ("below", below)):
            if not part.empty:
                where = ", ".join(f"{r.target} at {int(r.budget)}" for r in part.itertuples())
                lines.append(f"- Intervals wholly {name} 0: {where}.")
    return lines


def trajectory_lines(table: pd.DataFrame, kept: list[str]) -> list[str]:
    """Whether any kept target's decodability rises and then falls along CAT1's run."""
    t = rise_and_fall(table[table["target"].isin(kept)]) if not table.empty else pd.DataFrame()
    if t.empty:
        return ["- No kept target was probed along the run."]
    lines = [
        f"- **{task}**: {r['first']:.1f} % at step {r['first step']}, peak {r['peak']:.1f} % at step "
        f"{r['peak step']}, {r['last']:.1f} % at step {r['last step']}"
        + (" (falls: the last interval lies below the peak)." if r["falls"] else ".")
        for task, r in t.iterrows()
    ]
    falling = list(t.index[t["falls"]])
    lines.append(
        f"- Rise then fall on {', '.join(falling)}."
        if falling
        else "- No kept target falls from its peak beyond its interval along the run."
    )
    return lines
