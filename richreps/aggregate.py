"""Aggregates of notebook 04's probe table, shared by notebooks 04 and 05 and by report.md.

Everything here is pandas on `tables/04_probes_long.csv` (one row per replicate, method, task and
number of labelled examples); nothing imports torch, so the report can be written anywhere.
"""

from __future__ import annotations

import pandas as pd

from richreps.evidence import load_all
from richreps.evidence.claims import OOD, derived_table3
from richreps.targets import CUES as SINGLE_CUE
from richreps.targets import IID

DIRECT = "direct training"
DIRECT_EQUAL = "direct training (probe's labels)"  # trained on as many labels as the probe


def full_data(long: pd.DataFrame) -> pd.DataFrame:
    """The rows probed with all labelled examples (shots 'all')."""
    return long[long["shots"].astype(str) == "all"]


def cat_gains(long: pd.DataFrame) -> pd.DataFrame:
    """CATn - CAT1 test accuracy per (replicate, task) for every n > 1: columns replicate, task, n, gain."""
    cats = long[long["method"].str.match(r"^CAT\d")]
    acc = cats.pivot_table(index=["replicate", "task"], columns="n", values="test_acc")
    return pd.concat(
        [(acc[n] - acc[1]).rename("gain").reset_index().assign(n=n) for n in acc.columns if n != 1],
        ignore_index=True,
    )


def mean_sd_table(
    long: pd.DataFrame, index: list[str], column: str = "task", value: str = "test_acc", scale: float = 100.0
) -> pd.DataFrame:
    """Wide table of 'mean ± sd' strings over replicates (sd omitted with one replicate)."""
    g = long.groupby([*index, column], sort=False)[value]
    stats = pd.DataFrame({"mean": g.mean() * scale, "sd": g.std(ddof=1) * scale, "n": g.size()})

    def fmt(r) -> str:
        return f"{r['mean']:.1f}" if r["n"] < 2 or pd.isna(r["sd"]) else f"{r['mean']:.1f} ± {r['sd']:.1f}"

    return stats.apply(fmt, axis=1).unstack(column)


def targets(long: pd.DataFrame, probe_tasks: list[str]) -> list[str]:
    """The probed targets in reading order: the IID mixture, the cue tasks, then real datasets."""
    present = list(dict.fromkeys(long["task"]))
    ordered = [t for t in [IID, *probe_tasks] if t in present]
    return ordered + [t for t in present if t not in ordered]


def table3(long: pd.DataFrame, probe_tasks: list[str]) -> pd.DataFrame:
    """Table 3's shape: test % mean ± sd per representation and target, all labelled examples."""
    full = full_data(long)
    order = list(dict.fromkeys(full["method"]))
    table = mean_sd_table(full, ["method", "steps_per_member", "compute_steps"])
    return table[targets(long, probe_tasks)].reindex(order, level="method").fillna("-")


def gains_table(long: pd.DataFrame, probe_tasks: list[str]) -> pd.DataFrame:
    """CATn - CAT1 in points, mean ± sd over seed sets, per target."""
    gains = cat_gains(full_data(long)).assign(method=lambda d: "CAT" + d["n"].astype(str) + " - CAT1")
    return mean_sd_table(gains, ["method"], value="gain")[targets(long, probe_tasks)]


def paper_gains() -> pd.DataFrame:
    """The paper's Table 3 as CATn - CAT1 in points (from the claims check's derived table)."""
    t = derived_table3(load_all())
    cols = {f"{c} gain": c for c in ["imagenet1k", *OOD]}
    out = t[t["n_models"] > 1][list(cols)].rename(columns=cols)
    out.index = [f"{m} - CAT1" for m in out.index]
    return out


def coverage(long: pd.DataFrame, probe_tasks: list[str]) -> pd.DataFrame:
    """Test % on each single-cue task per representation (mean over seed sets), probes only;
    empty when no single-cue task was probed."""
    full = full_data(long)
    cue_tasks = [t for t in probe_tasks if t in SINGLE_CUE and t in set(full["task"])]
    if not cue_tasks:
        return pd.DataFrame()
    rows = full[full["task"].isin(cue_tasks) & ~full["method"].isin([DIRECT, DIRECT_EQUAL])]
    return (
        rows.groupby(["method", "task"], sort=False)["test_acc"].mean().unstack("task")[cue_tasks] * 100
    ).round(1)


def few_shot(long: pd.DataFrame, probe_tasks: list[str]) -> pd.DataFrame:
    """Probe accuracy by labelled examples per class, mean ± sd over seed sets."""
    few = long[~long["method"].isin([DIRECT, DIRECT_EQUAL]) & long["task"].isin(probe_tasks)].assign(
        shots=lambda d: d["shots"].astype(str)
    )
    return mean_sd_table(few, ["method", "shots"])[[t for t in probe_tasks if t in set(few["task"])]]


def task_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per target, in %: CATmax - CAT1 (mean, sd, seed sets where it is positive), CAT1, CATmax,
    untrained CATmax, direct training and the best probe."""
    full = full_data(long)
    gains = cat_gains(full)
    n_max = int(gains["n"].max())
    largest = gains[gains["n"] == n_max].assign(gain=lambda d: d["gain"] * 100).groupby("task")["gain"]
    means = full.groupby(["task", "method"])["test_acc"].mean().unstack("method") * 100
    probes = means.drop(columns=[DIRECT, DIRECT_EQUAL], errors="ignore")
    out = pd.DataFrame(
        {
            "gain_mean": largest.mean(),
            "gain_sd": largest.std(ddof=1),
            "sets_positive": largest.apply(lambda g: int((g > 0).sum())),
            "sets": largest.size(),
            "CAT1": means["CAT1 (baseline)"],
            f"CAT{n_max}": means[f"CAT{n_max}"],
            f"untrained CAT{n_max}": means.get(f"untrained CAT{n_max}"),
            DIRECT: means.get(DIRECT),
            DIRECT_EQUAL: means.get(DIRECT_EQUAL),
            "best probe": probes.max(axis=1),
        }
    )
    out.attrs["n_max"] = n_max
    return out


def measured_lines(long: pd.DataFrame) -> list[str]:
    """What notebook 04 measured, in sentences computed from the table (nothing scale-specific).
    Whether it agrees with the paper is for `richreps.verdicts`, which weighs intervals and calibration."""
    s = task_summary(long)
    n = s.attrs["n_max"]
    cat, untrained = f"CAT{n}", f"untrained CAT{n}"
    lines = []
    for task, r in s.iterrows():
        text = (
            f"- **{task}**: {cat} is {'higher' if r['gain_mean'] > 0 else 'lower'} than CAT1 by "
            f"{abs(r['gain_mean']):.1f} points (better in {int(r['sets_positive'])} of {int(r['sets'])} seed sets)"
        )
        if pd.notna(r[untrained]):
            text += f"; untrained {cat}: {r[untrained]:.1f} %"
        if pd.notna(r[DIRECT]):
            text += f"; direct training: {r[DIRECT]:.1f} %"
        lines.append(text + ".")
    transfer = s.drop(index=[IID], errors="ignore")
    if len(transfer) and transfer[untrained].notna().any():
        vs_random = (transfer[cat] - transfer[untrained]).mean()
        lines.append(
            f"- Trained {cat} is {vs_random:+.1f} points from untrained {cat} on average over the transfer tasks"
            + (
                ": much of what the probes read is already in random convolutional features."
                if abs(vs_random) < 5
                else "."
            )
        )
    direct = transfer.dropna(subset=[DIRECT])
    if len(direct):
        gap = (direct[DIRECT] - direct["best probe"]).mean()
        lines.append(
            f"- Direct training is {gap:+.1f} points from the best linear probe on average over the "
            f"{len(direct)} transfer tasks where it ran (the paper: transfer falls short of direct training)."
        )
    else:
        lines.append(
            "- Direct training did not run, so the gap between transfer and direct training is not measured."
        )
    return lines


def t_halfwidth(sd, n, confidence: float = 0.95):
    """Half-width of the Student t interval on a mean of n values with standard deviation sd (NaN for n < 2)."""
    from scipy import stats

    n = pd.Series(n, dtype=float)
    q = pd.Series(stats.t.ppf(0.5 + confidence / 2, (n - 1).clip(lower=1)), index=n.index)
    return (q * pd.Series(sd, index=n.index) / n.pow(0.5)).where(n >= 2)


def fig6_measured(long: pd.DataFrame) -> pd.DataFrame:
    """Figure 6's measured panel: test % by target and number of members, for the trained CATn and
    the untrained controls, with the mean's 95 % t interval over seed sets (`ci`: its half-width)."""
    full = full_data(long)
    cats = full[full["method"].str.match(r"^(untrained )?CAT\d")]
    cats = cats.assign(trained=~cats["method"].str.startswith("untrained"))
    stats = (
        cats.groupby(["task", "trained", "n"], sort=False)["test_acc"]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    stats["ci"] = t_halfwidth(stats["std"], stats["count"]) * 100
    stats[["mean", "std"]] *= 100
    return stats.rename(
        columns={"task": "dataset", "n": "n_models", "mean": "accuracy", "std": "sd", "count": "seed_sets"}
    )


def direct_vs_probe(long: pd.DataFrame) -> pd.DataFrame:
    """Direct training beside CAT1, CATmax, WIDE1 and their untrained controls' probes, per transfer target."""
    full = full_data(long)
    full = full[full["task"] != IID]
    n_max = int(full.loc[full["method"].str.match(r"^CAT\d"), "n"].max())
    methods = {
        DIRECT: "direct",
        DIRECT_EQUAL: "direct (probe's labels)",
        "CAT1 (baseline)": "probe: CAT1",
        f"CAT{n_max}": f"probe: CAT{n_max}",
        f"untrained CAT{n_max}": f"probe: untrained CAT{n_max}",
        "WIDE1": "probe: WIDE1",  # matched dimension (absent when notebook 03 trained none)
        "untrained WIDE1": "probe: untrained WIDE1",
    }
    rows = []
    for method, label in methods.items():
        sub = (
            full[full["method"] == method]
            .groupby("task", sort=False)["test_acc"]
            .agg(["mean", "std"])
            .mul(100)
        )
        rows += [
            {"target": t, "method": label, "accuracy": r["mean"], "sd": r["std"]} for t, r in sub.iterrows()
        ]
    return pd.DataFrame(rows)


def paper_fig6() -> pd.DataFrame:
    """Figure 6's published panel: the paper's Table 3 in long form."""
    paper = load_all()["table3"].melt(
        id_vars=["n_models"], value_vars=["imagenet1k", *OOD], var_name="dataset", value_name="accuracy"
    )
    return paper.assign(dataset=paper["dataset"].replace({"imagenet1k": "imagenet1k (IID)"}))


def paper_direct_vs_probe() -> pd.DataFrame:
    """The paper's Table 1 (left): direct training vs transfer by linear probing, per trial."""
    t1 = load_all()["table1_left"]
    return pd.concat(
        [
            pd.DataFrame({"target": t1["trial"], "method": "direct", "accuracy": t1["direct_bal"]}),
            pd.DataFrame(
                {
                    "target": t1["trial"],
                    "method": "linear probe (transfer)",
                    "accuracy": t1["transfer_mix_to_bal"],
                }
            ),
        ]
    )
