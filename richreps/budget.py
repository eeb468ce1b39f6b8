"""The TIME-CONCAT compute plan: which members to train, for how long, and what it costs.

    python -m richreps.budget --total 400000 --baseline 450000 --cat 2 4 5 --mode shared-prefix

CAT1 is one member trained for the baseline's steps; CATn is n members of cat_budget // n steps
(`--total`, the paper's "total iters": 400K).
Schedule-free AdamW has no schedule tied to the run's length, so with a fixed warmup the
model at step t of a longer run *is* the t-step model of the same seed and data order.
Shared-prefix mode uses this: each seed trains once, to the largest step any CAT needs from
it, and exports members on the way. Independent mode trains every member separately.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from richreps import earlystop
from richreps.targets import SEED_MAX

MODES = ("shared-prefix", "independent")
# No member shorter than this many warmups (issue 19): a member that ends inside or just after its
# warmup measures the warmup, not training. Shared-prefix needs a warmup fixed in steps, so instead of
# scaling the warmup with the member (AlgoPerf's share of the run), sweep budgets whose CATmax members
# would be shorter are left out and named (`Plan.left_out`).
WARMUP_MULT = 5
CANDIDATE = "early-stop candidate"  # an export an early-stopped control picks among: its run validates there


@dataclass
class Run:
    """One training run: a seed trained to `steps`, exporting members at `exports` and logging its
    pretraining validation accuracy at `evals` (the early-stop candidates among them) and at its end."""

    seed: int
    steps: int
    exports: list[int]
    used_by: dict[int, str] = field(default_factory=dict)  # export step -> "CAT1, CAT2"
    evals: list[int] = field(default_factory=list)


@dataclass
class Plan:
    cats: dict[int, list[tuple[int, int]]]  # n -> members as (seed, steps)
    runs: list[Run]
    mode: str
    # beyond the paper: CAT1 and CATn_max at other budgets (CAT1's steps -> {n: members}),
    # and CAT1's seed along its run (members as (seed, steps))
    sweep: dict[int, dict[int, list[tuple[int, int]]]] = field(default_factory=dict)
    trajectory: list[tuple[int, int]] = field(default_factory=list)
    left_out: dict[int, str] = field(default_factory=dict)  # sweep budget -> why it was left out
    # CAT1's seed at the early-stopped controls' candidate steps (richreps.earlystop), not probed as a trajectory
    candidates: list[tuple[int, int]] = field(default_factory=list)

    @property
    def training_steps(self) -> int:
        """Optimizer steps this plan actually trains: the sum over its runs."""
        return sum(r.steps for r in self.runs)

    def cat_compute(self) -> dict[int, int]:
        """Steps each CATn represents (its members' steps summed), the paper's compute axis."""
        return {n: sum(s for _, s in members) for n, members in self.cats.items()}


def members(
    cat_budget: int, baseline: int, cats: list[int], seeds: list[int] | None = None
) -> dict[int, list[tuple[int, int]]]:
    """CAT sizes -> their members as (seed, steps); CATn uses the first n seeds."""
    if cat_budget <= 0 or baseline <= 0:
        raise ValueError(f"--total and --baseline must be positive, got {cat_budget} and {baseline}")
    sizes = sorted({1, *cats})
    if any(n < 1 for n in sizes):
        raise ValueError(f"--cat sizes must be >= 1, got {cats}")
    seeds = list(range(max(sizes))) if seeds is None else list(seeds)
    if len(seeds) < max(sizes):
        raise ValueError(f"--seeds lists {len(seeds)} seeds; CAT{max(sizes)} needs {max(sizes)}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:  # a CATn is n distinct members: one seed twice would be one member counted twice
        raise ValueError(f"--seeds lists seed {twice[0]} more than once; each member needs its own seed")
    outside = [s for s in seeds if not 0 <= s <= SEED_MAX]
    if outside:
        raise ValueError(f"--seeds: seed {outside[0]} is outside [0, {SEED_MAX}] (pretrain's --seed)")
    out = {}
    for n in sizes:
        steps = baseline if n == 1 else cat_budget // n
        if steps < 1:
            raise ValueError(f"CAT{n}: {cat_budget} // {n} leaves no steps per member")
        out[n] = [(seeds[i], steps) for i in range(n)]
    return out


def sweep_members(
    budgets: list[int], cat_budget: int, baseline: int, n_max: int, seeds: list[int] | None = None
) -> dict[int, dict[int, list[tuple[int, int]]]]:
    """CAT1 and CATn_max at each budget B (CAT1's steps), with the CATs' compute scaled like the
    main plan's (`cat_budget / baseline`: the paper's 400K / 450K)."""
    if any(b < 1 for b in budgets):
        raise ValueError(f"sweep budgets must be >= 1, got {budgets}")
    return {
        b: members(max(1, round(b * cat_budget / baseline)), b, [n_max], seeds) for b in sorted(set(budgets))
    }


def _runs(needs: dict[tuple[int, int], list[str]], mode: str) -> list[Run]:
    """Training runs for members (seed, steps) -> labels: one per member (independent), or one per
    seed to its largest step, exporting on the way (shared-prefix)."""
    if mode == "independent":
        return [Run(seed, steps, [steps], {steps: ", ".join(used)}) for (seed, steps), used in needs.items()]
    by_seed: dict[int, dict[int, list[str]]] = {}
    for (seed, steps), used in needs.items():
        by_seed.setdefault(seed, {})[steps] = used
    runs = []
    for seed, exports in by_seed.items():
        steps = sorted(exports)
        evals = [s for s in steps if CANDIDATE in exports[s]]
        runs.append(Run(seed, steps[-1], steps, {s: ", ".join(exports[s]) for s in steps}, evals))
    return runs


def plan(
    cat_budget: int,
    baseline: int,
    cats: list[int],
    mode: str = "shared-prefix",
    seeds: list[int] | None = None,
    warmup_steps: int | None = 0,
    warmup_fraction: float | None = None,
    sweep: list[int] = (),
    trajectory: list[int] = (),
    candidates: list[int] = (),
) -> Plan:
    """Build the run list. Shared-prefix needs a warmup fixed in steps, not a fraction of the run.

    `sweep` adds CAT1 and CATn_max at other budgets (CAT1's steps); `trajectory` exports CAT1's
    seed at more steps of its run, and `candidates` at the steps an early-stopped control picks from. In
    shared-prefix mode all three cost no training up to the main plan's steps: they are exports of runs the
    plan trains anyway.
    """
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
    if mode == "shared-prefix" and warmup_fraction is not None:
        raise ValueError(
            "shared-prefix needs a warmup fixed in steps: a warmup that is a fraction of the run's length "
            "makes the step-t model of a longer run differ from a t-step run; use --warmup-steps or --mode independent"
        )
    cat_members = members(cat_budget, baseline, cats, seeds)
    shortest = min((ms[0][1], n) for n, ms in cat_members.items())
    if warmup_steps and warmup_steps > shortest[0]:
        raise ValueError(
            f"--warmup-steps {warmup_steps} is longer than the shortest member (CAT{shortest[1]}: "
            f"{shortest[0]} steps), which would end inside its warmup"
        )
    first = cat_members[1][0][0]
    if any(t < 1 for t in trajectory):
        raise ValueError(f"trajectory steps must be >= 1, got {list(trajectory)}")
    swept = sweep_members(list(sweep), cat_budget, baseline, max(cat_members), seeds) if sweep else {}
    left_out = {}
    for b, by_n in list(swept.items()):
        short = min(ms[0][1] for ms in by_n.values())
        if warmup_steps and short < WARMUP_MULT * warmup_steps:
            left_out[b] = (
                f"its CAT{max(by_n)} members train {short} steps, under {WARMUP_MULT} x "
                f"--warmup-steps {warmup_steps}"
            )
            del swept[b]
    traj = [(first, t) for t in sorted(set(trajectory))]
    needs: dict[tuple[int, int], list[str]] = {}
    for n, ms in cat_members.items():
        for m in ms:
            needs.setdefault(m, []).append(f"CAT{n}")
    for b, by_n in swept.items():
        for n, ms in by_n.items():
            for m in ms:
                needs.setdefault(m, []).append(f"sweep {b}: CAT{n}")
    for m in traj:
        needs.setdefault(m, []).append("trajectory")
    picks = [(first, t) for t in sorted(set(candidates))]
    for m in picks:
        needs.setdefault(m, []).append(CANDIDATE)
    return Plan(cat_members, _runs(needs, mode), mode, swept, traj, left_out, picks)


def replicate_plans(
    cat_budget: int,
    baseline: int,
    cats: list[int],
    mode: str,
    seeds: list[int],
    sets: int,
    warmup_steps: int | None = 0,
    sweep: list[int] = (),
    trajectory: list[int] = (),
    candidates: list[int] = (),
) -> list[Plan]:
    """One plan per replicate seed set; set k uses the seeds shifted by 100 k. Sets share no seed,
    so no run is counted in two of them."""
    used = [[s + 100 * k for s in seeds[: max([1, *cats])]] for k in range(sets)]
    for k in range(1, sets):
        for j in range(k):
            shared = sorted(set(used[j]) & set(used[k]))
            if shared:
                raise ValueError(
                    f"seed sets {j} and {k} share seed {shared[0]} (set k uses the seeds + 100 k); "
                    "choose seeds less than 100 apart"
                )
    return [
        plan(
            cat_budget,
            baseline,
            cats,
            mode,
            [s + 100 * k for s in seeds],
            warmup_steps,
            None,
            sweep,
            trajectory,
            candidates,
        )
        for k in range(sets)
    ]


def plans_from_params(values: dict) -> list[Plan]:
    """Notebook 03's replicate plans from its parameter values (a params file over the defaults)."""
    return replicate_plans(
        values["total_steps"],
        values["baseline_steps"],
        values["cat_sizes"],
        values["plan_mode"],
        values["seeds"],
        values["seed_sets"],
        values["warmup_steps"],
        values.get("sweep_budgets", []),
        values.get("trajectory_steps", []),
        # CAT1's run also exports every eighth when the early-stopped controls pick from it (CAT1-ES)
        earlystop.exports_for("CAT1", values),
    )


def ledger(p: Plan, global_batch: int, images_per_s_per_device: float, devices: int) -> dict:
    """Steps, images seen and device-hours of a plan at a measured (or quoted) throughput."""
    images = p.training_steps * global_batch
    hours = (
        images / (images_per_s_per_device * devices) / 3600 if images_per_s_per_device > 0 else float("nan")
    )
    return {
        "mode": p.mode,
        "training steps": p.training_steps,
        "images seen": images,
        "images/s per device": images_per_s_per_device,
        "devices": devices,
        "wall hours": hours,
        "device-hours": hours * devices,
    }


def runs_table(p: Plan):
    """The plan's runs as a table: seed, steps, and the exports with the CATs that use them."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "seed": r.seed,
                "steps": r.steps,
                "exports": ", ".join(f"{s} ({r.used_by[s]})" for s in r.exports),
            }
            for r in p.runs
        ]
    )


def format_plan(p: Plan, other: Plan | None = None) -> str:
    lines = [f"mode: {p.mode}", f"{'seed':>8} {'steps':>10}  exports (step: used by)"]
    for r in p.runs:
        exports = "; ".join(f"{s}: {r.used_by[s]}" for s in r.exports)
        lines.append(f"{r.seed:>8} {r.steps:>10}  {exports}")
    lines.append(
        "compute per CATn (member steps summed): "
        + ", ".join(f"CAT{n} {c}" for n, c in p.cat_compute().items())
    )
    lines.append(f"total training steps, {p.mode}: {p.training_steps}")
    if other is not None:
        lines.append(f"total training steps, {other.mode}: {other.training_steps}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m richreps.budget",
        description=__doc__.splitlines()[0],
        epilog="A params file's GPU-hours, RAM and disk: python -m richreps.resources PARAMS.yaml",
    )
    ap.add_argument(
        "--total", type=int, required=True, help="steps shared by the members of each CATn (n > 1)"
    )
    ap.add_argument("--baseline", type=int, required=True, help="steps of CAT1, the single baseline model")
    ap.add_argument("--cat", type=int, nargs="+", required=True, help="CAT sizes n")
    ap.add_argument("--mode", choices=MODES, default="shared-prefix")
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="one seed per member slot (default 0..n-1)"
    )
    warm = ap.add_mutually_exclusive_group()
    warm.add_argument("--warmup-steps", type=int, default=0)
    warm.add_argument("--warmup-fraction", type=float, default=None, help="warmup as a fraction of each run")
    args = ap.parse_args(argv)
    if args.warmup_steps < 0:
        ap.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.warmup_fraction is not None and not 0 <= args.warmup_fraction < 1:
        ap.error(f"--warmup-fraction must be in [0, 1), got {args.warmup_fraction}")
    try:
        p = plan(
            args.total,
            args.baseline,
            args.cat,
            args.mode,
            args.seeds,
            args.warmup_steps,
            args.warmup_fraction,
        )
        other_mode = "independent" if args.mode == "shared-prefix" else "shared-prefix"
        other = plan(args.total, args.baseline, args.cat, other_mode, args.seeds, args.warmup_steps, None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(p, other))
    return 0


if __name__ == "__main__":
    sys.exit(main())
