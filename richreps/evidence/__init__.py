"""The paper's tables as data with provenance, validated on load, and the claims check.

from richreps.evidence import load_table, load_all
table3 = load_table("table3")          # a DataFrame; table3.attrs["provenance"] says where it is from
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
COUNT_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$")


class TableError(ValueError):
    """A malformed table file; the message names the file, line and column."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    unit: str


def parse_count(text: str) -> float:
    """'23.5M' -> 23_500_000.0; '450K' -> 450_000.0; '0' -> 0.0."""
    m = COUNT_RE.match(str(text))
    if not m:
        raise ValueError(f"not a count like '23.5M' or '450K': {text!r}")
    return float(m.group(1)) * COUNT_SUFFIX[m.group(2)]


def _parse_value(raw: str, kind: str):
    if kind == "str":
        if not raw.strip():
            raise ValueError("empty")
        return raw
    if kind == "count":
        return parse_count(raw)
    if kind == "int":
        return int(raw)
    value = float(raw)
    if kind == "percent" and not 0 <= value <= 100:
        raise ValueError(f"{value} is not a percentage in [0, 100]")
    if kind == "score" and not 0 <= value <= 1:
        raise ValueError(f"{value} is not a score in [0, 1]")
    if kind == "rank" and value < 1:
        raise ValueError(f"{value} is not a rank (>= 1)")
    return value


def registry(path: Path = HERE / "tables.yaml") -> dict:
    return yaml.safe_load(path.read_text())


def read_table(path: str | Path, columns: list[Column]) -> pd.DataFrame:
    """Read one CSV file and check it against its column schema."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: table file not found")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise TableError(f"{path}: empty file")
    header, body = rows[0], rows[1:]
    expected = [c.name for c in columns]
    if header != expected:
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        raise TableError(
            f"{path}: line 1: columns {header} do not match the schema {expected} (missing {missing}, unexpected {extra})"
        )
    records = []
    for line, row in enumerate(body, start=2):
        if len(row) != len(columns):
            raise TableError(f"{path}: line {line}: {len(row)} fields, expected {len(columns)}")
        record = {}
        for col, raw in zip(columns, row):
            try:
                record[col.name] = _parse_value(raw, col.type)
            except ValueError as e:
                raise TableError(f"{path}: line {line}, column '{col.name}' ({col.type}): {e}") from None
        records.append(record)
    return pd.DataFrame.from_records(records, columns=expected)


def load_table(name: str, registry_path: Path = HERE / "tables.yaml") -> pd.DataFrame:
    """Load a table by its registry name (table1_left, table1_right, table2, table3)."""
    reg = registry(registry_path)
    if name not in reg["tables"]:
        raise KeyError(f"unknown table {name!r}; known: {sorted(reg['tables'])}")
    meta = reg["tables"][name]
    columns = [Column(k, v["type"], v["unit"]) for k, v in meta["columns"].items()]
    df = read_table(registry_path.parent / meta["file"], columns)
    df.attrs["provenance"] = {
        "paper": reg["paper"],
        "table": meta["table"],
        "source": meta["source"],
        "caption": meta["caption"],
        "file": meta["file"],
        "units": {c.name: c.unit for c in columns},
    }
    return df


def load_all() -> dict[str, pd.DataFrame]:
    return {name: load_table(name) for name in registry()["tables"]}


def provenance_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = [
        {"name": n, **{k: v for k, v in t.attrs["provenance"].items() if k != "units"}}
        for n, t in tables.items()
    ]
    return pd.DataFrame(rows).set_index("name")
