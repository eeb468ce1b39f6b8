"""The README's result sections say no more than their tables (issue 29): every interval they quote, in
the form "+11.0 [+8.3, +13.6]", is a contrast of a committed table, rounded as the tables are printed."""

import re
from pathlib import Path

import pandas as pd
import pytest

from richreps import keep, regimes

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = re.compile(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]")


def triples(columns) -> list[tuple[str, str, str]]:
    """The (mean, low, high) column triples of a table: "CAT5 - X" with "low (vs X)" and "high (vs X)"
    (CAT1's: "low", "high") and training's share of it, as `04_verdicts` names them, and "gain vs X" with
    "low vs X" and "high vs X" (CAT1's: "gain", "low", "high"), as the sweep and the map do."""
    out = [("gain", "low", "high")]
    for c in columns:
        if " - " in c and c.split(" - ")[0].startswith("CAT"):
            other = c.split(" - ", 1)[1]
            vs = "untrained" if other.startswith("untrained") else other
            out.append((c, "low", "high") if other == "CAT1" else (c, f"low (vs {vs})", f"high (vs {vs})"))
            share = (f"training's share vs {other}", f"low (share vs {other})", f"high (share vs {other})")
            out.append(share)
        if c.startswith("gain vs "):
            other = c.removeprefix("gain vs ")
            out.append((c, f"low vs {other}", f"high vs {other}"))
    return out


SECTIONS = {
    "## The cue result": [
        "results/laptop/tables/04_verdicts.csv",
        "results/laptop/tables/04_budget_sweep.csv",
    ],
    "## The map of regimes": [
        "results/laptop_map/tables/04_map.csv",
        "results/laptop_map/tables/04_ablation.csv",
    ],
}


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(title)
    return text[start : text.index("\n## ", start + 1)]


def intervals_of(tables: list[str]) -> set[str]:
    """Every contrast of the tables as the README prints it: numbers at one decimal, signed."""
    out = set()
    for name in tables:
        table = pd.read_csv(ROOT / name)
        for col in table.columns:  # already formatted ('+1.7 [-2.1, +5.5]', the ablation table)
            if not pd.api.types.is_numeric_dtype(table[col]):
                out |= {m.group(0) for v in table[col].dropna().astype(str) for m in INTERVAL.finditer(v)}
        for mean, low, high in triples(table.columns):
            if {mean, low, high} <= set(table.columns):
                for m, lo, hi in table[[mean, low, high]].dropna().itertuples(index=False):
                    out.add(f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]")
    return out


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_every_interval_the_readme_quotes_is_in_the_tables_it_cites(title):
    quoted = [m.group(0) for m in INTERVAL.finditer(section(title))]
    assert quoted, f"{title}: no interval found; the pattern no longer matches how the README writes them"
    missing = sorted(set(quoted) - intervals_of(SECTIONS[title]))
    assert not missing, f"{title}: not in {SECTIONS[title]}: {missing}"


def test_the_verdict_words_of_the_cue_result_are_the_tables_verdicts_after_holm():
    """ "**agrees** on A and B and **differs** on C": the targets after each bold verdict, up to the next bold
    verdict or the sentence's end, are exactly the targets the table gives that verdict after Holm."""
    text = section("## The cue result").replace("`", "")
    table = pd.read_csv(ROOT / "results/laptop/tables/04_verdicts.csv", index_col=0)
    said = {}
    for m in re.finditer(r"\*\*(agrees|differs)\*\* on (.*?)(?=\*\*(?:agrees|differs)\*\*|\. )", text, re.S):
        said[m.group(1)] = {t for t in table.index if re.search(rf"\b{re.escape(t)}\b", m.group(2))}
    assert said, "no bold verdict found: the pattern no longer matches how the README writes them"
    for verdict, targets in said.items():
        assert targets == set(table.index[table["verdict (Holm)"] == verdict]), verdict


def test_the_kept_targets_the_cue_result_names_are_the_calibrations():
    text = section("## The cue result").replace("`", "")
    calib = pd.read_csv(ROOT / "results/laptop/tables/04_calibration.csv", index_col=0)
    kept = set(keep.kept_targets(calib))
    m = re.search(r"(\w+) targets are kept: (.*?)\.\s", text, re.S)
    assert m, "no 'N targets are kept: ...' sentence found"
    named = {t for t in calib.index if re.search(rf"\b{re.escape(t.split(' (')[0])}\b", m.group(2))}
    assert named == kept
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    assert words.index(m.group(1).lower()) == len(kept)


def test_the_maps_erasure_lines_are_counted_from_its_committed_tables():
    """The map's bullets are `regimes.erasure_lines` of the committed `04_map.csv` and kept targets, all of
    them, so a rerun that changes a count fails here until the README is regenerated."""
    text = section("## The map of regimes")
    tables = ROOT / "results/laptop_map/tables"
    calib = pd.read_csv(tables / "04_calibration.csv", index_col=0)
    kept = keep.kept_targets(calib)
    lines = regimes.erasure_lines(regimes.erasures(pd.read_csv(tables / "04_map.csv"), kept))
    said = [ln for ln in text.splitlines() if ln.startswith("- **") and " erases " in ln]
    assert said == lines


def test_the_maps_count_of_cells_against_joint_is_the_tables():
    """ "no cell of the map puts CAT5 above it, and N of its M cells put it below": CAT5 - JOINTn's interval."""
    text = " ".join(section("## The map of regimes").split())
    table = pd.read_csv(ROOT / "results/laptop_map/tables/04_map.csv")
    m = re.search(r"no cell of the map puts CAT5 above it, and (\d+) of its (\d+) cells put it below", text)
    assert m, "the sentence on JOINT5's cells is gone; update this test with it"
    assert (table["low vs JOINT5"] > 0).sum() == 0
    assert (int(m.group(1)), int(m.group(2))) == ((table["high vs JOINT5"] < 0).sum(), len(table))
