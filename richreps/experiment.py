"""Notebook 04's experiment: representations, untrained controls and probes (direct training: richreps.direct).

    plan = planfile.read(output_dir / "pretrain")                          # what notebook 03 trained
    reps = representations(plan.cats, plan.run_dir, plan.recipe)            # refuses stale members
    reps = untrained.add_untrained_controls(reps, plan.recipe, plan.cats, output_dir / "untrained")
    reps = add_controls(reps, plan.controls, output_dir / "untrained")      # WIDE1, JOINT5 and their twins
    reps = add_early_stopped(reps, plan, output_dir / "untrained")          # CAT1-ES, WIDE1-ES, SINGLE-ES
    breps = sweep_representations(plan)                                     # CAT1, CATmax, controls per budget
    rows = probe_cues(reps, recipe, tasks, sizes, grid, shots, cache)

Every member comes from `richreps.members` with its recorded recipe; the mixture's weights are the
members' own. Controls (`richreps.controls`) are appended from the plan file's records, each with its
untrained twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from richreps import featstore, features, members, untrained
from richreps.config import Recipe
from richreps.devices import node_devices, ordered_map
from richreps.members import member_path
from richreps.probe import choose_solver, fast_probe
from richreps.study import Representation  # noqa: F401 (re-exported: notebooks and tests build them)
from richreps.targets import IID

if TYPE_CHECKING:
    from richreps.planfile import ControlRecord, PlanRecord


def representations(
    cats: list[dict[int, list[tuple[int, int]]]], run_dir: str | Path, recipe: Recipe
) -> dict[int, list[Representation]]:
    """Per seed set: CAT1 (the baseline) and every CATn, after checking each member is current.

    A member file that is missing, or that records another recipe, seed or step than the plan
    asks for, stops here with one line naming the file and the key.
    """
    out = {}
    for k, by_n in enumerate(cats):
        out[k] = []
        for n, ms in by_n.items():
            for seed, step in ms:
                path = member_path(run_dir, seed, step)
                if not path.exists():
                    raise FileNotFoundError(f"{path} missing: run notebook 03 first")
                members.require(path, recipe, seed, step)
            files = tuple(str(member_path(run_dir, s, t)) for s, t in ms)
            out[k].append(Representation("CAT1 (baseline)" if n == 1 else f"CAT{n}", n, ms[0][1], files))
    return out


def bayes_ceilings(recipe: Recipe) -> dict[str, float]:
    """The in-distribution target's ceiling: the mixture's exact Bayes accuracy for a cue recipe with
    mixture components; none for ImageNet or for redundant cues (`cue_redundant`), whose Bayes
    accuracy this package does not compute (their mixture then has no ceiling and is not kept)."""
    if recipe.data != "cues" or recipe.cue_redundant is not None:
        return {}
    from richreps.data import cues

    return {IID: cues.bayes_accuracy(recipe.cue_weights)}


def add_controls(
    reps: dict[int, list[Representation]], records: list[ControlRecord], folder: str | Path
) -> dict[int, list[Representation]]:
    """Append each control (its member checked current against the control's own recipe, as CAT members
    are) and its untrained twin to every seed set. `records` is the plan file's (`PlanRecord.controls`);
    none leaves `reps` as they are."""
    for c in records:
        if len(c.members) != len(reps):
            raise ValueError(
                f"the plan lists {c.name} for {len(c.members)} seed sets, the CATs for {len(reps)}"
            )
        reps = {
            k: [
                *rs,
                control_rep(c, k),
                untrained.untrained_control(c.name, c.recipe, c.members[k][0], folder),
            ]
            for k, rs in reps.items()
        }
    return reps


def add_early_stopped(
    reps: dict[int, list[Representation]], plan: PlanRecord, folder: str | Path
) -> dict[int, list[Representation]]:
    """Append CAT1-ES, WIDE1-ES and SINGLE-ES (`richreps.earlystop.picks`: exports chosen by pretraining
    validation alone) and their untrained twins, the networks their runs start from."""
    from richreps import earlystop

    chosen = earlystop.picks(plan)
    out = {}
    for k, rs in reps.items():
        extra = []
        for rep, (name, recipe, seed) in zip(*_early_stopped(plan, chosen[k])):
            extra += [rep, untrained.untrained_control(name, recipe, seed, folder)]
        out[k] = [*rs, *extra]
    return out


def _early_stopped(plan: PlanRecord, chosen: dict) -> tuple[list[Representation], list[tuple]]:
    """One seed set's picks as representations, and each one's (name, recipe, seed) for its twin."""
    reps, whose = [], []
    for name, (source, seed, step, _) in chosen.items():
        run_dir, recipe = (plan.run_dir, plan.recipe) if source == "CAT1" else _control_run(plan, source)
        reps.append(_rep(name, [(seed, step)], run_dir, recipe))
        whose.append((name, recipe, seed))
    return reps, whose


def _control_run(plan: PlanRecord, name: str) -> tuple[Path, Recipe]:
    record = plan.control(name)
    return record.run_dir, record.recipe


def control_rep(record: ControlRecord, k: int) -> Representation:
    """Seed set k's trained control, its member checked current against the control's own recipe."""
    if k >= len(record.members):
        raise ValueError(
            f"the plan lists {record.name} for {len(record.members)} seed sets; seed set {k} asked"
        )
    return _rep(record.name, [record.members[k]], record.run_dir, record.recipe)


def all_files(reps: dict[int, list[Representation]]) -> list[str]:
    return sorted({f for rs in reps.values() for r in rs for f in r.files})


def solvers_by_task(
    reps: list[Representation],
    feats: dict,
    tasks: list[str],
    shots: list[int],
    device: torch.device | str = "cpu",
) -> dict[tuple[str, int], str]:
    """(task, shots) -> the fast probe's solver for every representation on it, chosen once from the
    largest CAT's size (its training rows x its summed feature widths), so that CATn - CAT1 compares
    representations fitted by one solver to one stopping rule (shots 0: all labelled examples)."""
    out = {}
    for task in tasks:
        train = feats[task]["train"]
        width = max(sum(train[f].features.shape[1] for f in rep.files) for rep in reps)
        labels = next(iter(train.values())).labels
        classes = int(max(int(next(iter(feats[task][s].values())).labels.max()) for s in feats[task])) + 1
        for k in [*shots, 0]:
            n = len(labels) if k == 0 else min(len(labels), k * classes)
            out[(task, k)] = choose_solver(n, width, classes, device)
    return out


def probe_rows(
    reps: list[Representation],
    feats: dict,
    tasks: list[str],
    grid: list[float],
    shots: list[int],
    replicate: int,
    device: torch.device | str = "cpu",
    solvers: dict[tuple[str, int], str] | None = None,
) -> list[dict]:
    """Fast-probe every representation on every task, at every number of labelled examples per class,
    each task with one solver (`solvers`, default: `solvers_by_task` of these representations).

    Each (representation, task, labelled examples) fit, its weight-decay path whole, runs on one of the
    node's devices (`devices.ordered_map`: "cuda" is every GPU); the rows come back in this order."""
    devices = node_devices(device)
    solvers = solvers or solvers_by_task(reps, feats, tasks, shots, devices[0])
    # one fit per distinct network: a representation listed twice (SINGLE-ES is one of CAT1-ES and WIDE1-ES;
    # an early stop at the run's end is CAT1 itself) gets the same fit's numbers, which a refit would repeat
    distinct = list(dict.fromkeys(rep.files for rep in reps))
    jobs = [(files, task, k) for files in distinct for task in tasks for k in [*shots, 0]]
    # the fits run at once, one per device: together they hold the RAM budget one fit held alone
    ram_share = None if len(devices) == 1 else featstore.ram_budget() / len(devices)

    def fit(job: tuple, worker: int) -> dict:
        files, task, k = job
        sets = {s: features.concat([feats[task][s][f] for f in files]) for s in ("train", "val", "test")}
        classes = int(max(int(sets[s].labels.max()) for s in sets)) + 1
        train = sets["train"] if k == 0 else features.subsample_per_class(sets["train"], k, seed=replicate)
        r = fast_probe(
            train, sets["val"], sets["test"], grid=grid, device=devices[worker], solver=solvers[(task, k)],
            ram_bytes=ram_share,
        )  # fmt: skip
        return {
            "task": IID if task == "mixture" else task,
            "chance": 1.0 / classes,
            "shots": "all" if k == 0 else k,
            "test_acc": r.test_acc,
            "val_acc": r.val_acc,
            "weight_decay": r.weight_decay,
            "solver": r.solver,
            "tf32": r.tf32,
            # the chosen weight decay's fit: a capped fit is visible, not hidden
            "iterations": r.steps[r.weight_decay],
            "gradient tolerance met": r.converged[r.weight_decay],  # not stopped by the cap
            "objective": r.objective[r.weight_decay],
            "max |gradient|": r.grad_max[r.weight_decay],
        }

    fits = dict(zip(jobs, ordered_map(fit, jobs, devices)))
    return [
        {
            "replicate": replicate,
            "method": rep.method,
            "n": rep.n,
            "steps_per_member": rep.steps_per_member,
            "compute_steps": rep.compute_steps,
            **fits[(rep.files, task, k)],
        }
        for rep in reps
        for task in tasks
        for k in [*shots, 0]
    ]


def probe_cues(
    reps: dict[int, list[Representation]],
    recipe: Recipe,
    tasks: list[str],
    sizes: dict[str, int],
    grid: list[float],
    shots: list[int],
    cache: str | Path,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """The pretraining mixture (IID) and the cue transfer tasks, for every seed set.

    Each seed set probes its own train / validation / test sample (drawn with the seed set's index as
    the seed, `set_features`), so a paired interval over seed sets covers the probe sample's variance
    as well as the members'. One solver per (task, shots), chosen from the first seed set's largest CAT
    (every seed set has the same sizes)."""
    tasks = ["mixture", *tasks]
    feats = set_features(reps, recipe, tasks, sizes, cache, device)
    first = next(iter(reps))
    solvers = solvers_by_task(reps[first], feats[first], tasks, shots, device)
    return [
        row
        for k, rs in reps.items()
        for row in probe_rows(rs, feats[k], tasks, grid, shots, k, device, solvers)
    ]


def set_features(
    reps: dict[int, list[Representation]],
    recipe: Recipe,
    tasks: list[str],
    sizes: dict[str, int],
    cache: str | Path,
    device: torch.device | str = "cpu",
) -> dict[int, dict]:
    """{seed set k: cue features of its own representations on its own probe sample (seed k)}.

    Seed sets share no member, so every member's features are still extracted once."""
    return {
        k: features.cue_features(
            all_files({k: rs}),
            tasks,
            sizes,
            k,
            cache,
            device,
            weights=recipe.cue_weights,
            render=recipe.cue_render,
            ood_render=recipe.pool_per_seed_set,  # each seed set's own OOD images
        )
        for k, rs in reps.items()
    }


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def dataset_roots(roots: dict[str, str], data_dir: str | Path) -> tuple[dict[str, str], list[str]]:
    """Real datasets to probe: the roots given, plus CIFAR folders found in `data_dir`; and a notice
    line for each dataset skipped."""
    found = dict(roots)
    for name, folder in CIFAR_FOLDERS.items():
        if not found.get(name) and (Path(data_dir) / folder).is_dir():
            found[name] = str(data_dir)
    notices = [
        f"{name}: skipped (set {name}_root"
        + (f" or put {CIFAR_FOLDERS[name]} in data_dir" if name in CIFAR_FOLDERS else "")
        + ")"
        for name, root in found.items()
        if not root
    ]
    return {n: r for n, r in found.items() if r}, notices


def probe_real(
    reps: dict[int, list[Representation]],
    roots: dict[str, str],
    image_size: int,
    grid: list[float],
    cache: str | Path,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Every representation on every real dataset (all labelled examples)."""
    rows = []
    for dataset, root in roots.items():
        feats = {dataset: features.folder_features(all_files(reps), dataset, root, image_size, cache, device)}
        solvers = solvers_by_task([r for rs in reps.values() for r in rs], feats, [dataset], [], device)
        rows += [
            row
            for k, rs in reps.items()
            for row in probe_rows(rs, feats, [dataset], grid, [], k, device, solvers)
        ]
    return rows


# ---------------------------------------------------------------- beyond the paper (richreps.sweep)


def _rep(method: str, ms: list[tuple[int, int]], run_dir: Path, recipe: Recipe) -> Representation:
    files = []
    for seed, step in ms:
        path = member_path(run_dir, seed, step)
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run notebook 03 first")
        members.require(path, recipe, seed, step)
        files.append(str(path))
    return Representation(method, len(ms), ms[0][1], tuple(files))


def budget_representations(
    sweeps: list[dict[int, dict[int, list[tuple[int, int]]]]],
    run_dir: str | Path,
    recipe: Recipe,
    records: list[ControlRecord] = (),
) -> dict[int, dict[int, list[Representation]]]:
    """Per seed set, per budget: CAT1, CATmax and each control exported at that budget (`records`: the plan
    file's), members checked current, as for the main plan."""
    return {
        k: {
            b: [_rep("CAT1" if n == 1 else f"CAT{n}", ms, Path(run_dir), recipe) for n, ms in by_n.items()]
            + [
                _rep(c.name, [c.sweeps[k][b]], c.run_dir, c.recipe)
                for c in records
                if k < len(c.sweeps) and b in c.sweeps[k]
            ]  # fmt: skip
            for b, by_n in sweep.items()
        }
        for k, sweep in enumerate(sweeps)
    }


def sweep_representations(plan: PlanRecord) -> dict[int, dict[int, list[Representation]]]:
    """`budget_representations` of a plan file's record, with CAT1-ES, WIDE1-ES and SINGLE-ES at every
    budget where its runs exported every eighth of that budget (`early_stop_sweep`): the map's cells."""
    breps = budget_representations(plan.sweeps, plan.run_dir, plan.recipe, plan.controls)
    if plan.early_stop_sweep:
        from richreps import earlystop

        for b in sorted({b for sweep in plan.sweeps for b in sweep}):
            for k, chosen in enumerate(earlystop.picks(plan, b)):
                breps[k][b] += _early_stopped(plan, chosen)[0]
    return breps


def trajectory_representations(
    trajectories: list[list[tuple[int, int]]], run_dir: str | Path, recipe: Recipe
) -> dict[int, list[Representation]]:
    """Per seed set: CAT1's seed at every trajectory step, one representation each."""
    return {k: [_rep("CAT1", [m], Path(run_dir), recipe) for m in t] for k, t in enumerate(trajectories)}


def probe_extras(
    breps: dict[int, dict[int, list[Representation]]],
    treps: dict[int, list[Representation]],
    recipe: Recipe,
    tasks: list[str],
    sizes: dict[str, int],
    grid: list[float],
    cache: str | Path,
    device: torch.device | str = "cpu",
) -> tuple[list[dict], list[dict]]:
    """(sweep rows with their budget, trajectory rows): the mixture and the cue tasks, all labels,
    the same features, cache and fast probe as the main table."""
    reps = [r for by_b in breps.values() for rs in by_b.values() for r in rs]
    reps += [r for rs in treps.values() for r in rs]
    if not reps or recipe.data != "cues":
        return [], []
    tasks = ["mixture", *tasks]
    by_set: dict[int, list[Representation]] = {}
    for k, by_b in breps.items():
        by_set.setdefault(k, []).extend(r for rs in by_b.values() for r in rs)
    for k, rs in treps.items():
        by_set.setdefault(k, []).extend(rs)
    feats = set_features(by_set, recipe, tasks, sizes, cache, device)  # each seed set its own sample
    first = next(iter(by_set))
    solvers = solvers_by_task(by_set[first], feats[first], tasks, [], device)  # the sweep's largest CAT
    swept, traj = [], []
    for k in by_set:  # one call per seed set: a network in two places (a budget's CAT1 along the trajectory,
        placed = [(b, rep) for b, rs in breps.get(k, {}).items() for rep in rs]  # an ES pick) is fitted once
        placed += [(None, rep) for rep in treps.get(k, [])]
        rows = probe_rows([rep for _, rep in placed], feats[k], tasks, grid, [], k, device, solvers)
        for i, (b, _) in enumerate(placed):
            part = rows[i * len(tasks) : (i + 1) * len(tasks)]
            if b is None:
                traj += part
            else:
                swept += [{**row, "budget": b} for row in part]
    return swept, traj
