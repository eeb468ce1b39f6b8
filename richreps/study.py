"""The whole study as one object, built by one function from notebook 03's parameter values.

    study = plan_study(values)        # values: a params file over the notebooks' defaults (or globals())
    study.plans                       # the main TIME-CONCAT plan, one per seed set (richreps.budget)
    study.controls                    # each control with its recipe and plans (richreps.controls)
    study.variants                    # the main run varied: ablations of one recipe field, pools of the map

Notebook 03 plans with it and writes it (`richreps.planfile`), the resource plan counts what it trains
(`richreps.resources`), the runner's params check builds it before notebook 01 runs (`richreps.params`),
and notebook 04 reads what notebook 03 wrote. Every refusal of a plan (a warmup longer than a member,
seed sets sharing a seed, a pool the map cannot use) therefore happens here, once, naming the key.

A variant is the main run with one recipe field changed, trained into its own run folder:
- an **ablation** (issue 19) retrains CAT1, CATmax and the controls at the main budget with another value
  of `key` (label smoothing): seed set k pairs with seed set k of the main run;
- a **pool** of the map of regimes repeats the budget sweep (CAT1, CATmax and the controls at every sweep
  budget) on a pretraining pool of another size (`train_size`; 0: a fresh sample every step), on that
  pool's own scale: with its pilot plateau P (`map_plateaus`), every length in steps of the main run
  (CAT1's and the members' steps, the sweep budgets, the warmup) is scaled by P / `plateau_step`, so that a
  budget sits as far past the pool's own plateau as the main pool's budget sits past its own. A fresh
  stream has no plateau (no epochs) and takes the main pool's steps.
Both keep the main plan's seeds (the first `map_seed_sets` of its seed sets), so that a variant differs
from the main run only in what it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

from richreps import budget, controls, earlystop
from richreps.budget import Plan

if TYPE_CHECKING:
    from richreps.config import Recipe


@dataclass(frozen=True)
class Representation:
    """One row of Table 3's shape: a method and the member files it concatenates."""

    method: str
    n: int
    steps_per_member: int
    files: tuple[str, ...]

    @property
    def compute_steps(self) -> int:
        """Training steps this representation cost: n members x steps each (the paper's compute axis)."""
        return self.n * self.steps_per_member


@dataclass(frozen=True)
class ControlPlan:
    """A control as this study trains it: the registered control, its recipe and its plan per seed set."""

    control: controls.Control
    recipe: Recipe
    plans: list[Plan]
    name: str  # in the tables: the control's label for the study's CATmax (JOINT5)


@dataclass(frozen=True)
class Variant:
    """The main run with recipe field `key` set to `value` (and `changes`: every recipe field it changes,
    a pool's scaled warmup among them), trained into pretrain/<folder>/<recipe tag>."""

    kind: str  # "ablation" | "pool"
    key: str
    value: float | int
    recipe: Recipe
    plans: list[Plan]  # per seed set: CAT1 and CATmax (at the main budget, or at the sweep budgets)
    controls: list[ControlPlan] = field(default_factory=list)
    changes: dict = field(default_factory=dict)  # recipe field -> value, `key` included
    early_stop: tuple[bool, bool] = (False, False)  # (early_stop_controls, early_stop_sweep) as planned
    plateau: int = 0  # a pool's pilot plateau (0: none, or not measured)

    @property
    def folder(self) -> str:
        """Ablations sit beside the main run (their recipes' tags differ); a pool gets its own folder."""
        return f"pool-{self.value}" if self.kind == "pool" else "."

    @property
    def name(self) -> str:
        return pool_name(int(self.value)) if self.kind == "pool" else f"{self.key} {self.value}"


def pool_name(size: int) -> str:
    """How a pool is named in tables and figures."""
    return "fresh stream" if size == 0 else f"pool of {size:,}"


@dataclass(frozen=True)
class Study:
    recipe: Recipe  # the members'
    plans: list[Plan]  # per seed set
    other: Plan  # seed set 0 in the other plan mode: its training steps, shown beside the chosen mode's
    controls: list[ControlPlan]
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)  # a control asked for that this arch has not, and why
    early_stop: bool = False  # CAT1's and WIDE1's runs export every eighth (richreps.earlystop)
    early_stop_sweep: bool = False  # ... of every sweep budget too

    @property
    def n_max(self) -> int:
        return max(self.plans[0].cats)

    def trained(self) -> list[tuple[str, Recipe, list[Plan]]]:
        """Every set of plans the study trains, each with its recipe and run folder under pretrain/:
        the main run, each control, and each variant's run and controls."""
        out = [(".", self.recipe, self.plans), *((".", c.recipe, c.plans) for c in self.controls)]
        for v in self.variants:
            out += [(v.folder, v.recipe, v.plans), *((v.folder, c.recipe, c.plans) for c in v.controls)]
        return out


def _control_plans(values: Mapping, recipe: Recipe, plans: list[Plan], notes: list[str]) -> list[ControlPlan]:
    n_max = max(plans[0].cats)
    out: list[ControlPlan] = []
    used: set[int] = set()
    for c in controls.planned(values):
        changed = c.recipe(recipe, plans)
        if changed is None:
            notes.append(f"no {c.label(n_max)}: arch {recipe.arch} has none ({c.why})")
            continue
        cp = ControlPlan(c, changed, c.plans(plans, values, used), c.label(n_max))
        used |= {r.seed for p in cp.plans for r in p.runs}
        out.append(cp)
    return out


def _pool_error(recipe: Recipe, sizes: list[int], sweep_plan: Plan) -> str | None:
    """Why the map cannot use these pools, or None: the main run's own `train_size` (its sweep is already
    the map's first pool), a size twice, a pool smaller than one batch, data other than cue images (an
    ImageNet run has no pool to resize), and a map with no sweep budget left."""
    if recipe.data != "cues":
        return f"pools resize the cue-image pretraining set; pretrain_data is {recipe.data!r}"
    if recipe.train_size in sizes or len(set(sizes)) < len(sizes):
        return f"lists a size twice or train_size {recipe.train_size} itself (the main run's sweep)"
    if any(0 < s < recipe.global_batch for s in sizes):
        return f"a pool must hold at least one batch (global_batch {recipe.global_batch})"
    if not sweep_plan.sweep:
        return "the map is the budget sweep on each pool, and no sweep budget is left " + (
            f"(left out: {sweep_plan.left_out})" if sweep_plan.left_out else "(sweep_budgets is empty)"
        )
    return None


SCALED = (
    "baseline_steps",
    "total_steps",
    "warmup_steps",
    "plateau_step",
    "sweep_budgets",
)  # a pool's own scale


def pool_values(values: Mapping, size: int, plateau: int) -> dict:
    """The main run's parameter values on a pool of `size` images whose pilot plateau is `plateau` steps:
    each of `SCALED` times plateau / plateau_step (a fresh stream, size 0, has no plateau: plateau 0, the
    main pool's steps). ValueError naming `map_plateaus` where a length would not be a whole step."""
    if size == 0 or plateau == 0:
        if size == 0 and plateau:
            raise ValueError(
                f"map_plateaus: {plateau} for the fresh stream (pool 0), which has no plateau; use 0"
            )
        return {**values, "train_size": size}
    main = values.get("plateau_step", 0)
    if not main:
        raise ValueError(
            f"map_plateaus: {plateau} for pool {size} needs the main pool's plateau_step (it is 0)"
        )
    ratio, out = Fraction(plateau, main), {**values, "train_size": size}
    for key in SCALED:
        value = values[key]
        scaled = [v * ratio for v in value] if isinstance(value, list) else value * ratio
        whole = all(x.denominator == 1 for x in (scaled if isinstance(scaled, list) else [scaled]))
        if not whole:
            raise ValueError(
                f"map_plateaus: pool {size}'s plateau {plateau} scales {key} {value} by {plateau}/{main} to "
                f"{[float(x) for x in scaled] if isinstance(scaled, list) else float(scaled)}, not whole steps"
            )
        out[key] = [int(x) for x in scaled] if isinstance(scaled, list) else int(scaled)
    return out


def variants(values: Mapping, recipe: Recipe, notes: list[str] | None = None) -> list[Variant]:
    """The ablations (`ablate_label_smoothing`) and the map's pools (`map_pools`, on their own scale:
    `map_plateaus`) of these values, each on the main run's first `map_seed_sets` seed sets (0: all)."""
    notes = [] if notes is None else notes
    n_max = max(values["cat_sizes"])
    sets = values.get("map_seed_sets") or values["seed_sets"]
    if sets > values["seed_sets"]:
        raise ValueError(
            f"map_seed_sets: {sets} is more than seed_sets {values['seed_sets']} (the main run's)"
        )
    out = []
    smoothing = values.get("ablate_label_smoothing", [])
    if smoothing:  # CAT1, CATmax and WIDE1 at the main budget only: its contrasts are CATmax - WIDE1 and
        # CATmax - CAT1 (richreps.ablation), so no JOINTn and no early-stopped control is trained for it
        at_main = {**values, "cat_sizes": [n_max], "sweep_budgets": [], "trajectory_steps": [],
                   "seed_sets": sets, earlystop.SWITCH: False, earlystop.SWEEP_SWITCH: False,
                   "joint_control": False}  # fmt: skip
        plans = budget.plans_from_params(at_main)
        for value in smoothing:
            changed = recipe.replace(label_smoothing=value)
            if changed == recipe:
                raise ValueError(
                    f"ablate_label_smoothing: {value!r} is the recipe's own value; nothing to compare"
                )
            out.append(Variant("ablation", "label_smoothing", value, changed, plans,
                               _control_plans(at_main, changed, plans, notes), {"label_smoothing": value}))  # fmt: skip
    sizes = list(values.get("map_pools", []))
    plateaus = list(values.get("map_plateaus", [])) or [0] * len(sizes)
    if sizes and len(plateaus) != len(sizes):
        raise ValueError(
            f"map_plateaus: {len(plateaus)} values for {len(sizes)} map_pools; give one per pool"
        )
    if sizes:  # the budget sweep on each pool, on its own scale
        swept = {**values, "cat_sizes": [n_max], "trajectory_steps": [], "seed_sets": sets}
        why = _pool_error(recipe, sizes, budget.plans_from_params(swept)[0])
        if why is not None:
            raise ValueError(f"map_pools {sizes}: {why}")
        for size, plateau in zip(sizes, plateaus):
            own = pool_values(swept, size, plateau)
            plans = budget.plans_from_params(own)
            if not plans[0].sweep:
                raise ValueError(f"map_plateaus: pool {size}'s budgets {own['sweep_budgets']} are all left out "
                                 f"({plans[0].left_out})")  # fmt: skip
            changes = {"train_size": size, "warmup_steps": own["warmup_steps"]}
            changed = recipe.replace(**changes)
            flags = (bool(own.get(earlystop.SWITCH)), bool(own.get(earlystop.SWEEP_SWITCH)))
            out.append(Variant("pool", "train_size", size, changed, plans,
                               _control_plans(own, changed, plans, notes), changes, flags, plateau))  # fmt: skip
    return out


def plan_study(values: Mapping, recipe: Recipe | None = None) -> Study:
    """The study notebook 03's parameter values ask for; ValueError (naming the key) for one it refuses.
    `recipe`: the members' recipe when it is not built from `values` (`config.recipe_from_params`)."""
    if recipe is None:
        from richreps.config import recipe_from_params

        recipe = recipe_from_params(values)
    earlystop.check(values)
    plans = budget.plans_from_params(values)
    mode = values["plan_mode"]
    other_mode = "independent" if mode == "shared-prefix" else "shared-prefix"
    # the other mode's steps, without early-stop candidates (which only one run per seed can export)
    other = budget.plans_from_params(
        {**values, "plan_mode": other_mode, "seed_sets": 1, earlystop.SWITCH: False}
    )[0]
    notes: list[str] = []
    main_controls = _control_plans(values, recipe, plans, notes)
    found = variants(values, recipe, [])
    flags = bool(values.get(earlystop.SWITCH)), bool(values.get(earlystop.SWEEP_SWITCH))
    study = Study(recipe, plans, other, main_controls, found, notes, *flags)
    if recipe.pool_per_seed_set:  # the pool is drawn from seed // 100 (data.cues.pool_seed): it must be k
        for _, _, ps in study.trained():
            for k, p in enumerate(ps):
                wrong = [r.seed for r in p.runs if r.seed // 100 != k]
                if wrong:
                    raise ValueError(
                        f"seeds: pool_per_seed_set draws seed set {k}'s pool from seed // 100, and its run(s) of "
                        f"seed {wrong} would draw another set's; keep every seed, with the controls' offsets "
                        "(50, 60), below 100"
                    )
    return study


def describe(study: Study) -> list[str]:
    """Notebook 03's account of the study before anything trains: the plan's steps in both modes, the
    seed sets, each control, ablation and pool with its run folder."""
    plan, other, n_max = study.plans[0], study.other, study.n_max
    lines = [
        f"per seed set, {plan.mode}: {plan.training_steps} training steps; {other.mode}: {other.training_steps}",
        f"{len(study.plans)} replicate seed sets; the first:",
        f"compute per CATn (member steps summed): {plan.cat_compute()}",
        *(f"sweep budget {b} left out: {why}" for b, why in plan.left_out.items()),
        f"run folder: pretrain/{study.recipe.tag()} (named by the recipe's hash: another recipe trains into "
        "another folder)",
    ]
    for c in study.controls:
        steps = c.plans[0].cats[1][0][1]
        lines.append(
            f"{c.name}: one run of {steps} steps per seed set, seeds {[p.cats[1][0][0] for p in c.plans]}, "
            f"run folder pretrain/{c.recipe.tag()} ({c.control.why})"
        )
    lines += study.notes
    for v in study.variants:
        with_ = "".join(f" and {c.name}" for c in v.controls)
        where = "at the main budget" if v.kind == "ablation" else f"at budgets {sorted(v.plans[0].sweep)}"
        if v.plateau:
            where += f" (its own plateau {v.plateau}: warmup {v.recipe.warmup_steps})"
        where += f", {len(v.plans)} seed sets"
        folder = "" if v.folder == "." else f"{v.folder}/"
        lines.append(
            f"{v.kind} {v.name}: CAT1 and CAT{n_max}{with_} {where}, the main plan's seeds, run folder "
            f"pretrain/{folder}{v.recipe.tag()}"
        )
    return lines
