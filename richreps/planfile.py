"""The plan notebook 03 hands to notebook 04: one writer, one reader, one format.

    run_dir = planfile.write(output_dir / "pretrain", study)      # notebook 03, before anything trains
    main = planfile.read(output_dir / "pretrain")                  # notebook 04: recipe, run folder, CATs, ...
    pools = planfile.read_variants(output_dir / "pretrain", "pool")

`plan.json` holds the main run: its recipe, run folder, every seed set's CATs, budget sweep and trajectory,
and each control's recipe, run folder and members. `variants.json` holds the study's variants (ablations,
pools of the map), each a record of the same format with its kind, key, value and folder; it is written
on every run, empty when there are none, so that an earlier run's variants are never read as this one's.
Run folders are relative to the folder holding the record: a member's path does not depend on where the
outputs were moved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from richreps.io import write_json
from richreps.members import member_path

if TYPE_CHECKING:
    from richreps.budget import Plan
    from richreps.config import Recipe
    from richreps.study import ControlPlan, Study

PLAN_FILE = "plan.json"
VARIANTS_FILE = "variants.json"
Members = list[tuple[int, int]]  # (seed, steps) of each member of a representation


@dataclass(frozen=True)
class ControlRecord:
    name: str
    recipe: Recipe
    run_dir: Path
    members: Members  # per seed set: its run at the control's steps
    sweeps: list[dict[int, tuple[int, int]]]  # per seed set: budget -> its export at that budget
    seed_offset: int  # its run of seed set k uses that set's first seed + this
    along: list[Members] = field(default_factory=list)  # per seed set: every export of its run (early stops)


@dataclass(frozen=True)
class PlanRecord:
    recipe: Recipe
    run_dir: Path
    mode: str
    cats: list[dict[int, Members]]  # per seed set: n -> members
    sweeps: list[dict[int, dict[int, Members]]] = field(
        default_factory=list
    )  # per seed set: budget -> n -> ...
    trajectories: list[Members] = field(default_factory=list)  # per seed set: CAT1's seed along its run
    candidates: list[Members] = field(default_factory=list)  # per seed set: its early-stop candidates
    controls: list[ControlRecord] = field(default_factory=list)
    early_stop: bool = False  # CAT1's and WIDE1's runs export every eighth (richreps.earlystop)
    early_stop_sweep: bool = False  # ... of every sweep budget too: the early-stopped controls in every cell

    def control(self, name: str) -> ControlRecord | None:
        return next((c for c in self.controls if c.name == name), None)


@dataclass(frozen=True)
class VariantRecord:
    kind: str
    key: str
    value: float | int
    plan: PlanRecord
    changes: dict = field(default_factory=dict)  # every recipe field the variant changes (`key` among them)
    plateau: int = 0  # a pool's pilot plateau (richreps.study.pool_values), 0: none


def _cats(cats: dict[int, Members]) -> dict[str, list[list[int]]]:
    return {str(n): [list(m) for m in ms] for n, ms in cats.items()}


def _record(
    folder: str, recipe: Recipe, plans: list[Plan], ctrls: list[ControlPlan], early_stop: tuple[bool, bool]
) -> dict:
    """One plan record; `folder` (relative to the file) holds the run folders."""

    def rel(r: Recipe) -> str:
        return str(Path(folder) / r.tag())

    record = {
        "recipe": recipe.to_dict(),
        "run_dir": rel(recipe),
        "mode": plans[0].mode,
        "seed_sets": [_cats(p.cats) for p in plans],
        "sweeps": [{str(b): _cats(by_n) for b, by_n in p.sweep.items()} for p in plans],
        "trajectories": [[list(m) for m in p.trajectory] for p in plans],
        "candidates": [[list(m) for m in p.candidates] for p in plans],
        "early_stop": early_stop[0],
        "early_stop_sweep": early_stop[1],
        "controls": [
            {
                "name": c.name,
                "recipe": c.recipe.to_dict(),
                "run_dir": rel(c.recipe),
                "members": [list(p.cats[1][0]) for p in c.plans],
                "sweeps": [{str(b): list(by_n[1][0]) for b, by_n in p.sweep.items()} for p in c.plans],
                "seed_offset": c.control.seed_offset,
                "along": [[[run.seed, t] for run in p.runs for t in run.exports] for p in c.plans],
            }
            for c in ctrls
        ],
    }
    record["members"] = [  # every member file, for a reader of the folder (nothing in the package needs it)
        str(member_path(rel(r), run.seed, s)) for r, ps in [(recipe, plans), *((c.recipe, c.plans) for c in ctrls)]
        for p in ps for run in p.runs for s in run.exports
    ]  # fmt: skip
    return record


def write(pretrain_dir: str | Path, study: Study) -> Path:
    """plan.json and variants.json of `study` under `pretrain_dir`; returns the main run's folder."""
    pretrain_dir = Path(pretrain_dir)
    variants = [
        {
            "kind": v.kind,
            "key": v.key,
            "value": v.value,
            "changes": v.changes,
            "plateau": v.plateau,
            **_record(v.folder, v.recipe, v.plans, v.controls, v.early_stop),
        }  # fmt: skip
        for v in study.variants
    ]
    write_json(pretrain_dir / VARIANTS_FILE, variants)
    flags = (study.early_stop, study.early_stop_sweep)
    write_json(pretrain_dir / PLAN_FILE, _record(".", study.recipe, study.plans, study.controls, flags))
    return pretrain_dir / study.recipe.tag()


def _parse(record: dict, base: Path) -> PlanRecord:
    from richreps.config import Recipe

    def members(ms) -> Members:
        return [tuple(m) for m in ms]

    return PlanRecord(
        Recipe.from_dict(record["recipe"]),
        base / record["run_dir"],
        record["mode"],
        [{int(n): members(ms) for n, ms in s.items()} for s in record["seed_sets"]],
        [
            {int(b): {int(n): members(ms) for n, ms in by_n.items()} for b, by_n in s.items()}
            for s in record["sweeps"]
        ],
        [members(t) for t in record["trajectories"]],
        [members(t) for t in record.get("candidates", [])],
        [
            ControlRecord(
                c["name"],
                Recipe.from_dict(c["recipe"]),
                base / c["run_dir"],
                members(c["members"]),
                [{int(b): tuple(m) for b, m in s.items()} for s in c["sweeps"]],
                int(c["seed_offset"]),
                [members(a) for a in c.get("along", [])],
            )
            for c in record["controls"]
        ],
        bool(record.get("early_stop", False)),
        bool(record.get("early_stop_sweep", False)),
    )


def read(pretrain_dir: str | Path) -> PlanRecord:
    """The main run's plan as notebook 03 wrote it."""
    path = Path(pretrain_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebook 03 first")
    record = json.loads(path.read_text())
    if "controls" not in record:
        raise ValueError(f"{path}: written by an earlier version (no 'controls' key); run notebook 03 again")
    if record.get("early_stop") and "candidates" not in record:  # c2b05cc kept them in the trajectory
        raise ValueError(
            f"{path}: written by an earlier version (no 'candidates' key); run notebook 03 again"
        )
    return _parse(record, Path(pretrain_dir))


def read_variants(pretrain_dir: str | Path, kind: str | None = None) -> list[VariantRecord]:
    """This run's variants (of `kind`, or all), each checked to be the main run's recipe with its one
    field changed: a variant of another main run is refused, naming the file."""
    pretrain_dir = Path(pretrain_dir)
    path = pretrain_dir / VARIANTS_FILE
    if not path.is_file():
        return []
    main = read(pretrain_dir).recipe
    out = []
    for rec in json.loads(path.read_text()):
        changes = rec.get("changes") or {rec["key"]: rec["value"]}
        v = VariantRecord(rec["kind"], rec["key"], rec["value"], _parse(rec, pretrain_dir), changes,
                          int(rec.get("plateau", 0)))  # fmt: skip
        expected = main.replace(**changes)
        if v.key not in changes or v.plan.recipe != expected:
            said = ", ".join(f"{k} {x}" for k, x in changes.items())
            raise ValueError(
                f"{path}: the {v.kind} {v.key} {v.value} has recipe {v.plan.recipe.tag()}, not the main run's "
                f"with {said} ({expected.tag()}); run notebook 03 again"
            )
        if kind is None or v.kind == kind:
            out.append(v)
    return out
