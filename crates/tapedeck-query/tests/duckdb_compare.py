"""Runs each query of a plan with DuckDB over the same rows (exported to Parquet) and compares
its result with tapedeck's (written to Parquet by the Rust test), row by row, in order.

Usage: python duckdb_compare.py PLAN.json
PLAN: {"views": {"tape": "all.parquet", ...}, "queries": [{"name", "duckdb", "ours"}]}
Exit 0 when every query matches; prints each mismatch and exits 1 otherwise.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import sys
from typing import Any

import duckdb
import pyarrow.parquet as pq


def norm(v: Any) -> Any:
    """A value as a comparable one: timestamps as epoch microseconds."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        delta = v - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def same(a: Any, b: Any) -> bool:
    """Equal, floats within a relative 1e-9 (sums in another order round differently)."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def rows_of(table: Any) -> list[tuple[Any, ...]]:
    cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [tuple(norm(c[r]) for c in cols) for r in range(table.num_rows)]


def main() -> int:
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, path in plan["views"].items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    failures = 0
    for q in plan["queries"]:
        # Through Arrow, as tapedeck's result is read: no pytz needed for TIMESTAMPTZ values.
        rel = con.sql(q["duckdb"])
        arrow = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
        theirs = rows_of(arrow)
        ours = rows_of(pq.read_table(q["ours"]))
        equal = len(ours) == len(theirs) and all(
            len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)) for a, b in zip(ours, theirs)
        )
        if not equal:
            failures += 1
            print(f"MISMATCH {q['name']}: tapedeck {len(ours)} rows, DuckDB {len(theirs)}")
            for a, b in list(zip(ours, theirs))[:5]:
                if a != b:
                    print(f"  tapedeck {a}\n  duckdb   {b}")
            if len(ours) != len(theirs):
                print(f"  first rows: tapedeck {ours[:3]} duckdb {theirs[:3]}")
        elif not theirs and not q.get("empty", False):
            failures += 1
            print(f"EMPTY {q['name']}: both empty, but the query should return rows")
    print(f"compared {len(plan['queries'])} queries, {failures} mismatched")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
