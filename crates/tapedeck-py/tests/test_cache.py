"""tapedeck.StreamCache: batchcorder's API; its disk tier a tape that survives the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import tapedeck
from tapedeck import errors


def stream(batches: int, rows: int = 1000, pulled: list[int] | None = None) -> pa.RecordBatchReader:
    schema = pa.schema([("b", pa.int64()), ("x", pa.float64())])

    def gen() -> Iterator[pa.RecordBatch]:
        for i in range(batches):
            if pulled is not None:
                pulled.append(i)
            yield pa.record_batch([pa.array([i] * rows), pa.array([i * 0.5] * rows)], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, gen())


def test_upstream_is_read_once_lazily_and_replayed(tmp_path: Path) -> None:
    pulled: list[int] = []
    cache = tapedeck.StreamCache(stream(50, pulled=pulled))
    assert pulled == [] and cache.ingested_count == 0  # lazy
    r = cache.reader()
    first = next(r)
    assert isinstance(first, pa.RecordBatch) and first.column(0)[0].as_py() == 0
    assert cache.ingested_count == 1
    readers = [cache.reader() for _ in range(20)]
    totals = [sum(b.num_rows for b in rd) for rd in readers]
    assert totals == [50_000] * 20
    assert pulled == list(range(50))  # once, whatever the readers
    assert cache.upstream_exhausted
    assert pa.table(cache).num_rows == 50_000 and pa.table(cache).num_rows == 50_000
    assert cache.schema == pa.schema([("b", pa.int64()), ("x", pa.float64())])


def test_readers_on_threads_see_every_batch_in_order() -> None:
    cache = tapedeck.StreamCache(stream(200, rows=100))
    seen: dict[int, list[int]] = {}

    def read(k: int) -> None:
        seen[k] = [b.column(0)[0].as_py() for b in cache.reader()]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v == list(range(200)) for v in seen.values())


def test_a_frontier_reader_sees_only_new_batches_and_readers_are_single_use() -> None:
    cache = tapedeck.StreamCache(stream(10))
    it = cache.reader()
    for _ in range(4):
        next(it)
    late = cache.reader(from_start=False)
    assert [b.column(0)[0].as_py() for b in late] == list(range(4, 10))
    r = cache.reader()
    pa.table(r)
    assert r.closed
    with pytest.raises(errors.ReaderConsumedError):
        pa.table(r)
    assert cache.ingest_all() == 10


def test_a_full_memory_tier_is_an_error_naming_its_capacity_and_drops_nothing() -> None:
    one = stream(1).read_next_batch().get_total_buffer_size()
    cache = tapedeck.StreamCache(stream(10), memory_capacity=int(one * 3.5))
    with pytest.raises(MemoryError, match=r"capacity \d+ bytes") as e:
        cache.ingest_all()
    assert isinstance(e.value, errors.CacheFullError)
    assert cache.ingested_count == 3
    with pytest.raises(errors.CacheFullError):
        cache.ingest_all()  # the batch that did not fit is offered again, not skipped
    assert [b.column(0)[0].as_py() for b in _take(cache.reader(), 3)] == [0, 1, 2]


def _take(r: tapedeck.StreamCacheReader, n: int) -> list[pa.RecordBatch]:
    return [next(r) for _ in range(n)]


def test_the_disk_tier_is_a_tape_replayed_after_the_process_dies(tmp_path: Path) -> None:
    disk = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cache import stream
        import tapedeck
        cache = tapedeck.StreamCache(stream(30), memory_capacity=1, disk_path={str(disk)!r},
                                     fsync="always")
        cache.ingest_all()
        print(cache.ingested_count, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert out.stdout.strip() == "30", out.stderr
    cache = tapedeck.StreamCache(None, disk_path=disk)
    assert cache.ingested_count == 30 and cache.upstream_exhausted
    t = pa.table(cache)
    assert t.num_rows == 30_000
    assert t.column("b").to_pylist()[::1000] == list(range(30))
    # One process at a time holds a cache's tape.
    with pytest.raises(errors.LockedError):
        tapedeck.StreamCache(stream(5), disk_path=disk)
    cache.close()
    # Opened again, it goes on with a new upstream after what it had.
    more = tapedeck.StreamCache(stream(5), disk_path=disk)
    more_rows = [b.column(0)[0].as_py() for b in more.reader()]
    assert more_rows == list(range(30)) + list(range(5))
    more.close()


def test_hot_copies_beyond_memory_capacity_are_read_back_from_the_tape(tmp_path: Path) -> None:
    cache = tapedeck.StreamCache(stream(40), memory_capacity=1, disk_path=tmp_path / "c")
    assert [b.column(0)[0].as_py() for b in cache.reader()] == list(range(40))
    assert cache.memory_bytes < 2 * stream(1).read_next_batch().get_total_buffer_size() + 4096
    assert cache.disk_bytes > 0
    assert [b.column(0)[0].as_py() for b in cache.reader()] == list(range(40))
    cache.close()
    with pytest.raises(errors.CacheClosedError):
        cache.reader()


def test_a_full_disk_tier_names_its_capacity(tmp_path: Path) -> None:
    cache = tapedeck.StreamCache(stream(100), disk_path=tmp_path / "c", disk_capacity=100_000)
    with pytest.raises(errors.CacheFullError, match="disk tier .* capacity 100000 bytes"):
        cache.ingest_all()


def test_a_python_generator_upstream_is_pulled_from_rust_threads() -> None:
    def slow() -> Iterator[pa.RecordBatch]:
        for i in range(3):
            time.sleep(0.05)
            yield pa.record_batch([pa.array([i])], names=["i"])

    cache = tapedeck.StreamCache(pa.RecordBatchReader.from_batches(pa.schema([("i", pa.int64())]), slow()))
    assert [b.column(0)[0].as_py() for b in cache.reader()] == [0, 1, 2]
