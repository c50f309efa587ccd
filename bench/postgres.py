#!/usr/bin/env python3
"""The PostgreSQL sink against the Python baseline and against psql's binary \\copy, in one run.

usage: bench/postgres.py [--runs 5] [--n 200000] [--big 1000000] [--dsn URL] [--python VENV_PYTHON]

Each round runs, on alicat-sample:
  1. the baseline: ../shared/bench/pysinks.py postgres N 64 DIR DSN (asyncpg COPY per 64 rows);
  2. tapedeck record --source sim:alicat?n=N --batch-size 64 --flush-interval 1s into a fresh table
     (default synchronous_commit=off), and the same with synchronous_commit=on;
  3. tapedeck with --batch-size 10000 for BIG rows into a fresh table;
  4. psql -c "\\copy T FROM FILE (FORMAT binary)" of the same BIG rows into a fresh table of the same
     columns. FILE is prepared once, before the rounds, by `\\copy … TO FILE (FORMAT binary)` from a
     table tapedeck filled, so both load identical rows and types.
Rates are rows / wall-clock seconds of the whole process (start, connect, load, close) for tapedeck
and psql; the baseline's own figure (it times its loop). Medians are printed with the ratios. Needs
a release build (cargo build --release) and a Python with asyncpg.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = os.path.join(ROOT, "..", "shared", "bench", "pysinks.py")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "tapedeck")
SCHEMA = "tapedeck_bench"


def psql(dsn, sql):
    return subprocess.run(["psql", dsn, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def tapedeck(dsn, table, n, batch, extra=""):
    uri = f"{dsn}?schema={SCHEMA}&table={table}&create_table=true{extra}"
    dt = timed([BIN, "record", "--source", f"sim:alicat?n={n}", "--sink", uri, "--batch-size", str(batch),
                "--flush-interval", "1s", "--quiet", "--progress", "never"])
    got = int(psql(dsn, f"SELECT count(*) FROM {SCHEMA}.{table}"))
    assert got == n, f"{table}: {got} rows, expected {n}"
    return n / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--dsn", default=os.environ.get("TAPEDECK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tapedeck-pg-bench-")
    psql(a.dsn, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
    # The \copy input: BIG rows of alicat-sample in PostgreSQL's binary COPY format.
    tapedeck(a.dsn, "source", a.big, 10_000)
    copy_file = os.path.join(work, "alicat.pgcopy")
    psql(a.dsn, f"\\copy {SCHEMA}.source TO '{copy_file}' (FORMAT binary)")
    print(f"copy file: {os.path.getsize(copy_file):,} bytes for {a.big:,} rows", flush=True)
    results = {}
    for r in range(a.runs):
        out = subprocess.run([a.python, BASELINE, "postgres", str(a.n), "64", os.path.join(work, "py"), a.dsn],
                             check=True, capture_output=True, text=True).stdout
        results.setdefault("baseline_64", []).append(float(out.split("rows_per_sec")[1].split()[0]))
        results.setdefault("tapedeck_64", []).append(tapedeck(a.dsn, f"t64_{r}", a.n, 64))
        results.setdefault("tapedeck_64_sync", []).append(
            tapedeck(a.dsn, f"t64s_{r}", a.n, 64, "&synchronous_commit=on"))
        results.setdefault("tapedeck_10k", []).append(tapedeck(a.dsn, f"t10k_{r}", a.big, 10_000))
        psql(a.dsn, f"CREATE TABLE {SCHEMA}.c_{r} (LIKE {SCHEMA}.source)")
        dt = timed(["psql", a.dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy {SCHEMA}.c_{r} FROM '{copy_file}' (FORMAT binary)"])
        assert int(psql(a.dsn, f"SELECT count(*) FROM {SCHEMA}.c_{r}")) == a.big
        results.setdefault("psql_copy", []).append(a.big / dt)
        psql(a.dsn, f"DROP TABLE {SCHEMA}.t64_{r}, {SCHEMA}.t64s_{r}, {SCHEMA}.t10k_{r}, {SCHEMA}.c_{r}")
        print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:,.0f}" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians of {a.runs} runs, alicat-sample, rows/s:")
    for k, v in med.items():
        print(f"  {k:17} {v:>12,.0f}")
    print(f"  batch 64:     tapedeck / baseline = {med['tapedeck_64'] / med['baseline_64']:.1f}x"
          f"  (synchronous_commit=on: {med['tapedeck_64_sync'] / med['baseline_64']:.1f}x)")
    print(f"  batch 10,000: tapedeck / psql \\copy binary = {med['tapedeck_10k'] / med['psql_copy']:.2f}")
    psql(a.dsn, f"DROP SCHEMA {SCHEMA} CASCADE")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
