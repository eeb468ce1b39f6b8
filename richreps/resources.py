"""What a params file's whole plan costs before it runs: GPU-hours, peak RAM, and disk with where it goes.

    python -m richreps.resources params/paper.yaml

The runner prints this before notebook 03 and refuses, naming `output_dir`, when the disk under it has
less room than the plan needs. Dataset sizes are numbers (`DATASETS`, from the datasets' own
documentation), so the plan needs no data; the runner counts an ImageNet folder's images instead when
one is given (its file names only, no `stat`), so that a small test folder is not planned as 1.28M
images. Disk is counted as the files are written: float32 member weights, training checkpoints with
schedule-free AdamW's two state tensors per weight (the last two kept, plus the final state), and the
feature cache's float16 features and int64 labels per member and image. Every run notebook 03 trains is
counted, from the one planner (`richreps.study.plan_study`): the main plan, each control (WIDE1's members
are wider), the ablations and the map's pools.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from richreps.budget import Plan
from richreps.study import plan_study

# the official sizes; `val` is a stratified share of the training set (richreps.data: 2 %), `test` the official test
DATASETS = {
    "imagenet": {"train": 1_281_167, "test": 50_000, "classes": 1000},
    "inat18": {"train": 437_513, "test": 24_426, "classes": 8142},
    "cifar100": {"train": 50_000, "test": 10_000, "classes": 100},
    "cifar10": {"train": 50_000, "test": 10_000, "classes": 10},
}
VAL_FRACTION = 0.02
# ResNet-50 inference, bf16 channels_last, batch 1024, on one H200 (the reference measurements): each
# member runs every image once, so extraction costs images x members / this, in GPU-seconds. It is the
# batch and layout `features.extract` runs on CUDA (features.EXTRACT_BATCH, channels_last; a test checks).
INFERENCE_IMAGES_PER_S = 16_443.0
INFERENCE_SETTING = "bf16, channels_last, batch 1024"
# The probe's arithmetic: each objective evaluation multiplies the n x d training rows by the d x k weights
# and back (4 n d k flops); a fit stops at the gradient tolerance, at most at the iteration cap (100, with
# up to 125 evaluations: `probe.fast_probe`, torch's L-BFGS max_eval), and each weight decay of the grid is
# one fit. The GPU-hours below assume every fit runs to its cap at this rate (TF32 matmuls at about 40 % of
# an H100's 495 TFLOP/s dense): an upper bound until `make gpu-check` measures a probe on the card.
PROBE_EVALS_PER_FIT = 125
PROBE_FLOPS_PER_S = 200e12
CHECKPOINTS_KEPT = 3  # richreps.checkpoints keeps the last two; pretrain writes the final state beside them


class ResourceError(RuntimeError):
    """The plan does not fit where it would be written; the message names `output_dir`."""


@dataclass
class Resources:
    gpu_hours_training: float | None  # None: no throughput stated (images_per_s_per_device 0)
    gpu_hours_extraction: float | None  # None: no inference rate known for this architecture
    images_per_s_per_device: float
    gpu_hours_probing: float  # the real datasets' probes, every fit at its iteration cap (an upper bound)
    devices: int  # GPUs of the run (nproc x nodes): extraction and probing use all of them
    ram_extraction: int  # bytes of feature chunks held in RAM (the interpreter and models on top)
    ram_probing: int
    full_batch_bytes: dict[str, int]  # dataset -> memory a full-batch solve of its largest CAT needs
    chunked_bytes: dict[str, int]  # dataset -> GPU memory of its largest CAT's solve on CUDA (probe.CHUNKED)
    disk: dict[str, int]  # "members", "checkpoints", "feature cache" -> bytes
    where: dict[str, str]  # the same keys -> folder under output_dir
    notes: list[str] = field(default_factory=list)

    @property
    def disk_total(self) -> int:
        return sum(self.disk.values())


def count_imagenet(root: str | Path) -> dict[str, int]:
    """Images and classes of an ImageFolder-layout ImageNet root, from directory listings only."""

    def count(folder: Path) -> tuple[int, int]:
        classes = [d for d in os.scandir(folder) if d.is_dir()]
        return sum(sum(1 for f in os.scandir(d.path) if f.is_file()) for d in classes), len(classes)

    train, classes = count(Path(root) / "train")
    test, _ = count(Path(root) / "val")
    return {"train": train, "test": test, "classes": classes}


def model_bytes(
    arch: str, num_classes: int, width: int, last_mult: int = 1, towers: int = 1
) -> tuple[int, int, int]:
    """(bytes of a member's weights and buffers, bytes of its parameters, its feature width), built on
    the meta device: no memory, no initialisation. `towers` > 1: a JOINTn (`models.Joint`)."""
    import torch

    from richreps.models import Joint, build_model

    with torch.device("meta"):
        if towers > 1:
            model = Joint([build_model(arch, num_classes, width) for _ in range(towers)], num_classes)
        else:
            model = build_model(arch, num_classes, width, last_mult)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return state, params, model.feature_dim


def shape(recipe) -> tuple[int, int]:
    """What sizes a member file of `recipe`: its last stage's widening and its towers (JOINTn)."""
    return recipe.last_mult, max(1, len(recipe.tower_offsets))


def plan_groups(values: dict) -> list[tuple[list[Plan], tuple[int, int]]]:
    """Every set of plans notebook 03 trains (`Study.trained`), each with its members' `shape`."""
    return [(plans, shape(recipe)) for _, recipe, plans in plan_study(values).trained()]


def _gb(b: float) -> str:
    return f"{b / 1e9:,.1f} GB"


def resources(values: dict, output_dir: str | Path, sizes: dict[str, dict] | None = None) -> Resources:
    """The plan of `values` (a params file over the notebooks' defaults), written under `output_dir`.

    `sizes` maps a probed dataset to its train / test images and classes (default: `DATASETS`, and an
    ImageNet root's own count where the folder exists)."""
    from richreps import featstore, probe
    from richreps.experiment import dataset_roots
    from richreps.io import project_path

    n_max = max([1, *values["cat_sizes"]])
    cues = values["pretrain_data"] == "cues"
    classes = 10 if cues else 1000  # richreps.data.cues.N_VALUES; ImageNet-1k
    groups = plan_groups(values)
    sized = {
        m: model_bytes(values["arch"], classes, values["width"], *m)
        for m in {(1, 1), *(m for _, m in groups)}
    }
    # one (weights bytes, parameter bytes, feature width) per member file and per run: WIDE1's are wider
    member_files = [
        sized[m] for ps, m in groups for _ in {(r.seed, s) for p in ps for r in p.runs for s in r.exports}
    ]
    trained = len(member_files)
    member_files += [sized[(1, 1)]] * (n_max * values["seed_sets"])  # notebook 04's untrained controls
    for c in plan_study(values).controls:  # each control's untrained twin
        member_files += [sized[shape(c.recipe)]] * values["seed_sets"]
    untrained = len(member_files) - trained
    run_files = [sized[m] for ps, m in groups for p in ps for _ in p.runs]
    runs = len(run_files)
    images = sum(p.training_steps for ps, _ in groups for p in ps) * values["global_batch"]
    dim = sized[(1, 1)][2]  # the feature width of one member (CATn: n of them)
    members = len(member_files)

    given = {d: values.get(f"{d}_root", "") for d in DATASETS}
    roots, _ = dataset_roots(given, project_path(values.get("data_dir", "data")))
    probed = {}
    for name, root in roots.items():
        own = (sizes or {}).get(name)
        if own is None and sizes is None and name == "imagenet" and (Path(root) / "train").is_dir():
            own = count_imagenet(root)
        probed[name] = own or DATASETS[name]
    rows = {n: s["train"] + s["test"] for n, s in probed.items()}
    if cues and values.get("cue_probes", True):
        rows["cue tasks"] = (1 + len(values.get("probe_tasks", []))) * sum(values["probe_sizes"])
    rate = float(values.get("images_per_s_per_device", 0.0))
    budget_bytes = featstore.ram_budget()
    # the feature widths one seed set probes: CAT1..CATmax, each control, and the untrained CATmax, CAT1
    # and controls; every width on every real dataset, once per weight decay of the grid
    control_dims = [sized[shape(c.recipe)][2] for c in plan_study(values).controls]
    widths = [n * dim for n in {1, *values["cat_sizes"]}] + control_dims + [n_max * dim, dim, *control_dims]
    grid = len(values.get("probe_grid", probe.FAST_WD))
    probe_flops = sum(
        values["seed_sets"]
        * grid
        * PROBE_EVALS_PER_FIT
        * 4
        * round(s["train"] * (1 - VAL_FRACTION))
        * w
        * s["classes"]
        for s in probed.values()
        for w in widths
    )
    res = Resources(
        gpu_hours_training=images / rate / 3600 if rate > 0 else None,
        gpu_hours_extraction=(
            sum(rows.values()) * members / INFERENCE_IMAGES_PER_S / 3600
            if values["arch"] == "resnet50"
            else None
        ),
        images_per_s_per_device=rate,
        gpu_hours_probing=probe_flops / PROBE_FLOPS_PER_S / 3600,
        devices=int(values.get("nproc", 1)) * int(values.get("nodes", 1)),
        ram_extraction=budget_bytes // 2,
        ram_probing=budget_bytes,
        full_batch_bytes={
            n: probe.full_batch_bytes(round(s["train"] * (1 - VAL_FRACTION)), n_max * dim, s["classes"])
            for n, s in probed.items()
        },
        chunked_bytes={
            n: probe.chunked_bytes(round(s["train"] * (1 - VAL_FRACTION)), n_max * dim, s["classes"])
            for n, s in probed.items()
        },
        disk={
            "members": sum(b for b, _, _ in member_files),
            "checkpoints": sum(CHECKPOINTS_KEPT * (b + 2 * p) for b, p, _ in run_files),
            "feature cache": sum(rows.values()) * sum(d * 2 + 8 for _, _, d in member_files),
        },
        where={
            "members": f"{output_dir}/pretrain/[pool-<size>/]recipe-<hash>/members and {output_dir}/untrained",
            "checkpoints": f"{output_dir}/pretrain/[pool-<size>/]recipe-<hash>/ckpt and .../final",
            "feature cache": f"{output_dir}/feature_cache",
        },
    )
    res.notes = [
        f"{members} member files ({trained} trained, {untrained} untrained controls), "
        f"{runs} training runs, {images:,} training images; features {dim} per member, CAT{n_max} {n_max * dim}",
        "probed: " + (", ".join(f"{n} {r:,} images" for n, r in rows.items()) or "nothing"),
    ]
    return res


def format_resources(res: Resources) -> str:
    """The plan's resources, one line each."""

    def hours(h: float | None, why: str) -> str:
        return f"{h:,.1f}" if h is not None else f"not estimated ({why})"

    lines = [
        "resource plan (whole plan, every seed set):",
        *(f"  {n}" for n in res.notes),
        f"  GPU-hours, pretraining: {hours(res.gpu_hours_training, 'images_per_s_per_device is 0')}"
        + (f" at {res.images_per_s_per_device:,.0f} images/s per GPU" if res.gpu_hours_training else ""),
        f"  GPU-hours, feature extraction: {hours(res.gpu_hours_extraction, 'a rate is known for resnet50 only')}"
        + (
            f" at {INFERENCE_IMAGES_PER_S:,.0f} images/s per member (H200; {INFERENCE_SETTING}, as features.extract "
            f"runs on CUDA), about {res.gpu_hours_extraction / res.devices:,.1f} h on the run's {res.devices} GPU(s)"
            if res.gpu_hours_extraction
            else ""
        ),
        f"  GPU-hours, probing the real datasets: at most {res.gpu_hours_probing:,.1f} (every fit at its "
        f"{PROBE_EVALS_PER_FIT} evaluations, {PROBE_FLOPS_PER_S / 1e12:,.0f} TFLOP/s assumed), at most "
        f"{res.gpu_hours_probing / res.devices:,.1f} h on the run's {res.devices} GPU(s), one fit per GPU",
        f"  peak RAM, extraction: {_gb(res.ram_extraction)} of feature chunks; probing: {_gb(res.ram_probing)} "
        "of feature blocks (RICHREPS_RAM_GB), each plus the interpreter, torch and the models",
    ]
    for name, b in res.chunked_bytes.items():
        lines.append(
            f"  probe of {name}'s largest CAT on a GPU: {_gb(b)} of GPU memory (float16 rows held, L-BFGS in float32 "
            f"chunks), else streamed from the files; on the CPU {_gb(res.full_batch_bytes[name])} of RAM held whole"
        )
    for key, b in res.disk.items():
        lines.append(f"  disk, {key}: {_gb(b)} in {res.where[key]}")
    lines.append(f"  disk, total: {_gb(res.disk_total)}")
    return "\n".join(lines)


def held_bytes(output_dir: Path) -> int:
    """Bytes already written where the plan writes (a rerun reuses them)."""
    return sum(
        f.stat().st_size
        for sub in ("pretrain", "untrained", "feature_cache")
        for f in (output_dir / sub).rglob("*")
        if f.is_file()
    )


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_resources(values: dict, output_dir: str | Path, max_gpu_hours: float = float("inf")) -> str:
    """The plan's resources as text; ResourceError naming `output_dir` when its disk lacks the room, or
    naming `--max-gpu-hours` when the GPU-hours it estimates (pretraining and extraction, each where a
    rate is known) exceed that cap: a plan of thousands of GPU-days is a typo, found before notebook 01."""
    output_dir = Path(output_dir)
    try:
        res = resources(values, output_dir)
    except KeyError as e:  # a notebooks folder whose 03 is not this project's pretraining notebook
        return f"resource plan: not made (no key {e} among the notebooks' parameters)"
    hours = (res.gpu_hours_training or 0.0) + (res.gpu_hours_extraction or 0.0)
    if hours > max_gpu_hours:
        raise ResourceError(
            f"the plan needs {hours:,.0f} GPU-hours (pretraining {res.gpu_hours_training or 0:,.0f}, feature "
            f"extraction {res.gpu_hours_extraction or 0:,.0f}), over --max-gpu-hours {max_gpu_hours:,g}; "
            "check the steps, seeds and sizes, or raise --max-gpu-hours"
        )
    free, held = free_bytes(output_dir), held_bytes(output_dir)
    if free + held < res.disk_total:
        raise ResourceError(
            f"output_dir {output_dir}: {_gb(free)} free on its disk (+{_gb(held)} already written there), "
            f"the plan needs {_gb(res.disk_total)} ("
            + ", ".join(f"{k} {_gb(v)}" for k, v in res.disk.items())
            + "); free space or pass another --outputs"
        )
    return format_resources(res) + f"\n  free under {output_dir}: {_gb(free)}"


def main(argv: list[str] | None = None) -> int:
    """`python -m richreps.resources PARAMS.yaml`: the plan over the notebooks' defaults, for the folder
    the runner would write (<outputs>/<params name>)."""
    import argparse
    import sys

    from richreps.io import project_path
    from richreps.params import ParamsError, declared_parameters, defaults, load_params, notebooks_in

    ap = argparse.ArgumentParser(prog="python -m richreps.resources", description=__doc__.splitlines()[0])
    ap.add_argument("params", metavar="PARAMS.yaml", help="a params file (params/<scale>.yaml)")
    ap.add_argument("--outputs", default="outputs", help="the runner's outputs root")
    args = ap.parse_args(argv)
    params_file = args.params
    try:
        params = load_params(params_file)
        values = {}
        folder = project_path("notebooks")
        for nb in notebooks_in(folder) if folder.is_dir() else []:
            values.update(defaults(declared_parameters(nb)))
        values.update(params)
        output_dir = (Path(args.outputs) / Path(params_file).stem).resolve()
        res = resources(values, output_dir)
    except KeyError as e:
        print(f"error: {params_file}: key {e} is missing", file=sys.stderr)
        return 2
    except (ParamsError, ValueError) as e:
        print(f"error: {params_file}: {e}", file=sys.stderr)
        return 2
    print(format_resources(res))
    free = free_bytes(output_dir) + held_bytes(output_dir)
    verdict = (
        "enough"
        if free >= res.disk_total
        else f"short by {_gb(res.disk_total - free)}: the runner will refuse"
    )
    print(f"  free under {output_dir}: {_gb(free_bytes(output_dir))} ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
