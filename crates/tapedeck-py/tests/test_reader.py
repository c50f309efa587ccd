"""tapedeck.open_tape(...).reader(): Arrow streams over a tape for pyarrow, Polars, DuckDB."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
import tapedeck
from tapedeck import errors


def record(tape: Path, n: int, per_batch: int = 100, **options: object) -> None:
    with tapedeck.Recorder(tape=tape, frame_rows=per_batch, **options) as rec:  # type: ignore[arg-type]
        for k in range(0, n, per_batch):
            rec.write_rows([{"n": i, "x": i * 0.5} for i in range(k, min(n, k + per_batch))])
            rec.flush()


def test_pyarrow_polars_and_duckdb_read_a_tape(tmp_path: Path) -> None:
    record(tmp_path / "tape", 1000)
    tape = tapedeck.open_tape(tmp_path / "tape")
    t = pa.table(tape.reader())
    assert t.column("n").to_pylist() == list(range(1000))
    df = pl.from_arrow(pa.RecordBatchReader.from_stream(tape.reader()))
    assert isinstance(df, pl.DataFrame) and df["n"].sum() == sum(range(1000))
    r = tape.reader()  # noqa: F841 -- DuckDB finds it by name
    assert duckdb.sql("select count(*), max(n) from r").fetchall() == [(1000, 999)]
    assert pa.table(tape).num_rows == 1000  # the tape itself is a stream from the start


def test_readers_start_where_asked_and_are_read_once(tmp_path: Path) -> None:
    record(tmp_path / "tape", 1000)
    tape = tapedeck.open_tape(tmp_path / "tape")
    assert pa.table(tape.reader(start=250)).column("n").to_pylist()[0] == 250
    assert pa.table(tape.reader(start="end")).num_rows == 0
    r = tape.reader()
    pa.table(r)
    assert r.consumed
    with pytest.raises(errors.ReaderConsumedError, match="read once"):
        pa.table(r)
    with pytest.raises(errors.OptionError, match="start"):
        tape.reader(start="middle")
    with pytest.raises(errors.OptionError):
        tape.reader(start=-1)


def test_a_reader_from_a_time_starts_at_the_first_frame_reaching_it(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with tapedeck.Recorder(tape=tmp_path / "tape", frame_rows=10) as rec:
        for k in range(10):
            rec.write_rows(
                [{"t_utc": t0 + dt.timedelta(seconds=k * 10 + i), "n": k * 10 + i} for i in range(10)]
            )
            rec.flush()
    got = pa.table(tapedeck.open_tape(tmp_path / "tape").reader(start=t0 + dt.timedelta(seconds=55)))
    assert got.column("n").to_pylist()[0] == 55
    assert got.num_rows == 45


def test_a_following_reader_never_passes_the_acknowledged_position(tmp_path: Path) -> None:
    tape = tmp_path / "tape"
    rec = tapedeck.Recorder(tape=tape, frame_rows=50, fsync="always")
    rec.write_rows([{"n": -1}])
    rec.flush()
    seen: list[int] = []
    failures: list[str] = []

    def read() -> None:
        reader = pa.RecordBatchReader.from_stream(tapedeck.open_tape(tape).reader(follow=True))
        for batch in reader:
            seen.extend(batch.column(0).to_pylist())
            if len(seen) - 1 > rec.acknowledged:
                failures.append(f"read {len(seen)} rows, acknowledged {rec.acknowledged}")

    t = threading.Thread(target=read)
    t.start()
    for k in range(40):
        rec.write_rows([{"n": i} for i in range(k * 50, k * 50 + 50)])
        rec.flush()
    rec.close()
    t.join(timeout=30)
    assert not t.is_alive(), "the following reader did not end after the recorder closed"
    assert failures == []
    assert seen == [-1, *range(2000)]


def test_damage_is_an_error_naming_the_rows_unless_skipped(tmp_path: Path) -> None:
    record(tmp_path / "tape", 1000, compression="none")
    seg = sorted((tmp_path / "tape").glob("seg-*.tape"))
    data = bytearray(seg[0].read_bytes())
    data[len(data) // 2] ^= 0x55
    seg[0].write_bytes(bytes(data))
    tape = tapedeck.open_tape(tmp_path / "tape")
    with pytest.raises(pa.ArrowException, match=r"damaged: rows \d+\.\.\d+"):
        pa.table(tape.reader())
    got = pa.table(tape.reader(skip_damage=True)).num_rows
    assert 0 < got < 1000
    assert tape.verify()["problems"]


def test_inspect_and_verify_return_dicts(tmp_path: Path) -> None:
    record(tmp_path / "tape", 300)
    tape = tapedeck.open_tape(tmp_path / "tape")
    info = tape.inspect()
    assert info["rows"] == 300 and info["segments"]
    v = tape.verify()
    assert v["rows"] == 300 and v["problems"] == []
    with pytest.raises(errors.TapeError, match="no such tape"):
        tapedeck.open_tape(tmp_path / "nope")
