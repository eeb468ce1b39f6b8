import re

import pandas as pd

from richreps import verdicts
from richreps.io import write_table
from richreps.report import write_report


def probes_long(gain_shape: float) -> pd.DataFrame:
    rows = []
    for rep in range(3):
        for task, base in (("mixture (IID)", 0.30), ("shape", 0.20)):
            for method, n, acc in (
                ("CAT1 (baseline)", 1, base),
                ("CAT5", 5, base + (gain_shape if task == "shape" else 0.0)),
                ("untrained CAT1", 1, 0.1),
                ("untrained CAT5", 5, 0.1),
            ):
                rows.append(
                    {
                        "replicate": rep,
                        "method": method,
                        "n": n,
                        "steps_per_member": 10,
                        "compute_steps": 10 * n,
                        "task": task,
                        "shots": "all",
                        "test_acc": acc + 0.01 * rep + (0.002 * rep * rep if method == "CAT5" else 0),
                        "chance": 0.1,
                    }
                )
        rows.append(
            {
                "replicate": rep,
                "method": "direct training",
                "n": 1,
                "steps_per_member": 5,
                "compute_steps": 5,
                "task": "shape",
                "shots": "all",
                "test_acc": 0.95,
                "chance": 0.1,
                "plateaued": True,
            }
        )
    return pd.DataFrame(rows)


def test_report_without_tables_says_what_to_run(tmp_path):
    text = write_report(tmp_path).read_text()
    assert "Not run: notebook 02" in text and "Not measured: notebook 04" in text and "No manifest" in text


def write_tables(tmp_path, long: pd.DataFrame) -> None:
    """What notebook 04 writes: the long table, Table 3, calibration and verdicts."""
    write_table(long, tmp_path, "04_probes_long", index=False)
    write_table(
        pd.DataFrame({"method": ["CAT1"], "shape": ["20.0"]}), tmp_path, "04_table3_measured", index=False
    )
    calib = verdicts.calibration(long, {"mixture (IID)": 0.35})
    write_table(calib, tmp_path, "04_calibration")
    write_table(verdicts.verdicts(long, calib), tmp_path, "04_verdicts")


def sections(text: str) -> dict[str, str]:
    return {part.split("\n", 1)[0]: part for part in text.split("\n## ")[1:]}


def test_report_states_agreement_and_difference_by_the_verdicts(tmp_path):
    write_tables(tmp_path, probes_long(+0.05))
    s = sections(write_report(tmp_path).read_text())
    agree = s["Where measurement and paper agree"]
    assert "`shape`: CAT5 - CAT1 = +5.3 [" in agree and "Direct training" not in agree
    assert "No WIDE1 in this run" in s["Table 3: the paper and this run (notebook 04)"]
    other = s["Not decided: inconclusive, uninformative, or in distribution"]
    assert "In distribution, `mixture (IID)`: CAT5 - CAT1" in other
    # a direct-versus-probe gap of 70 points is far outside the plan's margin around the paper's 3 and 9
    assert "Direct training on `shape` reaches 95.0 %" in other
    assert re.search(r"the gap \(\+\d+\.\d\) does not agree with the paper's Table 1 gaps of 3 and 9", other)
    write_tables(tmp_path, probes_long(-0.05))
    differ = sections(write_report(tmp_path).read_text())["Where they differ"]
    assert "`shape`: CAT5 - CAT1 = -4.7 [" in differ


def test_report_never_counts_an_uninformative_target(tmp_path):
    long = probes_long(+0.05)
    long.loc[long["method"] == "direct training", "plateaued"] = False  # the ceiling was still rising
    write_tables(tmp_path, long)
    s = sections(write_report(tmp_path).read_text())
    assert "shape" not in s["Where measurement and paper agree"] and "shape" not in s["Where they differ"]
    other = s["Not decided: inconclusive, uninformative, or in distribution"]
    assert "`shape`:" in other and "**uninformative** (ceiling still rising" in other


def with_wide(long: pd.DataFrame, wide_shape: float) -> pd.DataFrame:
    """`long` plus WIDE1 and untrained WIDE1 rows: WIDE1 at CAT1 + `wide_shape` on shape."""
    cat1 = long[long["method"] == "CAT1 (baseline)"]
    wide = cat1.assign(method="WIDE1", test_acc=cat1["test_acc"] + (cat1["task"] == "shape") * wide_shape)
    return pd.concat([long, wide, cat1.assign(method="untrained WIDE1", test_acc=0.1)], ignore_index=True)


def test_report_says_dimension_explains_a_gain_that_wide1_matches(tmp_path):
    write_tables(tmp_path, with_wide(probes_long(+0.05), +0.06))
    s = sections(write_report(tmp_path).read_text())
    differ = s["Where they differ"]
    assert "`shape`: CAT5 - WIDE1 = " in differ and "the plan's verdict: dimension explains it" in differ
    assert "training's share of CAT5 - WIDE1 (trained gap - untrained gap) = -1.7 [" in differ
    assert "survives Holm" in s["Table 3: the paper and this run (notebook 04)"]


def test_an_agreement_that_does_not_survive_holm_is_not_listed_as_agreeing(tmp_path):
    long = probes_long(+0.05)
    write_tables(tmp_path, long)
    table = pd.read_csv(tmp_path / "tables" / "04_verdicts.csv", index_col=0)
    assert table.loc["shape", "verdict"] == "agrees"
    table.loc["shape", ["survives Holm", "verdict (Holm)"]] = [
        "no",
        "inconclusive (agrees does not survive Holm)",
    ]
    write_table(table, tmp_path, "04_verdicts")
    s = sections(write_report(tmp_path).read_text())
    assert "`shape`" not in s["Where measurement and paper agree"]
    other = s["Not decided: inconclusive, uninformative, or in distribution"]
    assert (
        "`shape`: CAT5 - CAT1 = +5.3 [" in other
        and "**inconclusive (agrees does not survive Holm)**" in other
    )


def manifest(tmp_path, recorded: str) -> None:
    import json

    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "params_file": "p.yaml",
                "parameters": {"plan_sha256": recorded},
                "git_commit": "x",
                "versions": {},
                "platform": "test",
                "notebooks": [],
            }
        )
    )


def test_report_prints_the_plan_hash_and_whether_the_params_recorded_it(tmp_path):
    import hashlib

    from richreps.io import project_path

    now = hashlib.sha256(project_path("results/PLAN.md").read_bytes()).hexdigest()
    for recorded, said in (
        (now, "**follows the plan**"),
        ("0" * 64, "**plan changed since the params were written**"),
        ("", "**no plan recorded**"),
    ):
        manifest(tmp_path, recorded)
        run = sections(write_report(tmp_path).read_text())["The run"]
        assert f"SHA-256 `{now}` at report time" in run and said in run


def test_plan_lines_say_so_when_there_is_no_plan_file(tmp_path):
    from richreps.report import plan_lines

    assert "not found" in plan_lines("abc", tmp_path / "PLAN.md")[0]


def test_a_map_runs_report_files_its_contrasts_under_one_descriptive_heading_not_agree_or_differ(tmp_path):
    """The plan gives the map no verdicts (results/PLAN.md), so its report has no 'agree' or 'differ' section."""
    import json

    write_tables(tmp_path, probes_long(+0.05))
    params = {"map_pools": [0], "train_size": 100, "seed_sets": 3}
    manifest = {"parameters": params, "notebooks": [], "versions": {}, "params_file": "map.yaml",
                "git_commit": "0" * 40, "platform": "test"}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    s = sections(write_report(tmp_path).read_text())
    assert "Where measurement and paper agree" not in s and "Where they differ" not in s
    main = s["The main budget's contrasts (descriptive: the plan gives the map no verdicts)"]
    assert "`shape`: CAT5 - CAT1 = +5.3 [" in main and "In distribution, `mixture (IID)`" in main
    for word in ("agree", "differ", "Holm", "inconclusive", "architecture"):
        assert word not in main, word
    assert "**Contrasts** (descriptive" in s["Table 3: the paper and this run (notebook 04)"]
