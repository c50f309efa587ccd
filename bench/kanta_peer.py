#!/usr/bin/env python3
"""kanta 0.9.4 doing issue 20's journal workload, to compare with tapedeck's journal in one run.

A 10,000-key map; each transaction sets one key (`with k.transaction(action=...)`), the
background flush every 100 ms (kanta's default `flush_interval=0.1`, its nearest to
`fsync=interval:100ms`), transaction logging off and on. Prints transactions per second.

With the `tapedeck` package installed in the same venv (`pip install ./crates/tapedeck-py`),
`tapedeck.Journal` runs the same workload in the same process, alternating with kanta, in two
styles: `set("/values/keyN", i)` (the change is the record) and `with j.transaction(...)` (the
whole state copied and diffed, as kanta's transactions do), `fsync="interval:100ms"`.

usage: python bench/kanta_peer.py [--transactions 300] [--runs 1] [--dir DIR]   (a venv with kanta==0.9.4)
"""
import argparse
import asyncio
import logging
import os
import tempfile
import time

import msgspec
from kanta import Kanta


class Data(msgspec.Struct):
    values: dict[str, int] = {}


async def run(path: str, n: int, log: bool) -> float:
    if os.path.exists(path):
        os.remove(path)
    k = Kanta(path, Data(values={f"key{i}": 0 for i in range(10_000)}))
    await k.open(log=log)
    t = time.perf_counter()
    for i in range(n):
        with k.transaction(action="set", log=log) as d:
            d.values[f"key{i % 10_000}"] = i
    await k.flush()
    secs = time.perf_counter() - t
    await k.close()
    return n / secs


def run_tapedeck(path: str, n: int, style: str) -> float:
    import tapedeck

    for f in os.listdir(os.path.dirname(path)):
        if f.startswith((os.path.basename(path), "." + os.path.basename(path))):
            os.remove(os.path.join(os.path.dirname(path), f))
    j = tapedeck.Journal(path, fsync="interval:100ms")
    j.set("/values", {f"key{i}": 0 for i in range(10_000)})
    t = time.perf_counter()
    for i in range(n):
        if style == "set":
            j.set(f"/values/key{i % 10_000}", i)
        else:
            with j.transaction("set") as d:
                d["values"][f"key{i % 10_000}"] = i
    j.sync()
    secs = time.perf_counter() - t
    j.close()
    return n / secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=300)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", default=tempfile.mkdtemp(prefix="kanta-bench-"))
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    path = os.path.join(args.dir, "bench.kantadb")
    try:
        import tapedeck  # noqa: F401

        have_tapedeck = True
    except ImportError:
        have_tapedeck = False
    for _ in range(args.runs):
        for log in (False, True):
            rate = asyncio.run(run(path, args.transactions, log))
            print(f"kanta 0.9.4, log={log}: {args.transactions} transactions, {rate:.0f}/s")
        if have_tapedeck:
            jpath = os.path.join(args.dir, "bench.journal")
            for style, n in (("set", args.transactions * 100), ("transaction", args.transactions)):
                rate = run_tapedeck(jpath, n, style)
                print(f"tapedeck.Journal ({style}): {n} transactions, {rate:.0f}/s", flush=True)


if __name__ == "__main__":
    main()
