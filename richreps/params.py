"""A params file's checks, before any notebook of `python -m richreps.run` starts: every key known to a
notebook, of its declared type and value rules, each given once, and every path what its key says
(`*_root`: a folder in its dataset's layout; `*_file`: a file). Each refusal is one line naming the key.

The file itself is read as untrusted text: at most `MAX_BYTES`, UTF-8, no YAML aliases (a few lines of
anchors and aliases expand to billions of values), no list longer than `LIST_MAX`, and an error quotes
at most a short prefix of any value (`quote`).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import yaml

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
from richreps.targets import N_CLASSES_MAX

RUNNER_KEYS = {"output_dir"}  # set by the runner, never by a params file
PATH_SUFFIXES = ("_root", "_file", "_path")  # values that must name an existing path
# *_root keys whose folder must be in a dataset's layout (data_root: when pretrain_data is imagenet)
ROOT_DATASETS = {
    "imagenet_root": "imagenet",
    "inat18_root": "inat18",
    "cifar10_root": "cifar10",
    "cifar100_root": "cifar100",
    "data_root": "imagenet",
}
MAX_BYTES = 1_000_000  # a params file is a few KB; a bigger file is not one
LIST_MAX = 1_000  # values in any list (a grid, the seeds, the budgets): more is a typo's plan
# Bounds the notebooks' parameter comments do not declare (richreps.bounds): past one a value cannot be meant,
# and it would be found only after compute has started. key -> (rule, as in a comment, and why)
LIMITS = {
    **{key: (f"below {STEPS_MAX}", STEPS_WHY) for key in (
        "baseline_steps", "total_steps", "warmup_steps", "plateau_step", "sweep_budgets", "trajectory_steps", "map_plateaus",
        "direct_steps", "direct_equal_steps",
    )},
    **{key: (f"below {IMAGES_MAX}", IMAGES_WHY) for key in (
        "train_size", "val_size", "direct_train_size", "probe_sizes", "shots", "map_pools",
    )},
    **{key: (f"below {PIXELS_MAX}", PIXELS_WHY) for key in ("image_size", "probe_image_size")},
    "global_batch": (f"below {BATCH_MAX}", BATCH_WHY),
    "width": (f"below {WIDTH_MAX}", WIDTH_WHY),
}  # fmt: skip
QUOTE_CHARS = 60  # of a value quoted in an error
SCALARS = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict, "list": list}


class ParamsError(ValueError):
    """A params file that cannot run; the message is one line naming the key or file."""


def type_ok(value, type_name: str) -> bool:
    """Does `value` (from YAML) match a parameters-cell annotation like 'list[float]'?"""
    base, _, inner = type_name.partition("[")
    expected = SCALARS.get(base.strip())
    if expected is None:
        return True  # an annotation we do not model; papermill passes the value through
    if base in ("int", "float") and isinstance(value, bool):
        return False
    if not isinstance(value, expected):
        return False
    if base == "list" and inner:
        return all(type_ok(v, inner.rstrip("]")) for v in value)
    return True


def quote(value, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` cut to `limit` characters: an error names a value, never echoes a huge one."""
    if isinstance(value, str | list | tuple) and len(value) > limit:
        value = value[:limit]  # its start is enough, and the repr of the whole could be megabytes
    elif isinstance(value, dict) and len(value) > limit:
        value = dict(list(value.items())[:limit])
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rules_of(spec: dict) -> list[str]:
    """The value rules declared at the start of a parameter's comment, e.g. `# {non-empty; min 1} ...`:
    `min X` (each value >= X), `below X` (each < X), `max X` (each <= X), `positive` (> 0), `in: a, b`
    (each value one of these), `len N`, `non-empty`."""
    m = re.match(r"\s*\{([^}]*)\}", spec.get("help") or "")
    return [r.strip() for r in m.group(1).split(";")] if m else []


def check_rules(key: str, value, rules: list[str]) -> str | None:
    """Why `value` breaks one of `rules`, or None."""
    items = value if isinstance(value, list) else [value]
    for rule in rules:
        if rule == "non-empty" and not items:
            return "must not be empty"
        if rule.startswith("len ") and len(items) != int(rule[4:]):
            return f"must have {rule[4:]} values, got {len(items)}"
        if rule.startswith("min ") and any(v < _number(rule[4:]) for v in items):
            return f"must be >= {rule[4:]}, got {quote(value)}"
        if rule.startswith("below ") and any(not v < _number(rule[6:]) for v in items):
            return f"must be < {rule[6:]}, got {quote(value)}"
        if rule.startswith("max ") and any(not v <= _number(rule[4:]) for v in items):
            return f"must be <= {rule[4:]}, got {quote(value)}"
        if rule == "positive" and any(not v > 0 for v in items):
            return f"must be > 0, got {quote(value)}"
        if rule.startswith("in:"):
            choices = [c.strip() for c in rule[3:].split(",")]
            bad = [v for v in items if v not in choices]
            if bad:
                return f"must be one of {choices}, got {quote(bad[0])}"
    return None


def _number(text: str) -> int | float:
    """A rule's bound, exact for integers: float(10**19) == 10**19 + 1 would let a value past it through."""
    return int(text) if re.fullmatch(r"-?\d+", text.strip()) else float(text)


def cross_key_errors(values: dict) -> list[str]:
    """Rules between keys, on the values a run will use (params over notebook defaults)."""
    errors = []
    if "seeds" in values and values.get("cat_sizes") and len(values["seeds"]) < max(values["cat_sizes"]):
        errors.append(
            f"key 'seeds' lists {len(values['seeds'])} seeds; CAT{max(values['cat_sizes'])} "
            f"(key 'cat_sizes') needs {max(values['cat_sizes'])}"
        )
    if {"global_batch", "nproc", "nodes"} <= set(values) and values["global_batch"] % (
        values["nproc"] * values["nodes"]
    ):
        errors.append(
            f"key 'global_batch' {values['global_batch']} does not split into nproc x nodes = "
            f"{values['nproc'] * values['nodes']} processes"
        )
    if (
        "cue_weights" in values
        and values.get("pretrain_data", "cues") == "cues"
        and not sum(values["cue_weights"]) > 0
    ):
        errors.append("key 'cue_weights' must have a positive sum")
    if values.get("label_smoothing") in values.get("ablate_label_smoothing", []):
        errors.append(  # else notebook 03 refuses it after notebooks 01 and 02 have run
            f"key 'ablate_label_smoothing' lists {values['label_smoothing']}, key 'label_smoothing' itself: "
            "nothing to compare"
        )
    errors += _plan_errors(values)
    sizes, tasks = values.get("probe_sizes"), values.get("probe_tasks")
    if sizes and tasks and values.get("cue_probes", True) and min(sizes) < N_CLASSES_MAX:
        errors.append(  # else notebook 04 fails after notebook 03 has trained
            f"key 'probe_sizes' {quote(list(sizes))}: every split needs at least {N_CLASSES_MAX} examples "
            f"(one per class of the 10-class probe tasks in 'probe_tasks')"
        )
    return errors


PLAN_KEYS = ("total_steps", "baseline_steps", "cat_sizes", "plan_mode", "seeds", "seed_sets", "warmup_steps")


def _plan_errors(values: dict) -> list[str]:
    """Notebook 03's study built from the params (`richreps.study.plan_study`, the one planner), so that
    a plan it would refuse (a warmup longer than a member, seed sets sharing a seed, a pool the map cannot
    use) is a one-line error naming the keys before notebook 01 runs."""
    if not set(PLAN_KEYS) <= set(values):
        return []
    from richreps import budget

    try:
        budget.plans_from_params(values)
    except ValueError as e:
        return [f"the plan of keys {', '.join(PLAN_KEYS)}: {e}"]
    from richreps.config import RECIPE_PARAMS
    from richreps.study import plan_study

    if set(RECIPE_PARAMS) <= set(values):
        try:  # the controls, ablations and pools, as notebook 03 plans them
            plan_study(values)
        except ValueError as e:
            return [f"key {e}"]
    return []


class _Refused(Exception):
    """A params file refused while it is parsed (a key given twice, an alias); the message is one line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last silently, so a params file could say one value and run another), and so is any alias (`*name`):
    nine lines of anchors and aliases expand to a billion values ("billion laughs"), and a params file
    has no need of them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"line {event.start_mark.line + 1}: alias *{event.anchor[:40]}: a params file may not "
                "use YAML aliases (anchors and merges expand without bound); write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _Refused(
                        f"key {quote(key)} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})"
                    )
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


def printable(path: str | Path) -> str:
    """A path as text that prints anywhere: a byte that is not UTF-8 shows as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _longest_list(value, key) -> tuple[int, object] | None:
    """(length, key) of the first list in `value`, at any depth, longer than `LIST_MAX`, or None."""
    if isinstance(value, list | dict):
        if len(value) > LIST_MAX:
            return len(value), key
        for v in value.values() if isinstance(value, dict) else value:
            found = _longest_list(v, key)
            if found:
                return found
    return None


def load_params(path: str | Path) -> dict:
    """Read a params YAML file; it must be a non-empty mapping of names to values, each key once.

    Read as untrusted text, each refusal one line: a name that is not UTF-8 (it names the outputs folder
    and the manifest), more than `MAX_BYTES`, bytes that are not UTF-8, YAML aliases, nesting too deep
    for the parser, a list or mapping of more than `LIST_MAX` values."""
    name = printable(path)
    if name != str(path):
        raise ParamsError(f"params file name {name}: not UTF-8; rename it (it names the outputs folder)")
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    with path.open("rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ParamsError(
            f"{path}: over {MAX_BYTES:,} bytes; a params file is a few KB of YAML (is this the right file?)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); a params file is YAML"
        ) from None
    try:
        params = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _Refused as e:
        raise ParamsError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0][:120]})") from None
    except RecursionError:
        raise ParamsError(f"{path}: nested too deeply to be a params file") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise ParamsError(f"{path}: a value YAML cannot convert ({str(e).splitlines()[0][:80]})") from None
    if params is None:
        raise ParamsError(f"{path}: empty; a params file must set at least one key (see params/smoke.yaml)")
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter names to values")
    for key, value in params.items():
        try:
            found = _longest_list(value, key)
        except RecursionError:
            raise ParamsError(f"{path}: key {quote(key)} is nested too deeply to be a parameter") from None
        if found:
            raise ParamsError(
                f"{path}: key {quote(key)} holds {found[0]:,} values; at most {LIST_MAX:,} (a longer grid, "
                "seed list or budget list is not a plan this project runs)"
            )
    return params


def validate(params: dict, declared: dict[Path, dict[str, dict]], source: str) -> dict:
    """Check every key against the notebooks that declare it; return paths made absolute."""
    checked = {}
    known = {k: v for spec in declared.values() for k, v in defaults(spec).items()}
    pretrain_data = params.get("pretrain_data", known.get("pretrain_data", "cues"))
    for key, value in params.items():
        if key in RUNNER_KEYS:
            raise ParamsError(f"{source}: key '{key}' is set by the runner, remove it")
        owners = {nb.name: spec[key] for nb, spec in declared.items() if key in spec}
        if not owners:
            raise ParamsError(f"{source}: unknown key {quote(key)}: no notebook declares it")
        for nb_name, spec in owners.items():
            type_name = spec["inferred_type_name"]
            if not type_ok(value, type_name):
                raise ParamsError(
                    f"{source}: key '{key}' must be {type_name} (as in {nb_name}), "
                    f"got {type(value).__name__} {quote(value)}"
                )
            why = check_rules(key, value, rules_of(spec))
            if why:
                raise ParamsError(f"{source}: key '{key}' {why} (as declared in {nb_name})")
        if key in LIMITS:
            rule, reason = LIMITS[key]
            why = check_rules(key, value, [rule])
            if why:
                raise ParamsError(f"{source}: key '{key}' {why} ({reason})")
        if key.endswith(PATH_SUFFIXES) and value:
            try:
                path = Path(value).expanduser().resolve()
                exists = path.exists()
            except (OSError, RuntimeError, ValueError) as e:  # a name too long, a NUL byte, a link loop
                why = getattr(e, "strerror", None) or type(e).__name__
                raise ParamsError(
                    f"{source}: key '{key}': {quote(value)} is not a usable path ({why})"
                ) from None
            if not exists:
                raise ParamsError(f"{source}: key '{key}': path does not exist: {quote(str(path), 240)}")
            dataset = ROOT_DATASETS.get(key) if key != "data_root" or pretrain_data == "imagenet" else None
            why = path_error(key, path, dataset)
            if why:
                raise ParamsError(f"{source}: key '{key}': {why}")
            value = str(path)
        checked[key] = value
    for nb, spec in declared.items():
        errors = cross_key_errors({**defaults(spec), **{k: v for k, v in checked.items() if k in spec}})
        if errors:
            raise ParamsError(f"{source}: {errors[0]} (for {nb.name})")
    return checked


def path_error(key: str, path: Path, dataset: str | None) -> str | None:
    """What an existing path does not mean that its key says: a `*_root` must be a folder, in
    `dataset`'s layout when known (header level, fast: the first check of `python -m richreps.data
    check`); a `*_file` must be a file. None when it is fine."""
    if key.endswith("_file") and not path.is_file():
        return f"{path} is not a file"
    if key.endswith("_root"):
        if not path.is_dir():
            return f"{path} is not a folder"
        if dataset:
            from richreps.data.folders import DatasetError, check_layout

            try:
                check_layout(dataset, path)
            except DatasetError as e:
                return f"not a {dataset} root: {e}"
    return None


def defaults(spec: dict[str, dict]) -> dict:
    """The default values of a parameters cell, evaluated as Python literals."""
    return {k: ast.literal_eval(v["default"]) for k, v in spec.items()}


# ---------------------------------------------------------------- the notebooks' declared parameters


def notebooks_in(folder: str | Path, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order, optionally filtered by prefix."""
    nbs = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = [o for o in only if not any(p.name.startswith(o) for p in nbs)]
        if unknown:
            raise ParamsError(f"--only {unknown[0]}: no notebook in {folder} starts with it")
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
    return nbs


def declared_parameters(notebook: Path) -> dict[str, dict]:
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def params_values(params_file: str | Path, notebooks: str | Path = "notebooks") -> dict:
    """Every notebook parameter's value for a params file: the file's keys, checked as the runner checks
    them (types, rules, paths, meaning), over the notebooks' defaults."""
    params = load_params(params_file)
    declared = {nb: declared_parameters(nb) for nb in notebooks_in(notebooks)}
    checked = validate(params, declared, str(params_file))
    return {k: v for spec in declared.values() for k, v in defaults(spec).items()} | checked
