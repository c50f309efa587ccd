#!/usr/bin/env python3
"""Runs tapedeck and the Python baseline (../shared/bench/pysinks.py) on alicat-sample in one run.

usage: bench/compare.py [--runs 5] [--n 1000000] [--batch 64] [--python VENV_PYTHON]

For each round it runs the baseline and `tapedeck record` for csv and jsonl, plus tapedeck into
null:, and prints the median rows/s of each and tapedeck / baseline. It also records 10,000,000
rows into csv: under /usr/bin/time and prints the peak RSS. Needs a release build
(cargo build --release) and a Python with pyarrow (for the baseline's imports only).
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = os.path.join(ROOT, "..", "shared", "bench", "pysinks.py")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "tapedeck")


def baseline(python, sink, n, batch, out):
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # earlier runs' dirty pages are written back before the clock starts
    text = subprocess.run([python, BASELINE, sink, str(n), str(batch), out],
                          check=True, capture_output=True, text=True).stdout
    return float(re.search(r"rows_per_sec ([0-9.]+)", text).group(1))


def tapedeck(sink_uri, n, batch):
    os.sync()
    out = subprocess.run([BIN, "record", "--source", f"sim:alicat?n={n}", "--sink", sink_uri,
                          "--batch-size", str(batch), "--flush-interval", "1s",
                          "--summary-json", "-", "--quiet", "--progress", "never"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["rows_per_sec"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tapedeck-bench-")
    results = {k: [] for k in ["py_csv", "td_csv", "py_jsonl", "td_jsonl", "td_null"]}
    for r in range(a.runs):
        for fmt in ["csv", "jsonl"]:
            results[f"py_{fmt}"].append(baseline(a.python, fmt, a.n, a.batch, os.path.join(work, "py")))
            path = os.path.join(work, f"td.{fmt}")
            if os.path.exists(path):
                os.remove(path)
            results[f"td_{fmt}"].append(tapedeck(f"{fmt}:{path}", a.n, a.batch))
        results["td_null"].append(tapedeck("null:", a.n, a.batch))
        print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:,.0f}" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians of {a.runs} runs, alicat-sample, n={a.n:,}, batch {a.batch}, flush 1 s:")
    for fmt in ["csv", "jsonl"]:
        print(f"  {fmt:5}: tapedeck {med['td_' + fmt]:>12,.0f} rows/s   baseline {med['py_' + fmt]:>10,.0f} rows/s"
              f"   ratio {med['td_' + fmt] / med['py_' + fmt]:.1f}x")
    print(f"  null : tapedeck {med['td_null']:>12,.0f} rows/s")
    big = os.path.join(work, "big.csv")
    t = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, "record", "--source", "sim:alicat?n=10000000",
                        "--sink", f"csv:{big}", "--quiet", "--progress", "never"],
                       check=True, capture_output=True, text=True)
    rss_kib = int(t.stderr.strip().splitlines()[-1])
    print(f"  peak RSS, 10,000,000 rows into csv: {rss_kib / 1024:.1f} MiB "
          f"({os.path.getsize(big) / 1e9:.2f} GB written)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
