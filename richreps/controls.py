"""The study's controls: single networks that TIME-CONCAT is compared with, each declared in one place.

    for c in controls.planned(values):                    # the controls notebook 03's parameters ask for
        recipe = c.recipe(members_recipe, n_max)           # how it is trained (None: not for this arch)
        plans = c.plans(main_plans, values)                # one run per seed set, exported at the sweep too

A control is one `Control` in `REGISTRY`: its name in the tables (its untrained twin is "untrained NAME",
the floor), the notebook 03 parameter that switches it on, how its recipe differs from the members', the
steps it trains, and its seed (the seed set's first seed + `seed_offset`, checked against every seed of
the study so that no initialisation or data order is shared). Planning (`richreps.study`), training
(`richreps.launch`), the plan file (`richreps.planfile`), probing (`richreps.experiment`) and the
contrasts (`richreps.verdicts`) read controls from here, so adding one is one `register` call.

torch-free: a plan, the resource plan and the report read it anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from richreps.budget import Plan, Run
from richreps.targets import SEED_MAX

if TYPE_CHECKING:
    from richreps.config import Recipe


@dataclass(frozen=True)
class Control:
    name: str  # the method in every table; its untrained twin is f"untrained {name}"
    switch: str  # notebook 03's parameter that asks for it (a bool)
    seed_offset: int  # seed set k's run uses that set's first seed + this
    change: Callable[[Recipe, int], Recipe | None]  # (members' recipe, CATmax's n) -> its recipe, or None
    steps_key: str = "baseline_steps"  # the parameter holding its training steps
    why: str = ""

    def recipe(self, members: Recipe, n_max: int) -> Recipe | None:
        """Its recipe, or None where the members' architecture has no such control."""
        return self.change(members, n_max)

    def plans(self, plans: list[Plan], values: Mapping, used: set[int] = frozenset()) -> list[Plan]:
        """One run per seed set of `plans`: `values[steps_key]` steps, exported at each of the plan's sweep
        budgets as well (CATmax - control by budget). Its seed must be free of every seed the study uses
        (`used`: other controls' seeds; the plans' own are added here)."""
        n_max = max(plans[0].cats)
        if not n_max <= self.seed_offset < 100:  # seed set k's seeds are its own + 100 k; untrained CATmax's
            raise ValueError(  # twins take offsets 0 .. n_max - 1 (richreps.experiment.UNTRAINED_SEED)
                f"{self.name}: seed offset {self.seed_offset} must lie in [{n_max}, 100) so that neither it nor "
                "its untrained twin shares a seed with a member or another seed set"
            )
        steps_main = values[self.steps_key]
        taken = {r.seed for p in plans for r in p.runs} | set(used)
        seeds = [p.cats[1][0][0] + self.seed_offset for p in plans]
        for k, s in enumerate(seeds):
            if s in taken or seeds.count(s) > 1:
                raise ValueError(
                    f"seeds: {self.name} of seed set {k} would use seed {s} (its first seed + "
                    f"{self.seed_offset}), which another run uses; choose seeds that leave first seed + "
                    f"{self.seed_offset} free"
                )
            if not 0 <= s <= SEED_MAX:
                raise ValueError(
                    f"seeds: {self.name} seed {s} is outside [0, {SEED_MAX}] (pretrain's --seed)"
                )
        out = []
        for s, p in zip(seeds, plans):
            steps = sorted({steps_main, *p.sweep})
            used_by = {t: self.name if t == steps_main else f"sweep {t}: {self.name}" for t in steps}
            sweep = {b: {1: [(s, b)]} for b in p.sweep}
            out.append(Plan({1: [(s, steps_main)]}, [Run(s, steps[-1], steps, used_by)], p.mode, sweep))
        return out


REGISTRY: dict[str, Control] = {}


def register(control: Control) -> Control:
    """Add a control to the study (a name twice is refused: its tables would mix two networks)."""
    if control.name in REGISTRY and REGISTRY[control.name] != control:
        raise ValueError(f"a control named {control.name!r} is registered already")
    REGISTRY[control.name] = control
    return control


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def planned(values: Mapping) -> list[Control]:
    """The registered controls notebook 03's parameter values switch on, in registration order."""
    return [c for c in REGISTRY.values() if values.get(c.switch)]


def _widened(recipe: Recipe, n_max: int) -> Recipe | None:
    return recipe.replace(last_mult=n_max) if recipe.arch == "small_cnn" else None


WIDE1 = register(
    Control(
        "WIDE1",
        "wide_control",
        50,
        _widened,
        why="one network of CATmax's feature dimension (small_cnn's last stage x CATmax), CAT1's steps: "
        "the paper's Table 2 baseline, and the primary contrast of results/PLAN.md",
    )
)
PRIMARY = WIDE1.name  # the plan's primary contrast is CATmax - PRIMARY where it was trained
