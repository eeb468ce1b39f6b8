"""outputs/<params name>/report.md: one page a reader can open without Jupyter.

It is assembled from what the notebooks wrote (manifest.json, tables/*.csv, figures/*.png) and
says where the measurements agree with the paper and where they differ: by the interval-based
verdicts of `richreps.verdicts`, so a target that cannot discriminate is never counted either way; a descriptive run
(the map) shows its contrasts without verdicts. Sections whose tables are missing say which notebook to run.

Over 450 lines because it is one page assembled in the page's order, section after section; split, a reader would
chase the page across modules.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import yaml

from richreps import aggregate, keep, regimes, sweep, verdicts
from richreps.evidence import load_table
from richreps.io import project_path, to_markdown, write_text

PAPER_OOD = ["inat18", "cifar100", "cifar10"]
PLAN = "results/PLAN.md"  # the pre-registered analysis plan (issue 19)


def plan_lines(recorded: str | None, plan: str | Path = PLAN) -> list[str]:
    """The plan's SHA-256 now, and whether it is the one the params recorded (`plan_sha256`):
    "follows the plan", "plan changed since the params were written", or "no plan recorded"."""
    path = project_path(plan)
    if not path.is_file():
        return [f"- Analysis plan: `{plan}` not found, so this run cannot be checked against one."]
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    lines = [f"- Analysis plan `{plan}`: SHA-256 `{now}` at report time."]
    if not recorded:
        lines.append("- **no plan recorded**: the params' `plan_sha256` is empty.")
    elif recorded.strip().lower() == now:
        lines.append("- **follows the plan**: the params record the same SHA-256.")
    else:
        lines.append(
            f"- **plan changed since the params were written**: they record `{recorded}`; the verdicts "
            "below follow the plan as it is now, not the one the params pre-registered."
        )
    return lines + earlier_runs(path.read_text())


def earlier_runs(plan_text: str) -> list[str]:
    """The plan's own account of the runs made before its latest revision and what they showed (the first
    paragraph of its last "## Revision" section), so that the report lists them beside its verdicts."""
    sections = re.split(r"^## ", plan_text, flags=re.M)
    latest = next((sec for sec in reversed(sections) if sec.startswith("Revision")), None)
    if latest is None:
        return []
    title, _, body = latest.partition("\n")
    paragraph = body.strip().split("\n\n")[0].replace("\n", " ")
    return [f"- Runs before the plan's {title.split(' (')[0].lower()} (they judge nothing): {paragraph}"]


def rule_text(table: pd.DataFrame, n_max: int) -> str:
    """The verdict rule the table was judged by, in words (results/PLAN.md: revision 2 or version 1)."""
    name = verdicts.primary_name(table)
    if name == "SINGLE-ES":
        return (
            f"agrees: CAT{n_max} - SINGLE-ES above 0; differs: below 0; inconclusive otherwise; JOINT{n_max}, "
            "CAT1, CAT1-ES, WIDE1 and WIDE1-ES beside it, each with its own Holm"
        )
    return (
        f"agrees: CAT{n_max} - {name} and CAT{n_max} - CAT1 above 0; dimension explains it: CAT{n_max} - CAT1 "
        f"above 0, CAT{n_max} - {name} not; differs: CAT{n_max} - {name} below 0"
    )


def _parameters(out: Path) -> dict:
    path = out / "manifest.json"
    return json.loads(path.read_text())["parameters"] if path.exists() else {}


def _recorded_plan(out: Path) -> str | None:
    return _parameters(out).get("plan_sha256")


# The paper's regime (../shared/reference.md): CAT1 450K steps at AlgoPerf's global batch 1024 on ImageNet's
# 1,281,167 images, 2.3 times the v0.6 step hint (195,999); members at 200K, 100K and 80K of 450K.
PAPER_REGIME = {"baseline": 450_000, "step_hint": 195_999, "batch": 1024, "images": 1_281_167}
PAPER_MEMBERS = {2: 200_000, 4: 100_000, 5: 80_000}


def regime_lines(p: dict) -> list[str]:
    """The run's training regime beside the paper's: which ratios it matches and which it cannot.

    `p` holds notebook 03's parameters (the manifest's); missing keys (another notebook's run) give no lines."""
    need = ("train_size", "baseline_steps", "total_steps", "cat_sizes", "global_batch")
    if not all(k in p for k in need) or p.get("pretrain_data", "cues") != "cues":
        return []
    base, batch, pool = p["baseline_steps"], p["global_batch"], p["train_size"]
    paper_epochs = PAPER_REGIME["baseline"] * PAPER_REGIME["batch"] / PAPER_REGIME["images"]
    if pool:
        data = f"a finite pool of {pool:,} images: CAT1 sees {base * batch / pool:.1f} epochs (the paper: {paper_epochs:.0f})"
    else:
        data = "a fresh sample every step (no epochs; the paper revisits a finite set)"
    plateau = p.get("plateau_step", 0)
    ratio = PAPER_REGIME["baseline"] / PAPER_REGIME["step_hint"]
    past = (
        f"CAT1 trains {base} steps, {base / plateau:.1f} times its validation plateau (step {plateau}, measured "
        f"on a pilot run; the paper: {ratio:.1f} times AlgoPerf's step hint)"
        if plateau
        else f"CAT1 trains {base} steps; no plateau step recorded (`plateau_step` 0), so how far past it is unknown"
    )
    shares = ", ".join(
        f"CAT{n} {p['total_steps'] // n} steps ({p['total_steps'] // n / base:.3f}"
        + (f"; paper {PAPER_MEMBERS[n] / PAPER_REGIME['baseline']:.3f})" if n in PAPER_MEMBERS else ")")
        for n in sorted(p["cat_sizes"])
    )
    return [
        f"- Pretraining data: {data}.",
        f"- {past}.",
        f"- Members at a share of CAT1's steps: {shares}.",
    ]


def _map_note(p: dict) -> list[str]:
    """A map run (`map_pools`) is descriptive by the plan: its main-budget verdicts are shown, not judged."""
    if not p.get("map_pools"):
        return []
    main = [p["train_size"]] if "train_size" in p else []
    pools = ", ".join(regimes.pool_name(s) for s in [*main, *p["map_pools"]])
    return [
        f"- This run is the map of regimes (pools: {pools}; {p.get('seed_sets')} seed sets). The plan makes the "
        "map descriptive: the contrasts above are its main budget's, on fewer seed sets than the plan's 5 "
        "(with the main study's recipe and seeds, its members are that study's first seed sets), shown without "
        "verdicts; so is the ablation."
    ]


def _findings(agree: list, differ: list, other: list, claim_differ: list, descriptive: bool) -> list[str]:
    """The report's first sections, chosen by the corrected verdicts. A map run gets no verdicts by the plan
    (results/PLAN.md), so its main budget's contrasts go under one heading that says so, whatever their labels."""
    if descriptive:
        return [
            "## The main budget's contrasts (descriptive: the plan gives the map no verdicts)",
            "",
            *([f"- {x}" for x in other] or ["- (nothing measured yet)"]),  # _table3 files all here
            *[f"- Claims check: {d}" for d in claim_differ],
            "",
        ]
    return [
        "## Where measurement and paper agree",
        "",
        *([f"- {a}" for a in agree] or ["- (nothing measured yet)"]),
        "",
        "## Where they differ",
        "",
        *([f"- {d}" for d in differ] or ["- (no difference measured)"]),
        *[f"- Claims check: {d}" for d in claim_differ],
        "",
        "## Not decided: inconclusive, uninformative, or in distribution",
        "",
        *([f"- {o}" for o in other] or ["- (nothing)"]),
        "",
    ]


def _table(out: Path, name: str, **kw) -> pd.DataFrame | None:
    path = out / "tables" / f"{name}.csv"
    return pd.read_csv(path, **kw) if path.exists() else None


def _manifest(out: Path) -> list[str]:
    path = out / "manifest.json"
    if not path.exists():
        return ["No manifest: this folder was not written by `python -m richreps.run`."]
    m = json.loads(path.read_text())
    runs = (
        pd.DataFrame(m["notebooks"])[["notebook", "status", "wall_time_s"]]
        if m["notebooks"]
        else pd.DataFrame()
    )
    versions = pd.DataFrame(sorted(m["versions"].items()), columns=["package", "version"])
    params = yaml.safe_dump(m["parameters"], sort_keys=True, default_flow_style=None).strip()
    return [
        f"- params file: `{m['params_file']}`; git commit: `{m['git_commit']}`; platform: {m['platform']}",
        "",
        to_markdown(runs, index=False) if not runs.empty else "No notebook ran.",
        "",
        "<details><summary>package versions and parameters</summary>",
        "",
        to_markdown(versions, index=False),
        "```yaml",
        params,
        "```",
        "</details>",
    ]


def _claims(out: Path) -> tuple[list[str], list[str]]:
    claims = _table(out, "02_claims")
    if claims is None:
        return ["Not run: notebook 02 writes `tables/02_claims.csv`."], []
    shown = claims[["id", "where", "stated", "computed", "verdict"]]
    bad = claims[claims["verdict"] == "inconsistent"]
    differ = [
        f"The text says {r['quote']!r} ({r['where']}); the table gives {r['computed']} ({r['how']})."
        for _, r in bad.iterrows()
    ]
    lines = [
        f"{(claims['verdict'] == 'consistent').sum()} of {len(claims)} claims agree with the paper's own tables "
        "within the rounding they use.",
        "",
        to_markdown(shown, index=False),
    ]
    return lines, differ


def _table3(out: Path, descriptive: bool = False) -> tuple[list[str], list[str], list[str], list[str]]:
    """Table 3's section, and the report's findings (agree, differ, other). A descriptive run (the map) gets
    its contrasts without the plan's verdict words: no Holm label, no agree or differ, no reading of JOINTn."""
    paper = load_table("table3").set_index("method")
    lines = [
        "**Paper (Table 3, top-1 %, ResNet-50 pretrained on ImageNet-1k, linear probes):**",
        "",
        to_markdown(paper[["iters_per_model", "total_iters", "imagenet1k", *PAPER_OOD]]),
    ]
    measured = _table(out, "04_table3_measured")
    long = _table(out, "04_probes_long")
    if measured is None or long is None:
        return [*lines, "", "Not measured: notebook 04 writes the measured table."], [], [], []
    lines += [
        "",
        "**Measured (test %, mean ± sd over replicate seed sets):**",
        "",
        to_markdown(measured, index=False),
    ]
    calib, table = _table(out, "04_calibration", index_col=0), _table(out, "04_verdicts", index_col=0)
    if calib is None or table is None:
        return (
            [*lines, "", "No verdicts: notebook 04 writes 04_calibration.csv and 04_verdicts.csv."],
            [],
            [],
            [],
        )
    n_max = int(long.loc[long["method"].str.match(r"^CAT\d"), "n"].max())
    heading = (
        "**Contrasts** (descriptive: the plan gives this run no verdicts, so the verdict columns below are "
        "computed as for a study and not read; points"
        if descriptive
        else "**Verdicts** (points"
    )
    lines += [
        "",
        "**How far each target can discriminate** (fractions; floor: untrained controls, ceiling: direct "
        "training, or the mixture's exact Bayes accuracy). Only kept targets earn a verdict:",
        "",
        to_markdown(calib.round(3)),
        "",
        f"{heading}; 95 % paired t intervals over seed sets; primary contrast: "
        f"{table['primary'].iloc[0] if 'primary' in table else f'CAT{n_max} - CAT1'}; {rule_text(table, n_max)}; "
        "Holm over the judged targets' primary contrasts beside them):",
        "",
        to_markdown(table.round(3)),
        "",
        *([] if descriptive else verdicts.verdict_lines(table)),
    ]
    ood = verdicts.ood_lines(table)
    if ood:
        lines += ["", "**Out-of-distribution targets against the cue targets:**", "", *ood]
    paper_gain = aggregate.paper_gains().iloc[-1]
    paper_ood = ", ".join(f"{d} {paper_gain[d]:+.1f}" for d in PAPER_OOD)
    agree, differ, other = [], [], []
    for task, r in table.iterrows():
        judged = not descriptive and r.get("survives Holm") in ("yes", "no")
        holm = f"; after Holm: {r['verdict (Holm)']}" if judged else ""
        text = (
            f"`{task}`: {verdicts.contrasts(table, task)} points over {int(r['seed sets'])} seed sets{holm}"
        )
        if descriptive:
            other.append(f"{'In distribution, ' if task == aggregate.IID else ''}{text}.")
        elif task == aggregate.IID:
            other.append(
                f"In distribution, {text} ({r['verdict']}); the paper: {paper_gain['imagenet1k']:+.1f} on ImageNet, "
                "where it reports no benefit from concatenation."
            )
        elif r.get("verdict (Holm)", r["verdict"]) == "agrees":  # only what survives Holm is counted for
            above = verdicts.primary_name(table)
            above = "both" if above == verdicts.WIDE1 else above  # version 1: above WIDE1 and CAT1
            agree.append(
                f"{text}: CAT{n_max} above {above}{verdicts.joint_clause(table, task)}; the paper's CAT5 - CAT1 is "
                f"positive on every OOD target ({paper_ood})."
            )
        elif r.get("verdict (Holm)", r["verdict"]) == "differs":
            below = verdicts.primary_name(table)
            differ.append(
                f"{text}: CAT{n_max} is below {below}, where the paper's CAT5 - CAT1 is positive on every OOD "
                f"target ({paper_ood})."
            )
        elif r["verdict"] == "dimension explains it":
            differ.append(
                f"{text}: CAT{n_max} beats CAT1 but not WIDE1, one network of its feature dimension (the plan's "
                "verdict: dimension explains it; the paper's Table 2 sets CAT4 above such a network)."
            )
        else:
            why = f" ({r['why']})" if r["verdict"] in verdicts.NOT_JUDGED else ""
            other.append(f"{text}: **{r.get('verdict (Holm)', r['verdict'])}**{why}.")
    summary = aggregate.task_summary(long)
    for task, g in summary.dropna(subset=[aggregate.DIRECT]).iterrows():
        gap = g[aggregate.DIRECT] - g["best probe"]
        text = (
            f"Direct training on `{task}` reaches {g[aggregate.DIRECT]:.1f} %, the best linear probe "
            f"{g['best probe']:.1f} % (gap {gap:+.1f})"
        )
        if pd.notna(g.get(aggregate.DIRECT_EQUAL)):  # equal labels, as the paper's Table 1 compares
            text += f"; trained directly on as many labels as the probe: {g[aggregate.DIRECT_EQUAL]:.1f} %"
        if task not in calib.index or not bool(calib.loc[task, "kept"]):
            word = "saturated" if task in verdicts.SATURATED else "uninformative"
            other.append(f"{text}: not counted, the target is {word}.")
        elif descriptive:
            other.append(f"{text}.")
        else:  # results/PLAN.md revision 2: within a stated margin of the paper's 3 and 9 points, or not
            # the paper's Table 1 trains directly on the labels the adapted model gets: equal labels where run
            equal = pd.notna(g.get(aggregate.DIRECT_EQUAL))
            judged = g[aggregate.DIRECT_EQUAL] - g["best probe"] if equal else gap
            which = "equal-label gap" if equal else "gap"
            low, high = verdicts.PAPER_DIRECT_GAPS
            window = f"{low - verdicts.DIRECT_GAP_MARGIN:g} to {high + verdicts.DIRECT_GAP_MARGIN:g}"
            word = "agrees with" if verdicts.direct_gap_agrees(judged) else "does not agree with"
            other.append(
                f"{text}: the {which} ({judged:+.1f}) {word} the paper's Table 1 gaps of {low:g} and {high:g} points "
                f"within the plan's margin ({window} points)."
            )
    return lines, agree, differ, other


def _beyond(out: Path) -> list[str]:
    """The budget sweep and the trajectory, in the sentences notebook 04 shows."""
    calib = _table(out, "04_calibration", index_col=0)
    kept = keep.kept_targets(calib)
    gains, traj = _table(out, "04_budget_sweep"), _table(out, "04_trajectory")
    lines = [
        "**(a) CATmax - CAT1 by pretraining budget** (points, 95 % paired t intervals over seed sets):",
        "",
    ]
    lines += sweep.sweep_lines(gains, kept) if gains is not None else ["- Not measured: no `sweep_budgets`."]
    lines += ["", "**(b) Probe accuracy along CAT1's run** (%, 95 % t intervals over seed sets):", ""]
    lines += (
        sweep.trajectory_lines(traj, kept) if traj is not None else ["- Not measured: no `trajectory_steps`."]
    )
    return lines


def _map(out: Path) -> list[str]:
    """The map of regimes: one figure per contrast with its sentence and cells (notebook 04's `04_map`), and
    revision 3's count of the cells where a control erases the gain."""
    sentences = regimes.saved_lines(out)
    if sentences is None:
        return ["- Not run: notebook 03's `map_pools` is empty (or notebook 04 did not probe the cue tasks)."]
    calib = _table(out, "04_calibration", index_col=0)
    kept = keep.kept_targets(calib)
    lines = [
        "The budget sweep repeated on each pretraining pool; descriptive (results/PLAN.md): 95 % paired t "
        "intervals over seed sets, no verdicts. One figure per contrast, one panel per pool.",
        "",
    ]
    table = _table(out, "04_map")
    for contrast in regimes.contrasts_in(table):
        name = regimes.figure_name(contrast)
        if (out / "figures" / f"{name}.png").exists():
            cells = regimes.compact(table, kept, contrast)
            lines += [f"![{name}](figures/{name}.png)", "", *sentences[name], "",
                      f"CATmax - {contrast} in every cell (points, kept targets):", "",
                      to_markdown(cells, index=False), ""]  # fmt: skip
    found = regimes.erasures(table, kept)
    return [
        *lines,
        "Which controls erase the gain (results/PLAN.md revision 3: CATmax - CAT1 above 0, CATmax - control "
        "not; counts, not tests):",
        "",
        *regimes.erasure_lines(found),
        "",
        to_markdown(found, index=False),
    ]


def _ablation(out: Path) -> list[str]:
    table = _table(out, "04_ablation")
    if table is None:
        return ["- Not run: notebook 03's `ablate_label_smoothing` is empty."]
    key = next(c for c in table.columns if c not in ("target", "kept", "seed sets") and " - " not in c)
    return [
        f"CATmax - WIDE1 and CATmax - CAT1 (points, 95 % paired t intervals over seed sets) at each `{key}`, "
        "the main run's first; the ablation retrains CAT1, CATmax and WIDE1 at the main budget with the "
        "main plan's seeds, and each other setting's row gives the paired interval of its change from the main run:",
        "",
        to_markdown(table, index=False),
    ]


def _counterexample(out: Path) -> list[str]:
    summary = _table(out, "01_sweep_summary")
    coverage = _table(out, "01_probe_coverage")
    if summary is None or coverage is None:
        return ["Not run: notebook 01."]
    return [
        "Mixtures swept over the simplex, by outcome of the exact 0-1-optimal linear classifier:",
        "",
        to_markdown(summary, index=False),
        "",
        "Per-component linear-probe accuracy of each representation:",
        "",
        to_markdown(coverage.rename(columns={"Unnamed: 0": "representation"}), index=False),
    ]


def write_report(out_dir: str | Path) -> Path:
    """Assemble report.md in `out_dir` from the run's manifest, tables and figures."""
    out = Path(out_dir)
    claims, claim_differ = _claims(out)
    descriptive = bool(_parameters(out).get("map_pools"))  # the plan makes the map descriptive
    table3, agree, differ, other = _table3(out, descriptive)
    figures = sorted((out / "figures").glob("*.png"))
    lines = [
        f"# richreps report: `{out.name}`",
        "",
        "Companion to *These Are Not All the Features You Are Looking For* (Yang, Zhang, Bottou). Every number "
        "below was computed by this run's notebooks; the paper's numbers are quoted from its tables.",
        "",
        *_findings(agree, differ, other, claim_differ, descriptive),
        "## The run",
        "",
        *plan_lines(_recorded_plan(out)),
        *regime_lines(_parameters(out)),
        *_map_note(_parameters(out)),
        "",
        *_manifest(out),
        "",
        "## Claims check (notebook 02)",
        "",
        *claims,
        "",
        "## Table 3: the paper and this run (notebook 04)",
        "",
        *table3,
        "",
        "## Beyond the paper: where TIME-CONCAT helps (notebook 04)",
        "",
        *_beyond(out),
        "",
        "## The map of regimes (notebook 04)",
        "",
        *_map(out),
        "",
        "## Ablation: label smoothing (notebook 04)",
        "",
        *_ablation(out),
        "",
        "## The counterexample (notebook 01)",
        "",
        *_counterexample(out),
        "",
        "## Figures",
        "",
        *[f"### {p.stem}\n\n![{p.stem}](figures/{p.name})\n" for p in figures],
    ]
    return write_text(out / "report.md", "\n".join(lines) + "\n")
