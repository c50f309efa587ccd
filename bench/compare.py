#!/usr/bin/env python3
"""Runs tapedeck and the Python baseline (../shared/bench/pysinks.py) on alicat-sample in one run.

usage: bench/compare.py [--runs 5] [--n 1000000] [--batch 64] [--python VENV_PYTHON]
                        [--sinks csv,jsonl,sqlite,parquet] [--rss-rows 10000000]

Each round runs, for every sink, the baseline and `tapedeck record --source sim:alicat?n=N
--sink KIND:FILE --batch-size 64 --flush-interval 1s` into fresh files (with `sync` before each
run), plus tapedeck into null:. It prints the medians, tapedeck / baseline, bytes per sample, and
the peak RSS (/usr/bin/time) of a --rss-rows recording into each sink. Needs a release build
(cargo build --release; TAPEDECK_BIN=PATH runs another binary) and a Python with pyarrow (the
baseline's Parquet writer).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = os.path.join(ROOT, "..", "shared", "bench", "pysinks.py")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("TAPEDECK_BIN") or os.path.join(TARGET, "release", "tapedeck")
EXT = {"csv": "csv", "jsonl": "jsonl", "sqlite": "db", "parquet": "parquet"}


def baseline(python, sink, n, batch, out):
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # earlier runs' dirty pages are written back before the clock starts
    text = subprocess.run([python, BASELINE, sink, str(n), str(batch), out],
                          check=True, capture_output=True, text=True).stdout
    return float(re.search(r"rows_per_sec ([0-9.]+)", text).group(1)), int(re.search(r"bytes ([0-9]+)", text).group(1))


def fresh(path):
    for p in [path, path + "-wal", path + "-shm"]:
        if os.path.exists(p):
            os.remove(p)


def tapedeck(sink_uri, n, batch):
    os.sync()
    out = subprocess.run([BIN, "record", "--source", f"sim:alicat?n={n}", "--sink", sink_uri,
                          "--batch-size", str(batch), "--flush-interval", "1s",
                          "--summary-json", "-", "--quiet", "--progress", "never"],
                         check=True, capture_output=True, text=True).stdout
    s = json.loads(out)
    return s["rows_per_sec"], s["sinks"][0]["bytes"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--sinks", default="csv,jsonl,sqlite,parquet")
    ap.add_argument("--rss-rows", type=int, default=10_000_000)
    a = ap.parse_args()
    sinks = [s for s in a.sinks.split(",") if s]
    work = tempfile.mkdtemp(prefix="tapedeck-bench-")
    results = {}
    sizes = {}
    for r in range(a.runs):
        for kind in sinks:
            py, py_bytes = baseline(a.python, kind, a.n, a.batch, os.path.join(work, "py"))
            path = os.path.join(work, f"td.{EXT[kind]}")
            fresh(path)
            td, td_bytes = tapedeck(f"{kind}:{path}", a.n, a.batch)
            if kind == "sqlite":
                td_bytes = os.path.getsize(path)  # the database file after close
            results.setdefault(f"py_{kind}", []).append(py)
            results.setdefault(f"td_{kind}", []).append(td)
            sizes[kind] = (py_bytes, td_bytes)
        results.setdefault("td_null", []).append(tapedeck("null:", a.n, a.batch)[0])
        print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:,.0f}" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians of {a.runs} runs, alicat-sample, n={a.n:,}, batch {a.batch}, flush 1 s:")
    for kind in sinks:
        py_b, td_b = sizes[kind]
        print(f"  {kind:7}: tapedeck {med['td_' + kind]:>12,.0f} rows/s   baseline {med['py_' + kind]:>10,.0f} rows/s"
              f"   ratio {med['td_' + kind] / med['py_' + kind]:5.1f}x   bytes/sample {td_b / a.n:.2f} (baseline {py_b / a.n:.2f})")
    print(f"  null   : tapedeck {med['td_null']:>12,.0f} rows/s")
    for kind in sinks:
        big = os.path.join(work, f"big.{EXT[kind]}")
        fresh(big)
        t = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, "record", "--source", f"sim:alicat?n={a.rss_rows}",
                            "--sink", f"{kind}:{big}", "--quiet", "--progress", "never"],
                           check=True, capture_output=True, text=True)
        rss_kib = int(t.stderr.strip().splitlines()[-1])
        print(f"  peak RSS, {a.rss_rows:,} rows into {kind}: {rss_kib / 1024:.1f} MiB "
              f"({os.path.getsize(big) / 1e6:.1f} MB written)")
        fresh(big)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
