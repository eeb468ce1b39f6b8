"""Ablations of the study's recipe (issue 19): CAT1, CATmax and the controls retrained at the main budget
with one recipe field changed, probed like the main run, both contrasts set beside the main run's.

    study = plan_study(values); planfile.write(...)                              # notebook 03 (richreps.study)
    rows = ablation.probe(output_dir / "pretrain", tasks, sizes, grid, cache)      # notebook 04
    table = ablation.contrasts(long, rows, "label_smoothing", recipe.label_smoothing, tasks)

The field the study asks about is label smoothing: the paper's recipe (AlgoPerf's) uses 0.2, which is known
to change how transferable penultimate features are. An ablation keeps the main plan's seeds, so seed set k
of the ablation pairs with seed set k of the main run, and each seed set probes the same sample as there.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from richreps import experiment, planfile, verdicts


def probe(
    pretrain_dir: str | Path,
    tasks: list[str],
    sizes: dict[str, int],
    grid: list[float],
    cache: str | Path,
    device: str = "cpu",
) -> list[dict]:
    """Every ablation's CAT1, CATmax and controls probed on `tasks` (and the mixture), all labelled
    examples; each row carries the ablated field and its value. No ablation: no rows."""
    rows: list[dict] = []
    for v in planfile.read_variants(pretrain_dir, "ablation"):
        plan = v.plan
        reps = experiment.representations(plan.cats, plan.run_dir, plan.recipe)
        for c in plan.controls:  # trained only: the untrained twins do not depend on the ablated field
            reps = {k: [*rs, experiment.control_rep(c, k)] for k, rs in reps.items()}
        found = experiment.probe_cues(reps, plan.recipe, tasks, sizes, grid, [], cache, device)
        rows += [{**r, v.key: v.value} for r in found]
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
    the target is kept (`kept`: the calibration's; only kept targets are read, the others shown).

    Each other value's row also gives the difference of each contrast from the main run's, paired by seed
    set ("CAT5 - WIDE1, <value> - main"): seed set k of an ablation starts from seed set k's
    initialisations, so the two settings' intervals are not independent and only the interval of their
    difference says whether the setting changed the contrast."""
    settings = [(main_value, long), *pd.DataFrame(rows).groupby(key, sort=True)]
    out, main_diffs = [], {}
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
                if value == main_value:
                    main_diffs[(task, name)] = diffs
                elif (task, name) in main_diffs:  # this setting - the main run's, seed set by seed set
                    change = (diffs - main_diffs[(task, name)]).dropna()
                    row[f"{cat} - {name}, setting - main"] = verdicts.fmt_interval(
                        *verdicts.paired_interval(change)[:3]
                    )
            if "seed sets" in row:  # a target with no contrast (not probed in this run) has no row
                out.append(row)
    return pd.DataFrame(out)


def write_table(out_dir: str | Path, table: pd.DataFrame | None, rows: list[dict] = ()) -> None:
    """tables/04_ablation.{csv,md} and its per-seed-set rows (`rows`, the probes of `probe`) in
    tables/04_ablation_long.{csv,md}, or their removal when this run has no ablation (no stale table)."""
    from richreps import io

    if table is None:
        for path in (Path(out_dir) / "tables").glob("04_ablation*.*"):
            path.unlink()
    else:
        io.write_table(table, out_dir, "04_ablation", index=False)
        if rows:
            io.write_table(pd.DataFrame(rows), out_dir, "04_ablation_long", index=False)
