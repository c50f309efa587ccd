"""tapedeck.compat.dtollib: dtollib.sinks' API for readings, blocks and raw codes."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import sqlite3
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from tapedeck import errors
from tapedeck.compat import dtollib as sinks

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class DaqReading:
    """Shaped like dtollib's DaqReading (read by attribute, never imported)."""

    device: str
    t_mono_ns: int
    t_utc: dt.datetime
    requested_at: dt.datetime
    received_at: dt.datetime
    latency_s: float
    values: Mapping[str, float] = field(default_factory=dict)
    units: Mapping[str, str | None] = field(default_factory=dict)
    task: str | None = "poll"
    t_midpoint_mono_ns: int | None = None
    error: Exception | None = None


class DtolBufferOverrunError(Exception):
    pass


@dataclass(frozen=True)
class DaqBlock:
    """Shaped like dtollib's DaqBlock: t_mono_ns at the callback (block end), t_utc at the
    block midpoint, t0 at the first sample."""

    device: str
    channels: tuple[str, ...]
    data: Any
    block_index: int
    first_sample_index: int
    samples_per_channel: int
    t0: dt.datetime
    t_mono_ns: int
    t_utc: dt.datetime
    read_started_at: dt.datetime
    read_finished_at: dt.datetime
    task: str | None = "ai"
    raw_codes: Any = None
    sample_rate_hz: float | None = 1000.0
    block_period_ns: int | None = 1_000_000
    units: Mapping[str, str | None] = field(default_factory=lambda: {"ai0": "V", "ai1": "V"})
    error: Exception | None = None


def reading(i: int) -> DaqReading:
    t = T0 + dt.timedelta(milliseconds=i)
    return DaqReading("tc1", i * 1_000_000, t, t, t, 0.001, {"ch0": 20.0 + i, "ch1": 21.0}, {"ch0": "C"})


def block(i: int, n: int = 100) -> DaqBlock:
    data = np.vstack([np.arange(n, dtype=np.float64) + i * n, -np.arange(n, dtype=np.float64)])
    t0 = T0 + dt.timedelta(milliseconds=i * n)
    end_mono = (i * n + n - 1) * 1_000_000
    return DaqBlock(
        "dev1", ("ai0", "ai1"), data, i, i * n, n, t0, end_mono,
        t0 + dt.timedelta(milliseconds=(n - 1) / 2), t0, t0 + dt.timedelta(milliseconds=n),
        raw_codes=(data * 10).astype(np.int16),
    )


async def readings(n: int) -> AsyncIterator[DaqReading]:
    for i in range(n):
        yield reading(i)


async def blocks(n: int) -> AsyncIterator[DaqBlock]:
    for i in range(n):
        yield block(i)


def test_reading_to_row_keys_and_a_channel_named_like_a_fixed_key() -> None:
    row = sinks.reading_to_row(reading(1))
    assert list(row) == ["device", "task", "t_mono_ns", "t_utc", "t_midpoint_mono_ns", "requested_at",
                         "received_at", "latency_s", "ch0", "ch1", "ch0_unit", "error_type", "error_message"]
    clash = DaqReading("tc1", 0, T0, T0, T0, 0.0, {"device": 5.0})
    assert sinks.reading_to_row(clash)["device"] == "tc1"
    assert sinks.reading_to_row(clash)["value_device"] == 5.0


def test_block_to_rows_stamps_every_sample_from_one_anchor() -> None:
    rows = sinks.block_to_rows(block(2))
    assert len(rows) == 200
    assert [r["sample_index"] for r in rows[:3]] == [200, 201, 202]
    first, last = rows[0], rows[99]
    # Monotonic and UTC times agree: the first sample at t0, one period (1 ms) apart.
    assert first["t_utc"] == T0 + dt.timedelta(milliseconds=200)
    assert first["t_mono_ns"] == 200 * 1_000_000
    assert last["t_mono_ns"] - first["t_mono_ns"] == 99 * 1_000_000
    assert (last["t_utc"] - first["t_utc"]) == dt.timedelta(milliseconds=99)
    assert rows[100]["channel"] == "ai1" and rows[100]["value"] == -0.0


@pytest.mark.parametrize("kind", ["csv", "jsonl", "sqlite", "parquet"])
def test_pipe_readings_into_each_sink(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"r.{kind}"
    sink: Any = {
        "csv": lambda: sinks.CsvSink(path),
        "jsonl": lambda: sinks.JsonlSink(path),
        "sqlite": lambda: sinks.SqliteSink(path),
        "parquet": lambda: sinks.ParquetSink(path),
    }[kind]()

    async def main() -> int:
        async with sink:
            return await sinks.pipe(readings(300), sink, batch_size=64, flush_interval_s=1.0)

    assert asyncio.run(main()) == 300
    if kind == "csv":
        with open(path, newline="") as f:
            assert len(list(csv.DictReader(f))) == 300
    elif kind == "jsonl":
        assert json.loads(path.read_text().splitlines()[5])["ch0"] == 25.0
    elif kind == "sqlite":
        with sqlite3.connect(path) as db:
            assert db.execute("select count(*) from readings").fetchone() == (300,)
    else:
        assert pq.read_table(path).num_rows == 300


def test_blocks_go_long_into_parquet_and_as_summaries_into_sqlite(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        async with sinks.ParquetSink(tmp_path / "b.parquet") as pqs, sinks.SqliteSink(tmp_path / "b.db") as sq:
            a = await sinks.pipe_blocks(blocks(5), pqs)
            b = await sinks.pipe_blocks(blocks(5), sq)
            return a, b

    assert asyncio.run(main()) == (5, 5)
    t = pq.read_table(tmp_path / "b.parquet")
    assert t.num_rows == 5 * 2 * 100
    with sqlite3.connect(tmp_path / "b.db") as db:
        assert db.execute("select count(*) from blocks").fetchone()[0] >= 5


def test_csv_refuses_blocks_unless_accept_blocks(tmp_path: Path) -> None:
    async def main(accept: bool) -> None:
        async with sinks.CsvSink(tmp_path / f"b{accept}.csv", accept_blocks=accept) as s:
            await s.write(block(0))

    with pytest.raises(errors.TapedeckError, match="accept_blocks"):
        asyncio.run(main(False))
    asyncio.run(main(True))
    with open(tmp_path / "bTrue.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 200


def test_raw_counts_sink_writes_a_dt_raw_file(tmp_path: Path) -> None:
    path = tmp_path / "run.dt-raw"

    async def main() -> None:
        async with sinks.RawCountsSink(path) as s:
            for i in range(3):
                await s.write_raw(block(i))
            with pytest.raises(ValueError, match="raw_codes"):
                await s.write_raw(DaqBlock(**{**block(0).__dict__, "raw_codes": None}))

    asyncio.run(main())
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data, 0)
    header = json.loads(data[4 : 4 + n])
    assert header["format_version"] == 2 and header["dtype"] == "int16"
    assert [c["name"] for c in header["channels"]] == ["ai0", "ai1"]


def test_a_stream_error_keeps_the_readings_received(tmp_path: Path) -> None:
    async def failing() -> AsyncIterator[DaqReading]:
        for i in range(7):
            yield reading(i)
        raise TimeoutError("board gone")

    async def main() -> None:
        async with sinks.JsonlSink(tmp_path / "e.jsonl") as s:
            await sinks.pipe(failing(), s, batch_size=64, flush_interval_s=5)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 7


def test_arguments_are_checked_as_dtollib_does(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pattern"):
        sinks.SqliteSink(tmp_path / "x.db", table_blocks="bad name")
    with pytest.raises(ValueError, match="exactly one"):
        sinks.PostgresConfig()
    assert sinks.PostgresConfig(host="db", database="lab").target() == "postgresql://db:5432/lab.public"
    with pytest.raises(ValueError, match="batch_size"):
        asyncio.run(sinks.pipe(readings(1), sinks.InMemorySink(), batch_size=0))
    with pytest.raises(RuntimeError, match="not open"):
        asyncio.run(sinks.InMemorySink().write(block(0)))
