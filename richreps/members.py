"""Member files: the only reader and writer of the checkpoints that CATn concatenates.

    path = member_path(run_dir, seed=0, step=270)    # <run_dir>/members/seed0_step270.pt
    save(model, path, recipe, seed=0, step=270)
    model = load(path)                                # ours, or an AlgoPerf ResNet-50 checkpoint
    require(path, recipe, seed=0, step=270)          # refuse a member trained with another recipe

A member file records the full recipe it was trained with (`richreps.config.Recipe`), its seed
and step, so a reader never has to be told how a member was made, and a member trained with
other parameters than the ones asked for is refused with the differing key. Files are loaded
with `torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from richreps.config import Recipe
from richreps.io import atomic_path, payload_digest
from richreps.models import Joint, Member, build_joint, build_model

FORMAT = "richreps-member-2"
OLD_FORMATS = ("richreps-member-1",)  # no recipe recorded: loadable for probing, never "current"


class CheckpointError(ValueError):
    """A member file that cannot be used; the message names the file and the key."""


def member_path(run_dir: str | Path, seed: int, step: int) -> Path:
    """Where a run folder keeps the member of `seed` at `step`."""
    return Path(run_dir) / "members" / f"seed{seed}_step{step}.pt"


def model_for(recipe: Recipe, num_classes: int, seed: int) -> Member:
    """The network a run of (`recipe`, `seed`) starts from: `build_model` after `torch.manual_seed(seed)`,
    or for a JOINTn recipe (`tower_offsets`) tower i as a run of seed `seed + tower_offsets[i]` starts."""
    if recipe.tower_offsets:
        return build_joint(recipe.arch, num_classes, recipe.width, [seed + o for o in recipe.tower_offsets])
    torch.manual_seed(seed)
    return build_model(recipe.arch, num_classes, recipe.width, recipe.last_mult)


def save(model: Member, path: str | Path, recipe: Recipe, seed: int, step: int) -> Path:
    """Write a member atomically with the recipe, seed and step that produced it."""
    path = Path(path)
    state = model.state_dict()
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format": FORMAT,
                "arch": recipe.arch,
                "width": recipe.width,
                "last_mult": recipe.last_mult,
                "towers": len(recipe.tower_offsets),  # JOINTn (models.Joint); 0: one network
                "num_classes": model.fc.out_features,
                "feature_dim": model.feature_dim,
                "seed": seed,
                "step": step,
                "recipe": recipe.to_dict(),
                "state_dict": state,
                "digest": payload_digest(state),
            },
            tmp,
        )
    return path


def _read(path: Path, mmap: bool = False) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - refused pickles and torn files alike
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(ckpt).__name__}")
    return ckpt


def record(path: str | Path) -> dict:
    """A member file's metadata (everything but the weights). The weights are memory-mapped, not read:
    every start of `pretrain` reads the record of every member in its folder (1.7 GB of ResNet-50
    weights per rank at the paper's plan if read whole)."""
    ckpt = _read(Path(path), mmap=True)
    return {k: v for k, v in ckpt.items() if k not in ("state_dict", "model_params", "digest")}


def _check_digest(ckpt: dict, path: str | Path) -> None:
    if ckpt.get("format") == FORMAT and ckpt.get("digest") != payload_digest(ckpt.get("state_dict")):
        raise CheckpointError(f"{path}: payload checksum mismatch (the weights were altered or damaged)")


def format_error(path: str | Path, rec: dict) -> str | None:
    """Why this version cannot read a member file's record as a member (None when it can): a format it
    does not know (a newer richreps wrote it, or it is no member), said as such, never as 'no recipe'."""
    fmt = rec.get("format")
    if fmt in (FORMAT, *OLD_FORMATS):
        return None
    if fmt is None:
        return f"{path}: records no member format: not a richreps member file"
    return (
        f"{path}: format {str(fmt)[:40]!r} is not one this version of richreps reads "
        f"({', '.join((FORMAT, *OLD_FORMATS))}); a newer richreps wrote it, or it is not a member"
    )


def require(path: str | Path, recipe: Recipe, seed: int, step: int) -> None:
    """Refuse, naming the key, a member that is not (recipe, seed, step), or whose weights fail their
    checksum (so a damaged member is never "current": the plan trains it again)."""
    ckpt = _read(Path(path))
    _check_digest(ckpt, path)
    rec = {k: v for k, v in ckpt.items() if k not in ("state_dict", "model_params", "digest")}
    unknown = format_error(path, rec)
    if unknown:
        raise CheckpointError(unknown)
    if rec.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {rec.get('format')!r} records no recipe; retrain it")
    for key, want in (("seed", seed), ("step", step)):
        if rec.get(key) != want:
            raise CheckpointError(f"{path}: {key} is {rec.get(key)}, expected {want}")
    diff = recipe.differs(recorded_recipe(path, rec))
    if diff:
        raise CheckpointError(f"{path}: trained with another recipe ({diff}, file vs requested)")


def recorded_recipe(path: str | Path, rec: dict | None = None) -> dict | None:
    """The recipe a member file records (None for a format that records none). A record that is not
    a mapping is a damaged file, refused naming it (a valid digest covers the weights, not the record)."""
    rec = record(path) if rec is None else rec
    recipe = rec.get("recipe")
    if recipe is not None and not isinstance(recipe, Mapping):
        raise CheckpointError(
            f"{path}: damaged member file (its recorded recipe is a {type(recipe).__name__}, not a mapping)"
        )
    return recipe


def is_current(path: str | Path, recipe: Recipe, seed: int, step: int) -> bool:
    """Does `path` hold exactly this member (a missing or stale file does not)?"""
    try:
        require(path, recipe, seed, step)
    except CheckpointError:
        return False
    return True


def algoperf_key(key: str) -> str | None:
    """Map an AlgoPerf / richreps-timecat ResNet-50 key to torchvision's name (None: not backbone)."""
    while True:
        stripped = re.sub(r"^(_orig_mod\.|module\.)", "", key)
        if stripped == key:
            break
        key = stripped
    if key.startswith("fc."):
        return None
    return key.replace(".downsample.conv.", ".downsample.0.").replace(".downsample.bn.", ".downsample.1.")


def load(path: str | Path) -> Member:
    """A member from our own file or from an AlgoPerf-format ResNet-50 checkpoint, in eval mode."""
    path = Path(path)
    ckpt = _read(path)
    _check_digest(ckpt, path)
    if ckpt.get("format") in (FORMAT, *OLD_FORMATS):
        # files written before WIDE1 record no last_mult: their last stage is not widened
        shape = (ckpt["arch"], ckpt["num_classes"], ckpt.get("width", 32))
        if ckpt.get("towers", 0):  # the weights are loaded below: the towers' initialisation does not matter
            member = Joint([build_model(*shape) for _ in range(ckpt["towers"])], ckpt["num_classes"])
        else:
            member = build_model(*shape, ckpt.get("last_mult", 1))
        _load_backbone(member, ckpt["state_dict"], path, strip=lambda k: k, head=True)
    elif "model_params" in ckpt:
        member = build_model("resnet50", 1000)
        _load_backbone(member.net, ckpt["model_params"], path, strip=algoperf_key)
    elif "format" in ckpt:
        raise CheckpointError(format_error(path, ckpt))
    else:
        raise CheckpointError(
            f"{path}: neither a richreps member (format key) nor an AlgoPerf checkpoint (model_params key)"
        )
    member.source = str(path)
    return member.eval()


def _load_backbone(
    module: nn.Module, state: dict, path: Path, strip: Callable[[str], str | None], head: bool = False
) -> None:
    """Load every backbone tensor, and the classifier (fc) when `head`: our members carry theirs (direct
    training is evaluated with it); an AlgoPerf checkpoint's ImageNet head is not needed for probing."""
    mapped = {}
    for k, v in state.items():
        name = strip(k)
        if name is not None:
            mapped[name] = v
    current = module.state_dict()
    expected = {k for k in current if head or ".fc." not in f".{k}"}
    missing = sorted(expected - set(mapped))
    unexpected = sorted(k for k in mapped if k not in current)
    if missing:
        raise CheckpointError(f"{path}: missing backbone key '{missing[0]}' ({len(missing)} missing)")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected)")
    for k in expected:
        if not isinstance(mapped[k], torch.Tensor) or mapped[k].shape != current[k].shape:
            shape = (
                tuple(mapped[k].shape) if isinstance(mapped[k], torch.Tensor) else type(mapped[k]).__name__
            )
            raise CheckpointError(f"{path}: key '{k}' has shape {shape}, expected {tuple(current[k].shape)}")
    module.load_state_dict({**current, **{k: mapped[k] for k in expected}})


def check_cat(members: list[Member]) -> None:
    """All members of a CAT share the architecture and the feature width."""
    first = members[0]
    for m in members[1:]:
        if type(m) is not type(first) or m.feature_dim != first.feature_dim:
            raise CheckpointError(
                f"{m.source}: {type(m).__name__} with {m.feature_dim} features differs from "
                f"{first.source} ({type(first).__name__}, {first.feature_dim}) in this CAT"
            )
        first_keys, keys = list(first.state_dict()), list(m.state_dict())
        if first_keys != keys:
            diff = next(a for a, b in zip(keys + [""], first_keys + [""]) if a != b)
            raise CheckpointError(f"{m.source}: key '{diff}' differs from {first.source}")


def file_hash(path: str | Path) -> str:
    """The content key of a member file: its features are cached under it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
