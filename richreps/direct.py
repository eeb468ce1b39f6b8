"""Direct training: the ceilings of notebook 04's targets, a member trained from scratch on each target.

    rows = direct.ceilings(recipe, tasks, steps, train_size, sizes, seed_sets, output_dir / "direct")

Used by notebook 04 (beside the probes) and by `python -m richreps.calibrate` (a target's floor and ceiling
before the study). The training is `richreps.pretrain.train` itself, with the recipe's data switched to the
target task: the same loop, optimizer and export at the evaluation point as pretraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from richreps import features, members
from richreps.config import Recipe
from richreps.members import member_path


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
                list(
                    features.cue_batches(
                        task, sizes[s], s, k, render=recipe.cue_render, ood_render=recipe.pool_per_seed_set
                    )()
                )
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
                    # past its plateau: the best validation export is not the last one (results/PLAN.md v1)
                    "plateaued": step != exports[-1],
                    # every export's validation accuracy: revision 2 judges the plateau on the seed mean
                    "val curve": json.dumps({str(s): a for a, s, _ in scored}),
                }
            )
    return rows
