"""Statistics that decide: which targets can discriminate, paired intervals over seed sets, and verdicts.

    calib = calibration(long, bayes={IID: 0.469})       # chance, floors, ceiling per target; kept or not
    table = verdicts(long, calib)                        # CATmax - WIDE1 and CATmax - CAT1, Holm, the verdict

The analysis follows the pre-registered plan, `results/PLAN.md` (issue 19). A target earns a verdict
only when it can discriminate. Its **floor** is the best untrained control (untrained CAT1, CATmax and
WIDE1: what random convolutional features already decode); its **ceiling** is direct training on ample
data at its best validation export (for the in-distribution mixture: its Bayes accuracy, computed exactly
by `richreps.data.cues.bayes_accuracy`, and the members must reach 75 % of it). A target is *kept* by
`range_keep_rule`: ceiling at least 20 points above both floor and chance, from at least 3 seeds of
direct training that went past its plateau. Targets in `SATURATED` (read at 94-99 % by random features)
are listed as *saturated*, never judged; others not kept are *uninformative*. On kept targets, with 95 %
paired t intervals over seed sets (each seed set probes its own sample, so the differences are paired):

- **agrees**: both CATmax - WIDE1 (primary: WIDE1 is one network of CATmax's feature dimension, the
  paper's Table 2 "baseline") and CATmax - CAT1 lie above 0;
- **differs**: CATmax - WIDE1 lies below 0 (it takes precedence: the primary contrast is against the paper);
- **dimension explains it**: CATmax - CAT1 lies above 0 and CATmax - WIDE1 does not;
- **inconclusive**: otherwise, including fewer than 2 seed sets (no interval).

Holm's step-down procedure over the kept targets' primary contrasts (two-sided paired t p-values) is
shown beside the uncorrected intervals: an *agrees* or *differs* whose primary contrast does not survive
it is labelled so in "verdict (Holm)". Without WIDE1 (notebook 03's `wide_control` false, or a table from
before it), CATmax - CAT1 is the only contrast and the primary one, and the table says so.

pandas and scipy only (no torch), so report.md can be written anywhere.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from richreps import controls
from richreps.aggregate import DIRECT, t_halfwidth
from richreps.targets import IID, OOD_TARGETS, SATURATED

CAT1 = "CAT1 (baseline)"
CEILING_MIN = 0.90  # a kept target's ceiling
FLOOR_GAP = 0.20  # a kept target's floor is at least this far below its ceiling
LEARNED_MIN = 0.75  # the mixture: trained CAT1 reaches this share of the Bayes accuracy
CONFIDENCE = 0.95
WIDE1 = controls.PRIMARY  # the primary control: CATmax - WIDE1 decides where WIDE1 was trained
# the budget sweep's and the map's column names of CATmax - control and CATmax - CAT1 (richreps.sweep)
CONTRASTS = {"WIDE1": ("gain vs WIDE1", "low vs WIDE1", "high vs WIDE1"), "CAT1": ("gain", "low", "high")}
VERDICTS = ("agrees", "dimension explains it", "differs", "inconclusive", "uninformative", "saturated")
NOT_JUDGED = ("uninformative", "saturated")
# The range keep rule (issue 19): a target discriminates when direct training, run to a measured plateau
# over enough seeds, stands this far above both the floor and chance. No fixed cut on the ceiling itself:
# a hard target with a wide range (shape: floor 14 %, ceiling 87 %) is the most telling one, not noise.
RANGE_MIN = 0.20
CEILING_SEEDS_MIN = 3


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


def all_labels(long: pd.DataFrame) -> pd.DataFrame:
    """The rows probed on all labelled examples (not the few-shot ones)."""
    return long[long["shots"].astype(str) == "all"]


def largest_cat(full: pd.DataFrame) -> int:
    """CATmax's n: the largest CAT (trained or untrained) in a long table."""
    return int(full.loc[full["method"].str.match(r"^(?:untrained )?CAT\d"), "n"].max())


def _per_set(full: pd.DataFrame, method: str) -> pd.DataFrame:
    """test_acc indexed by (task, replicate) for one method."""
    return full[full["method"] == method].groupby(["task", "replicate"])["test_acc"].mean()


def calibration(long: pd.DataFrame, bayes: dict[str, float] | None = None) -> pd.DataFrame:
    """Per target (fractions): chance, the floors, the ceiling with its seeds and plateau flag, trained
    CAT1, CATmax and WIDE1, kept and why not (the keep rule of this module's docstring)."""
    full = all_labels(long)
    n_max = largest_cat(full)
    means = full.groupby(["task", "method"])["test_acc"].mean().unstack("method")
    chance = full.groupby("task")["chance"].first() if "chance" in full else pd.Series(dtype=float)
    direct = full[full["method"] == DIRECT]
    wide = full["method"].isin([WIDE1, f"untrained {WIDE1}"]).any()  # a calibration has no trained WIDE1
    controls = ["CAT1", f"CAT{n_max}", *([WIDE1] if wide else [])]
    rows = []
    for task in dict.fromkeys(full["task"]):
        m = means.loc[task]
        floors = {f"floor: untrained {c}": m.get(f"untrained {c}", math.nan) for c in controls}
        floor = max((f for f in floors.values() if pd.notna(f)), default=math.nan)
        iid = task == IID
        d = direct[direct["task"] == task]
        recorded = "plateaued" in d and bool(d["plateaued"].notna().all())  # older tables have none
        row = {
            "target": task,
            "chance": chance.get(task, math.nan),
            **floors,
            "ceiling": (bayes or {}).get(task, math.nan)
            if iid
            else (d["test_acc"].mean() if len(d) else math.nan),
            "ceiling from": "Bayes accuracy (exact)" if iid else "direct training",
            "ceiling seeds": math.nan if iid else int(d["replicate"].nunique()),
            "plateaued": math.nan if iid or not recorded else bool(d["plateaued"].eq(True).all()),
            "trained CAT1": m.get(CAT1, math.nan),
            f"trained CAT{n_max}": m.get(f"CAT{n_max}", math.nan),
            **({f"trained {WIDE1}": m.get(WIDE1, math.nan)} if wide else {}),
        }
        row["kept"], row["why not"] = _keep(task, floor, row, recorded)
        rows.append(row)
    return pd.DataFrame(rows).set_index("target")


def _unmeasured(floor: float, ceiling: float) -> str:
    """Why a target cannot be judged for want of a measurement ('' when both ends were measured)."""
    if pd.isna(ceiling):
        return "no ceiling measured (direct training did not run)"
    if pd.isna(floor):
        return "no floor measured (no untrained control)"
    return ""


def keep_rule(floor: float, ceiling: float, ceiling_min: float = CEILING_MIN) -> tuple[bool, str]:
    """The first keep rule (`richreps.calibrate`'s record): ceiling >= 90 %, floor at least 20 points
    below it. The study now keeps by range (`range_keep_rule`): the fixed cut dropped shape."""
    missing = _unmeasured(floor, ceiling)
    if missing:
        return False, missing
    if ceiling < ceiling_min:
        return False, f"ceiling below {ceiling_min:.0%}"
    if floor > ceiling - FLOOR_GAP:
        return False, f"floor within {FLOOR_GAP * 100:.0f} points of the ceiling"
    return True, ""


def range_keep_rule(
    floor: float, ceiling: float, chance: float, ceiling_seeds: int, plateaued: bool
) -> tuple[bool, str]:
    """A target can discriminate when its range is wide: kept, or not and why (first failing reason).

    `ceiling` is direct training's test accuracy at its best validation export, averaged over
    `ceiling_seeds` seeds; `plateaued` says that best export was not the last one (the run went past
    its plateau, so the ceiling is not an under-trained lower bound). Kept when the ceiling stands at
    least `RANGE_MIN` above both the floor (what random features read) and chance.
    """
    missing = _unmeasured(floor, ceiling)
    if missing:
        return False, missing
    if ceiling_seeds < CEILING_SEEDS_MIN:
        seeds = f"{ceiling_seeds} seed" + ("" if ceiling_seeds == 1 else "s")
        return False, f"ceiling from {seeds} (needs {CEILING_SEEDS_MIN})"
    if not plateaued:
        return False, "ceiling still rising: the best validation export is the last one"
    if ceiling - floor < RANGE_MIN:
        return False, f"ceiling within {RANGE_MIN * 100:.0f} points of the floor"
    if ceiling - chance < RANGE_MIN:
        return False, f"ceiling within {RANGE_MIN * 100:.0f} points of chance"
    return True, ""


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


def _keep(task: str, floor: float, row: dict, plateau_recorded: bool) -> tuple[bool, str]:
    ceiling, chance = row["ceiling"], row["chance"]
    if task in SATURATED:
        return False, "saturated: random features read it (kept in the tables as a record, never judged)"
    if task == IID:  # the mixture's ceiling is exact: no seeds, no plateau; the members must learn it
        if pd.isna(row["trained CAT1"]):  # a calibration (`richreps.calibrate --params`): no member yet
            return False, f"no trained CAT1 yet: kept if CAT1 reaches {LEARNED_MIN:.0%} of the Bayes accuracy"
        if pd.notna(ceiling) and pd.notna(floor) and row["trained CAT1"] < LEARNED_MIN * ceiling:
            return False, f"members did not learn it: CAT1 below {LEARNED_MIN:.0%} of the Bayes accuracy"
        return range_keep_rule(floor, ceiling, chance, CEILING_SEEDS_MIN, True)
    if pd.notna(ceiling) and not plateau_recorded:
        return False, "no plateau recorded (direct training from before issue 19): rerun notebook 04"
    return range_keep_rule(floor, ceiling, chance, row["ceiling seeds"], bool(row["plateaued"]))


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


def decide(vs_wide: tuple | None, vs_cat1: tuple, kept: bool, saturated: bool = False) -> str:
    """The verdict rules of this module's docstring on (mean, low, high, n) intervals in points.
    `vs_wide` None: no WIDE1, so CATmax - CAT1 alone decides (agrees above 0, differs below)."""
    if saturated:
        return "saturated"
    if not kept:
        return "uninformative"
    primary = vs_cat1 if vs_wide is None else vs_wide
    if primary[3] < 2 or pd.isna(primary[1]) or pd.isna(vs_cat1[1]):
        return "inconclusive"
    if primary[2] < 0:
        return "differs"
    if vs_cat1[1] > 0:
        return "agrees" if primary[1] > 0 else "dimension explains it"
    return "inconclusive"


def _by_task(diffs: pd.Series, task: str) -> pd.Series:
    return diffs.xs(task, level="task") if task in diffs.index.get_level_values(0) else pd.Series(dtype=float)


def verdicts(long: pd.DataFrame, calib: pd.DataFrame) -> pd.DataFrame:
    """Per target (points, 95 % paired intervals): CATmax - WIDE1 (when WIDE1 was trained), CATmax - each
    other registered control that was trained (`richreps.controls`: shown beside, not decisive), CATmax - CAT1,
    training's share of CATmax - WIDE1 and of CATmax - CAT1 (the trained gap minus the untrained twins' gap,
    paired by seed set: what the architectures differ by before training is not TIME-CONCAT's),
    trained - untrained CATmax; the primary contrast's p-value, Holm-adjusted over the kept targets;
    the verdict, and the verdict after Holm."""
    full = all_labels(long)
    n_max = largest_cat(full)
    top = _per_set(full, f"CAT{n_max}")
    gain = (top - _per_set(full, CAT1)).dropna() * 100
    vs_random = (top - _per_set(full, f"untrained CAT{n_max}")).dropna() * 100
    wide = (full["method"] == WIDE1).any()
    vs_wide = (top - _per_set(full, WIDE1)).dropna() * 100 if wide else None
    others = [
        c for c in controls.REGISTRY if c != WIDE1 and (full["method"] == c).any()
    ]  # shown, not decisive
    vs_other = {c: (top - _per_set(full, c)).dropna() * 100 for c in others}
    # training's share of a contrast: the trained gap minus the same gap between untrained twins, paired by
    # seed set, so that what the architectures differ by before any training is not read as TIME-CONCAT's
    untrained_top = _per_set(full, f"untrained CAT{n_max}")
    share = {}
    for name, trained in [*([(WIDE1, vs_wide)] if wide else []), ("CAT1", gain)]:
        if (full["method"] == f"untrained {name}").any():
            untrained = (untrained_top - _per_set(full, f"untrained {name}")).dropna() * 100
            share[name] = (trained - untrained).dropna()
    rows = []
    for task in calib.index:
        g, r = paired_interval(_by_task(gain, task)), paired_interval(_by_task(vs_random, task))
        w = paired_interval(_by_task(vs_wide, task)) if wide else None
        kept, saturated = bool(calib.loc[task, "kept"]), task in SATURATED
        row = {"target": task}
        if wide:
            row.update({f"CAT{n_max} - {WIDE1}": w[0], "low (vs WIDE1)": w[1], "high (vs WIDE1)": w[2]})
        for c, diffs in vs_other.items():
            o = paired_interval(_by_task(diffs, task))
            row.update({f"CAT{n_max} - {c}": o[0], f"low (vs {c})": o[1], f"high (vs {c})": o[2]})
        row.update(
            {
                f"CAT{n_max} - CAT1": g[0],
                "low": g[1],
                "high": g[2],
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
                "seed sets": g[3],
                "primary": f"CAT{n_max} - {WIDE1}" if wide else f"CAT{n_max} - CAT1 (no WIDE1)",
                "p": paired_p(_by_task(vs_wide if wide else gain, task)) if kept else math.nan,
                "verdict": decide(w, g, kept, saturated),
                "why": calib.loc[task, "why not"],
            }
        )
        rows.append(row)
    out = pd.DataFrame(rows).set_index("target")
    judged = ~out["verdict"].isin(NOT_JUDGED)  # the family: every kept target
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


def contrasts(table: pd.DataFrame, task: str) -> str:
    """'CAT5 - WIDE1 = +1.0 [...]; CAT5 - CAT1 = +2.0 [...]' (points), the primary contrast first."""
    n, r = _n(table), table.loc[task]
    text = f"CAT{n} - CAT1 = {fmt_interval(r[f'CAT{n} - CAT1'], r['low'], r['high'])}"
    if f"CAT{n} - {WIDE1}" in table.columns:
        wide = fmt_interval(r[f"CAT{n} - {WIDE1}"], r["low (vs WIDE1)"], r["high (vs WIDE1)"])
        text = f"CAT{n} - {WIDE1} = {wide}; " + text
    name = WIDE1 if f"training's share vs {WIDE1}" in table.columns else "CAT1"
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
