"""What nbval checks in the cells whose numbers come from training or probing: the decisions, not the digits.

A training run's floating-point numbers differ between instruction sets (AVX-512, AVX2, SSE): oneDNN and the
BLAS pick kernels by the CPU, their summation orders differ, and the differences compound over training. A
committed notebook that compares those digits passes only on a CPU that rounds as the refreshing machine did.
So such a cell is marked `# NBVAL_IGNORE_OUTPUT`, and the cell after it calls one function of this module,
which

- asserts what must hold on every machine (accuracies in [0, 1], intervals that contain their mean, one row
  per planned seed or target, ...), raising `AssertionError` with the table's name, so a broken invariant
  still fails the notebook (nbval runs ignored cells too and fails on an exception);
- returns a short text of what the code decided (the table's rows and columns, which targets are kept, the
  verdict labels, which figures were written), which nbval compares exactly.

Every function here is pure pandas (no torch): the checks are unit-tested in `tests/test_nbcheck.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from richreps import controls
from richreps.verdicts import NOT_JUDGED

# aggregate.mean_sd_table's cells: 'mean ± sd', a mean alone (one seed set), or '-' (not measured)
MEAN_SD = re.compile(r"^-$|^(-?\d+(?:\.\d+)?)(?: ± (\d+(?:\.\d+)?))?$")


def _fail(name: str, what: str) -> None:
    raise AssertionError(f"{name}: {what}")


def _labels(values: Iterable) -> str:
    return ", ".join(" / ".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in values)


def layout(frame: pd.DataFrame, name: str) -> str:
    """'name: R rows (a, b, ...); columns: x, y, ...': what a table is, not its digits."""
    return f"{name}: {len(frame)} rows ({_labels(frame.index)}); columns: {_labels(frame.columns)}"


def check_range(
    frame: pd.DataFrame, columns: Iterable[str], name: str, low: float = 0.0, high: float = 1.0
) -> None:
    """Every non-missing value of `columns` lies in [low, high] (fractions by default)."""
    for c in columns:
        if c not in frame:
            _fail(name, f"column {c!r} is missing")
        values = pd.to_numeric(frame[c], errors="coerce").dropna()
        bad = values[(values < low) | (values > high)]
        if len(bad):
            _fail(name, f"{c} = {bad.iloc[0]} outside [{low}, {high}]")


def check_intervals(frame: pd.DataFrame, triples: Iterable[tuple[str, str, str]], name: str) -> None:
    """low <= mean <= high wherever the interval was computed (a single seed set has none)."""
    for mean, low, high in triples:
        for target, row in frame.iterrows():
            m, lo, hi = row[mean], row[low], row[high]
            if any(pd.isna(v) for v in (m, lo, hi)):
                continue
            if not lo - 1e-9 <= m <= hi + 1e-9:
                _fail(name, f"{target}: {mean} = {m} is outside its interval [{lo}, {hi}]")


def check_mean_sd(frame: pd.DataFrame, name: str, low: float = 0.0, high: float = 100.0) -> None:
    """Every cell of a 'mean ± sd' table (points) parses, with its mean in [low, high]."""
    for row, col, cell in ((r, c, frame.at[r, c]) for r in frame.index for c in frame.columns):
        m = MEAN_SD.match(str(cell))
        if not m:
            _fail(name, f"{row} / {col}: {cell!r} is not 'mean ± sd', a mean, or '-'")
        if m[1] is not None and not low <= float(m[1]) <= high:
            _fail(name, f"{row} / {col}: mean {m[1]} is outside [{low:g}, {high:g}] points")


def mean_sd_table(frame: pd.DataFrame, name: str, gains: bool = False) -> str:
    """A table of 'mean ± sd' cells: accuracies in [0, 100] points (`aggregate.table3`, `few_shot`), or
    differences of accuracies in [-100, 100] (`gains=True`: `aggregate.gains_table`)."""
    check_mean_sd(frame, name, -100.0 if gains else 0.0)
    return layout(frame, name)


def percent_table(frame: pd.DataFrame, name: str) -> str:
    """A table of accuracies in points (`aggregate.coverage`, notebook 05's pivots)."""
    check_range(frame, frame.columns, name, 0.0, 100.0)
    return layout(frame, name)


def saved_final_eval(frame: pd.DataFrame) -> str:
    """Notebook 05's reading of `03_final_eval.csv`: val_acc in [0, 1], one row per seed, and each seed's last
    step (planned, so the same everywhere)."""
    name = "03_final_eval"
    check_range(frame, ["val_acc"], name)
    if frame["seed"].duplicated().any():
        _fail(name, "a seed has two rows")
    pairs = ", ".join(
        f"{s}@{t}" for s, t in sorted(zip(frame["seed"].astype(int), frame["step"].astype(int)))
    )
    return f"{layout(frame, name)}\nseed@last step: {pairs}"


def final_eval(last: pd.DataFrame, runs: Iterable[tuple[int, int]], cat1_seeds: Iterable[int],
               chance: float | None) -> str:  # fmt: skip
    """Notebook 03's last evaluation per seed: one row per planned run (`runs`: (seed, steps)), each at its
    run's last step, accuracies in [0, 1], and CAT1's runs above `chance` (None: not known, not checked)."""
    name = "03_final_eval"
    planned = dict(runs)
    check_range(last, ["val_acc"], name)
    if last[["val_loss", "val_acc"]].isna().any().any():
        _fail(name, "a val_loss or val_acc is missing (NaN)")
    if last["seed"].duplicated().any():
        _fail(name, f"seed {last.loc[last['seed'].duplicated(), 'seed'].iloc[0]} has two rows")
    got = dict(zip(last["seed"].astype(int), last["step"].astype(int)))
    if sorted(got) != sorted(planned):
        _fail(name, f"rows for seeds {sorted(got)}, planned {sorted(planned)}")
    wrong = [s for s, step in got.items() if step != planned[s]]
    if wrong:
        _fail(name, f"seed {wrong[0]}'s last evaluation is at step {got[wrong[0]]}, not {planned[wrong[0]]}")
    cat1 = sorted(cat1_seeds)
    if chance is not None:
        acc = last.set_index("seed")["val_acc"]
        low = [s for s in cat1 if not acc[s] > chance]
        if low:
            _fail(name, f"CAT1 (seed {low[0]}) is at chance ({acc[low[0]]} <= {chance:g}) at its last step")
    said = "above chance" if chance is not None else "(chance unknown: not compared)"
    return (
        f"{name}: one row per planned run, each at its last step; seeds {sorted(got)}; columns "
        f"{_labels(last.columns)}; val_acc in [0, 1]; CAT1 (seeds {cat1}) {said}"
    )


def final_eval_of_plans(last: pd.DataFrame, plans, recipe) -> str:
    """`final_eval` for notebook 03's `budget.Plan`s and recipe: every run of every seed set, CAT1's seeds,
    and the pretraining task's chance."""
    runs = [(r.seed, r.steps) for p in plans for r in p.runs]
    return final_eval(last, runs, [p.cats[1][0][0] for p in plans], pretrain_chance(recipe))


def calibration(calib: pd.DataFrame) -> str:
    """Notebook 04's floors and ceilings: fractions in [0, 1], and which targets are kept and why not."""
    name = "04_calibration"
    numbers = [
        c for c in calib.columns if c == "chance" or c == "ceiling" or c.startswith(("floor", "trained"))
    ]
    check_range(calib, numbers, name)
    kept = [t for t in calib.index if bool(calib.loc[t, "kept"])]
    lines = [layout(calib, name), f"kept: {', '.join(kept) or 'none'}"]
    for t in calib.index:
        seeds = calib.loc[t, "ceiling seeds"]
        source = f"{calib.loc[t, 'ceiling from']}" + ("" if pd.isna(seeds) else f", {int(seeds)} seeds")
        said = "kept" if t in kept else f"not kept ({calib.loc[t, 'why not']})"
        lines.append(f"{t}: chance {calib.loc[t, 'chance']:g}; ceiling from {source}; {said}")
    return "\n".join(lines)


def verdicts(table: pd.DataFrame, calib: pd.DataFrame) -> str:
    """Notebook 04's verdict table: one row per calibrated target, intervals that contain their mean, and
    each target's verdict before and after Holm."""
    name = "04_verdicts"
    if list(table.index) != list(calib.index):
        _fail(name, f"rows {list(table.index)}, one per calibrated target {list(calib.index)} expected")
    triples = [(c, "low", "high") for c in table.columns if re.fullmatch(r"CAT\d+ - CAT1", c)]
    named = [(c, c.rpartition(" - ")[2]) for c in table.columns if re.fullmatch(r"CAT\d+ - \S+", c)]
    triples += [(c, f"low (vs {n})", f"high (vs {n})") for c, n in named if n in controls.REGISTRY]
    triples += [(c, "low (vs untrained)", "high (vs untrained)") for c in table.columns if "- untrained" in c]
    shares = [
        c.removeprefix("training's share vs ") for c in table.columns if c.startswith("training's share vs ")
    ]
    triples += [(f"training's share vs {n}", f"low (share vs {n})", f"high (share vs {n})") for n in shares]
    check_intervals(table, triples, name)
    check_range(table, ["p", "p (Holm)"], name)
    for t in table.index:
        if bool(calib.loc[t, "kept"]) != (table.loc[t, "verdict"] not in NOT_JUDGED):
            _fail(
                name, f"{t}: verdict {table.loc[t, 'verdict']!r} disagrees with kept = {calib.loc[t, 'kept']}"
            )
    lines = [layout(table, name)]
    for t, r in table.iterrows():
        holm = f", survives Holm: {r['survives Holm']}" if r.get("survives Holm") else ""
        lines.append(
            f"{t}: {r['verdict']} -> {r['verdict (Holm)']} (primary {r['primary']}, {r['seed sets']} seed sets"
            f"{holm}; {r['why'] or 'kept'})"
        )
    return "\n".join(lines)


def verdict_labels(table: pd.DataFrame) -> str:
    """Notebook 05's reading of the saved verdict table: its targets and their verdicts after Holm."""
    return "\n".join(f"{t}: {v}" for t, v in table["verdict (Holm)"].items())


def lines(sentences: list[str], name: str) -> str:
    """Generated result sentences: how many, each a Markdown bullet (their digits are not compared)."""
    bad = [s for s in sentences if not s.startswith("- ")]
    if bad:
        _fail(name, f"{bad[0][:60]!r} is not a Markdown bullet")
    return f"{name}: {len(sentences)} sentences"


def figures_written(out: str | Path, names: Iterable[str]) -> str:
    """Each named figure exists as PNG and PDF under <out>/figures."""
    folder = Path(out) / "figures"
    missing = [f"{n}.{ext}" for n in names for ext in ("png", "pdf") if not (folder / f"{n}.{ext}").is_file()]
    if missing:
        _fail("figures", f"{missing[0]} was not written in {folder}")
    return f"figures written: {', '.join(names)}"


def pretrain_chance(recipe) -> float | None:
    """Chance accuracy of the pretraining task: 1 / classes on the cue mixture; None for a folder dataset
    (counting its classes would walk it: the check is skipped and says so)."""
    if recipe.data == "cues":
        from richreps.data.cues import N_VALUES  # torch: imported only where a notebook already has it

        return 1 / N_VALUES
    return None
