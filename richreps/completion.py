"""A pretraining run is done when its completion record says so, and only then.

Members are exported as the run goes, and the last member is written before the run's final evaluation
row and its final state. A run killed between the two (a runner killed, an OOM kill, a SLURM cancel) leaves
every member on disk and a metrics file without its last evaluation: reading "all members exist" as "done"
accepted it, and notebook 03 then wrote a final-evaluation table one row short. So `richreps.pretrain`
writes `<out>/done/seed<S>.json` last, after the members, the metrics and the final state, atomically; the
launcher skips a run only when that record names this recipe, these steps and these exports. A run without
it is started again and resumes from its checkpoints (bitwise on the same machine), so the re-run finishes
exactly what the killed run left. A run is not done either while a step it must validate at (an early-stop
candidate, `--eval-at`) has no validation accuracy in its metrics (`missing_evals`). A run finished before these records existed counts as done by the two
files it wrote last (`finished_before_records`), so existing run folders are not trained again.
"""

from __future__ import annotations

import json
from pathlib import Path

from richreps.config import Recipe
from richreps.io import read_jsonl, write_json


def done_path(run_dir: str | Path, seed: int) -> Path:
    """Where the completion record of `seed`'s run is."""
    return Path(run_dir) / "done" / f"seed{seed}.json"


def mark_done(run_dir: str | Path, seed: int, recipe: Recipe, steps: int, exports: list[int]) -> Path:
    """Record that the run of `seed` finished `steps` steps with these exports (written last, atomically)."""
    record = {"seed": seed, "steps": steps, "exports": sorted(exports), "recipe": recipe.to_dict()}
    return write_json(done_path(run_dir, seed), record)


def clear_done(run_dir: str | Path, seed: int) -> None:
    """A run that starts again is not done until it finishes again."""
    done_path(run_dir, seed).unlink(missing_ok=True)


def finished_before_records(run_dir: str | Path, seed: int, steps: int) -> bool:
    """A run from before completion records: its final state (`final/seed<S>.pt`, written last) exists and its
    metrics hold the evaluation at `steps` (written after its last member). Both come after everything a
    kill could leave half done, so such a run is not trained again (its members' recipes are checked apart)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics" / f"seed{seed}.jsonl"
    if not (run_dir / "final" / f"seed{seed}.pt").is_file() or not metrics.is_file():
        return False
    return any(r.get("step") == steps and "val_acc" in r for r in read_jsonl(metrics))


def missing_evals(run_dir: str | Path, seed: int, evals: list[int]) -> list[int]:
    """The steps of `evals` at which the metrics of `seed`'s run hold no validation accuracy (all of them when
    it has no metrics yet): an early-stop candidate asked for after the run passed it is evaluated again."""
    metrics = Path(run_dir) / "metrics" / f"seed{seed}.jsonl"
    logged = {r.get("step") for r in read_jsonl(metrics) if "val_acc" in r} if metrics.is_file() else set()
    return sorted(set(evals) - logged)


def is_done(
    run_dir: str | Path, seed: int, recipe: Recipe, steps: int, exports: list[int], evals: list[int] = ()
) -> bool:
    """Did the run of `seed` finish exactly `steps` steps, with this recipe, at least these exports and a
    validation accuracy logged at each of `evals`?"""
    if evals and missing_evals(run_dir, seed, evals):
        return False
    try:
        record = json.loads(done_path(run_dir, seed).read_text())
    except FileNotFoundError:
        return finished_before_records(run_dir, seed, steps)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    return (
        record.get("steps") == steps
        and set(exports) <= set(record.get("exports") or [])
        and recipe.diff(record.get("recipe")) is None
    )
