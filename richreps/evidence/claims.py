"""Every quantitative claim of the text that a table can check, with its verdict.

A numeric claim is consistent when the value computed from the table lies within the
rounding the sentence itself uses (half a unit of its last digit: "+6%" allows 5.5..6.5,
"+5.5%" allows 5.45..5.55). A qualitative claim ("comparably", "all metrics") is given an
explicit test, written in `how`, and is consistent when that test holds.
Percent claims are differences in percentage points, as the paper uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

Tables = dict[str, pd.DataFrame]
OOD = ["inat18", "cifar100", "cifar10"]
METRICS_HIGH = ["average_score", "mean_pct_imp", "median_pct_imp"]
COMPARABLE_PTS = 1.0  # our threshold for "comparably" / "not significantly": within 1 point


@dataclass(frozen=True)
class Claim:
    id: str
    where: str
    quote: str
    stated: float | bool
    compute: Callable[[Tables], float | bool]
    how: str
    tolerance: float = 0.0  # half a unit of the stated value's last digit


def rounding_tolerance(text: str) -> float:
    """Half a unit of the last digit written: '6' -> 0.5, '5.5' -> 0.05, '.5' -> 0.05."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10**-decimals


def _row(t: pd.DataFrame, key: str, value) -> pd.Series:
    return t.set_index(key).loc[value]


def t2(tables: Tables, method: str, col: str) -> float:
    return float(_row(tables["table2"], "method", method)[col])


def t1_gap(tables: Tables, trial: str) -> float:
    row = _row(tables["table1_left"], "trial", trial)
    return float(row["direct_bal"] - row["transfer_mix_to_bal"])


def t3_gain(tables: Tables, n: int, col: str) -> float:
    t = tables["table3"].set_index("n_models")
    return float(t.loc[n, col] - t.loc[1, col])


def _dasha_best(tables: Tables) -> bool:
    t = tables["table1_right"].set_index("model")
    dasha, others = t.loc["DASHA (our workflow)"], t.drop("DASHA (our workflow)")
    return bool(
        all(dasha[m] > others[m].max() for m in METRICS_HIGH)
        and dasha["average_rank"] < others["average_rank"].min()
    )


def _supervised_beat_all_gfm(tables: Tables) -> bool:
    t = tables["table1_right"]
    sup, gfm = t[t["kind"] == "supervised"], t[t["kind"] == "GFM"]
    high = all(sup[m].min() > gfm[m].max() for m in METRICS_HIGH)
    return bool(high and sup["average_rank"].max() < gfm["average_rank"].min())


def _monotone_ood(tables: Tables) -> bool:
    t = tables["table3"].sort_values("n_models")
    return bool(all(t[c].is_monotonic_increasing and t[c].is_unique for c in OOD))


def _cat_budget(tables: Tables) -> bool:
    t = tables["table3"]
    cats = t[t["n_models"] > 1]
    return bool(
        ((cats["iters_per_model"] * cats["n_models"]) == 400_000).all()
        and (cats["total_iters"] == 400_000).all()
    )


def _change_column(tables: Tables) -> bool:
    t = tables["table1_left"]
    return bool(((t["transfer_mix_to_bal"] - t["direct_bal"]) == t["change"]).all())


def _compute_ratio(tables: Tables) -> float:
    t = tables["table3"].set_index("n_models")["total_iters"]
    return float(t.loc[1] / t.drop(1).max())


def _gfm_count(tables: Tables) -> float:
    return float((tables["table1_right"]["kind"] == "GFM").sum())


def _max_abs_imagenet(tables: Tables) -> float:
    return max(abs(t3_gain(tables, n, "imagenet1k")) for n in (2, 4, 5))


def _numeric(id, where, quote, stated_text, compute, how) -> Claim:
    return Claim(
        id, where, quote, float(stated_text), compute, how, rounding_tolerance(stated_text.lstrip("+-"))
    )


CLAIMS: list[Claim] = [
    _numeric(
        "abstract_9",
        "Abstract; Section 1",
        "On ResNet, this approach yields a 9% improvement in transfer accuracy without incurring extra pretraining cost.",
        "9",
        lambda t: t3_gain(t, 4, "inat18"),
        "Table 3, CAT4 - CAT1 on iNat18 (the only fixed-compute gain that rounds to 9; CAT5 gives 12.5)",
    ),
    _numeric(
        "s513_inat",
        "Section 5.1.3",
        "+12.5% on INATURALIST18",
        "12.5",
        lambda t: max(t3_gain(t, n, "inat18") for n in (2, 4, 5)),
        "Table 3, best CATn - CAT1 on iNat18",
    ),
    _numeric(
        "s513_cifar100",
        "Section 5.1.3",
        "+6% on CIFAR-100",
        "6",
        lambda t: max(t3_gain(t, n, "cifar100") for n in (2, 4, 5)),
        "Table 3, best CATn - CAT1 on CIFAR-100",
    ),
    Claim(
        "s513_imagenet",
        "Section 5.1.3",
        "On ImageNet1k (IID), the ensemble models performed comparably or slightly worse than the single baseline model",
        True,
        lambda t: _max_abs_imagenet(t) <= COMPARABLE_PTS,
        f"Table 3, every |CATn - CAT1| on ImageNet within {COMPARABLE_PTS:g} point",
    ),
    Claim(
        "s513_no_boost",
        "Section 5.1.3",
        "concatenating additional sets of features does not significantly boost model performance on IMAGENET1K",
        True,
        lambda t: max(t3_gain(t, n, "imagenet1k") for n in (2, 4, 5)) <= COMPARABLE_PTS,
        f"Table 3, largest CATn - CAT1 on ImageNet at most {COMPARABLE_PTS:g} point",
    ),
    Claim(
        "s513_more_models",
        "Section 5.1.3",
        "concatenating more models trained on fewer steps can yield a significantly better performing model on new datasets",
        True,
        _monotone_ood,
        "Table 3, accuracy strictly increases with n on iNat18, CIFAR-100 and CIFAR-10",
    ),
    _numeric(
        "s44_inat",
        "Section 4.4",
        "far better when transferred to new datasets, (+9% on INAT18)",
        "9",
        lambda t: t2(t, "ensemble", "inat18") - t2(t, "baseline", "inat18"),
        "Table 2, ensemble - baseline on iNat18",
    ),
    _numeric(
        "s44_cifar100",
        "Section 4.4",
        "(+5.5% on CIFAR100)",
        "5.5",
        lambda t: t2(t, "ensemble", "cifar100") - t2(t, "baseline", "cifar100"),
        "Table 2, ensemble - baseline on CIFAR-100",
    ),
    _numeric(
        "s44_size_inat",
        "Section 4.4",
        "only increasing size of a model (such as the baseline) will worsen performance of transfer: (-.5% on INAT18)",
        "-.5",
        lambda t: t2(t, "baseline", "inat18") - t2(t, "original", "inat18"),
        "Table 2, baseline - original on iNat18",
    ),
    _numeric(
        "s44_size_cifar100",
        "Section 4.4",
        "(-.6% on CIFAR100)",
        "-.6",
        lambda t: t2(t, "baseline", "cifar100") - t2(t, "original", "cifar100"),
        "Table 2, baseline - original on CIFAR-100",
    ),
    _numeric(
        "s44_imagenet",
        "Section 4.4",
        "Combining these features *marginally* improves performance on IMAGENET1K (+2%).",
        "2",
        lambda t: t2(t, "ensemble", "imagenet1k_direct") - t2(t, "original", "imagenet1k_direct"),
        "Table 2, ensemble - original on ImageNet (ensemble - baseline is +0.57; baseline - original is exactly +2.00)",
    ),
    Claim(
        "s44_comparable",
        "Section 4.4",
        "They find the concatenated ensemble to perform comparably to the baseline on IMAGENET1K",
        True,
        lambda t: (
            abs(t2(t, "ensemble", "imagenet1k_direct") - t2(t, "baseline", "imagenet1k_direct"))
            <= COMPARABLE_PTS
        ),
        f"Table 2, |ensemble - baseline| on ImageNet within {COMPARABLE_PTS:g} point",
    ),
    _numeric(
        "t2_params_baseline",
        "Table 2 caption",
        "These models contain approximately four times the parameters of the original ResNet50",
        "4",
        lambda t: t2(t, "baseline", "params") / t2(t, "original", "params"),
        "Table 2, baseline params / original params",
    ),
    _numeric(
        "t2_params_ensemble",
        "Table 2 caption",
        "These models contain approximately four times the parameters of the original ResNet50",
        "4",
        lambda t: t2(t, "ensemble", "params") / t2(t, "original", "params"),
        "Table 2, ensemble params / original params",
    ),
    _numeric(
        "t1_gap_fashion",
        "Section 4.2",
        "a performance gap {3%, 9%} remains",
        "3",
        lambda t: t1_gap(t, "MNIST-Fashion"),
        "Table 1 left, direct - transfer on MNIST-Fashion",
    ),
    _numeric(
        "t1_gap_cifar",
        "Section 4.2",
        "a performance gap {3%, 9%} remains",
        "9",
        lambda t: t1_gap(t, "MNIST-CIFAR"),
        "Table 1 left, direct - transfer on MNIST-CIFAR",
    ),
    Claim(
        "t1_change",
        "Table 1 left",
        "Change column",
        True,
        _change_column,
        "Table 1 left, Change = transfer - direct in every row",
    ),
    Claim(
        "t1r_dasha",
        "Table 1 caption",
        "The simple supervised models trained by their supervised 'DASHA' workflow outperform ... Genomic Foundation Models",
        True,
        _dasha_best,
        "Table 1 right, DASHA best of all rows on all four aggregated metrics",
    ),
    Claim(
        "s43_all_supervised",
        "Section 4.3",
        "They find the directly trained models to *consistently outperform* the GFM across all aggregated metrics",
        True,
        _supervised_beat_all_gfm,
        "Table 1 right, every supervised row (Wide ResNet, UNet, DASHA) beats every GFM on every metric",
    ),
    _numeric(
        "t1r_eight",
        "Table 1 caption",
        "outperform eight well Genomic Foundation Models (GFM)",
        "8",
        _gfm_count,
        "Table 1 right, number of GFM rows (pretraining base-pairs > 0)",
    ),
    _numeric(
        "s511_fixed_compute",
        "Section 5.1.1; Table 3 caption",
        "Total pretraining time is fixed ... Overall computational effort of pretraining is maintained.",
        "1.0",
        _compute_ratio,
        "Table 3, CAT1 total iters / CATn total iters (1.0 if fixed)",
    ),
    Claim(
        "t3_split",
        "Table 3 caption",
        "each trained independently for 400K/N iters",
        True,
        _cat_budget,
        "Table 3, iters per model x n = total = 400K for every CATn, n > 1",
    ),
    _numeric(
        "fig6_baseline",
        "Figure 6 caption",
        "A single (RESNET50CAT1) model is trained for 400k iters on ImageNet1k (plus 50k iters for a stronger argument)",
        "450000",
        lambda t: float(_row(t["table3"], "n_models", 1)["iters_per_model"]),
        "Table 3, CAT1 iters per model",
    ),
]


def verdict(claim: Claim, value: float | bool) -> str:
    if isinstance(claim.stated, bool):
        return "consistent" if bool(value) == claim.stated else "inconsistent"
    return "consistent" if abs(float(value) - claim.stated) <= claim.tolerance + 1e-9 else "inconsistent"


def check_claims(tables: Tables, claims: list[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim: where, quote, stated, computed, tolerance, how, verdict."""
    rows = []
    for c in claims:
        value = c.compute(tables)
        rows.append(
            {
                "id": c.id,
                "where": c.where,
                "quote": c.quote,
                "stated": c.stated,
                "computed": value if isinstance(value, bool) else round(float(value), 4),
                "tolerance": "" if isinstance(c.stated, bool) else c.tolerance,
                "how": c.how,
                "verdict": verdict(c, value),
            }
        )
    return pd.DataFrame(rows).set_index("id")


def derived_table2(tables: Tables) -> pd.DataFrame:
    """Table 2 with gains of each method over the baseline and over the original ResNet50."""
    t = tables["table2"].set_index("method")
    cols = ["imagenet1k_direct", *OOD]
    out = t.copy()
    for ref in ("baseline", "original"):
        for c in cols:
            out[f"{c} vs {ref}"] = (t[c] - t.loc[ref, c]).round(2)
    return out


def derived_table3(tables: Tables) -> pd.DataFrame:
    """Table 3 with gains over CAT1 and the mean OOD gain."""
    t = tables["table3"].set_index("method")
    out = t.copy()
    base = t[t["n_models"] == 1].iloc[0]
    for c in ["imagenet1k", *OOD]:
        out[f"{c} gain"] = (t[c] - base[c]).round(2)
    out["mean OOD gain"] = out[[f"{c} gain" for c in OOD]].mean(axis=1).round(2)
    out["compute vs CAT1"] = (t["total_iters"] / base["total_iters"]).round(3)
    return out


def derived_table1(tables: Tables) -> pd.DataFrame:
    t = tables["table1_left"].set_index("trial")
    return t.assign(gap_to_direct=t["direct_bal"] - t["transfer_mix_to_bal"])
