"""Statistics that decide: which targets can discriminate, paired intervals over seed sets, and verdicts.

    calib = calibration(long, bayes={IID: 0.469})       # chance, floors, ceiling per target; kept or not
    table = verdicts(long, calib)                        # CATmax - each single network, Holm, the verdict

The analysis follows the pre-registered plan, `results/PLAN.md`. A target earns a verdict only when it can
discriminate: its **floor** is the best untrained twin (what the networks decode before training), its
**ceiling** direct training on ample data at its best validation export (the mixture: its exact Bayes
accuracy, `richreps.data.cues.bayes_accuracy`). `range_keep_rule`: a ceiling at least 20 points above floor
and chance, from at least 3 seeds of direct training past its plateau. `SATURATED` targets are listed,
never judged; others not kept are *uninformative*. On kept targets, with 95 % paired t intervals over seed
sets (each seed set probes its own sample), the **primary contrast** decides:

- revision 2, CATmax - SINGLE-ES (the single network one picks by pretraining validation): *agrees* above 0,
  *differs* below 0, *inconclusive* otherwise; JOINTn, CAT1, CAT1-ES, WIDE1 and WIDE1-ES are shown beside,
  each with training's share and its own Holm correction;
- version 1, CATmax - WIDE1 where no SINGLE-ES was trained: *agrees* when it and CATmax - CAT1 lie above 0,
  *differs* when it lies below, *dimension explains it* when only CATmax - CAT1 lies above 0;
- without either, CATmax - CAT1 alone; fewer than 2 seed sets: *inconclusive*.

Holm's step-down procedure over the kept targets' primary contrasts (two-sided paired t) gives "verdict
(Holm)": an *agrees* or *differs* that does not survive it reads *inconclusive*.

pandas and scipy only (no torch), so report.md can be written anywhere.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from richreps import controls, earlystop
from richreps.aggregate import t_halfwidth
from richreps.keep import (  # noqa: F401 (re-exported: the keep rule is read as verdicts.*)
    CAT1,
    CEILING_MIN,
    CEILING_SEEDS_MIN,
    FLOOR_GAP,
    LEARNED_MIN,
    PLATEAU_TOLERANCE,
    RANGE_MIN,
    _per_set,
    all_labels,
    calibration,
    keep_rule,
    largest_cat,
    range_keep_rule,
    seed_mean_plateaued,
)
from richreps.targets import IID, OOD_TARGETS, SATURATED

CONFIDENCE = 0.95
WIDE1 = controls.PRIMARY  # the primary control: CATmax - WIDE1 decides where WIDE1 was trained


def contrast_columns(name: str) -> tuple[str, str, str]:
    """The budget sweep's and the map's columns (mean, low, high) of CATmax - `name` (richreps.sweep)."""
    return (
        ("gain", "low", "high")
        if name == "CAT1"
        else (f"gain vs {name}", f"low vs {name}", f"high vs {name}")
    )


def single_networks(methods, n_max: int) -> list[str]:
    """The single networks among `methods` that TIME-CONCAT is compared with, in every table's order: each
    trained control (WIDE1, JOINTn), the early-stopped ones (CAT1-ES, WIDE1-ES, SINGLE-ES), then CAT1."""
    labels = [c.label(n_max) for c in controls.REGISTRY.values()] + [*earlystop.SOURCES, earlystop.BEST]
    return [x for x in labels if x in set(methods)] + ["CAT1"]


def contrasts_in(table: pd.DataFrame) -> list[str]:
    """The contrasts (CATmax - name) a sweep or map table holds, in its columns' order, CAT1 last."""
    found = [c.removeprefix("gain vs ") for c in table.columns if c.startswith("gain vs ")]
    return [*found, *(["CAT1"] if "gain" in table else [])]


VERDICTS = ("agrees", "dimension explains it", "differs", "inconclusive", "uninformative", "saturated")
NOT_JUDGED = ("uninformative", "saturated")


PAPER_DIRECT_GAPS = (3.0, 9.0)  # the paper's Table 1: direct training above transfer, in points
DIRECT_GAP_MARGIN = 3.0  # revision 2: a gap agrees with them within this many points of that range


def direct_gap_agrees(gap: float) -> bool:
    """Revision 2: a direct-versus-probe gap (points) agrees with the paper's 3 and 9 within the margin."""
    low, high = PAPER_DIRECT_GAPS
    return low - DIRECT_GAP_MARGIN <= gap <= high + DIRECT_GAP_MARGIN


def paired_interval(diffs, confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of paired differences: a Student t interval on their mean.

    With fewer than 2 differences there is no interval (low and high are NaN).
    """
    d = pd.Series(diffs, dtype=float).dropna()
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(t_halfwidth([d.std(ddof=1)], [n], confidence).iloc[0])
    return mean, mean - half, mean + half, n


def paired_p(diffs) -> float:
    """Two-sided p-value of the paired t test that the mean difference is 0 (NaN below 2 differences)."""
    from scipy import stats

    d = pd.Series(diffs, dtype=float).dropna()
    if len(d) < 2:
        return math.nan
    if d.std(ddof=1) == 0:
        return 0.0 if d.mean() != 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def holm(pvalues, alpha: float = 1 - CONFIDENCE) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure over a family of tests: (rejected, adjusted p-values), in input order.

    Sorted ascending, p_(i) is rejected while p_(i) <= alpha / (m - i) for every i up to it (i from 0);
    the adjusted p-value is max over j <= i of min(1, (m - j) p_(j)). NaN p-values are never rejected
    and do not count in m. Hand-written: scipy has no Holm, and the procedure is six lines.
    """
    p = [float(x) for x in pvalues]
    valid = [i for i, x in enumerate(p) if not math.isnan(x)]
    m = len(valid)
    rejected, adjusted = [False] * len(p), [math.nan] * len(p)
    running, still = 0.0, True
    for rank, i in enumerate(sorted(valid, key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
        still = still and p[i] <= alpha / (m - rank)
        rejected[i] = still
    return rejected, adjusted


def gain_intervals(long: pd.DataFrame) -> pd.DataFrame:
    """Every CATn - CAT1 per target, in points: mean and 95 % paired t interval over seed sets."""
    full = all_labels(long)
    base = _per_set(full, CAT1)
    rows = []
    for n in sorted(full.loc[full["method"].str.match(r"^CAT\d") & (full["n"] > 1), "n"].unique()):
        diff = (_per_set(full, f"CAT{n}") - base).dropna() * 100
        for task, d in diff.groupby(level="task", sort=False):
            mean, lo, hi, sets = paired_interval(d)
            rows.append(
                {
                    "target": task,
                    "CATn - CAT1": f"CAT{n} - CAT1",
                    "mean": mean,
                    "low": lo,
                    "high": hi,
                    "sets": sets,
                }
            )
    return pd.DataFrame(rows)


def decide(
    vs_wide: tuple | None, vs_cat1: tuple, kept: bool, saturated: bool = False, single: bool = False
) -> str:
    """The verdict rules on (mean, low, high, n) intervals in points. `vs_wide` is the primary contrast's
    interval (None: no control, so CATmax - CAT1 alone decides). `single`: the primary is CATmax - SINGLE-ES
    (results/PLAN.md, revision 2): agrees above 0, differs below, inconclusive otherwise."""
    if saturated:
        return "saturated"
    if not kept:
        return "uninformative"
    primary = vs_cat1 if vs_wide is None else vs_wide
    if primary[3] < 2 or pd.isna(primary[1]) or pd.isna(vs_cat1[1]):
        return "inconclusive"
    if primary[2] < 0:
        return "differs"
    if single:
        return "agrees" if primary[1] > 0 else "inconclusive"
    if vs_cat1[1] > 0:
        return "agrees" if primary[1] > 0 else "dimension explains it"
    return "inconclusive"


def _by_task(diffs: pd.Series, task: str) -> pd.Series:
    return diffs.xs(task, level="task") if task in diffs.index.get_level_values(0) else pd.Series(dtype=float)


def _columns(name: str, n_max: int) -> tuple[str, str, str]:
    """The columns of CATmax - `name`: version 1's names for CAT1 and WIDE1, "low (vs X)" for the others."""
    if name == "CAT1":
        return f"CAT{n_max} - CAT1", "low", "high"
    return f"CAT{n_max} - {name}", f"low (vs {name})", f"high (vs {name})"


def verdicts(long: pd.DataFrame, calib: pd.DataFrame) -> pd.DataFrame:
    """Per target (points, 95 % paired intervals): CATmax minus every single network trained (WIDE1, JOINTn,
    CAT1-ES, WIDE1-ES, SINGLE-ES: each present one) and CATmax - CAT1, each with training's share (the trained
    gap minus the same gap between the untrained twins, paired by seed set: what the architectures differ by
    before training is not TIME-CONCAT's) and its own Holm-adjusted p over the kept targets; trained -
    untrained CATmax; the primary contrast (SINGLE-ES where trained, results/PLAN.md revision 2; else WIDE1;
    else CAT1), its p and Holm, the verdict, and the verdict after Holm."""
    full = all_labels(long)
    n_max = largest_cat(full)
    methods = set(full["method"])
    top = _per_set(full, f"CAT{n_max}")
    untrained_top = _per_set(full, f"untrained CAT{n_max}")
    vs_random = (top - untrained_top).dropna() * 100
    names = single_networks(methods, n_max)
    primary = next((x for x in (earlystop.BEST, WIDE1) if x in methods), "CAT1")
    gaps, share = {}, {}
    for name in names:
        method = CAT1 if name == "CAT1" else name
        gaps[name] = (top - _per_set(full, method)).dropna() * 100
        if f"untrained {name}" in methods:  # the same gap between the networks before training
            untrained = (untrained_top - _per_set(full, f"untrained {name}")).dropna() * 100
            share[name] = (gaps[name] - untrained).dropna()
    rows = []
    for task in calib.index:
        kept, saturated = bool(calib.loc[task, "kept"]), task in SATURATED
        row = {"target": task}
        intervals = {name: paired_interval(_by_task(d, task)) for name, d in gaps.items()}
        for name in names:
            row.update(dict(zip(_columns(name, n_max), intervals[name][:3])))
            row[f"p vs {name}"] = paired_p(_by_task(gaps[name], task)) if kept else math.nan
        r = paired_interval(_by_task(vs_random, task))
        row.update(
            {
                f"CAT{n_max} - untrained CAT{n_max}": r[0],
                "low (vs untrained)": r[1],
                "high (vs untrained)": r[2],
                **{
                    key: value
                    for name, diffs in share.items()
                    for key, value in zip(
                        (f"training's share vs {name}", f"low (share vs {name})", f"high (share vs {name})"),
                        paired_interval(_by_task(diffs, task))[:3],
                    )
                },
                "seed sets": intervals["CAT1"][3],
                "primary": f"CAT{n_max} - {primary}" + (" (no WIDE1)" if primary == "CAT1" else ""),
                "p": row[f"p vs {primary}"],
                "verdict": decide(
                    None if primary == "CAT1" else intervals[primary],
                    intervals["CAT1"],
                    kept,
                    saturated,
                    single=primary == earlystop.BEST,
                ),
                "why": calib.loc[task, "why not"],
            }
        )
        rows.append(row)
    out = pd.DataFrame(rows).set_index("target")
    judged = ~out["verdict"].isin(NOT_JUDGED)  # the family: every kept target
    for name in names:  # each contrast's own correction over the kept targets
        out[f"p (Holm) vs {name}"] = math.nan
        out.loc[judged, f"p (Holm) vs {name}"] = holm(out.loc[judged, f"p vs {name}"])[1]
    rejected, adjusted = holm(out.loc[judged, "p"])
    out["p (Holm)"], out["survives Holm"] = math.nan, ""
    out.loc[judged, "p (Holm)"] = adjusted
    out.loc[judged, "survives Holm"] = ["yes" if x else "no" for x in rejected]
    out["verdict (Holm)"] = [
        f"inconclusive ({v} does not survive Holm)" if v in ("agrees", "differs") and h == "no" else v
        for v, h in zip(out["verdict"], out["survives Holm"])
    ]
    out.attrs["n_max"] = n_max
    return out


def fmt_interval(mean: float, lo: float, hi: float) -> str:
    """'+1.2 [-0.3, +2.7]' (points), or the mean alone without an interval."""
    if pd.isna(mean):
        return "-"
    return f"{mean:+.1f}" if pd.isna(lo) else f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _n(table: pd.DataFrame) -> int:
    return next(int(m[1]) for c in table.columns if (m := re.fullmatch(r"CAT(\d+) - CAT1", c)))


def primary_name(table: pd.DataFrame) -> str:
    """The control the primary contrast is against: SINGLE-ES, WIDE1 or CAT1 (from the table's own column)."""
    if "primary" in table.columns and table["primary"].notna().any():
        return str(table["primary"].dropna().iloc[0]).split(" - ", 1)[1].split(" (")[0]
    return WIDE1 if has_wide(table) else "CAT1"


def joint_clause(table: pd.DataFrame, task: str) -> str:
    """What CATmax - JOINTn (the same towers trained as one network: architecture and FLOPs matched) says of a
    verdict, from its interval; "" where JOINTn was not trained."""
    n, r = _n(table), table.loc[task]
    col = f"CAT{n} - JOINT{n}"
    if col not in table.columns or pd.isna(r[col]):
        return ""
    mean, low, high = (r[c] for c in _columns(f"JOINT{n}", n))
    said = f"CAT{n} - JOINT{n} = {fmt_interval(mean, low, high)}"
    if high < 0:
        return (f"; but {said}: the same {n} towers trained as one network do better, so this gain over single "
                "networks is the architecture's, not the independent runs'")  # fmt: skip
    if low > 0:
        return f"; {said}: independent runs add to the architecture"
    return f"; {said} contains 0: the architecture alone may account for it"


def contrasts(table: pd.DataFrame, task: str) -> str:
    """'CAT5 - SINGLE-ES = +1.0 [...]; CAT5 - JOINT5 = ...; CAT5 - CAT1 = +2.0 [...]' (points): the primary
    contrast first, every other single network of the table, CAT1 last; then the primary's training share."""
    n, r = _n(table), table.loc[task]
    name = primary_name(table)
    others = [c.split(" - ", 1)[1] for c in table.columns if c.startswith(f"CAT{n} - ")]
    order = [name, *(x for x in others if x not in (name, "CAT1", f"untrained CAT{n}")), "CAT1"]
    text = "; ".join(
        f"CAT{n} - {x} = {fmt_interval(*(r[c] for c in _columns(x, n)))}" for x in dict.fromkeys(order)
    )
    if f"training's share vs {name}" in table.columns:  # the primary contrast's, beside it
        share = fmt_interval(
            r[f"training's share vs {name}"], r[f"low (share vs {name})"], r[f"high (share vs {name})"]
        )
        text += f"; training's share of CAT{n} - {name} (trained gap - untrained gap) = {share}"
    return text


def has_wide(table: pd.DataFrame) -> bool:
    return any(c.endswith(f" - {WIDE1}") for c in table.columns)


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per target and a count, in the words the verdicts use (no task is counted twice).
    `table` is `verdicts(...)` or the 04_verdicts.csv it was written to (read with index_col=0)."""
    n = _n(table)
    lines = []
    if not has_wide(table):
        lines.append(
            f"- No WIDE1 in this run (notebook 03's `wide_control` is false, or the table predates it): "
            f"CAT{n} - CAT1 is the only contrast, and the primary one."
        )
    for task, r in table.iterrows():
        text = f"- **{task}**: {contrasts(table, task)} points: **{r['verdict']}**"
        if r["verdict"] in NOT_JUDGED:
            text += f" ({r['why']})"
        elif "survives Holm" in r and r["survives Holm"] in ("yes", "no"):
            text += f"; after Holm: {r['verdict (Holm)']} (adjusted p {r['p (Holm)']:.3f})"
        lines.append(text + ".")
    transfer = table.drop(index=[IID], errors="ignore")
    counts = transfer["verdict"].value_counts()
    lines.append(
        f"- Over the {len(transfer)} transfer targets (95 % paired t intervals over seed sets): "
        + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
        + ". Uninformative and saturated targets cannot discriminate and are not counted for or against the paper."
    )
    if "survives Holm" in table.columns:
        family = table[table["survives Holm"].isin(["yes", "no"])]
        lines.append(
            f"- Holm over the {len(family)} judged targets' primary contrasts (family-wise 0.05): "
            + (
                ", ".join(
                    f"{t} {'survives' if r['survives Holm'] == 'yes' else 'does not survive'}"
                    for t, r in family.iterrows()
                )
                or "no target judged"
            )
            + "."
        )
    return lines


def ood_lines(table: pd.DataFrame) -> list[str]:
    """Two sentences: the OOD targets' verdicts, and whether they agree with the cue targets' verdicts.
    `table` is `verdicts(...)` or its CSV (index_col=0)."""
    ood = table[table.index.isin(OOD_TARGETS)]
    if ood.empty:
        return []
    cue = table.drop(index=[IID, *OOD_TARGETS], errors="ignore")
    parts = [f"{t} {r['verdict']} ({contrasts(table, t)})" for t, r in ood.iterrows()]
    first = "Out of distribution: " + "; ".join(parts) + "."
    kept_ood = ood[~ood["verdict"].isin(NOT_JUDGED)]
    kept_cue = cue[~cue["verdict"].isin(NOT_JUDGED)]
    if kept_ood.empty:
        second = "No OOD target can discriminate, so they say nothing for or against the cue columns."
    elif kept_cue.empty:
        second = "No cue target can discriminate, so the OOD columns have nothing to agree with."
    else:
        a, b = sorted(set(kept_ood["verdict"])), sorted(set(kept_cue["verdict"]))
        word = "agree with" if a == b else "differ from"
        second = f"The OOD columns ({', '.join(a)}) {word} the kept cue columns ({', '.join(b)})."
    return [f"- {first}", f"- {second}"]
