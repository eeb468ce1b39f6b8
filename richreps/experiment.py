"""Notebook 04's experiment: representations, untrained controls, probes and direct training.

    recipe, run_dir, cats = launch.read_plan(output_dir / "pretrain")      # what notebook 03 trained
    reps = representations(cats, run_dir, recipe)                           # refuses stale members
    reps = add_untrained_controls(reps, recipe, output_dir / "untrained")
    reps = add_wide(reps, launch.read_wide(output_dir / "pretrain"), output_dir / "untrained")  # WIDE1
    rows = probe_cues(reps, recipe, tasks, sizes, grid, shots, cache)
    rows += direct_training(recipe, tasks, steps, train_size, sizes, seed_sets, output_dir / "direct")

Every member comes from `richreps.members` with its recorded recipe; the mixture's weights are the
members' own. Direct training is `richreps.pretrain.train` itself, with the recipe's data switched to
the target task: the same loop, optimizer and export at the evaluation point as pretraining.

Over 400 lines because notebook 04's representations, controls (untrained, WIDE1), probes, direct training
and the sweep / trajectory extras share `Representation`, `_rep` and `probe_rows`; splitting them would
spread one notebook's experiment over modules that import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from richreps import features, members
from richreps.config import Recipe
from richreps.members import member_path
from richreps.probe import TOLERANCE_GRAD, choose_solver, fast_probe

IID = "mixture (IID)"
UNTRAINED_SEED = 1000  # untrained control i of seed set k uses seed 1000 + 100 k + i
WIDE = "WIDE1"  # one network of CATmax's feature dimension, CAT1's steps (notebook 03's wide_control)


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


def calibration_images(recipe: Recipe) -> list[torch.Tensor]:
    """Pretraining images for an untrained control's BN statistics (cues); none for ImageNet,
    whose untrained members keep their initial statistics."""
    if recipe.data != "cues":
        return []
    from richreps.data import cues

    return [
        cues.sample_pretrain(256, recipe.cue_weights, seed=10_000 + i, difficulty=recipe.cue_render).images
        for i in range(4)
    ]


def save_untrained(path: str | Path, recipe: Recipe, seed: int) -> Path:
    """An untrained member (the 'random features' control), rewritten unless current for this recipe."""
    from richreps.models import build_model, recalibrate_bn

    path = Path(path)
    if members.is_current(path, recipe, seed, 0):
        return path
    torch.manual_seed(seed)
    model = build_model(recipe.arch, 10, recipe.width, recipe.last_mult)
    calib = calibration_images(recipe)
    if calib:
        recalibrate_bn(model, calib)
    return members.save(model.eval(), path, recipe, seed, 0)


def untrained_controls(
    recipe: Recipe, n_max: int, seed_sets: list[int], folder: str | Path
) -> dict[int, list[Representation]]:
    """Per seed set, untrained CAT1 and untrained CATn_max (seed 1000 + 100 k + i for member i): the
    floors. `richreps.calibrate --params` probes them before any member is trained; notebook 04
    appends them to the trained representations (`add_untrained_controls`), from the same files."""
    out = {}
    for k in seed_sets:
        seeds = [UNTRAINED_SEED + 100 * k + i for i in range(n_max)]
        files = [str(save_untrained(Path(folder) / f"seed{s}.pt", recipe, s)) for s in seeds]
        out[k] = [
            Representation("untrained CAT1", 1, 0, tuple(files[:1])),
            Representation(f"untrained CAT{n_max}", n_max, 0, tuple(files)),
        ]
    return out


def add_untrained_controls(
    reps: dict[int, list[Representation]], recipe: Recipe, folder: str | Path
) -> dict[int, list[Representation]]:
    """Append untrained CAT1 and untrained CATmax to every seed set."""
    controls = untrained_controls(recipe, max(r.n for r in reps[0]), list(reps), folder)
    return {k: [*rs, *controls[k]] for k, rs in reps.items()}


def untrained_wide(recipe: Recipe, k: int, folder: str | Path) -> Representation:
    """Seed set k's untrained WIDE1 (`recipe` is WIDE1's: last stage widened), BN recomputed on
    pretraining images like the other untrained controls."""
    from richreps.budget import WIDE_SEED_OFFSET

    seed = UNTRAINED_SEED + 100 * k + WIDE_SEED_OFFSET
    path = save_untrained(Path(folder) / f"seed{seed}.pt", recipe, seed)
    return Representation(f"untrained {WIDE}", 1, 0, (str(path),))


def add_wide(
    reps: dict[int, list[Representation]],
    wide: tuple[Recipe, Path, list[tuple[int, int]]] | None,
    folder: str | Path,
) -> dict[int, list[Representation]]:
    """Append WIDE1 (its member checked current against WIDE1's own recipe, as CAT members are) and
    untrained WIDE1 (BN recomputed on pretraining images, like the other untrained controls) to every
    seed set. `wide` is `launch.read_wide(...)`; None (no WIDE1 trained) leaves `reps` as they are."""
    if wide is None:
        return reps
    recipe, run_dir, ms = wide
    if len(ms) != len(reps):
        raise ValueError(f"the plan lists WIDE1 for {len(ms)} seed sets, the CATs for {len(reps)}")
    return {
        k: [*rs, wide_rep(ms[k], run_dir, recipe), untrained_wide(recipe, k, folder)]
        for k, rs in reps.items()
    }


def wide_rep(member: tuple[int, int], run_dir: str | Path, recipe: Recipe) -> Representation:
    """WIDE1 from its (seed, steps) member, checked current against WIDE1's own recipe."""
    return _rep(WIDE, [member], Path(run_dir), recipe)


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
    each task with one solver (`solvers`, default: `solvers_by_task` of these representations)."""
    solvers = solvers or solvers_by_task(reps, feats, tasks, shots, device)
    rows = []
    for rep in reps:
        for task in tasks:
            sets = {
                s: features.concat([feats[task][s][f] for f in rep.files]) for s in ("train", "val", "test")
            }
            classes = int(max(int(sets[s].labels.max()) for s in sets)) + 1
            for k in [*shots, 0]:
                train = (
                    sets["train"]
                    if k == 0
                    else features.subsample_per_class(sets["train"], k, seed=replicate)
                )
                r = fast_probe(
                    train, sets["val"], sets["test"], grid=grid, device=device, solver=solvers[(task, k)]
                )
                rows.append(
                    {
                        "replicate": replicate,
                        "method": rep.method,
                        "n": rep.n,
                        "steps_per_member": rep.steps_per_member,
                        "compute_steps": rep.compute_steps,
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
                        "stopped by a tolerance": r.converged[r.weight_decay],  # not by the cap
                        "gradient tolerance met": r.grad_max[r.weight_decay] <= TOLERANCE_GRAD,
                        "objective": r.objective[r.weight_decay],
                        "max |gradient|": r.grad_max[r.weight_decay],
                    }
                )
    return rows


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


def ceilings(
    recipe: Recipe,
    tasks: list[str],
    steps: int,
    train_size: int,
    sizes: dict[str, int],
    seed_sets: int,
    folder: str | Path,
    equal_labels: bool = False,
    equal_steps: int = 0,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Every target's ceiling (`direct_training` for `steps` on `train_size` images, 0: a fresh sample
    every step) and, with `equal_labels`, direct training for `equal_steps` (0: `steps`) on as many
    labels as the probe's train split beside it (the paper's Table 1 compares transfer and direct
    training on equal labels; a set that small passes its plateau in fewer steps). Eight evenly spaced
    exports each, so that a plateau is seen where there is one."""
    from richreps.aggregate import DIRECT_EQUAL
    from richreps.data.ood import is_ood

    if steps < 1:  # direct_steps 0: no direct training at all
        return []
    rows = direct_training(recipe, tasks, steps, train_size, sizes, seed_sets, folder, 8, device)
    if equal_labels:  # an OOD target trains on a fixed split as large as the probe's: the same labels
        rows += [{**r, "method": DIRECT_EQUAL} for r in rows if is_ood(r["task"])]
        rows += direct_training(
            recipe, [t for t in tasks if not is_ood(t)], equal_steps or steps, sizes["train"], sizes,
            seed_sets, folder, 8, device, DIRECT_EQUAL,
        )  # fmt: skip
    return rows


def direct_training(
    recipe: Recipe,
    tasks: list[str],
    steps: int,
    train_size: int,
    sizes: dict[str, int],
    seed_sets: int,
    folder: str | Path,
    evaluations: int = 4,
    device: torch.device | str = "cpu",
    method: str = "direct training",
) -> list[dict]:
    """Train a member from scratch on each target task with its own ample training set (`train_size`
    0: a fresh sample every step), or, as `method` "direct training (probe's labels)", on a set as
    large as the probe's (the paper's Table 1 compares direct training and transfer on equal labels).

    The pretraining recipe with the data switched to the task (`cue_task`), run by
    `richreps.pretrain.train` itself. Members are exported at `evaluations` evenly spaced steps;
    the one with the best accuracy on seed set k's validation split gives the test number, on seed
    set k's test split (the probes' own samples, `set_features`). Finished runs whose members are
    current are not retrained. Saturated targets (`richreps.data.ood.SATURATED`: random features read
    them) are never judged, so they get no ceiling: their direct training would be minutes for nothing.
    Training runs on the GPU when one is present (`pretrain.setup`); evaluation runs on `device`.
    """
    from richreps import pretrain
    from richreps.data import cues
    from richreps.data.ood import SATURATED, is_ood

    if steps < 1 or recipe.data != "cues":
        return []
    tasks = [t for t in tasks if t not in SATURATED]
    exports = sorted({max(1, steps * (i + 1) // evaluations) for i in range(evaluations)})
    rows = []
    for k in range(seed_sets):
        for task in tasks:
            task_recipe = recipe.replace(cue_task=task, train_size=train_size, data_seed=k)
            # an OOD target trains on seed set k's partition (streams.cue_splits); the suffix keeps runs
            # made before that (on partition 0, holding set k's test images) from being found current
            run_dir = Path(folder) / (task_recipe.tag() + ("-split" if is_ood(task) else ""))
            if not all(members.is_current(member_path(run_dir, k, s), task_recipe, k, s) for s in exports):
                flags = [
                    "--out",
                    str(run_dir),
                    "--seed",
                    str(k),
                    "--steps",
                    str(steps),
                    "--export-at",
                    *map(str, exports),
                ]
                flags += [
                    *task_recipe.flags(),
                    "--ckpt-every",
                    str(exports[0]),
                    "--log-every",
                    str(max(1, steps // 10)),
                ]
                pretrain.train(pretrain.parse_args(flags))
            val, test = (  # seed set k's own validation and test splits, as its probes use
                list(features.cue_batches(task, sizes[s], s, k, render=recipe.cue_render)())
                for s in ("val", "test")
            )
            scored = []
            for s in exports:
                model = members.load(member_path(run_dir, k, s))
                scored.append(
                    (
                        pretrain.evaluate(model.to(device), val, torch.device(device), amp=False)["val_acc"],
                        s,
                        model,
                    )
                )
            val_acc, step, model = max(scored, key=lambda t: (t[0], -t[1]))
            rows.append(
                {
                    "replicate": k,
                    "method": method,
                    "n": 1,
                    "steps_per_member": steps,
                    "compute_steps": steps,
                    "task": task,
                    "chance": 1.0 / (cues.TASKS[task].n_classes if task in cues.TASKS else cues.N_VALUES),
                    "shots": "all",
                    "test_acc": pretrain.evaluate(model, test, torch.device(device), amp=False)["val_acc"],
                    "val_acc": val_acc,
                    "step": step,
                    # past its plateau: the best validation export is not the last one (verdicts' keep rule)
                    "plateaued": step != exports[-1],
                }
            )
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
    wide: tuple[Recipe, Path, list[dict[int, tuple[int, int]]]] | None = None,
) -> dict[int, dict[int, list[Representation]]]:
    """Per seed set, per budget: CAT1, CATmax and, with `wide` (`launch.read_wide_sweeps`), WIDE1 at
    that budget (members checked current, as for the main plan)."""
    wide_sweeps = wide[2] if wide else []
    return {
        k: {
            b: [_rep("CAT1" if n == 1 else f"CAT{n}", ms, Path(run_dir), recipe) for n, ms in by_n.items()]
            + (
                [wide_rep(wide_sweeps[k][b], wide[1], wide[0])]
                if k < len(wide_sweeps) and b in wide_sweeps[k]
                else []
            )
            for b, by_n in sweep.items()
        }
        for k, sweep in enumerate(sweeps)
    }


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
    swept, done = [], {}
    for k, by_b in breps.items():
        for b, rs in by_b.items():
            for rep in rs:
                rows = probe_rows([rep], feats[k], tasks, grid, [], k, device, solvers)
                done[(k, rep.files)] = rows
                swept += [{**row, "budget": b} for row in rows]
    traj = []
    for k, rs in treps.items():
        for rep in rs:  # a trajectory step that is also a budget's CAT1 reuses its probes (same features)
            cached = done.get((k, rep.files))
            traj += (
                cached
                if cached is not None
                else probe_rows([rep], feats[k], tasks, grid, [], k, device, solvers)
            )
    return swept, traj
