import pandas as pd
import pytest

from richreps.io import atomic_path, to_markdown, write_table, write_text


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left behind


def test_tables_are_written_as_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"acc": [71.0, 74.25]}, index=["CAT1", "CAT2"])
    csv, md = write_table(df, tmp_path, "t")
    assert pd.read_csv(csv, index_col=0).equals(df)
    assert md.read_text().splitlines()[2] == "| CAT1 | 71 |"
    assert "| a\\|b |" in to_markdown(pd.DataFrame({"x": ["a|b"]}), index=False)
