#!/usr/bin/env python3
"""The Python package against the reference libraries, in one run (BENCHMARKS.md, "Python").

Needs a Python 3.13 venv with alicatlib==0.3.1, batchcorder==0.1.3, pyarrow, asyncpg and the
tapedeck wheel (see BENCHMARKS.md for the commands). Three measurements:

  pipe   alicat-sample rows (DESIGN.md), batch 64, flush 1 s, through
         tapedeck.compat.alicatlib.pipe (rows as dicts) and through real alicatlib's pipe (its own
         Sample objects, carrying the same values) into CSV / JSONL / SQLite / Parquet /
         PostgreSQL; inputs are built before the clock starts.
  read   pyarrow.table(tape.reader()) over a >= 1 GB tape in the page cache: GB/s.
  cache  tapedeck.StreamCache vs batchcorder.StreamCache over the same >= 1 GB stream: first pass
         (ingest + one reader) with a disk tier, then 5 readers replaying it.

Each is run --runs times, alternating peer and tapedeck; medians are printed with the ratio.

usage: bench/python_peers.py {pipe,read,cache} [--rows N] [--runs K] [--sinks csv,...] [--gb G]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

PG = os.environ.get("TAPEDECK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def alicat_rows(n: int) -> list[dict[str, Any]]:
    """The alicat-sample workload, row i, as the dicts pysinks.py writes."""
    out = []
    for i in range(n):
        when = BASE + dt.timedelta(microseconds=i * 100)
        out.append(
            {
                "device": "fuel",
                "unit_id": "A",
                "requested_at": when.isoformat(),
                "received_at": (when + dt.timedelta(milliseconds=5)).isoformat(),
                "midpoint_at": (when + dt.timedelta(milliseconds=2)).isoformat(),
                "latency_s": 0.005,
                "Mass_Flow": 10.0 + (i % 1000) * 0.01,
                "status": "",
            }
        )
    return out


def alicat_ticks(n: int) -> list[dict[str, Any]]:
    """The same workload as real alicatlib Samples (one device per tick)."""
    from alicatlib.devices.reading import Reading
    from alicatlib.streaming.sample import Sample

    out = []
    for i in range(n):
        when = BASE + dt.timedelta(microseconds=i * 100)
        received = when + dt.timedelta(milliseconds=5)
        reading = Reading(
            unit_id="A",
            reading_format=None,  # type: ignore[arg-type]
            values={"Mass_Flow": 10.0 + (i % 1000) * 0.01},
            values_by_statistic={},
            status=frozenset(),
            received_at=received,
            t_mono_ns=i * 100_000,
        )
        sample = Sample(
            device="fuel",
            unit_id="A",
            t_mono_ns=i * 100_000 + 2_000_000,
            t_utc=when + dt.timedelta(milliseconds=2),
            requested_at=when,
            received_at=received,
            latency_s=0.005,
            reading=reading,
        )
        out.append({"fuel": sample})
    return out


async def from_list(items: list[Any]) -> AsyncIterator[Any]:
    for x in items:
        yield x


def make_sink(lib: Any, kind: str, out: str, table: str) -> Any:
    if kind == "csv":
        return lib.CsvSink(os.path.join(out, "o.csv"))
    if kind == "jsonl":
        return lib.JsonlSink(os.path.join(out, "o.jsonl"))
    if kind == "sqlite":
        return lib.SqliteSink(os.path.join(out, "o.db"), table=table)
    if kind == "parquet":
        return lib.ParquetSink(os.path.join(out, "o.parquet"))
    if kind == "postgres":
        return lib.PostgresSink(lib.PostgresConfig(dsn=PG, table=table, create_table=True))
    raise SystemExit(f"unknown sink {kind}")


def drop_pg_table(table: str) -> None:
    import asyncpg

    async def go() -> None:
        c = await asyncpg.connect(PG)
        await c.execute(f"DROP TABLE IF EXISTS {table}")
        await c.close()

    asyncio.run(go())


def time_pipe(lib: Any, kind: str, items: list[Any], table: str) -> float:
    out = tempfile.mkdtemp(prefix="pypeers-")
    if kind == "postgres":
        drop_pg_table(table)
    try:
        sink = make_sink(lib, kind, out, table)

        async def main() -> None:
            async with sink:
                await lib.pipe(from_list(items), sink, batch_size=64, flush_interval=1.0)

        t = time.perf_counter()
        asyncio.run(main())
        return time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if kind == "postgres":
            drop_pg_table(table)


def bench_pipe(args: argparse.Namespace) -> None:
    import alicatlib.sinks as peer
    import tapedeck.compat.alicatlib as ours

    rows, ticks = alicat_rows(args.rows), alicat_ticks(args.rows)
    print("| sink | alicatlib 0.3.1 pipe | tapedeck.compat.alicatlib.pipe | ratio |")
    print("|---|---|---|---|")
    for kind in args.sinks.split(","):
        p: list[float] = []
        t: list[float] = []
        for _ in range(args.runs):
            p.append(time_pipe(peer, kind, ticks, "bench_peer"))
            t.append(time_pipe(ours, kind, rows, "bench_tapedeck"))
        mp, mt = statistics.median(p), statistics.median(t)
        print(
            f"| {kind} | {args.rows / mp:,.0f} rows/s ({mp:.2f} s) | {args.rows / mt:,.0f} rows/s "
            f"({mt:.2f} s) | {mp / mt:.1f}x |",
            flush=True,
        )


def daq_table(rows: int) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(1)
    t = np.arange(rows, dtype=np.int64) * 100
    cols = {"t_us": pa.array(t, pa.timestamp("us", tz="UTC"))}
    for c in range(8):
        cols[f"ai{c}"] = rng.standard_normal(rows)
    return pa.table(cols)


def batches_of(table: Any, rows: int) -> Iterator[Any]:
    return iter(table.to_batches(max_chunksize=rows))


def bench_read(args: argparse.Namespace) -> None:
    import pyarrow as pa
    import tapedeck

    rows = int(args.gb * 1e9 / 72)  # 9 columns x 8 bytes
    table = daq_table(rows)
    d = tempfile.mkdtemp(prefix="pyread-")
    try:
        with tapedeck.Recorder(tape=os.path.join(d, "tape"), compression="none") as rec:
            for b in batches_of(table, 65_536):
                rec.write_batch(b)
        tape = tapedeck.open_tape(os.path.join(d, "tape"))
        size = tape.inspect()["bytes"]
        pa.table(tape.reader())  # into the page cache
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            got = pa.table(tape.reader())
            times.append(time.perf_counter() - t)
            assert got.num_rows == rows
        m = statistics.median(times)
        print(f"pyarrow.table(reader): {size / 1e9:.2f} GB tape, {rows:,} rows: median {m:.3f} s "
              f"= {size / m / 1e9:.2f} GB/s (runs: {', '.join(f'{x:.3f}' for x in times)})")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_cache(args: argparse.Namespace) -> None:
    import batchcorder
    import pyarrow as pa
    import tapedeck

    rows = int(args.gb * 1e9 / 72)
    table = daq_table(rows)
    nbytes = table.nbytes

    def upstream() -> Any:
        return pa.RecordBatchReader.from_batches(table.schema, batches_of(table, 65_536))

    def run(make: Callable[[str], Any]) -> tuple[float, float]:
        d = tempfile.mkdtemp(prefix="pycache-")
        try:
            cache = make(d)
            t = time.perf_counter()
            first = pa.table(cache.reader())
            first_pass = time.perf_counter() - t
            assert first.num_rows == rows
            del first
            t = time.perf_counter()
            for _ in range(5):
                n = sum(b.num_rows for b in cache.reader())
                assert n == rows
            replay = time.perf_counter() - t
            cache.close()
            return first_pass, replay
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def peer(d: str) -> Any:
        return batchcorder.StreamCache(upstream(), memory_capacity=256 << 20, disk_path=d,
                                       disk_capacity=4 * nbytes)

    def ours(d: str) -> Any:
        return tapedeck.StreamCache(upstream(), memory_capacity=256 << 20, disk_path=d,
                                    disk_capacity=4 * nbytes)

    pf, pr, tf, tr = [], [], [], []
    for _ in range(args.runs):
        a, b = run(peer)
        pf.append(a)
        pr.append(b)
        a, b = run(ours)
        tf.append(a)
        tr.append(b)
    print(f"stream {nbytes / 1e9:.2f} GB, {rows:,} rows, batches of 65,536; disk tier, 256 MiB hot")
    print(f"first pass: batchcorder {statistics.median(pf):.3f} s, tapedeck {statistics.median(tf):.3f} s "
          f"= {statistics.median(tf) / statistics.median(pf):.2f}x batchcorder's time")
    print(f"5 readers replaying: batchcorder {statistics.median(pr):.3f} s, tapedeck "
          f"{statistics.median(tr):.3f} s = {statistics.median(pr) / statistics.median(tr):.2f}x as fast")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pipe", "read", "cache"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sinks", default="csv,jsonl,sqlite,parquet,postgres")
    ap.add_argument("--gb", type=float, default=1.0)
    args = ap.parse_args()
    {"pipe": bench_pipe, "read": bench_read, "cache": bench_cache}[args.what](args)


if __name__ == "__main__":
    main()
