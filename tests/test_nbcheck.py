"""The checks that replace nbval's exact comparison in cells whose digits come from training (issue 26):
each passes on a well-formed table and fails, naming the table, on the fault it is there to catch."""

import math

import pandas as pd
import pytest

from richreps import nbcheck


def test_layout_names_rows_and_columns_not_digits():
    t = pd.DataFrame({"a": [0.123456, 0.2], "b": [1, 2]}, index=["x", "y"])
    assert nbcheck.layout(t, "t") == "t: 2 rows (x, y); columns: a, b"


def test_a_value_outside_its_range_fails_naming_the_column():
    t = pd.DataFrame({"acc": [0.5, 1.2]})
    with pytest.raises(AssertionError, match=r"t: acc = 1.2 outside \[0.0, 1.0\]"):
        nbcheck.check_range(t, ["acc"], "t")
    nbcheck.check_range(pd.DataFrame({"acc": [0.5, math.nan]}), ["acc"], "t")  # missing is not wrong


def test_an_interval_that_misses_its_mean_fails():
    t = pd.DataFrame({"d": [1.0, 3.0], "low": [0.0, math.nan], "high": [2.0, math.nan]}, index=["a", "b"])
    nbcheck.check_intervals(t, [("d", "low", "high")], "v")
    t.loc["a", "low"] = 1.5
    with pytest.raises(AssertionError, match="v: a: d = 1.0 is outside its interval"):
        nbcheck.check_intervals(t, [("d", "low", "high")], "v")


def test_mean_sd_cells_must_parse():
    ok = pd.DataFrame({"color": ["47.8 ± 7.1", "3.0 ± 0.0"]}, index=["CAT1", "CAT2"])
    assert nbcheck.mean_sd_table(ok, "t").startswith("t: 2 rows (CAT1, CAT2)")
    with pytest.raises(AssertionError, match="is not 'mean ± sd'"):
        nbcheck.mean_sd_table(pd.DataFrame({"c": ["nan"]}), "t")
    with pytest.raises(AssertionError, match="outside"):
        nbcheck.mean_sd_table(pd.DataFrame({"c": ["147.0 ± 1.0"]}), "t")


def test_a_mean_alone_or_a_dash_is_a_cell_and_only_gains_may_be_negative():
    one_set = pd.DataFrame({"color": ["82.7", "-"]}, index=["direct training", "CAT1"])  # one seed set, none
    nbcheck.mean_sd_table(one_set, "t")
    with pytest.raises(AssertionError, match=r"mean -3.0 is outside \[0, 100\]"):
        nbcheck.mean_sd_table(pd.DataFrame({"c": ["-3.0 ± 0.5"]}), "accuracies")
    nbcheck.mean_sd_table(pd.DataFrame({"c": ["-3.0 ± 0.5"]}), "gains", gains=True)


def final_rows(**change):
    rows = {"seed": [0, 1], "step": [20, 10], "val_loss": [2.0, 2.1], "val_acc": [0.3, 0.2]}
    return pd.DataFrame({**rows, **change})


def test_final_eval_needs_one_row_per_planned_run_at_its_last_step():
    runs = [(0, 20), (1, 10)]
    said = nbcheck.final_eval(final_rows(), runs, [0], 0.1)
    assert "seeds [0, 1]" in said and "above chance" in said
    with pytest.raises(AssertionError, match=r"rows for seeds \[0\], planned \[0, 1\]"):
        nbcheck.final_eval(final_rows().iloc[:1], runs, [0], 0.1)  # a half table
    with pytest.raises(AssertionError, match="seed 1's last evaluation is at step 5"):
        nbcheck.final_eval(final_rows(step=[20, 5]), runs, [0], 0.1)
    with pytest.raises(AssertionError, match="missing"):
        nbcheck.final_eval(final_rows(val_acc=[0.3, math.nan]), runs, [0], 0.1)
    with pytest.raises(AssertionError, match="seed 0 has two rows"):
        nbcheck.final_eval(final_rows(seed=[0, 0]), [(0, 20)], [0], 0.1)
    with pytest.raises(AssertionError, match="CAT1 .seed 0. is at chance"):
        nbcheck.final_eval(final_rows(val_acc=[0.1, 0.2]), runs, [0], 0.1)
    assert "chance unknown" in nbcheck.final_eval(final_rows(val_acc=[0.1, 0.2]), runs, [0], None)


def calib_and_verdicts():
    calib = pd.DataFrame(
        {"chance": [0.1, 0.1], "ceiling": [0.9, 0.8], "floor: untrained CAT1": [0.2, 0.3],
         "ceiling from": ["direct training"] * 2, "ceiling seeds": [3, 1],
         "kept": [True, False], "why not": ["", "ceiling from 1 seed (needs 3)"]},
        index=pd.Index(["color", "shape"], name="target"),
    )  # fmt: skip
    table = pd.DataFrame(
        {"CAT5 - CAT1": [2.0, 1.0], "low": [1.0, -1.0], "high": [3.0, 3.0], "p": [0.01, math.nan], "p (Holm)": [0.01, math.nan],
         "seed sets": [3, 3], "primary": ["CAT5 - CAT1"] * 2, "verdict": ["agrees", "uninformative"],
         "why": ["", "ceiling from 1 seed (needs 3)"], "survives Holm": ["yes", ""],
         "verdict (Holm)": ["agrees", "uninformative"]},
        index=calib.index,
    )  # fmt: skip
    return calib, table


def test_calibration_says_which_targets_are_kept_and_why_not():
    calib, _ = calib_and_verdicts()
    said = nbcheck.calibration(calib).splitlines()
    assert said[1:] == [
        "kept: color",
        "color: chance 0.1; ceiling from direct training, 3 seeds; kept",
        "shape: chance 0.1; ceiling from direct training, 1 seeds; not kept (ceiling from 1 seed (needs 3))",
    ]
    calib.loc["shape", "ceiling"] = 80.0  # points where fractions belong
    with pytest.raises(AssertionError, match="04_calibration: ceiling = 80.0"):
        nbcheck.calibration(calib)


def test_verdicts_need_a_row_per_target_and_a_label_that_follows_kept():
    calib, table = calib_and_verdicts()
    assert nbcheck.verdicts(table, calib).splitlines()[1:] == [
        "color: agrees -> agrees (primary CAT5 - CAT1, 3 seed sets, survives Holm: yes; kept)",
        "shape: uninformative -> uninformative (primary CAT5 - CAT1, 3 seed sets; ceiling from 1 seed (needs 3))",
    ]
    with pytest.raises(AssertionError, match="one per calibrated target"):
        nbcheck.verdicts(table.iloc[:1], calib)
    table.loc["shape", "verdict"] = "agrees"
    with pytest.raises(AssertionError, match="shape: verdict 'agrees' disagrees with kept"):
        nbcheck.verdicts(table, calib)


def test_sentences_are_counted_and_must_be_bullets():
    assert nbcheck.lines(["- a", "- b"], "s") == "s: 2 sentences"
    with pytest.raises(AssertionError, match="is not a Markdown bullet"):
        nbcheck.lines(["a"], "s")


def test_a_figure_not_written_fails(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "f.png").write_bytes(b"x")
    with pytest.raises(AssertionError, match="f.pdf was not written"):
        nbcheck.figures_written(tmp_path, ["f"])
    (tmp_path / "figures" / "f.pdf").write_bytes(b"x")
    assert nbcheck.figures_written(tmp_path, ["f"]) == "figures written: f"


def test_a_mean_sd_table_with_two_row_levels_is_checked_cell_by_cell():
    rows = pd.MultiIndex.from_tuples([("CAT1", "10"), ("CAT1", "all")], names=["method", "shots"])
    t = pd.DataFrame({"color": ["34.9 ± 4.4", "47.8 ± 7.1"]}, index=rows)
    assert nbcheck.mean_sd_table(t, "f") == "f: 2 rows (CAT1 / 10, CAT1 / all); columns: color"
    t.loc[("CAT1", "all"), "color"] = "x"
    with pytest.raises(AssertionError, match="CAT1.*all.*'x' is not"):
        nbcheck.mean_sd_table(t, "f")


def test_the_saved_final_eval_pins_each_seeds_last_step():
    said = nbcheck.saved_final_eval(final_rows())
    assert said.splitlines()[1] == "seed@last step: 0@20, 1@10"
    with pytest.raises(AssertionError, match="a seed has two rows"):
        nbcheck.saved_final_eval(final_rows(seed=[1, 1]))


@pytest.mark.parametrize("name", ["03_pretrain_resnet50", "04_probe_transfer", "05_figures"])
def test_every_cell_nbval_ignores_for_training_digits_is_followed_by_a_check(name):
    """Issue 26: a cell that leaves nbval's exact comparison is checked to its meaning by the next cell;
    the only other reason to ignore a cell is a measurement of this machine (throughput, wall time)."""
    import nbformat

    cells = [c for c in nbformat.read(f"notebooks/{name}.ipynb", as_version=4).cells if c.cell_type == "code"]
    ignored = [i for i, c in enumerate(cells) if c.source.startswith("# NBVAL_IGNORE_OUTPUT")]
    assert ignored
    for i in ignored:
        why = cells[i].source.splitlines()[1]
        if "measurements of this machine" in why:
            continue
        assert "instruction sets" in why, f"{name} code cell {i}: ignored without saying why"
        following = cells[i + 1]
        assert "nbcheck" in following.metadata.get("tags", []) and "nbcheck." in following.source, (
            f"{name} code cell {i}: ignored, and the next cell checks nothing"
        )
