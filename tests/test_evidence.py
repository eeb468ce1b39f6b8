import pandas as pd
import pytest

from richreps import evidence
from richreps.evidence import claims as cl


@pytest.fixture(scope="module")
def tables():
    return evidence.load_all()


def test_tables_load_with_provenance_and_parsed_units(tables):
    assert set(tables) == {"table1_left", "table1_right", "table2", "table3"}
    t2 = tables["table2"].set_index("method")
    assert t2.loc["original", "params"] == 23_500_000 and t2.loc["ensemble", "params"] == 94_000_000
    assert tables["table3"]["total_iters"].tolist() == [450_000, 400_000, 400_000, 400_000]
    assert (
        tables["table1_right"].set_index("model").loc["NT-1000G (500M)", "pretraining_base_pairs"] == 20.5e12
    )
    prov = tables["table3"].attrs["provenance"]
    assert (
        prov["table"] == "Table 3" and "richreps-timecat" in prov["source"] and "%" in prov["units"]["inat18"]
    )


@pytest.mark.parametrize("text, value", [("23.5M", 23.5e6), ("450K", 450e3), ("0", 0.0), ("2.5B", 2.5e9)])
def test_parse_count(text, value):
    assert evidence.parse_count(text) == value


def _broken_copy(tmp_path, name, edit):
    reg = evidence.registry()
    meta = reg["tables"][name]
    src = (evidence.HERE / meta["file"]).read_text().splitlines()
    (tmp_path / meta["file"]).write_text("\n".join(edit(src)) + "\n")
    import yaml

    (tmp_path / "tables.yaml").write_text(yaml.safe_dump(reg, sort_keys=False))
    return tmp_path / "tables.yaml", tmp_path / meta["file"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda rows: [rows[0], rows[1].replace("78.4", "178.4"), *rows[2:]],
            "line 2, column 'imagenet1k' (percent)",
        ),
        (
            lambda rows: [rows[0], rows[1], rows[2].replace("200K", "200 thousand"), *rows[3:]],
            "line 3, column 'iters_per_model' (count)",
        ),
        (
            lambda rows: [rows[0], rows[1], rows[2], rows[3].replace("76.8", "n/a"), rows[4]],
            "line 4, column 'cifar100'",
        ),
        (lambda rows: [rows[0], rows[1] + ",1", *rows[2:]], "line 2: 9 fields, expected 8"),
        (lambda rows: [rows[0].replace("inat18", "inat"), *rows[1:]], "line 1: columns"),
    ],
)
def test_malformed_table_names_file_row_and_column(tmp_path, edit, message):
    reg, path = _broken_copy(tmp_path, "table3", edit)
    with pytest.raises(evidence.TableError) as err:
        evidence.load_table("table3", registry_path=reg)
    assert str(path) in str(err.value) and message in str(err.value)


def test_claim_values(tables):
    checked = cl.check_claims(tables)
    assert checked.loc["s513_inat", "computed"] == pytest.approx(12.5)
    assert checked.loc["s513_cifar100", "computed"] == pytest.approx(6.1)
    assert checked.loc["s44_inat", "computed"] == pytest.approx(9.21)
    assert checked.loc["s44_cifar100", "computed"] == pytest.approx(5.54)
    assert checked.loc["s44_size_inat", "computed"] == pytest.approx(-0.57)
    assert checked.loc["s44_size_cifar100", "computed"] == pytest.approx(-0.58)
    assert checked.loc["s44_imagenet", "computed"] == pytest.approx(2.57)
    assert checked.loc["abstract_9", "computed"] == pytest.approx(9.2)
    assert checked.loc["t1_gap_fashion", "computed"] == 3 and checked.loc["t1_gap_cifar", "computed"] == 9
    assert checked.loc["s511_fixed_compute", "computed"] == pytest.approx(1.125)
    assert checked.loc["t1r_eight", "computed"] == 10
    verdicts = checked["verdict"]
    assert set(verdicts[verdicts == "inconsistent"].index) == {
        "s44_size_inat",
        "s44_imagenet",
        "s43_all_supervised",
        "t1r_eight",
        "s511_fixed_compute",
    }


def test_rounding_tolerance():
    assert cl.rounding_tolerance("6") == 0.5 and cl.rounding_tolerance("5.5") == 0.05
    assert cl.rounding_tolerance(".5") == 0.05 and cl.rounding_tolerance("12.5") == 0.05


@pytest.mark.parametrize("stated", ["13.5", "11.5", "6.6"])
def test_a_wrong_claim_value_is_inconsistent(tables, stated):
    claim = cl._numeric(
        "wrong",
        "test",
        "deliberately wrong",
        stated,
        lambda t: max(cl.t3_gain(t, n, "inat18") for n in (2, 4, 5)),
        "best gain",
    )
    assert cl.check_claims(tables, [claim]).loc["wrong", "verdict"] == "inconsistent"


def test_a_wrong_qualitative_claim_is_inconsistent(tables):
    claim = cl.Claim(
        "wrong",
        "test",
        "CAT helps ImageNet a lot",
        True,
        lambda t: cl.t3_gain(t, 5, "imagenet1k") > 2,
        "CAT5 - CAT1 on ImageNet > 2",
    )
    assert cl.check_claims(tables, [claim]).loc["wrong", "verdict"] == "inconsistent"


def test_changed_table_flips_a_verdict(tables):
    t = {k: v.copy() for k, v in tables.items()}
    t["table3"].loc[t["table3"]["n_models"] == 1, "total_iters"] = 400_000
    assert cl.check_claims(t).loc["s511_fixed_compute", "verdict"] == "consistent"


def test_derived_columns(tables):
    t3 = cl.derived_table3(tables)
    assert t3.loc["CAT5", "inat18 gain"] == pytest.approx(12.5)
    assert t3.loc["CAT5", "mean OOD gain"] == pytest.approx(7.0)
    t2 = cl.derived_table2(tables)
    assert t2.loc["ensemble", "inat18 vs baseline"] == pytest.approx(9.21)
    assert isinstance(cl.derived_table1(tables), pd.DataFrame)
