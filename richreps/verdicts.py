"""Statistics that decide: which targets can discriminate, paired intervals over seed sets, and verdicts.

    calib = calibration(long, bayes={IID: 0.469})       # chance, floor, ceiling per target; kept or not
    table = verdicts(long, calib)                        # CATmax - CAT1 with its interval, and the verdict

A target earns a verdict only when it can discriminate. Its **floor** is the better of the untrained
CAT1 and untrained CATmax probes (what random convolutional features already decode); its **ceiling**
is direct training on ample data (for the in-distribution mixture: its Bayes accuracy, computed
exactly by `richreps.data.cues.bayes_accuracy`). A transfer target is *kept* when its ceiling is at
least 90 % and its floor at least 20 points below it; any other target is *uninformative*: listed, never
counted. Verdicts on kept targets follow 95 % paired t intervals over replicate seed sets (each seed set
gives one CATmax - CAT1 difference on the same probe data, so the differences are paired):

- **agrees** (with the paper's direction): the interval for CATmax - CAT1 lies above 0, and trained
  CATmax beats untrained CATmax beyond its own interval;
- **differs**: the interval for CATmax - CAT1 lies below 0;
- **inconclusive**: otherwise, including fewer than 2 seed sets (no interval).

pandas and scipy only (no torch), so report.md can be written anywhere.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from richreps.aggregate import DIRECT, IID, t_halfwidth

CAT1 = "CAT1 (baseline)"
# = richreps.data.ood.TARGETS and SATURATED (no torch import here; tests/test_data.py checks they agree)
OOD_TARGETS = ("digits_uci", "mnist_plain", "mnist_clutter", "uci_plasma")
SATURATED = ("digits_uci", "mnist_plain")  # read at 94-99 % by untrained networks: kept only as a record
CEILING_MIN = 0.90  # a kept target's ceiling
FLOOR_GAP = 0.20  # a kept target's floor is at least this far below its ceiling
LEARNED_MIN = 0.75  # the mixture: trained CAT1 reaches this share of the Bayes accuracy
CONFIDENCE = 0.95
VERDICTS = ("agrees", "differs", "inconclusive", "uninformative")
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


def _full(long: pd.DataFrame) -> pd.DataFrame:
    return long[long["shots"].astype(str) == "all"]


def _n_max(full: pd.DataFrame) -> int:
    return int(full.loc[full["method"].str.match(r"^CAT\d"), "n"].max())


def _per_set(full: pd.DataFrame, method: str) -> pd.DataFrame:
    """test_acc indexed by (task, replicate) for one method."""
    return full[full["method"] == method].groupby(["task", "replicate"])["test_acc"].mean()


def calibration(long: pd.DataFrame, bayes: dict[str, float] | None = None) -> pd.DataFrame:
    """Per target (fractions): chance, the floors, the ceiling, trained CAT1 and CATmax, kept and why not."""
    full = _full(long)
    n_max = _n_max(full)
    means = full.groupby(["task", "method"])["test_acc"].mean().unstack("method")
    chance = full.groupby("task")["chance"].first() if "chance" in full else pd.Series(dtype=float)
    rows = []
    for task in dict.fromkeys(full["task"]):
        m = means.loc[task]
        floors = [m.get(f"untrained {c}") for c in ("CAT1", f"CAT{n_max}")]
        floor = max((f for f in floors if pd.notna(f)), default=math.nan)
        iid = task == IID
        ceiling = (bayes or {}).get(task, math.nan) if iid else m.get(DIRECT, math.nan)
        trained = m.get(CAT1, math.nan)
        row = {
            "target": task,
            "chance": chance.get(task, math.nan),
            "floor: untrained CAT1": floors[0],
            f"floor: untrained CAT{n_max}": floors[1],
            "ceiling": ceiling,
            "ceiling from": "Bayes accuracy (exact)" if iid else "direct training",
            "trained CAT1": trained,
            f"trained CAT{n_max}": m.get(f"CAT{n_max}", math.nan),
        }
        row["kept"], row["why not"] = _keep(iid, floor, ceiling, trained)
        rows.append(row)
    return pd.DataFrame(rows).set_index("target")


def keep_rule(floor: float, ceiling: float, ceiling_min: float = CEILING_MIN) -> tuple[bool, str]:
    """A transfer target can discriminate: ceiling >= 90 %, floor at least 20 points below it."""
    if pd.isna(ceiling):
        return False, "no ceiling measured (direct training did not run)"
    if pd.isna(floor):
        return False, "no floor measured (no untrained control)"
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
    if pd.isna(ceiling):
        return False, "no ceiling measured (direct training did not run)"
    if pd.isna(floor):
        return False, "no floor measured (no untrained control)"
    if ceiling_seeds < CEILING_SEEDS_MIN:
        return False, f"ceiling from {ceiling_seeds} seeds (needs {CEILING_SEEDS_MIN})"
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


def _keep(iid: bool, floor: float, ceiling: float, trained: float) -> tuple[bool, str]:
    if not iid:
        return keep_rule(floor, ceiling)
    # the mixture's ceiling is its Bayes accuracy, far below 90 % by design: the members must learn it
    if pd.notna(ceiling) and pd.notna(floor) and trained < LEARNED_MIN * ceiling:
        return False, f"members did not learn it: CAT1 below {LEARNED_MIN:.0%} of the Bayes accuracy"
    return keep_rule(floor, ceiling, ceiling_min=0.0)


def gain_intervals(long: pd.DataFrame) -> pd.DataFrame:
    """Every CATn - CAT1 per target, in points: mean and 95 % paired t interval over seed sets."""
    full = _full(long)
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


def decide(gain: tuple, vs_untrained: tuple, kept: bool) -> str:
    """The verdict rules of this module's docstring, on (mean, low, high, n) intervals in points."""
    if not kept:
        return "uninformative"
    _, lo, hi, n = gain
    if n < 2 or pd.isna(lo):
        return "inconclusive"
    if hi < 0:
        return "differs"
    if lo > 0 and pd.notna(vs_untrained[1]) and vs_untrained[1] > 0:
        return "agrees"
    return "inconclusive"


def verdicts(long: pd.DataFrame, calib: pd.DataFrame) -> pd.DataFrame:
    """Per target: CATmax - CAT1 and trained - untrained CATmax (points, 95 % paired intervals), verdict."""
    full = _full(long)
    n_max = _n_max(full)
    top = _per_set(full, f"CAT{n_max}")
    gain = (top - _per_set(full, CAT1)).dropna() * 100
    vs_random = (top - _per_set(full, f"untrained CAT{n_max}")).dropna() * 100
    rows = []
    for task in calib.index:
        g = paired_interval(gain.xs(task, level="task") if task in gain.index.get_level_values(0) else [])
        r = paired_interval(
            vs_random.xs(task, level="task") if task in vs_random.index.get_level_values(0) else []
        )
        rows.append(
            {
                "target": task,
                f"CAT{n_max} - CAT1": g[0],
                "low": g[1],
                "high": g[2],
                f"CAT{n_max} - untrained CAT{n_max}": r[0],
                "low (vs untrained)": r[1],
                "high (vs untrained)": r[2],
                "seed sets": g[3],
                "verdict": decide(g, r, bool(calib.loc[task, "kept"])),
                "why": calib.loc[task, "why not"],
            }
        )
    out = pd.DataFrame(rows).set_index("target")
    out.attrs["n_max"] = n_max
    return out


def fmt_interval(mean: float, lo: float, hi: float) -> str:
    """'+1.2 [-0.3, +2.7]' (points), or the mean alone without an interval."""
    if pd.isna(mean):
        return "-"
    return f"{mean:+.1f}" if pd.isna(lo) else f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per target and a count, in the words the verdicts use (no task is counted twice).
    `table` is `verdicts(...)` or the 04_verdicts.csv it was written to (read with index_col=0)."""
    n = next(int(m[1]) for c in table.columns if (m := re.fullmatch(r"CAT(\d+) - CAT1", c)))
    lines = []
    for task, r in table.iterrows():
        gain = fmt_interval(r[f"CAT{n} - CAT1"], r["low"], r["high"])
        vs = fmt_interval(r[f"CAT{n} - untrained CAT{n}"], r["low (vs untrained)"], r["high (vs untrained)"])
        text = f"- **{task}**: CAT{n} - CAT1 = {gain} points; trained - untrained CAT{n} = {vs}: **{r['verdict']}**"
        lines.append(text + (f" ({r['why']})." if r["verdict"] == "uninformative" else "."))
    transfer = table.drop(index=[IID], errors="ignore")
    counts = transfer["verdict"].value_counts()
    lines.append(
        f"- Over the {len(transfer)} transfer targets (95 % paired t intervals over seed sets): "
        + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
        + ". Uninformative targets cannot discriminate and are not counted for or against the paper."
    )
    return lines


def ood_lines(table: pd.DataFrame) -> list[str]:
    """Two sentences: the OOD targets' verdicts, and whether they agree with the cue targets' verdicts.
    `table` is `verdicts(...)` or its CSV (index_col=0)."""
    n = next(int(m[1]) for c in table.columns if (m := re.fullmatch(r"CAT(\d+) - CAT1", c)))
    ood = table[table.index.isin(OOD_TARGETS)]
    if ood.empty:
        return []
    cue = table.drop(index=[IID, *OOD_TARGETS], errors="ignore")
    parts = [
        f"{t} {r['verdict']} (CAT{n} - CAT1 = {fmt_interval(r[f'CAT{n} - CAT1'], r['low'], r['high'])})"
        for t, r in ood.iterrows()
    ]
    first = "Out of distribution: " + "; ".join(parts) + "."
    kept_ood = ood[ood["verdict"] != "uninformative"]
    kept_cue = cue[cue["verdict"] != "uninformative"]
    if kept_ood.empty:
        second = "Neither OOD target can discriminate, so they say nothing for or against the cue columns."
    elif kept_cue.empty:
        second = "No cue target can discriminate, so the OOD columns have nothing to agree with."
    else:
        a, b = sorted(set(kept_ood["verdict"])), sorted(set(kept_cue["verdict"]))
        word = "agree with" if a == b else "differ from"
        second = f"The OOD columns ({', '.join(a)}) {word} the kept cue columns ({', '.join(b)})."
    return [f"- {first}", f"- {second}"]
