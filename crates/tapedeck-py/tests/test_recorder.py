"""tapedeck.Recorder: rows, Arrow data and blocks in; sinks, tape and errors out."""

from __future__ import annotations

import csv
import datetime as dt
import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import tapedeck
from tapedeck import errors


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"device": f"d{i % 3}", "n": i, "flow": i * 0.5} for i in range(start, start + n)]


def test_rows_through_a_tape_reach_every_sink_once(tmp_path: Path) -> None:
    with tapedeck.Recorder(
        tape=tmp_path / "tape",
        sinks=[f"csv:{tmp_path}/a.csv", f"jsonl:{tmp_path}/a.jsonl"],
        fsync="always",
    ) as rec:
        for k in range(10):
            rec.write_rows(rows(100, k * 100))
        rec.sync()
        assert rec.acknowledged == 1000
        assert rec.received == 1000
    s = rec.summary
    assert s is not None
    assert s["tape"]["acknowledged"] == 1000
    assert [d["cursor"] for d in s["deliveries"]] == [1000, 1000]
    with open(tmp_path / "a.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [int(r["n"]) for r in got] == list(range(1000))
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert [json.loads(x)["n"] for x in lines] == list(range(1000))


def test_without_a_tape_rows_wait_for_batch_size_then_go(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    rec = tapedeck.Recorder(sinks=[f"jsonl:{out}"], batch_size=10, flush_interval=60)
    rec.write_rows(rows(9))
    time.sleep(0.2)
    assert out.read_text() == ""
    assert rec.acknowledged == 0
    rec.write_rows(rows(1, 9))
    # Handed to the flusher thread at once; the 60 s timer cannot be what writes them.
    deadline = time.monotonic() + 5
    while len(out.read_text().splitlines()) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(out.read_text().splitlines()) == 10
    assert rec.acknowledged == 10
    rec.close()


def test_the_flush_timer_fires_on_a_silent_stream(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    rec = tapedeck.Recorder(sinks=[f"jsonl:{out}"], batch_size=1000, flush_interval=0.2)
    rec.write_rows(rows(3))
    deadline = time.monotonic() + 5
    while len(out.read_text().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    # No call since the write: only the timer can have flushed.
    assert len(out.read_text().splitlines()) == 3
    assert rec.acknowledged == 3
    rec.close()


def test_arrow_data_from_pyarrow_polars_and_a_record_batch(tmp_path: Path) -> None:
    table = pa.table({"n": pa.array(range(500), pa.int64()), "x": pa.array([0.25] * 500)})
    with tapedeck.Recorder(tape=tmp_path / "tape") as rec:
        rec.write_batch(table)  # __arrow_c_stream__
        rec.write_batch(table.to_batches()[0])  # __arrow_c_array__
        rec.write_batch(pl.DataFrame({"n": list(range(500, 600)), "x": [0.5] * 100}))
        rec.write_batch(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    got = pa.table(tapedeck.open_tape(tmp_path / "tape").reader())
    assert got.num_rows == 1600
    assert got.column("n").to_pylist()[:600] == list(range(500)) + list(range(100))
    assert got.column("n").to_pylist()[1000:1100] == list(range(500, 600))


def test_values_of_every_kind_and_datetimes_as_utc_timestamps(tmp_path: Path) -> None:
    import enum

    class Gas(enum.Enum):
        AIR = "Air"

    aware = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    naive = dt.datetime(2026, 3, 1, 10, 0, 0, 123456)
    with tapedeck.Recorder(tape=tmp_path / "tape") as rec:
        rec.write_rows(
            [
                {"b": True, "i": 2**62, "f": 1.5, "s": "ü", "y": b"\x00\x01", "t": aware,
                 "d": dt.date(2026, 3, 1), "g": Gas.AIR, "z": None},
                {"b": False, "i": -1, "f": float("nan"), "s": "", "y": b"", "t": naive,
                 "d": dt.date(2026, 3, 2), "g": Gas.AIR, "z": None},
            ]
        )
    t = pa.table(tapedeck.open_tape(tmp_path / "tape").reader())
    assert t.schema.field("t").type == pa.timestamp("us", tz="UTC")
    # 12:00+02:00 and a naive 10:00 are the same UTC instant.
    assert t.column("t").to_pylist()[0] == t.column("t").to_pylist()[1]
    assert t.column("t").to_pylist()[0] == dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert t.column("b").to_pylist() == [True, False]
    assert t.column("i").to_pylist() == [2**62, -1]
    assert t.column("s").to_pylist() == ["ü", ""]
    assert t.column("y").to_pylist() == [b"\x00\x01", b""]
    assert t.column("d").to_pylist() == ["2026-03-01", "2026-03-02"]
    assert t.column("g").to_pylist() == ["Air", "Air"]


def test_a_value_tapedeck_cannot_store_names_its_row_and_column(tmp_path: Path) -> None:
    with tapedeck.Recorder(tape=tmp_path / "tape") as rec:
        with pytest.raises(TypeError, match=r"row 1, column `bad`: values of type object"):
            rec.write_rows([{"ok": 1}, {"ok": 2, "bad": object()}])
        with pytest.raises(OverflowError, match="column `big`"):
            rec.write_rows([{"big": 2**70}])
        with pytest.raises(TypeError, match="expected a dict"):
            rec.write_rows([[1, 2]])
        rec.write_rows([{"ok": 3}])
    # The refused calls wrote nothing; the good one did.
    assert pa.table(tapedeck.open_tape(tmp_path / "tape").reader()).num_rows == 1


def test_blocks_from_numpy_come_back_with_their_samples(tmp_path: Path) -> None:
    values = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)
    with tapedeck.Recorder(tape=tmp_path / "tape", sinks=[f"csv:{tmp_path}/b.csv?accept_blocks=true"]) as rec:
        for _ in range(3):
            rec.write_block(values, channels=["ai0", "ai1"], units=["V", "V"], device="dev1",
                            sample_rate=10_000.0)
        rec.write_block([[1.0, 2.0], [3.0, 4.0]], channels=["ai0", "ai1"], device="dev1",
                        sample_rate=10_000.0, error=("overrun", "buffer full"))
    assert rec.summary is not None
    assert rec.summary["tape"]["acknowledged"] == 3002
    with open(tmp_path / "b.csv", newline="") as f:
        got = list(csv.DictReader(f))
    # One row per channel and sample.
    assert len(got) == 2 * 3002
    with pytest.raises(ValueError, match="shape"), tapedeck.Recorder(tape=tmp_path / "tape2") as rec2:
        rec2.write_block(values, channels=["only-one"])


def test_bad_uris_and_options_are_value_errors_that_say_what_is_valid(tmp_path: Path) -> None:
    with pytest.raises(errors.UriError) as e:
        tapedeck.Recorder(sinks=[f"csv:{tmp_path}/a.csv?overwrit=true"])
    assert isinstance(e.value, ValueError)
    assert "valid parameters" in str(e.value) and "overwrite" in str(e.value)
    with pytest.raises(errors.UriError, match="known schemes"):
        tapedeck.Recorder(sinks=[f"cvs:{tmp_path}/a.csv"])
    (tmp_path / "exists.csv").write_text("x\n")
    with pytest.raises(FileExistsError) as e2:
        tapedeck.Recorder(sinks=[f"csv:{tmp_path}/exists.csv"])
    assert isinstance(e2.value, errors.DestinationExistsError)
    assert (tmp_path / "exists.csv").read_text() == "x\n"
    with pytest.raises(errors.OptionError, match="fsync"):
        tapedeck.Recorder(tape=tmp_path / "t", fsync="sometimes")
    with pytest.raises(errors.OptionError, match="batch_size"):
        tapedeck.Recorder(sinks=[f"csv:{tmp_path}/b.csv"], batch_size=0)
    with pytest.raises(errors.OptionError, match="needs a tape or at least one sink"):
        tapedeck.Recorder()
    # Nothing was created by the refused recorders.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.csv"]


def test_a_database_that_cannot_be_reached_is_a_connection_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError) as e:
        tapedeck.Recorder(
            sinks=["postgres://postgres:secret@127.0.0.1:9/none?table=t&connect_timeout=1s&retry_for=1s"]
        )
    assert isinstance(e.value, errors.ConnectError)
    assert "secret" not in str(e.value)


def test_closed_recorders_refuse_writes_and_close_twice_gives_one_summary(tmp_path: Path) -> None:
    rec = tapedeck.Recorder(tape=tmp_path / "tape")
    rec.write_rows(rows(5))
    first = rec.close()
    assert rec.close() == first
    assert rec.closed
    with pytest.raises(errors.OptionError, match="closed"):
        rec.write_rows(rows(1))


def test_another_recorder_on_a_held_tape_is_a_locked_error(tmp_path: Path) -> None:
    with tapedeck.Recorder(tape=tmp_path / "tape"), pytest.raises(errors.LockedError, match=r"process \d+"):
        tapedeck.Recorder(tape=tmp_path / "tape")


def test_help_explains_the_recorder() -> None:
    doc = tapedeck.Recorder.__doc__ or ""
    assert "exactly once" in doc and "batch_size" in doc and "fsync" in doc
    assert tapedeck.__doc__ and "open_tape" in tapedeck.__doc__
    assert [s["schemes"][0] for s in tapedeck.sinks()][:3] == ["csv", "jsonl", "ipc"]


def _small_tmpfs(tmp_path: Path, size: str) -> Path:
    """A tmpfs of `size` mounted on a fresh directory (unmount it with `_unmount`); skips
    without root, and fails under CI=true."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs needs root")
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    return mnt


def _unmount(mnt: Path) -> None:
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_a_storage_error_with_enospc_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    mnt = _small_tmpfs(tmp_path, "2m")
    try:
        rec = tapedeck.Recorder(tape=mnt / "tape", fsync="always", compression="none")
        rng = np.random.default_rng(1)
        acknowledged = 0
        with pytest.raises(OSError) as e:
            for _ in range(1000):
                rec.write_batch(pa.table({"x": rng.random(10_000)}))
                rec.sync()
                acknowledged = rec.acknowledged
        assert isinstance(e.value, errors.StorageError)
        assert e.value.errno == errno.ENOSPC
        assert acknowledged > 0
        # Later calls raise the same kind of error, not a usage error.
        with pytest.raises(errors.StorageError, match="failed earlier") as again:
            rec.write_rows([{"x": 1.0}])
        assert again.value.errno == errno.ENOSPC
        with pytest.raises(errors.TapedeckError):
            rec.close()
        # Every acknowledged row is on the tape, read back by a fresh reader.
        got = pa.table(tapedeck.open_tape(mnt / "tape").reader()).num_rows
        assert got >= acknowledged
    finally:
        _unmount(mnt)


def test_with_no_disk_full_timeout_a_full_disk_is_waited_out(tmp_path: Path) -> None:
    mnt = _small_tmpfs(tmp_path, "4m")
    try:
        rec = tapedeck.Recorder(
            tape=mnt / "tape", fsync="always", compression="none", disk_full_timeout=None
        )
        rec.write_batch(pa.table({"x": np.arange(1000, dtype=np.float64)}))
        rec.sync()
        # Fill the disk to 32 KiB free, less than the tape keeps in reserve; free it in 1 s.
        filler = mnt / "filler"
        st = os.statvfs(mnt)
        with open(filler, "wb") as f:
            try:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - (32 << 10)))
            except OSError:
                pass
        threading.Timer(1.0, filler.unlink).start()
        started = time.monotonic()
        rec.write_batch(pa.table({"x": np.arange(1000, 101_000, dtype=np.float64)}))
        rec.sync()
        waited = time.monotonic() - started
        assert waited >= 0.9, f"acknowledged after {waited:.2f} s on a full disk"
        assert rec.acknowledged == 101_000
        rec.close()
        got = pa.table(tapedeck.open_tape(mnt / "tape").reader())
        assert got.column("x").to_pylist() == [float(i) for i in range(101_000)]
    finally:
        _unmount(mnt)


def test_disk_full_timeout_must_be_seconds(tmp_path: Path) -> None:
    with pytest.raises(errors.OptionError, match="disk_full_timeout"):
        tapedeck.Recorder(tape=tmp_path / "tape", disk_full_timeout=-1.0)
    assert not (tmp_path / "tape").exists()


def test_plain_dict_lists_take_the_direct_path_and_give_the_same_batches(tmp_path: Path) -> None:
    """A list of plain dicts is turned into columns directly; any other iterable goes through
    the general conversion. Both must give the same columns, types and values."""
    batches = [
        [{"a": 1, "b": "x"}, {"a": 2.5, "c": None}, {"b": "z", "d": True, "e": b"\x01"}],
        [{"n": None}, {"n": None, "m": 1}],
        [{"a": 1, "b": 2}, {"b": 3.0, "a": 4}],
        [{"k": i, "v": f"s{i}", "f": i / 3} for i in range(1000)],
    ]
    for k, b in enumerate(batches):
        tables = []
        for fast in (True, False):
            tape = tmp_path / f"tape{k}{fast}"
            with tapedeck.Recorder(tape=tape) as rec:
                rec.write_rows(b if fast else iter(b))
            tables.append(pa.table(tapedeck.open_tape(tape).reader()))
        assert tables[0].schema == tables[1].schema, k
        assert tables[0].to_pylist() == tables[1].to_pylist(), k
        if k == 0:
            assert tables[0].schema.field("a").type == pa.float64()
            assert tables[0].column("a").to_pylist() == [1.0, 2.5, None]
    with pytest.raises(TypeError, match="column `v`"), tapedeck.Recorder(tape=tmp_path / "t") as rec:
        rec.write_rows([{"v": "text"}, {"v": 1}])


def test_progress_names_each_delivery_with_its_cursor(tmp_path: Path) -> None:
    with tapedeck.Recorder(tape=tmp_path / "tape", sinks=[f"csv:{tmp_path}/a.csv", f"jsonl:{tmp_path}/a.jsonl"]) as rec:
        rec.write_rows(rows(500))
        rec.sync()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            p = rec.progress
            if all(d["cursor"] == 500 for d in p):
                break
            time.sleep(0.02)
        assert [d["sink"] for d in p] == [f"csv:{tmp_path}/a.csv", f"jsonl:{tmp_path}/a.jsonl"]
        assert all(d["cursor"] == 500 and d["lag_rows"] == 0 for d in p)
    assert tapedeck.Recorder(sinks=[f"csv:{tmp_path}/b.csv"]).progress == []


def test_the_async_recorder_never_blocks_the_event_loop(tmp_path: Path) -> None:
    import asyncio

    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def main() -> dict[str, object] | None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        table = pa.table({"x": np.arange(2_000_000, dtype=np.float64)})
        async with tapedeck.AsyncRecorder(
            tape=tmp_path / "tape", sinks=[f"csv:{tmp_path}/a.csv"], fsync="always"
        ) as rec:
            for b in table.to_batches(max_chunksize=50_000):
                await rec.write_batch(b)
                await rec.sync()
        stop.set()
        await tick
        return rec.summary

    summary = asyncio.run(main())
    assert summary is not None and summary["tape"]["acknowledged"] == 2_000_000
    # The loop kept ticking every ~10 ms while the tape fsynced and the CSV was written.
    assert max(gaps) < 0.1, f"the event loop stalled {max(gaps) * 1000:.0f} ms"


def test_odd_inputs_are_typed_errors_not_crashes(tmp_path: Path) -> None:
    class Key(str):
        """A str subclass equal to another key: two entries of one dict named alike."""

        def __eq__(self, other: object) -> bool:
            return str.__eq__(self, other)

        def __hash__(self) -> int:
            return hash(str(self)) + 1

    with tapedeck.Recorder(tape=tmp_path / "tape") as rec:
        with pytest.raises(TypeError):
            rec.write_rows([{"a": 1, Key("a"): 2}])
        with pytest.raises(TypeError, match="record batch"):
            rec.write_batch(pa.array([1, 2, 3]))  # an array, not a table
        rec.write_rows([{"a": 1}])
    assert pa.table(tapedeck.open_tape(tmp_path / "tape").reader()).num_rows == 1


def test_an_async_recorder_closed_twice_gives_its_summary_twice(tmp_path: Path) -> None:
    import asyncio

    async def main() -> tuple[object, object]:
        rec = tapedeck.AsyncRecorder(tape=tmp_path / "tape")
        async with rec:
            await rec.write_rows([{"n": 1}])
            first = await rec.close()
        return first, await rec.close()

    first, second = asyncio.run(main())
    assert first is not None and first == second


def test_retain_keeps_the_tape_small_and_every_row_reaches_the_sink(tmp_path: Path) -> None:
    tape = tmp_path / "tape"
    out = tmp_path / "all.csv"
    with tapedeck.Recorder(
        tape,
        [f"csv:{out}"],
        batch_size=1000,
        compression="none",
        retain="64KiB",
        segment_bytes=16384,
    ) as rec:
        for k in range(40):
            rec.write_rows([{"n": k * 1000 + i, "pad": "x" * 40} for i in range(1000)])
            rec.sync()
            time.sleep(0.02)
    with open(out) as f:
        assert sum(1 for _ in f) == 40_001
    info = tapedeck.open_tape(tape).inspect()
    assert info["trimmed"] is not None and info["trimmed"][0] > 0, info
    assert tapedeck.open_tape(tape).verify()["problems"] == []
    with pytest.raises(errors.OptionError, match="neither a size"):
        tapedeck.Recorder(tmp_path / "t2", retain="lots")
    with pytest.raises(errors.OptionError, match="give the recorder a tape"):
        tapedeck.Recorder(sinks=[f"csv:{tmp_path}/b.csv"], retain="1GiB")
