"""The pretraining recipe: the one source of defaults for everything that decides what a member is.

    recipe = Recipe(arch="small_cnn", width=16, global_batch=64)
    recipe.flags()            # ['--data', 'cues', ..., '--global-batch', '64', ...] for torchrun
    Recipe.from_namespace(ns) # back from `python -m richreps.pretrain`'s parsed flags

A member is fully described by (recipe, seed, step). The pretraining CLI's flags, the flags
notebook 03 passes to torchrun, the resume check, the record stored in every member file,
direct training in notebook 04 and the run folder's name all derive from this dataclass, so
a new field is covered everywhere at once. The defaults are AlgoPerf v0.6's schedule-free
ResNet-50 entry (shared/reference facts are restated in `pretrain`'s docstring); the
multi-cue benchmark's mixture weights are `cues.DEFAULT_WEIGHTS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from richreps.bounds import (
    BATCH_MAX,
    BATCH_WHY,
    IMAGES_MAX,
    IMAGES_WHY,
    PIXELS_MAX,
    PIXELS_WHY,
    STEPS_MAX,
    STEPS_WHY,
    WIDTH_MAX,
    WIDTH_WHY,
)
from richreps.data.cues import DEFAULT_RENDER, DEFAULT_WEIGHTS, RENDERS
from richreps.targets import SEED_MAX

ARCHS = ("resnet50", "resnet18_cifar", "small_cnn")
DATA = ("cues", "imagenet")
CORRUPT_POLICIES = ("error", "skip")
RULES = ("low", "above", "below", "high")  # >=, >, <, <=
STEPS_RULE = {"below": STEPS_MAX, "why": STEPS_WHY}  # the bound of any count of steps
IMAGES_RULE = {"below": IMAGES_MAX, "why": IMAGES_WHY}  # ... of any count of images
PIXELS_RULE = {"below": PIXELS_MAX, "why": PIXELS_WHY}
BATCH_RULE = {"below": BATCH_MAX, "why": BATCH_WHY}


def _f(default, help: str, **kw) -> Any:
    return field(default=default, metadata={"help": help, **kw})


def rule_text(rule: dict) -> str:
    """A rule like {'above': 0, 'below': 1} as 'in (0, 1)'; {'low': 1} as '>= 1'."""
    lo = ("[", rule["low"]) if "low" in rule else ("(", rule["above"]) if "above" in rule else None
    hi = ("]", rule["high"]) if "high" in rule else (")", rule["below"]) if "below" in rule else None

    def num(x) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if lo and hi:
        return f"in {lo[0]}{num(lo[1])}, {num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {num(lo[1])}"
    return f"{'<=' if hi[0] == ']' else '<'} {num(hi[1])}" if hi else ""


def rule_error(flag: str, value, rule: dict) -> str | None:
    """Why `value` (or any item of a list or tuple) breaks `rule`, as '--flag must be ...', or None.
    A float must also be finite: nan and inf pass no bound that a recipe or a run would mean. A rule's
    `why` (the reason for a bound that is not obvious) ends the message."""
    items = value if isinstance(value, list | tuple) else [value]
    for v in items:
        if v is None or isinstance(v, str):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"{flag} must be finite, got {value}"
        lo_ok = v >= rule["low"] if "low" in rule else v > rule["above"] if "above" in rule else True
        hi_ok = v <= rule["high"] if "high" in rule else v < rule["below"] if "below" in rule else True
        if not (lo_ok and hi_ok):
            why = f" ({rule['why']})" if "why" in rule else ""
            return f"{flag} must be {rule_text(rule)}, got {value if len(items) == 1 else list(items)}{why}"
    return None


def last_mult_error(arch, last_mult) -> str | None:
    """Only small_cnn has a last stage to widen (WIDE1); a widened recipe on another arch is refused."""
    if last_mult not in (1, None) and arch != "small_cnn":
        return f"--last-mult {last_mult} widens small_cnn's last stage only; --arch is {arch}"
    return None


# Fields added after members were first recorded, with the value that every earlier record meant: a
# record without one reads as that value, and at that value the field stays out of the run folder's
# hash, so runs trained before it was added (hours of ResNet-50 at the paper's scale) stay current.
LATER_FIELDS = {"last_mult": 1, "tower_offsets": [], "pool_per_seed_set": False}


def _flag_bool(text: str) -> bool:
    """A bool flag's value as `Recipe.flags` writes it (True / False)."""
    if text not in ("True", "False", "true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text in ("True", "true", "1")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a member besides its seed and step (see the module docstring)."""

    # data
    data: str = _f("cues", "pretraining data", choices=DATA)
    data_root: str = _f("", "imagenet: root in ImageFolder layout")
    cue_task: str = _f("mixture", "cues: 'mixture' (pretraining) or a transfer task (direct training)")
    cue_weights: tuple[float, ...] = _f(
        DEFAULT_WEIGHTS, "cues: mixture weight of each cue's component", low=0
    )
    cue_redundant: tuple[float, ...] | None = _f(
        None, "cues: per-cue reliabilities instead of components", low=0, high=1
    )
    cue_render: str = _f(
        DEFAULT_RENDER, "cues: renderer preset (richreps.data.cues.RENDERS)", choices=tuple(RENDERS)
    )
    train_size: int = _f(
        20000,
        "cues: images in the training set (0: a fresh sample every step, never repeated)",
        low=0,
        **IMAGES_RULE,
    )
    val_size: int = _f(2000, "cues: images in the validation set", low=1, **IMAGES_RULE)
    data_seed: int = _f(0, "cues: the dataset (shared by all seeds)", low=0, high=SEED_MAX)
    pool_per_seed_set: bool = _f(
        False,
        "cues: each seed set (seed // 100) draws its own pretraining pool from data_seed (data.cues.pool_seed)",
    )
    val_fraction: float = _f(0.01, "imagenet: held-out share of train", above=0, below=1)
    image_size: int = _f(224, "imagenet: training crop size", low=1, **PIXELS_RULE)
    corrupt_policy: str = _f(
        "error", "imagenet: unreadable images stop the run or are skipped", choices=CORRUPT_POLICIES
    )
    # model and optimizer: AlgoPerf v0.6 schedule-free AdamW
    arch: str = _f("small_cnn", "member architecture", choices=ARCHS)
    width: int = _f(32, "small_cnn width", low=1, below=WIDTH_MAX, why=WIDTH_WHY)
    last_mult: int = _f(1, "small_cnn: last stage widened this many times (WIDE1)", low=1)
    tower_offsets: tuple[int, ...] = _f(
        (),
        "JOINTn: tower i starts as a run of seed (this seed + offset i) starts (models.Joint); none: one network",
    )
    global_batch: int = _f(1024, "images per optimizer step, over all processes", low=1, **BATCH_RULE)
    micro_batch: int = _f(
        0, "per-process images per forward (0: no gradient accumulation)", low=0, **BATCH_RULE
    )
    lr: float = _f(0.0025, "schedule-free AdamW learning rate", above=0)
    beta1: float = _f(0.9, "schedule-free interpolation / momentum", above=0, below=1)
    beta2: float = _f(0.99552, "second-moment decay", above=0, below=1)
    weight_decay: float = _f(0.0812, "decoupled weight decay", low=0)
    warmup_steps: int = _f(0, "warmup fixed in steps (keeps shared-prefix exact)", low=0, **STEPS_RULE)
    label_smoothing: float = _f(0.2, "label smoothing of the training loss", low=0, below=1)
    r_power: float = _f(
        0.75, "schedule-free polynomial weighting power r (flag not --r: torchrun would take it)", low=0
    )
    weight_lr_power: float = _f(2.0, "schedule-free weight_lr_power", low=0)
    bn_batches: int = _f(50, "training batches that recompute BN statistics at the evaluation point x", low=1)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field (`--cue-weights`, `--global-batch`, ...) with this class's default."""
        group = parser.add_argument_group("recipe (defaults: AlgoPerf v0.6 schedule-free entry)")
        for f in fields(cls):
            rule = {k: f.metadata[k] for k in RULES if k in f.metadata}
            help = f.metadata["help"] + (f" ({rule_text(rule)})" if rule else "")
            kw: dict[str, Any] = {"default": f.default, "help": help.replace("%", "%%"), "dest": f.name}
            if "choices" in f.metadata:  # the bounds are checked by `bound_error`, not by argparse
                kw["choices"] = f.metadata["choices"]
            if f.name in ("cue_weights", "cue_redundant"):
                kw.update(type=float, nargs=4)
            elif f.name == "tower_offsets":
                kw.update(type=int, nargs="*")
            elif isinstance(f.default, bool):
                kw["type"] = _flag_bool
            else:
                kw["type"] = type(f.default)
            group.add_argument("--" + f.name.replace("_", "-"), **kw)

    @classmethod
    def bound_error(cls, values: dict) -> str | None:
        """The first field of `values` outside the rule its metadata declares (`low`: >=, `above`: >,
        `below`: <, `high`: <=, each item of a list; every float finite), as '--flag must be ...', or None."""
        for f in fields(cls):
            rule = {k: f.metadata[k] for k in (*RULES, "why") if k in f.metadata}
            why = rule_error("--" + f.name.replace("_", "-"), values.get(f.name), rule)
            if why:
                return why
        return last_mult_error(values.get("arch"), values.get("last_mult", 1))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> Recipe:
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """From a member file's or a plan file's record; unknown keys are an error, missing ones default."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown recipe key '{unknown[0]}'")
        return cls(**d)

    def __post_init__(self) -> None:
        why = last_mult_error(self.arch, self.last_mult)
        if why:
            raise ValueError(why)
        # lists from YAML / argparse become tuples, so recipes compare and hash by value
        for name in ("cue_weights", "cue_redundant"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        object.__setattr__(self, "tower_offsets", tuple(int(x) for x in self.tower_offsets))
        if self.tower_offsets and (self.last_mult != 1 or len(self.tower_offsets) < 2):
            raise ValueError(
                f"--tower-offsets {list(self.tower_offsets)}: a JOINTn has at least 2 towers of width --width "
                f"(--last-mult {self.last_mult} must be 1)"
            )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def flags(self) -> list[str]:
        """This recipe as `python -m richreps.pretrain` flags (every field, so nothing falls back)."""
        out: list[str] = []
        for k, v in self.to_dict().items():
            if v is None or v == "" or v == []:
                continue
            out += ["--" + k.replace("_", "-"), *(map(str, v) if isinstance(v, list) else [str(v)])]
        return out

    def identity(self) -> dict:
        """`to_dict` without the fields added later that still hold the value every earlier record
        meant (`LATER_FIELDS`): what names a run folder, so existing folders keep their names."""
        return {k: v for k, v in self.to_dict().items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    def tag(self) -> str:
        """A short content hash: runs of different recipes never share a folder."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return "recipe-" + hashlib.sha256(blob).hexdigest()[:10]

    def diff(self, other: Recipe | dict | None) -> tuple[str, Any, Any] | None:
        """The first field where `other` (a Recipe or a recorded dict) differs: (key, theirs, ours)."""
        if other is None:
            return ("recipe", None, "a recorded recipe")
        if not isinstance(other, Recipe | Mapping):  # a damaged record: callers treat it as such
            return ("recipe", f"a {type(other).__name__}", "a mapping")
        theirs = other.to_dict() if isinstance(other, Recipe) else {**LATER_FIELDS, **other}
        for k, v in self.to_dict().items():
            if k not in theirs or theirs[k] != v:
                return (k, theirs.get(k, "(missing)"), v)
        extra = sorted(set(theirs) - set(self.to_dict()))
        return (extra[0], theirs[extra[0]], "(unknown key)") if extra else None

    def differs(self, other: Recipe | dict | None) -> str | None:
        """`diff` as one phrase, 'key: theirs vs ours', or None when equal."""
        d = self.diff(other)
        return None if d is None else f"{d[0]}: {d[1]!r} vs {d[2]!r}"

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)


# Notebook 03's parameters that make its recipe, by the Recipe field each sets (the rest keep their defaults).
RECIPE_PARAMS = {
    "pretrain_data": "data",
    "data_root": "data_root",
    "arch": "arch",
    "width": "width",
    "image_size": "image_size",
    "cue_weights": "cue_weights",
    "train_size": "train_size",
    "pool_per_seed_set": "pool_per_seed_set",
    "val_size": "val_size",
    "global_batch": "global_batch",
    "lr": "lr",
    "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay",
    "label_smoothing": "label_smoothing",
    "bn_batches": "bn_batches",
}


def recipe_from_params(values: Mapping) -> Recipe:
    """The members' recipe from notebook 03's parameter values: one builder for notebook 03 and for
    `python -m richreps.calibrate --params`, so the calibration's direct-training runs are the ones
    notebook 04 finds current and reuses."""
    return Recipe(**{field: values[key] for key, field in RECIPE_PARAMS.items()})
