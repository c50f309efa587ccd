"""tapedeck.compat.alicatlib: alicatlib.sinks' API, with what alicatlib gets wrong fixed."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from tapedeck.compat import alicatlib as sinks

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Reading:
    """Shaped like alicatlib's Reading: as_dict() gives the fields, status, received_at."""

    pressure: float
    flow: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "Unit_ID": "A",
            "Pressure": self.pressure,
            "Mass_Flow": self.flow,
            "Gas": "Air",
            "status": "",
            "received_at": "2026-01-01T00:00:00+00:00",
        }


@dataclass(frozen=True)
class Sample:
    """Shaped like alicatlib's Sample (read by attribute, never imported)."""

    device: str
    unit_id: str
    t_mono_ns: int
    t_utc: dt.datetime
    requested_at: dt.datetime
    received_at: dt.datetime
    latency_s: float
    reading: Reading


def sample(i: int, device: str = "fuel") -> Sample:
    t = T0 + dt.timedelta(milliseconds=10 * i)
    return Sample(device, "A", i * 10_000_000, t, t, t + dt.timedelta(milliseconds=2), 0.002,
                  Reading(14.7, i * 0.1))


async def ticks(n: int, devices: tuple[str, ...] = ("fuel", "air")) -> AsyncIterator[dict[str, Sample]]:
    for i in range(n):
        yield {d: sample(i, d) for d in devices}


def test_sample_to_row_keeps_alicatlib_column_order() -> None:
    row = sinks.sample_to_row(sample(3))
    assert list(row) == ["device", "unit_id", "t_utc", "t_mono_ns", "requested_at",
                         "received_at", "latency_s", "Pressure", "Mass_Flow", "Gas", "status"]
    assert row["received_at"] == T0 + dt.timedelta(milliseconds=32)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "sqlite", "parquet"])
def test_pipe_into_each_file_sink(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"out.{kind}"
    sink: Any = {
        "csv": lambda: sinks.CsvSink(path),
        "jsonl": lambda: sinks.JsonlSink(path),
        "sqlite": lambda: sinks.SqliteSink(path, table="flow"),
        "parquet": lambda: sinks.ParquetSink(path, row_group_size=50),
    }[kind]()

    async def main() -> sinks.AcquisitionSummary:
        async with sink:
            return await sinks.pipe(ticks(500), sink, batch_size=64, flush_interval=1.0)

    summary = asyncio.run(main())
    assert summary.samples_emitted == 1000
    assert summary.finished_at is not None and summary.finished_at >= summary.started_at
    if kind == "csv":
        with open(path, newline="") as f:
            got = list(csv.DictReader(f))
        assert len(got) == 1000 and list(got[0])[:3] == ["device", "unit_id", "t_utc"]
        assert [r["device"] for r in got[:2]] == ["fuel", "air"]
    elif kind == "jsonl":
        got = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(got) == 1000 and got[1]["device"] == "air"
    elif kind == "sqlite":
        with sqlite3.connect(path) as db:
            assert db.execute("select count(*), count(distinct device) from flow").fetchone() == (1000, 2)
    else:
        t = pq.read_table(path)
        assert t.num_rows == 1000
        assert str(t.schema.field("t_utc").type).startswith("timestamp[us")


def test_the_flush_timer_fires_while_the_stream_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "quiet.jsonl"
    seen_during_silence: list[int] = []

    async def quiet() -> AsyncIterator[dict[str, Sample]]:
        for i in range(3):
            yield {"fuel": sample(i)}
        await asyncio.sleep(0.8)  # the device stalls; flush_interval is 0.2 s
        seen_during_silence.append(len(path.read_text().splitlines()))
        yield {"fuel": sample(3)}

    async def main() -> None:
        async with sinks.JsonlSink(path) as sink:
            await sinks.pipe(quiet(), sink, batch_size=64, flush_interval=0.2)

    asyncio.run(main())
    assert seen_during_silence == [3]
    assert len(path.read_text().splitlines()) == 4


def test_samples_received_before_a_stream_error_are_written(tmp_path: Path) -> None:
    path = tmp_path / "err.csv"

    async def failing() -> AsyncIterator[dict[str, Sample]]:
        for i in range(5):
            yield {"fuel": sample(i)}
        raise OSError("serial port gone")

    async def main() -> None:
        async with sinks.CsvSink(path) as sink:
            await sinks.pipe(failing(), sink, batch_size=64, flush_interval=10)

    with pytest.raises(OSError, match="serial port gone"):
        asyncio.run(main())
    with open(path, newline="") as f:
        assert len(list(csv.DictReader(f))) == 5


def test_sinks_refuse_writes_before_open_and_check_their_arguments(tmp_path: Path) -> None:
    sink = sinks.CsvSink(tmp_path / "a.csv")
    with pytest.raises(RuntimeError, match="before open"):
        asyncio.run(sink.write_many([sample(0)]))
    with pytest.raises(ValueError, match="pattern"):
        sinks.SqliteSink(tmp_path / "a.db", table="no spaces")
    with pytest.raises(ValueError, match="row_group_size"):
        sinks.ParquetSink(tmp_path / "a.parquet", row_group_size=0)
    with pytest.raises(ValueError, match="exactly one of dsn and host"):
        sinks.PostgresConfig()
    with pytest.raises(ValueError, match="batch_size"):
        asyncio.run(sinks.pipe(ticks(1), sinks.InMemorySink(), batch_size=0))
    assert sinks.PostgresConfig(dsn="postgres://u:pw@db:5433/lab").target() == "db:5433/lab.public.samples"


def test_in_memory_sink_keeps_the_samples() -> None:
    async def main() -> list[Any]:
        async with sinks.InMemorySink() as sink:
            await sinks.pipe(ticks(10), sink, batch_size=4)
            return sink.samples

    got = asyncio.run(main())
    assert len(got) == 20 and got[0].device == "fuel"


def test_postgres_sink_writes_timestamps_as_timestamptz(postgres_url: str) -> None:
    u = urllib.parse.urlparse(postgres_url)
    table = f"compat_alicat_{os.getpid()}"
    config = sinks.PostgresConfig(dsn=postgres_url, table=table, create_table=True)

    async def main() -> None:
        async with sinks.PostgresSink(config) as sink:
            await sinks.pipe(ticks(100), sink, batch_size=64)

    asyncio.run(main())
    out = subprocess.run(
        ["psql", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres",
         "-d", u.path.lstrip("/"), "-Atc",
         f"select count(*), pg_typeof(min(t_utc)) from {table}; drop table {table}"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.splitlines()[0] == "200|timestamp with time zone"


def test_a_parquet_sink_with_a_tape_loses_nothing_acknowledged_to_a_kill(tmp_path: Path) -> None:
    """alicatlib's ParquetSink leaves an unreadable file after a kill; with tape=DIR every
    acknowledged sample reaches the file once the sink is opened again with that tape."""
    script = textwrap.dedent(
        f"""
        import asyncio, datetime as dt, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_compat_alicatlib import sample
        from tapedeck.compat import alicatlib as sinks

        async def main():
            sink = sinks.ParquetSink({str(tmp_path / "run.parquet")!r}, tape={str(tmp_path / "tape")!r})
            await sink.open()
            i = 0
            while True:
                await sink.write_many([sample(i + k) for k in range(64)])
                i += 64
                print(sink.acknowledged, flush=True)

        asyncio.run(main())
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    written = 0
    for line in p.stdout:
        written = int(line)
        if written >= 64 * 50:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()

    async def reopen() -> None:
        sink = sinks.ParquetSink(tmp_path / "run.parquet", tape=tmp_path / "tape")
        async with sink:
            pass

    asyncio.run(reopen())
    t = pq.read_table(tmp_path / "run.parquet")
    # Every sample the tape had acknowledged when the process died is in the file.
    assert written > 0
    assert t.num_rows >= written
    n = t.column("t_mono_ns").to_pylist()
    assert n == sorted(set(n)), "a sample was delivered twice"


def test_a_flush_in_progress_when_the_stream_ends_is_finished_not_dropped() -> None:
    class SlowSink(sinks.InMemorySink):
        async def write_many(self, samples: Any) -> None:
            await asyncio.sleep(0.3)  # a write that really waits (a database)
            await super().write_many(samples)

    async def stream() -> AsyncIterator[dict[str, Sample]]:
        for i in range(3):
            yield {"fuel": sample(i)}
        await asyncio.sleep(0.15)  # the 0.1 s timer starts a flush that is still running...
        yield {"fuel": sample(3)}
        # ...when the stream ends here

    async def main() -> tuple[int, int]:
        async with SlowSink() as sink:
            summary = await sinks.pipe(stream(), sink, batch_size=64, flush_interval=0.1)
            return summary.samples_emitted, len(sink.samples)

    assert asyncio.run(main()) == (4, 4)
