"""Plotting helpers with one seaborn style; every figure is saved as PNG and PDF."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from richreps import counterexample as ce
from richreps.io import atomic_path

POS, NEG = "#d62728", "#1f77b4"  # red +1, blue -1 as in the paper's figures


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})
    # Fixed metadata keeps PDFs byte-stable between runs.
    plt.rcParams["pdf.compression"] = 6


def save(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write out_dir/figures/name.{png,pdf} atomically and return the paths."""
    paths = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / "figures" / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
            fig.savefig(tmp, format=ext, metadata=meta)
        paths.append(path)
    return paths


def show_saved(out_dir: str | os.PathLike, names: list[str]) -> list[str]:
    """Display figures another notebook saved (PNG); returns the names that are missing."""
    from IPython.display import Image, display

    missing = []
    for name in names:
        path = Path(out_dir) / "figures" / f"{name}.png"
        if path.exists():
            display(Image(filename=str(path)))
        else:
            missing.append(name)
    return missing


def _points(ax: plt.Axes, masses: np.ndarray, scale: float = 2400.0) -> None:
    colors = [POS if y > 0 else NEG for y in ce.LABELS]
    ax.scatter(ce.POINTS[:, 0], ce.POINTS[:, 1], s=scale * np.asarray(masses), c=colors, alpha=0.85)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)
    ax.set(xlim=(-1.7, 1.7), ylim=(-1.7, 1.7), aspect="equal", xlabel="phi1", ylabel="phi2")


def plot_components(lam) -> plt.Figure:
    """Figure 2: the four components and their mixture; marker area is proportional to mass."""
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.3), sharey=True)
    for j, ax in enumerate(axes[:4]):
        _points(ax, ce.COMPONENTS[j])
        ax.set_title(f"P{j + 1}")
    _points(axes[4], ce.mixture(lam))
    axes[4].set_title("mixture, lambda=(" + ", ".join(f"{v:.2f}" for v in lam) + ")")
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def plot_optimal_classifiers(cases: dict[str, list[float]]) -> plt.Figure:
    """Figure 3: the 0-1-optimal classifier of each mixture as a dotted line."""
    fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.8), sharey=True)
    for ax, (title, lam) in zip(np.atleast_1d(axes), cases.items()):
        masses = ce.mixture(lam)
        clf = ce.optimal_classifier(masses)
        _points(ax, masses)
        w, b = clf.w, clf.b
        t = np.linspace(-1.7, 1.7, 2)
        if abs(w[1]) > 1e-12:
            ax.plot(t, -(w[0] * t + b) / w[1], "k:", lw=2)
        else:
            ax.plot(np.full(2, -b / w[0]), t, "k:", lw=2)
        ignored = ", ".join(ce.POINT_NAMES[i] for i in clf.misclassified)
        ax.set_title(f"{title}\nignores {ignored}; uses {clf.feature_names}", fontsize=9)
    for ax in np.atleast_1d(axes)[1:]:
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def plot_correlation_paths(paths: pd.DataFrame) -> plt.Figure:
    """Exact mixture covariance vs the proof's linear term along one-parameter paths."""
    g = sns.relplot(
        data=paths,
        x="t",
        y="value",
        hue="quantity",
        style="quantity",
        col="case",
        kind="line",
        height=3.2,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    for ax in g.axes.flat:
        ax.axhline(0, color="0.3", lw=0.8)
    return g.figure


def plot_survival(table: pd.DataFrame, x: str, hue: str) -> plt.Figure:
    """Stacked counts of which features the sparse learner kept."""
    counts = table.groupby([x, hue]).size().unstack(fill_value=0)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    counts.plot(kind="bar", stacked=True, ax=ax, colormap="viridis", width=0.75)
    ax.set(ylabel="runs", xlabel=x)
    ax.legend(title=hue, bbox_to_anchor=(1.02, 1), loc="upper left")
    plt.setp(ax.get_xticklabels(), rotation=0)
    return fig


def plot_accuracy_vs_members(long: pd.DataFrame, title: str) -> plt.Figure:
    """Figure 6 / Table 3: accuracy vs number of concatenated members, one line per dataset.

    `long` has columns n_models, dataset, accuracy and, optionally, source (paper / measured)
    and sd (error bars where there are replicates).
    """
    has_source = "source" in long and long["source"].nunique() > 1
    g = sns.relplot(
        data=long,
        x="n_models",
        y="accuracy",
        hue="dataset",
        style="source" if has_source else None,
        col="dataset",
        kind="line",
        marker="o",
        height=2.8,
        aspect=0.9,
        facet_kws={"sharey": False},
        col_wrap=4,
    )
    if "sd" in long:
        for ax, (_, sub) in zip(g.axes.flat, long.groupby("dataset", sort=False)):
            ax.errorbar(sub["n_models"], sub["accuracy"], yerr=sub["sd"], fmt="none", ecolor="0.3", capsize=3)
    g.set(xticks=sorted(long["n_models"].unique()))
    g.set_axis_labels("members (n)", "top-1 accuracy (%)")
    g.set_titles("{col_name}")
    g.figure.suptitle(title, y=1.04)
    return g.figure


def plot_training_curves(metrics: pd.DataFrame) -> plt.Figure:
    """Training loss and validation accuracy (at x, BN recomputed) of every member run."""
    train_rows = metrics.dropna(subset=["loss"])
    eval_rows = metrics.dropna(subset=["val_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    sns.lineplot(data=train_rows, x="step", y="loss", hue="seed", palette="tab20", ax=axes[0], legend=False)
    sns.lineplot(data=eval_rows, x="step", y="val_acc", hue="seed", palette="tab20", marker="o", ax=axes[1])
    axes[0].set_title("training loss (at y)")
    axes[1].set_title("validation accuracy (at x, BN recomputed)")
    axes[1].legend(title="seed", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_paper_vs_measured(paper: pd.DataFrame, measured: pd.DataFrame) -> plt.Figure:
    """Figure 6 / Table 3: accuracy vs members at fixed compute, the paper's beside this run's.

    Both frames have n_models, dataset, accuracy. `measured` (`aggregate.fig6_measured`) also has
    `trained` and `ci`: trained CATn are solid lines, the untrained controls dashed in the same
    colour, both with 95 % interval bars over replicate seed sets.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, df, title in (
        (axes[0], paper.assign(trained=True), "paper (Table 3, ResNet-50, ImageNet)"),
        (axes[1], measured, "measured (this run; dashed: untrained controls; bars: 95 % CI)"),
    ):
        names = list(dict.fromkeys(df["dataset"]))
        for (name, trained), sub in df.groupby(["dataset", "trained"], sort=False):
            sub = sub.sort_values("n_models")
            ax.errorbar(
                sub["n_models"],
                sub["accuracy"],
                yerr=sub["ci"] if "ci" in sub else None,
                marker="o" if trained else "x",
                linestyle="-" if trained else "--",
                capsize=3,
                color=sns.color_palette("tab10")[names.index(name) % 10],
                label=name if trained else f"{name} (untrained)",
                alpha=1.0 if trained else 0.6,
            )
        ax.set(
            title=title,
            xlabel="members concatenated (fixed total compute)",
            ylabel="top-1 accuracy (%)",
            xticks=sorted(df["n_models"].unique()),
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_coverage(coverage: pd.DataFrame) -> plt.Figure:
    """Per-cue coverage heatmap: representations x cues, linear-probe test accuracy (%)."""
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(coverage) + 1.2))
    sns.heatmap(
        coverage,
        annot=True,
        fmt=".1f",
        cmap="viridis",
        vmin=0,
        vmax=100,
        ax=ax,
        cbar_kws={"label": "test accuracy (%)"},
    )
    ax.set(xlabel="cue", ylabel="")
    fig.tight_layout()
    return fig


def plot_direct_vs_probe(paper: pd.DataFrame, measured: pd.DataFrame) -> plt.Figure:
    """The paper's central question as one picture: direct training vs linear probes, per target.

    Both frames have target, method and accuracy (%); `measured` may carry sd.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 2.4]})
    for ax, df, title in (
        (axes[0], paper, "paper (Table 1 left)"),
        (axes[1], measured, "measured (this run)"),
    ):
        sns.barplot(data=df, x="target", y="accuracy", hue="method", ax=ax, palette="Set2", errorbar=None)
        if "sd" in df:
            for patch_group, (_, sub) in zip(ax.containers, df.groupby("method", sort=False)):
                xs = [p.get_x() + p.get_width() / 2 for p in patch_group]
                ax.errorbar(xs, sub["accuracy"], yerr=sub["sd"], fmt="none", ecolor="0.2", capsize=2)
        ax.set(title=title, xlabel="", ylabel="test accuracy (%)", ylim=(0, 105))
        ax.legend(fontsize=7, loc="lower right")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    return fig


def _intervals(
    ax: plt.Axes, df: pd.DataFrame, x: str, y: str, kept: list[str], low: str = "low", high: str = "high"
) -> None:
    """One line per target with 95 % interval bars; targets outside `kept` dotted and faint."""
    names = list(dict.fromkeys(df["target"]))
    for name, sub in df.groupby("target", sort=False):
        sub = sub.sort_values(x)
        err = np.vstack([sub[y] - sub[low], sub[high] - sub[y]])
        keep = name in kept
        ax.errorbar(
            sub[x],
            sub[y],
            yerr=None if np.isnan(err).all() else err,
            marker="o",
            capsize=3,
            linestyle="-" if keep else ":",
            alpha=1.0 if keep else 0.4,
            color=sns.color_palette("tab10")[names.index(name) % 10],
            label=name if keep else f"{name} (not kept)",
        )
    ax.set_xscale("log")
    ax.legend(fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")


def plot_budget_sweep(gains: pd.DataFrame, kept: list[str]) -> plt.Figure:
    """CATmax - WIDE1 (when WIDE1 was exported at the budgets) and CATmax - CAT1 (points, 95 % paired
    intervals) against the pretraining budget (CAT1's steps), one panel each."""
    n = int(gains["n_max"].max()) if not gains.empty else 0
    panels = [("gain", "low", "high", f"CAT{n} - CAT1")]
    if "gain vs WIDE1" in gains and gains["gain vs WIDE1"].notna().any():
        panels.insert(0, ("gain vs WIDE1", "low vs WIDE1", "high vs WIDE1", f"CAT{n} - WIDE1"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1.5, 3.6), squeeze=False)
    for ax, (y, lo, hi, name) in zip(axes[0], panels):
        _intervals(ax, gains.dropna(subset=[y]), "budget", y, kept, lo, hi)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set(xlabel="budget: CAT1's steps (CATs at the same share)", ylabel=f"{name} (points)", title=name)
    fig.suptitle("where TIME-CONCAT helps: the gain at each budget")
    fig.tight_layout()
    return fig


def plot_map(table: pd.DataFrame, kept: list[str], contrast: str) -> plt.Figure:
    """The map (`regimes.table`): CATmax - `contrast` (CAT1 or a control) in points with 95 % paired
    intervals against the budget, one panel per pretraining pool, one line per target (kept ones solid)."""
    from richreps.verdicts import contrast_columns

    y, lo, hi = contrast_columns(contrast)
    pools = list(dict.fromkeys(table.sort_values("pool_size")["pool"]))
    fig, axes = plt.subplots(1, len(pools), figsize=(4.2 * len(pools) + 1.5, 3.6), sharey=True, squeeze=False)
    n = int(table["n_max"].max())
    for ax, pool in zip(axes[0], pools):
        _intervals(ax, table[table["pool"] == pool].dropna(subset=[y]), "budget", y, kept, lo, hi)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set(xlabel="budget: CAT1's steps on this pool", title=pool)
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    axes[0][0].set_ylabel(f"CAT{n} - {contrast} (points)")
    fig.suptitle(f"the map: CAT{n} - {contrast} by budget and pretraining pool")
    fig.tight_layout()
    return fig


def plot_trajectory(traj: pd.DataFrame, kept: list[str]) -> plt.Figure:
    """Each target's probe accuracy along CAT1's run (mean and 95 % interval over seed sets)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _intervals(ax, traj, "step", "acc", kept)
    ax.set(xlabel="training step of CAT1's run", ylabel="linear-probe test accuracy (%)",
           title="what one run keeps along the way")  # fmt: skip
    fig.tight_layout()
    return fig


def plot_contrasts(table: pd.DataFrame) -> plt.Figure:
    """Per target, CATmax - WIDE1 (primary, when measured) and CATmax - CAT1 with 95 % paired intervals
    (points), from `verdicts.verdicts` or its CSV. Judged targets solid, the others faint; the x labels
    carry the verdict, and "(Holm: no)" where the primary contrast does not survive the correction."""
    n = next(c for c in table.columns if c.endswith(" - CAT1")).split(" - ")[0]
    cols = [(f"{n} - WIDE1", "low (vs WIDE1)", "high (vs WIDE1)"), (f"{n} - CAT1", "low", "high")]
    cols = [c for c in cols if c[0] in table.columns]
    judged = ~table["verdict"].isin(["uninformative", "saturated"])
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(table)), 3.6))
    xs = np.arange(len(table))
    for j, (mean, lo, hi) in enumerate(cols):
        shift = (j - (len(cols) - 1) / 2) * 0.2
        for x, (_, r), keep in zip(xs, table.iterrows(), judged):
            err = None if pd.isna(r[lo]) else [[r[mean] - r[lo]], [r[hi] - r[mean]]]
            ax.errorbar(x + shift, r[mean], yerr=err, fmt="os"[j], capsize=3, alpha=1.0 if keep else 0.35,
                        color=sns.color_palette("tab10")[j], label=mean if x == 0 else None)  # fmt: skip
    holm = table["survives Holm"] if "survives Holm" in table else pd.Series("", index=table.index)
    labels = [
        f"{t}\n{r['verdict']}" + ("\n(Holm: no)" if holm[t] == "no" else "") for t, r in table.iterrows()
    ]
    ax.set_xticks(xs, labels, fontsize=7)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set(ylabel="points of test accuracy", title=f"{n} against WIDE1 (matched dimension) and CAT1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
