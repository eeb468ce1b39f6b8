"""Which targets can discriminate: floors, ceilings and the keep rules of results/PLAN.md.

    calib = calibration(long, bayes={IID: 0.469})   # chance, floors, ceiling per target; kept or not

A target's **floor** is the best untrained twin (what the networks decode before any training); its
**ceiling** is direct training on ample data at its best validation export, or, for the in-distribution
mixture, its exact Bayes accuracy. `range_keep_rule` keeps a target whose ceiling stands at least 20 points
above both floor and chance, from at least 3 seeds of direct training past its plateau (revision 2: judged
on the seed-mean validation curve, `seed_mean_plateaued`); the mixture is kept when CAT1 (revision 2: CAT1-ES,
its best pretraining-validation export) reaches 75 % of its Bayes accuracy. `richreps.verdicts` judges the
kept ones.

pandas only (no torch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import pandas as pd

from richreps.aggregate import DIRECT
from richreps.controls import PRIMARY as WIDE1
from richreps.targets import IID, SATURATED

CAT1 = "CAT1 (baseline)"
CEILING_MIN = 0.90  # a kept target's ceiling
FLOOR_GAP = 0.20  # a kept target's floor is at least this far below its ceiling
LEARNED_MIN = 0.75  # the mixture: trained CAT1 reaches this share of the Bayes accuracy
# The range keep rule (issue 19): a target discriminates when direct training, run to a measured plateau
# over enough seeds, stands this far above both the floor and chance. No fixed cut on the ceiling itself:
# a hard target with a wide range (shape: floor 14 %, ceiling 87 %) is the most telling one, not noise.
RANGE_MIN = 0.20
CEILING_SEEDS_MIN = 3


def all_labels(long: pd.DataFrame) -> pd.DataFrame:
    """The rows probed on all labelled examples (not the few-shot ones)."""
    return long[long["shots"].astype(str) == "all"]


def largest_cat(full: pd.DataFrame) -> int:
    """CATmax's n: the largest CAT (trained or untrained) in a long table."""
    return int(full.loc[full["method"].str.match(r"^(?:untrained )?CAT\d"), "n"].max())


def _per_set(full: pd.DataFrame, method: str) -> pd.DataFrame:
    """test_acc indexed by (task, replicate) for one method."""
    return full[full["method"] == method].groupby(["task", "replicate"])["test_acc"].mean()


def kept_targets(calib: pd.DataFrame | None) -> list[str]:
    """The targets a calibration table (`04_calibration`, indexed by target) keeps; none without a table."""
    return [] if calib is None else list(calib.index[calib["kept"].astype(bool)])


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
        curves = "val curve" in d and len(d) and bool(d["val curve"].notna().all())  # revision 2's rule
        row = {
            "target": task,
            "chance": chance.get(task, math.nan),
            **floors,
            "ceiling": (bayes or {}).get(task, math.nan)
            if iid
            else (d["test_acc"].mean() if len(d) else math.nan),
            "ceiling from": "Bayes accuracy (exact)" if iid else "direct training",
            "ceiling seeds": math.nan if iid else int(d["replicate"].nunique()),
            "plateaued": math.nan
            if iid or not recorded
            else (seed_mean_plateaued(d["val curve"]) if curves else bool(d["plateaued"].eq(True).all())),
            "trained CAT1": m.get(CAT1, math.nan),
            **({"trained CAT1-ES": m.get("CAT1-ES", math.nan)} if "CAT1-ES" in means.columns else {}),
            f"trained CAT{n_max}": m.get(f"CAT{n_max}", math.nan),
            **({f"trained {WIDE1}": m.get(WIDE1, math.nan)} if wide else {}),
        }
        row["kept"], row["why not"] = _keep(task, floor, row, recorded)
        rows.append(row)
    return pd.DataFrame(rows).set_index("target")


PLATEAU_TOLERANCE = 0.01  # revision 2: a last export at most 1 point above the best earlier one has plateaued


def seed_mean_plateaued(curves: Iterable[str]) -> bool:
    """Revision 2's plateau: the seed-mean validation curve of direct training (each row's "val curve", its
    exports' validation accuracies) ends at most `PLATEAU_TOLERANCE` above its best earlier export."""
    parsed = [{int(s): a for s, a in json.loads(c).items()} for c in curves]
    steps = sorted(set.intersection(*(set(c) for c in parsed)))
    mean = {s: sum(c[s] for c in parsed) / len(parsed) for s in steps}
    return len(steps) > 1 and mean[steps[-1]] - max(mean[s] for s in steps[:-1]) <= PLATEAU_TOLERANCE


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
    `ceiling_seeds` seeds; `plateaued` says the runs went past their plateau, so the ceiling is not an
    under-trained lower bound (revision 2: `seed_mean_plateaued`; version 1: every seed's best export was
    not its last). Kept when the ceiling stands at least `RANGE_MIN` above both the floor (what random
    features read) and chance.
    """
    missing = _unmeasured(floor, ceiling)
    if missing:
        return False, missing
    if ceiling_seeds < CEILING_SEEDS_MIN:
        seeds = f"{ceiling_seeds} seed" + ("" if ceiling_seeds == 1 else "s")
        return False, f"ceiling from {seeds} (needs {CEILING_SEEDS_MIN})"
    if not plateaued:
        return False, "ceiling still rising at its last export (not past its plateau)"
    if ceiling - floor < RANGE_MIN:
        return False, f"ceiling within {RANGE_MIN * 100:.0f} points of the floor"
    if ceiling - chance < RANGE_MIN:
        return False, f"ceiling within {RANGE_MIN * 100:.0f} points of chance"
    return True, ""


def _keep(task: str, floor: float, row: dict, plateau_recorded: bool) -> tuple[bool, str]:
    ceiling, chance = row["ceiling"], row["chance"]
    if task in SATURATED:
        return False, "saturated: random features read it (kept in the tables as a record, never judged)"
    if task == IID:  # the mixture's ceiling is exact: no seeds, no plateau; the members must learn it
        # revision 2: judged at CAT1's best pretraining-validation export (CAT1-ES), not where it overfits
        learner = "CAT1-ES" if pd.notna(row.get("trained CAT1-ES", math.nan)) else "CAT1"
        learned = row[f"trained {learner}"]
        if pd.isna(learned):  # a calibration (`richreps.calibrate --params`): no member yet
            return False, f"no trained CAT1 yet: kept if CAT1 reaches {LEARNED_MIN:.0%} of the Bayes accuracy"
        if pd.notna(ceiling) and pd.notna(floor) and learned < LEARNED_MIN * ceiling:
            return False, f"members did not learn it: {learner} below {LEARNED_MIN:.0%} of the Bayes accuracy"
        return range_keep_rule(floor, ceiling, chance, CEILING_SEEDS_MIN, True)
    if pd.notna(ceiling) and not plateau_recorded:
        return False, "no plateau recorded (direct training from before issue 19): rerun notebook 04"
    return range_keep_rule(floor, ceiling, chance, row["ceiling seeds"], bool(row["plateaued"]))
