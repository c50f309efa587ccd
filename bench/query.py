#!/usr/bin/env python3
"""`tapedeck query` on big tapes, in one run: a 1%-of-the-time-range query vs the same query
over the whole tape, a full-scan aggregate vs DuckDB over a Parquet file of the same rows, the
bytes each query reads, and the full scan's peak RSS; then the recorder's speed with and without
a `query --follow` beside it. tapedeck's times are given both as whole processes and as the
query's own time (`--stats`: from taking the snapshot to the last row printed) in a fresh
process, and warm: the median of the runs after the first inside one `--follow` process, against
DuckDB's runs after the first inside one Python process (its own median of all runs is given
too).

usage: bench/query.py [--rows 20000000] [--blocks 4000] [--runs 5] [--python VENV_PYTHON]
                      [--work DIR] [--compression none|lz4|zstd] [--keep]

Needs a release build with the query engine (cargo build --release) and a Python with duckdb
(the test venv: ~/.cache/tapedeck-venv, made by scripts/test). The tapes are made once in
--work (kept with --keep and reused when present).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "tapedeck")


def run(args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw)


def tape_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith("seg-"))


def record(uri, tape, compression, rows_hint):
    if os.path.isdir(tape):
        return
    t = time.perf_counter()
    run(["record", "--source", uri, "--tape", tape, "--compression", compression,
         "--fsync", "never", "--quiet", "--progress", "never"])
    print(f"recorded {tape}: {tape_bytes(tape) / 1e9:.2f} GB in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)


def query(tape, sql, stats=False, rss=False):
    """(seconds, stdout, stats line, peak RSS KiB) of one `tapedeck query`."""
    cmd = [BIN, "query", tape, sql, "--format", "csv"] + (["--stats"] if stats else [])
    if rss:
        cmd = ["/usr/bin/time", "-f", "RSS %M"] + cmd
    os.sync()
    t = time.perf_counter()
    p = subprocess.run(cmd, check=True, capture_output=True, text=True)
    secs = time.perf_counter() - t
    m = re.search(r"RSS (\d+)", p.stderr)
    return secs, p.stdout, p.stderr, int(m.group(1)) if m else None


def inner_secs(stderr):
    """The query's own time as `--stats` prints it (snapshot to last row, no process start)."""
    m = re.search(r"; ([0-9.]+) s\s*$", stderr.strip().splitlines()[-1])
    return float(m.group(1))


def warm_secs(tape, sql, runs):
    """Query times inside one process (`--follow` re-runs the query on a new snapshot every
    100 ms), as DuckDB's warm times are taken: `runs` runs after the first, cold one (code
    paged in, memory faulted), which is left out."""
    p = subprocess.Popen([BIN, "query", tape, sql, "--format", "csv", "--stats", "--follow",
                          "--every", "100ms"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    times = []
    for line in p.stderr:
        m = re.search(r"; ([0-9.]+) s\s*$", line)
        if m:
            times.append(float(m.group(1)))
            if len(times) > runs:
                break
    p.terminate()
    p.communicate()
    if len(times) <= runs:
        sys.exit(f"query --follow on {tape} printed {len(times)} timings, wanted {runs + 1}")
    return times[1:]


def bytes_read(stderr):
    m = re.search(r"(\d+) of (\d+) bytes", stderr)
    return int(m.group(1)), int(m.group(2))


def duckdb_times(python, parquet, sql, runs):
    code = f"""
import duckdb, time, json
con = duckdb.connect()
con.execute("CREATE VIEW tape AS SELECT * FROM read_parquet('{parquet}')")
sql = {sql!r}
out = []
for _ in range({runs}):
    t = time.perf_counter(); rows = con.execute(sql).fetchall(); out.append(time.perf_counter() - t)
print(json.dumps({{"times": out, "rows": len(rows)}}))
"""
    p = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(p.stdout)


def bench_tape(name, tape, parquet, time_col, group_col, value_col, args):
    lo_hi = run(["query", tape, f"SELECT to_unixtime(min({time_col})) * 1e6, to_unixtime(max({time_col})) * 1e6 FROM tape",
                 "--format", "csv"]).stdout.splitlines()[1].split(",")
    t_min, t_max = (int(float(x)) for x in lo_hi)
    span = t_max - t_min
    lo = t_min + span // 2
    hi = lo + span // 100
    agg = f'{group_col}, count(*), min({value_col}), max({value_col}), avg({value_col})'
    full = f"SELECT {agg} FROM tape GROUP BY {group_col} ORDER BY {group_col}"
    one = (f"SELECT {agg} FROM tape WHERE {time_col} >= to_timestamp_micros({lo}) "
           f"AND {time_col} < to_timestamp_micros({hi}) GROUP BY {group_col} ORDER BY {group_col}")
    if not os.path.exists(parquet):
        run(["replay", tape, "--sink", f"parquet:{parquet}", "--quiet"])
    full_t, one_t, duck_t, full_in, one_in = [], [], [], [], []
    full_bytes = one_bytes = None
    for r in range(args.runs):
        s, _, err, _ = query(tape, full, stats=True)
        full_t.append(s)
        full_in.append(inner_secs(err))
        full_bytes = bytes_read(err)
        s, _, err, _ = query(tape, one, stats=True)
        one_t.append(s)
        one_in.append(inner_secs(err))
        one_bytes = bytes_read(err)
    full_warm = warm_secs(tape, full, max(args.runs, 5))
    one_warm = warm_secs(tape, one, max(args.runs, 5))
    duck = duckdb_times(args.python, parquet, full.replace("FROM tape", "FROM tape"), args.runs)
    duck_t = duck["times"]
    _, _, _, rss = query(tape, full, rss=True)
    med = statistics.median
    res = {
        "tape": name, "tape_gb": tape_bytes(tape) / 1e9,
        "parquet_gb": os.path.getsize(parquet) / 1e9 if os.path.isfile(parquet) else None,
        "full_s": med(full_t), "one_pct_s": med(one_t), "duckdb_full_s": med(duck_t),
        "speedup_1pct": med(full_t) / med(one_t), "vs_duckdb": med(full_t) / med(duck_t),
        "full_query_s": med(full_in), "one_pct_query_s": med(one_in),
        "speedup_1pct_query": med(full_in) / med(one_in), "vs_duckdb_query": med(full_in) / med(duck_t),
        "full_warm_s": med(full_warm), "one_pct_warm_s": med(one_warm),
        "speedup_1pct_warm": med(full_warm) / med(one_warm),
        "duckdb_warm_s": med(duck_t[1:] or duck_t),
        "vs_duckdb_warm": med(full_warm) / med(duck_t[1:] or duck_t),
        "warm_runs": [len(full_warm), len(one_warm)],
        "one_pct_bytes_frac": one_bytes[0] / one_bytes[1], "full_bytes_frac": full_bytes[0] / full_bytes[1],
        "full_rss_mib": rss / 1024 if rss else None,
        "full_runs": full_t, "one_pct_runs": one_t, "duckdb_runs": duck_t,
        "sql_full": full, "sql_1pct": one,
    }
    return res


def recorder_slowdown(args):
    """Median rows/s of `record` alone vs with `query --follow --every 200ms` beside it."""
    alone, beside = [], []
    for r in range(args.runs):
        for with_query in (False, True):
            tape = os.path.join(args.work, "live")
            shutil.rmtree(tape, ignore_errors=True)
            os.makedirs(tape)
            q = None
            if with_query:
                # Started first, on the empty directory; it re-plans every 200 ms.
                run(["record", "--source", "sim:alicat?n=1", "--tape", tape, "--quiet", "--progress", "never"])
                q = subprocess.Popen([BIN, "query", tape, 'SELECT device, count(*), avg("Mass_Flow") FROM tape GROUP BY device',
                                      "--follow", "--every", "200ms", "--format", "csv"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            out = run(["record", "--source", f"sim:alicat?n={args.live_rows}", "--tape", tape,
                       "--summary-json", "-", "--quiet", "--progress", "never"]).stdout
            rate = json.loads(out)["rows_per_sec"]
            if q:
                q.terminate()
                q.wait()
            (beside if with_query else alone).append(rate)
    med = statistics.median
    return {"record_alone_rows_s": med(alone), "record_beside_query_rows_s": med(beside),
            "slowdown": med(alone) / med(beside), "alone_runs": alone, "beside_runs": beside}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--blocks", type=int, default=4_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--live-rows", type=int, default=5_000_000)
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/tapedeck-venv/bin/python"))
    ap.add_argument("--work", default="/tmp/tapedeck-query-bench")
    ap.add_argument("--compression", default="none")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", default="alicat,daq,live")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    only = args.only.split(",")
    results = []
    if "alicat" in only:
        tape = os.path.join(args.work, "alicat")
        record(f"sim:alicat?n={args.rows}", tape, args.compression, args.rows)
        results.append(bench_tape("alicat", tape, os.path.join(args.work, "alicat.parquet"),
                                  "requested_at", "device", '"Mass_Flow"', args))
        print(json.dumps(results[-1], indent=1), flush=True)
    if "daq" in only:
        tape = os.path.join(args.work, "daq")
        record(f"sim:daq?channels=8&rate=10000&block=1000&blocks={args.blocks}&pace=max", tape,
               args.compression, None)
        results.append(bench_tape("daq", tape, os.path.join(args.work, "daq.parquet"),
                                  "t_utc", "task", "ai0", args))
        print(json.dumps(results[-1], indent=1), flush=True)
    if "live" in only:
        results.append(recorder_slowdown(args))
        print(json.dumps(results[-1], indent=1), flush=True)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
