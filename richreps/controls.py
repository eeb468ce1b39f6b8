"""The study's controls: single networks that TIME-CONCAT is compared with, each declared in one place.

    for c in controls.planned(values):                    # the controls notebook 03's parameters ask for
        recipe = c.recipe(members_recipe, main_plans)      # how it is trained (None: not for this arch)
        plans = c.plans(main_plans, values)                # one run per seed set, exported at the sweep too

A control is one `Control` in `REGISTRY`: its name in the tables (its untrained twin is "untrained NAME",
the network its run starts from), the notebook 03 parameter that switches it on, how its recipe differs
from the members' (`change`: WIDE1 widens the last stage, JOINTn puts CATmax's towers in one network),
the steps it trains at each budget (`steps`: CAT1's for WIDE1, a CATmax member's for JOINTn, whose n
towers then cost CATmax's FLOPs), and its seed (the seed set's first seed + `seed_offset`, checked
against every seed of the study so that no data order is shared). Planning (`richreps.study`), training
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


def cat1_steps(plan: Plan, budget: int | None) -> int:
    """CAT1's steps at `budget` (None: the main budget): WIDE1's."""
    return plan.cats[1][0][1] if budget is None else plan.sweep[budget][1][0][1]


def catmax_member_steps(plan: Plan, budget: int | None) -> int:
    """The steps of one CATmax member at `budget` (None: the main budget): JOINTn's, so that its n towers
    cost what CATmax's n members cost."""
    cats = plan.cats if budget is None else plan.sweep[budget]
    return cats[max(cats)][0][1]


@dataclass(frozen=True)
class Control:
    name: str  # the method in every table; its untrained twin is f"untrained {name}"
    switch: str  # notebook 03's parameter that asks for it (a bool)
    seed_offset: int  # seed set k's run uses that set's first seed + this
    change: Callable[
        [Recipe, list[Plan], int], Recipe | None
    ]  # (members' recipe, plans, offset) -> its recipe
    steps: Callable[[Plan, int | None], int] = cat1_steps  # its steps at a budget (None: the main one)
    why: str = ""

    def label(self, n_max: int) -> str:
        """Its name in the tables: "JOINT{n}" reads JOINT5 beside CAT5."""
        return self.name.format(n=n_max)

    def recipe(self, members: Recipe, plans: list[Plan]) -> Recipe | None:
        """Its recipe, or None where the members' architecture has no such control."""
        return self.change(members, plans, self.seed_offset)

    def plans(self, plans: list[Plan], values: Mapping, used: set[int] = frozenset()) -> list[Plan]:
        """One run per seed set of `plans`: `values[steps_key]` steps, exported at each of the plan's sweep
        budgets as well (CATmax - control by budget). Its seed must be free of every seed the study uses
        (`used`: other controls' seeds; the plans' own are added here)."""
        n_max = max(plans[0].cats)
        name = self.label(n_max)
        if not n_max <= self.seed_offset < 100:  # seed set k's seeds are its own + 100 k; untrained CATmax's
            raise ValueError(  # twins take offsets 0 .. n_max - 1 (richreps.experiment.UNTRAINED_SEED)
                f"{name}: seed offset {self.seed_offset} must lie in [{n_max}, 100) so that neither it nor "
                "its untrained twin shares a seed with a member or another seed set"
            )
        taken = {r.seed for p in plans for r in p.runs} | set(used)
        seeds = [p.cats[1][0][0] + self.seed_offset for p in plans]
        for k, s in enumerate(seeds):
            if s in taken or seeds.count(s) > 1:
                raise ValueError(
                    f"seeds: {name} of seed set {k} would use seed {s} (its first seed + "
                    f"{self.seed_offset}), which another run uses; choose seeds that leave first seed + "
                    f"{self.seed_offset} free"
                )
            if not 0 <= s <= SEED_MAX:
                raise ValueError(f"seeds: {name} seed {s} is outside [0, {SEED_MAX}] (pretrain's --seed)")
        out = []
        for s, p in zip(seeds, plans):
            main = self.steps(p, None)
            at = {b: self.steps(p, b) for b in p.sweep}  # its steps at each sweep budget
            steps = sorted({main, *at.values(), *extra_exports(name, values)})
            used_by = {t: name if t == main else f"{name} export" for t in steps}
            used_by |= {t: f"sweep {b}: {name}" for b, t in at.items() if t != main}
            sweep = {b: {1: [(s, t)]} for b, t in at.items()}
            evals = extra_exports(name, values)  # the candidates of its early-stopped control, if any
            out.append(Plan({1: [(s, main)]}, [Run(s, steps[-1], steps, used_by, evals)], p.mode, sweep))
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


def extra_exports(name: str, values: Mapping) -> list[int]:
    """Exports a control's run makes beyond its own steps: every eighth of the run for a run that an
    early-stopped control selects from (richreps.earlystop)."""
    from richreps import earlystop

    return earlystop.exports_for(name, values)


def _widened(recipe: Recipe, plans: list[Plan], offset: int) -> Recipe | None:
    return recipe.replace(last_mult=max(plans[0].cats)) if recipe.arch == "small_cnn" else None


def _joint(recipe: Recipe, plans: list[Plan], offset: int) -> Recipe | None:
    """CATmax's n members as the towers of one network, tower i starting from member i's initial weights:
    the run of seed (first seed + offset) initialises tower i with member i's seed, first seed + d_i, so
    tower_offsets[i] = d_i - offset, the same in every seed set (they shift their seeds alike)."""
    if recipe.arch != "small_cnn":  # n ResNet-50 towers at CATmax's FLOPs: not a control anyone planned
        return None
    offsets = set()
    for p in plans:
        first = p.cats[1][0][0]
        offsets.add(tuple(seed - first - offset for seed, _ in p.cats[max(p.cats)]))
    if len(offsets) != 1:
        raise ValueError(
            "seeds: JOINTn needs every seed set's CATmax seeds at the same distances from its first seed"
        )
    return recipe.replace(tower_offsets=offsets.pop())


WIDE1 = register(
    Control(
        "WIDE1",
        "wide_control",
        50,
        _widened,
        why="one network of CATmax's feature dimension (small_cnn's last stage x CATmax), CAT1's steps: "
        "the paper's Table 2 baseline (the primary contrast of results/PLAN.md version 1; revision 2's is CATmax - "
        "SINGLE-ES)",
    )
)
JOINT = register(
    Control(
        "JOINT{n}",
        "joint_control",
        60,
        _joint,
        catmax_member_steps,
        why="CATmax's architecture trained as one network: its n towers (from the members' initial weights) "
        "feed one classifier, for one CATmax member's steps, so CATmax's training FLOPs: CATmax - JOINTn is "
        "what independent, shorter runs add beyond architecture, dimension and compute",
    )
)
PRIMARY = WIDE1.name  # the plan's primary contrast is CATmax - PRIMARY where it was trained
