"""The package's structure (issue 28), read from the source with `ast` so that it stays true: no import
cycle, arrows that point down the layers of the README's layout, modules of a readable size, and thin
notebooks."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "richreps"
# Bottom to top; a module imports from its own layer or below. The README's "Layers" paragraph says the same.
LAYERS = [
    # 0 foundations: no import of another layer
    {"targets", "bounds", "io", "lifeline", "featstore", "models", "counterexample", "evidence",
     "evidence.claims", "publish", "devices"},
    # 1 data and the recipe
    {"data", "data.__main__", "data.cues", "data.folders", "data.ood", "data.pipeline", "data.sampler",
     "data.streams", "data.transforms", "data.prefetch", "config", "members", "checkpoints", "runtime", "completion"},
    # 2 the plan: the TIME-CONCAT plan, the controls, the study, its plan file, the params that build it
    {"budget", "controls", "study", "planfile", "params", "earlystop"},
    # 3 the tables: torch-free readers of notebook 04's outputs (report.md anywhere)
    {"aggregate", "keep", "verdicts", "sweep", "figures", "nbcheck"},
    # 4 compute: training, launching, features, probes, notebook 04's experiment, direct training
    {"pretrain", "launch", "features", "probe", "tune", "experiment", "untrained", "direct", "calibrate"},
    # 5 the study's variants as notebook 04 probes them, and the report
    {"ablation", "regimes", "report"},
    # 6 entry points over everything
    {"resources", "run"},
]  # fmt: skip
UP_ARROWS_ALLOWED = 0  # the issue allows one; none is needed
SIZE_MAX = 450  # lines, unless the module's docstring says why ("Over 450 lines because ...")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its source (inside functions too)."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    ["richreps", *package[: len(package) - node.level + 1], *([base] if base else [])]
                )
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            if not t.startswith("richreps."):
                continue
            t = t.removeprefix("richreps.")
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer_and_imports_point_down():
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    edges = graph()
    assert sorted(set(edges) - set(layer)) == [], (
        "a new module: place it in a layer of LAYERS (and the README)"
    )
    up = [
        f"{a} (layer {layer[a]}) -> {b} (layer {layer[b]})"
        for a, bs in edges.items()
        for b in bs
        if layer[b] > layer[a]
    ]
    assert len(up) <= UP_ARROWS_ALLOWED, up


def test_the_readme_names_every_layer():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Layers") :].split("\n## ")[0]
    for ms in LAYERS:
        for m in ms:
            if "." not in m:
                assert f"`{m}`" in section, m


@pytest.mark.parametrize("name", sorted(modules()))
def test_a_module_is_short_or_says_why(name):
    path = modules()[name]
    lines = path.read_text().count("\n")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= SIZE_MAX or "Over 450 lines because" in doc.replace("\n", " "), f"{path}: {lines} lines"


def code_cells(notebook: str) -> list[tuple[list[str], str]]:
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    return [(c["metadata"].get("tags", []), "".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def test_notebook_03_plans_in_a_few_lines_and_no_cell_is_long():
    for tags, src in code_cells("03_pretrain_resnet50.ipynb"):
        if "parameters" in tags:  # one declared parameter per line: papermill's cell, not code
            continue
        lines = [ln for ln in src.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert len(lines) <= 20, src[:200]


@pytest.mark.parametrize("notebook", ["04_probe_transfer.ipynb", "05_figures.ipynb"])
def test_notebooks_04_and_05_define_nothing(notebook):
    for _, src in code_cells(notebook):
        tree = ast.parse("\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)), (
            src[:200]
        )
