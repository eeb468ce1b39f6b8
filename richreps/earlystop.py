"""Early-stopped single networks: what a practitioner would keep of one long run, chosen without target data.

    values["early_stop_controls"] = True     # notebook 03: CAT1's and WIDE1's runs export every eighth
    step = best_export(validation_curve(run_dir, seed), candidates)   # notebook 04: the pick

CAT1-ES is the export along CAT1's own run with the best pretraining validation accuracy; WIDE1-ES the same
along WIDE1's run; SINGLE-ES, per seed set, whichever of the two scored higher on that validation set (the
strongest single network one could pick without looking at a target). The exports come every eighth of the
run (`eighths`), and the validation accuracy of each is the one pretraining logged at that step
(`eval_every` must divide an eighth: `check`). Nothing here reads a target's data: the functions take a
run's own metrics and its export steps, so no target can move the pick (tests/test_earlystop.py).

torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SWITCH = "early_stop_controls"  # notebook 03's parameter
SOURCES = {"CAT1-ES": "CAT1", "WIDE1-ES": "WIDE1"}  # each early-stopped control and the run it picks from
BEST = "SINGLE-ES"  # per seed set, the early-stopped control with the better pretraining validation accuracy


def eighths(steps: int) -> list[int]:
    """Every eighth of a run of `steps` steps, its end included."""
    return sorted({steps * j // 8 for j in range(1, 9)} - {0})


def exports_for(source: str, values: Mapping) -> list[int]:
    """The extra exports run `source` ("CAT1", "WIDE1") makes when the early-stopped controls are on."""
    return eighths(values["baseline_steps"]) if values.get(SWITCH) and source in SOURCES.values() else []


def check(values: Mapping) -> None:
    """ValueError naming the key when the runs would not log a validation accuracy at every eighth."""
    if not values.get(SWITCH):
        return
    every = values.get("eval_every", 0)
    missing = [s for s in eighths(values["baseline_steps"]) if not every or s % every]
    if missing:
        raise ValueError(
            f"eval_every: {every} logs no validation accuracy at step(s) {missing} (every eighth of "
            f"baseline_steps {values['baseline_steps']}), which {SWITCH} picks from; use a divisor of "
            f"{values['baseline_steps'] // 8}"
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
        raise ValueError(f"no validation accuracy logged at step(s) {missing}: eval_every must divide them")
    return max(candidates, key=lambda s: (curve[s], -s))


def picks(plan: Any) -> list[dict[str, tuple[str, int, int, float]]]:
    """Per seed set of a plan file's record (`planfile.PlanRecord`, not imported: planfile imports the planner,
    which imports this module): {control: (source, seed, step, validation
    accuracy)} for CAT1-ES, WIDE1-ES where WIDE1 was trained, and SINGLE-ES, the better of the two (a tie:
    CAT1-ES, the cheaper). Candidates are the source run's exports at every eighth of its main steps."""
    out = []
    wide = plan.control("WIDE1")
    for k, by_n in enumerate(plan.cats):
        sources = {"CAT1-ES": (plan.run_dir, by_n[1][0], plan.trajectories[k] if plan.trajectories else [])}
        if wide is not None:
            sources["WIDE1-ES"] = (wide.run_dir, wide.members[k], wide.along[k] if wide.along else [])
        chosen = {}
        for name, (run_dir, (seed, steps), exports) in sources.items():
            exported = {tuple(e) for e in exports}
            candidates = [s for s in eighths(steps) if (seed, s) in exported or s == steps]
            if len(candidates) < len(eighths(steps)):
                raise ValueError(
                    f"{name}: {SOURCES[name]}'s run of seed {seed} exports {sorted(s for _, s in exports)}, not every "
                    f"eighth of its {steps} steps; run notebook 03 with {SWITCH}: true"
                )
            curve = validation_curve(run_dir, seed)
            step = best_export(curve, candidates)
            chosen[name] = (SOURCES[name], seed, step, curve[step])
        best = max(chosen, key=lambda n: (chosen[n][3], n == "CAT1-ES"))
        out.append({**chosen, BEST: chosen[best]})
    return out
