import pandas as pd

from richreps.io import write_table
from richreps.report import write_report


def probes_long(gain_shape: float) -> pd.DataFrame:
    rows = []
    for rep in range(2):
        for task, base in (("mixture (IID)", 0.30), ("shape", 0.20)):
            for method, n, acc in (
                ("CAT1 (baseline)", 1, base),
                ("CAT5", 5, base + (gain_shape if task == "shape" else 0.0)),
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
                        "test_acc": acc + 0.01 * rep,
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
                "test_acc": 0.9,
            }
        )
    return pd.DataFrame(rows)


def test_report_without_tables_says_what_to_run(tmp_path):
    text = write_report(tmp_path).read_text()
    assert "Not run: notebook 02" in text and "Not measured: notebook 04" in text and "No manifest" in text


def test_report_states_agreement_and_difference(tmp_path):
    write_table(probes_long(+0.05), tmp_path, "04_probes_long", index=False)
    write_table(
        pd.DataFrame({"method": ["CAT1"], "shape": ["20.0"]}), tmp_path, "04_table3_measured", index=False
    )
    text = write_report(tmp_path).read_text()
    agree = text.split("## Where measurement and paper agree")[1].split("## Where they differ")[0]
    assert "CAT5 - CAT1 on `shape`: +5.0" in agree and "Direct training on `shape` reaches 90.0 %" in agree
    write_table(probes_long(-0.05), tmp_path, "04_probes_long", index=False)
    differ = write_report(tmp_path).read_text().split("## Where they differ")[1]
    assert "CAT5 - CAT1 on `shape`: -5.0" in differ.split("## The run")[0]
