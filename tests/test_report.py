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
    assert "CAT5 - CAT1 on `shape`: +5.3 [" in agree and "Direct training on `shape` reaches 95.0 %" in agree
    assert "In distribution, CAT5 - CAT1" in s["Not decided: inconclusive, uninformative, or in distribution"]
    write_tables(tmp_path, probes_long(-0.05))
    differ = sections(write_report(tmp_path).read_text())["Where they differ"]
    assert "CAT5 - CAT1 on `shape`: -4.7 [" in differ


def test_report_never_counts_an_uninformative_target(tmp_path):
    long = probes_long(+0.05)
    long.loc[long["method"] == "direct training", "test_acc"] = 0.6  # ceiling below 90 %
    write_tables(tmp_path, long)
    s = sections(write_report(tmp_path).read_text())
    assert "shape" not in s["Where measurement and paper agree"] and "shape" not in s["Where they differ"]
    other = s["Not decided: inconclusive, uninformative, or in distribution"]
    assert "on `shape`" in other and "**uninformative** (ceiling below 90%)" in other
