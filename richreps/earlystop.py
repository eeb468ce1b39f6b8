"""Early-stopped single networks: what a practitioner would keep of one long run, chosen without target data.

    values["early_stop_controls"] = True     # notebook 03: CAT1's and WIDE1's runs export every eighth
    values["early_stop_sweep"] = True        # ... of every sweep budget too (the map's cells)
    step = best_export(validation_curve(run_dir, seed), candidates)   # notebook 04: the pick
    picks(plan, budget)                      # per seed set, at the main budget or at a sweep budget

CAT1-ES is the export along CAT1's own run with the best pretraining validation accuracy; WIDE1-ES the same
along WIDE1's run; SINGLE-ES, per seed set, whichever of the two scored higher on that validation set (the
strongest single network one could pick without looking at a target). The exports come every eighth of the
run (`eighths`), and the validation accuracy of each is the one pretraining logged at that step (the
planner marks these exports `budget.CANDIDATE`; the launcher passes them to pretraining as `--eval-at`). At a sweep budget B (`early_stop_sweep`), the candidates are every eighth of that
budget's own runs (CAT1's and WIDE1's B steps): what a practitioner with B steps would have kept, the
exports of the same runs past B never looked at. Nothing here reads a target's data: the functions take a
run's own metrics and its export steps, so no target can move the pick (tests/test_earlystop.py).

torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SWITCH = "early_stop_controls"  # notebook 03's parameter
SWEEP_SWITCH = "early_stop_sweep"  # and the one that adds them at every sweep budget (the map's cells)
SOURCES = {"CAT1-ES": "CAT1", "WIDE1-ES": "WIDE1"}  # each early-stopped control and the run it picks from
BEST = "SINGLE-ES"  # per seed set, the early-stopped control with the better pretraining validation accuracy


def eighths(steps: int) -> list[int]:
    """Every eighth of a run of `steps` steps, its end included."""
    return sorted({steps * j // 8 for j in range(1, 9)} - {0})


def exports_for(source: str, values: Mapping) -> list[int]:
    """The extra exports run `source` ("CAT1", "WIDE1") makes when the early-stopped controls are on: every
    eighth of its main steps, and of each sweep budget's (CAT1's steps, WIDE1's too) with `early_stop_sweep`."""
    if not values.get(SWITCH) or source not in SOURCES.values():
        return []
    runs = [values["baseline_steps"], *(values.get("sweep_budgets", []) if values.get(SWEEP_SWITCH) else [])]
    return sorted({s for steps in runs for s in eighths(steps)})


def check(values: Mapping) -> None:
    """ValueError naming the key when `early_stop_sweep` asks for what is not planned, or when the runs would
    not be one run per seed (independent mode trains every export as a run of its own, from the start)."""
    if values.get(SWITCH) and values.get("plan_mode") == "independent":
        raise ValueError(
            f"{SWITCH}: picks among the exports of one run, and plan_mode independent trains each export as a "
            "separate run of the same seed; use plan_mode shared-prefix"
        )
    if values.get(SWEEP_SWITCH) and not values.get(SWITCH):
        raise ValueError(
            f"{SWEEP_SWITCH}: adds the early-stopped controls at every sweep budget; set {SWITCH} too"
        )


def validation_curve(run_dir: str | Path, seed: int) -> dict[int, float]:
    """{step: pretraining validation accuracy} as the run of `seed` logged it (metrics/seed<S>.jsonl)."""
    path = Path(run_dir) / "metrics" / f"seed{seed}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the early-stopped controls read it (run notebook 03)")
    curve = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if isinstance(row, dict) and "val_acc" in row and isinstance(row.get("step"), int):
            curve[row["step"]] = float(row["val_acc"])
    return curve


def best_export(curve: Mapping[int, float], candidates: list[int]) -> int:
    """The candidate step of best validation accuracy; a tie goes to the earlier step (less compute)."""
    missing = [s for s in candidates if s not in curve]
    if missing:
        raise ValueError(
            f"no validation accuracy logged at step(s) {missing}: the run was trained before these steps were "
            "early-stop candidates (pretrain's --eval-at); delete its run folder and run notebook 03 again"
        )
    return max(candidates, key=lambda s: (curve[s], -s))


def picks(plan: Any, budget: int | None = None) -> list[dict[str, tuple[str, int, int, float]]]:
    """Per seed set of a plan file's record (`planfile.PlanRecord`, not imported: planfile imports the planner,
    which imports this module): {control: (source, seed, step, validation accuracy)} for CAT1-ES, WIDE1-ES
    where WIDE1 was trained, and SINGLE-ES, the better of the two (a tie: CAT1-ES, the cheaper).
    Candidates are every eighth of the source run's steps at `budget` (None: the main budget), among its
    exports."""
    out = []
    wide = plan.control("WIDE1")
    for k, by_n in enumerate(plan.cats):
        cat1 = by_n[1][0] if budget is None else plan.sweeps[k][budget][1][0]
        along = [plan.trajectories, plan.candidates]  # CAT1's run: its trajectory, its early-stop steps
        exported = [*(m for ms in along if ms for m in ms[k]), *(m for ms in by_n.values() for m in ms)]
        sources = {"CAT1-ES": (plan.run_dir, cat1, exported)}
        if wide is not None:
            at = wide.members[k] if budget is None else wide.sweeps[k][budget]
            sources["WIDE1-ES"] = (wide.run_dir, at, wide.along[k] if wide.along else [])
        chosen = {}
        for name, (run_dir, (seed, steps), exports) in sources.items():
            exported_steps = {s for sd, s in map(tuple, exports) if sd == seed}
            candidates = [s for s in eighths(steps) if s in exported_steps or s == steps]
            if len(candidates) < len(eighths(steps)):
                switch = SWITCH if budget is None else f"{SWITCH} and {SWEEP_SWITCH}"
                raise ValueError(
                    f"{name}: {SOURCES[name]}'s run of seed {seed} exports {sorted(exported_steps)}, not every "
                    f"eighth of its {steps} steps; run notebook 03 with {switch}: true"
                )
            curve = validation_curve(run_dir, seed)
            step = best_export(curve, candidates)
            chosen[name] = (SOURCES[name], seed, step, curve[step])
        best = max(chosen, key=lambda n: (chosen[n][3], n == "CAT1-ES"))
        out.append({**chosen, BEST: chosen[best]})
    return out
