"""The GIL is released while tapedeck writes, fsyncs and reads: a heartbeat thread ticking
every 20 ms never stalls more than 100 ms during a long write or a long read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import tapedeck


def longest_stall(work: Callable[[], None]) -> tuple[float, float]:
    """Runs `work` while a thread ticks every 20 ms; returns (longest gap between ticks, s,
    how long the work took, s)."""
    gaps: list[float] = []
    stop = threading.Event()

    def beat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    t = threading.Thread(target=beat)
    t.start()
    time.sleep(0.05)
    started = time.perf_counter()
    try:
        work()
    finally:
        took = time.perf_counter() - started
        stop.set()
        t.join()
    return max(gaps), took


def big_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({"n": np.arange(rows), "x": rng.random(rows), "y": rng.random(rows)})


def test_a_long_write_and_a_long_read_leave_other_threads_running(tmp_path: Path) -> None:
    table = big_table(2_000_000)
    batches = table.to_batches(max_chunksize=100_000)

    def write() -> None:
        with tapedeck.Recorder(
            tape=tmp_path / "tape", sinks=[f"csv:{tmp_path}/all.csv"], fsync="always"
        ) as rec:
            for b in batches:
                rec.write_batch(b)
                rec.flush()

    stall, took = longest_stall(write)
    assert took > 0.3, f"the write took {took:.3f} s: too short to show anything"
    assert stall < 0.1, f"a heartbeat waited {stall * 1000:.0f} ms during a {took:.2f} s write"

    def read() -> None:
        got = pa.table(tapedeck.open_tape(tmp_path / "tape").reader())
        assert got.num_rows == 2_000_000

    stall, took = longest_stall(read)
    assert stall < 0.1, f"a heartbeat waited {stall * 1000:.0f} ms during a {took:.2f} s read"
