"""tapedeck: a crash-safe flight recorder for measurement and event streams.

Record rows, Arrow data and DAQ blocks onto a checksummed tape that survives any crash, have
every row delivered exactly once to CSV, JSONL, SQLite, Parquet, PostgreSQL or Arrow files, and
read the tape back as Arrow -- from pyarrow, Polars or DuckDB -- while it is still being
recorded.

>>> import tapedeck, tempfile, os
>>> d = tempfile.mkdtemp()
>>> with tapedeck.Recorder(tape=os.path.join(d, "tape"),
...                        sinks=[f"csv:{d}/run.csv"]) as rec:
...     rec.write_rows([{"device": "fuel", "flow": 1.5}, {"device": "air", "flow": 2.0}])
>>> rec.summary["tape"]["acknowledged"]
2
>>> import pyarrow
>>> pyarrow.table(tapedeck.open_tape(os.path.join(d, "tape")).reader()).num_rows
2

Names:

- :class:`Recorder` / :class:`AsyncRecorder` -- record (``with`` / ``async with``);
- :func:`open_tape` -> :class:`Tape` -- read a tape: ``.reader()``, ``.inspect()``, ``.verify()``;
- :class:`StreamCache` -- one Arrow stream read once, replayed to many readers (batchcorder's
  API), its disk tier a crash-safe tape;
- :class:`Journal` -- crash-safe, audited JSON state (kanta's job): every change a record;
- :func:`sinks` -- every sink URI scheme with its parameters;
- :mod:`tapedeck.errors` -- the exceptions, each also a built-in one (``ValueError`` ...);
- :mod:`tapedeck.compat.alicatlib` -- a drop-in for ``alicatlib.sinks``.

Sink URIs: ``csv:PATH``, ``jsonl:PATH``, ``ipc:PATH``, ``sqlite:PATH?table=T``,
``parquet:PATH`` or ``parquet:DIR/``, ``postgres://user@host/db?table=T``, ``raw:PATH``;
``tapedeck.sinks()`` lists their parameters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from . import _tapedeck, errors
from ._time import micros
from .cache import StreamCache, StreamCacheReader
from .errors import TapedeckError
from .journal import Journal, JournalFollower

__all__ = [
    "AsyncRecorder",
    "Journal",
    "JournalFollower",
    "Recorder",
    "StreamCache",
    "StreamCacheReader",
    "Tape",
    "TapeReader",
    "TapedeckError",
    "errors",
    "open_tape",
    "sinks",
]

__version__: str = _tapedeck.__version__

PathLike = str | os.PathLike[str]
Position = str | int | _dt.datetime


def sinks() -> list[dict[str, Any]]:
    """Every sink: its URI schemes, usage, summary and parameters (name, kind, default, doc).

    >>> [s["schemes"][0] for s in sinks()][:3]
    ['csv', 'jsonl', 'ipc']
    """
    result: list[dict[str, Any]] = json.loads(_tapedeck.sinks_json())
    return result


class Recorder:
    """Records rows, Arrow data and DAQ blocks into sinks, directly or through a tape.

    Args:
        tape: a tape directory (created, or recovered and appended to). With a tape every row
            is on disk, checksummed, before any sink sees it, and each sink is fed from the tape
            by its own delivery, exactly once, whatever crashes. ``None``: rows go straight to
            the sinks.
        sinks: sink URIs, e.g. ``["csv:run.csv", "sqlite:lab.db?table=flow"]``; every one is
            checked before anything is created (:func:`sinks` lists them).
        batch_size: rows held before they are handed on (and flushed), as in alicatlib's and
            dtollib's ``pipe``.
        flush_interval: seconds; whatever is held is flushed at least this often -- by a timer,
            so a stream that goes quiet is still written.
        fsync: the tape's durability: ``"always"`` (a row is acknowledged after the fdatasync
            that covers it), ``"interval:100ms"`` (the default), or ``"never"``.
        compression: the tape's frame compression: ``"zstd"`` (default), ``"lz4"``, ``"none"``.
        frame_rows: rows per tape frame at most (default 65,536).
        retain: keep the tape to a size or an age while recording -- ``"10GiB"``, ``"7d"``,
            ``"10GiB,7d"``: the oldest sealed segments beyond it are removed, never rows a sink
            known to the tape has not received (``tapedeck trim`` does the same from the
            command line).
        segment_bytes: a new tape segment past this many bytes (default 256 MiB); retention
            removes whole segments.
        disk_full_timeout: with a tape, how many seconds to wait when its disk is full --
            acknowledging nothing meanwhile and going on by itself when space returns -- before
            failing with a ``StorageError`` (``errno.ENOSPC``); ``None`` waits as long as it
            takes. The default, 0, fails at once.

    A write call converts its data and queues it; the recorder's own thread hands the queue to
    the sinks (or the tape) as soon as ``batch_size`` rows wait, and at least every
    ``flush_interval`` -- so a write never waits for a disk or a database, unless the queue is
    full because the sinks are slower than the producer. :meth:`flush` and :meth:`sync` wait.

    Use it as a context manager (``with``); :meth:`close` flushes, seals the tape, brings every
    sink's delivery to the tape's end and sets :attr:`summary`. Every method that waits releases
    the GIL. Errors are :mod:`tapedeck.errors` classes: a bad URI is a ``UriError`` (a
    ``ValueError``) listing the valid parameters, a database that cannot be reached a
    ``ConnectError`` (a ``ConnectionError``), a full disk a ``StorageError`` with
    ``errno.ENOSPC``.

    >>> import tapedeck, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with tapedeck.Recorder(sinks=[f"jsonl:{d}/a.jsonl"], batch_size=2) as rec:
    ...     rec.write_rows([{"n": 1}, {"n": 2}, {"n": 3}])
    >>> open(f"{d}/a.jsonl").read().splitlines()
    ['{"n":1}', '{"n":2}', '{"n":3}']
    """

    def __init__(
        self,
        tape: PathLike | None = None,
        sinks: Sequence[str] = (),
        *,
        batch_size: int = 64,
        flush_interval: float = 1.0,
        fsync: str | None = None,
        compression: str | None = None,
        frame_rows: int | None = None,
        retain: str | None = None,
        segment_bytes: int | None = None,
        disk_full_timeout: float | None = 0.0,
    ) -> None:
        if isinstance(sinks, str):
            sinks = [sinks]
        self._native = _tapedeck.Recorder(
            os.fspath(tape) if tape is not None else None,
            [str(s) for s in sinks],
            int(batch_size),
            float(flush_interval),
            fsync,
            compression,
            frame_rows,
            retain,
            segment_bytes,
            disk_full_timeout,
        )
        self._blocks: dict[tuple[str, str], tuple[int, int]] = {}
        self.summary: dict[str, Any] | None = None
        """What the run did, once closed: rows, each sink, the tape, each delivery."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Writes rows: dicts of column name to value (``None``, ``bool``, ``int``, ``float``,
        ``str``, ``bytes``, ``datetime`` -- stored as a UTC timestamp, naive taken as UTC --,
        ``date`` or an ``Enum`` member). Columns come in the order first seen."""
        self._native.write_rows(rows)

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Writes one row (see :meth:`write_rows`)."""
        self._native.write_rows((row,))

    def write_batch(self, data: Any) -> None:
        """Writes Arrow data: anything with ``__arrow_c_stream__`` or ``__arrow_c_array__``
        (a pyarrow Table, RecordBatch or RecordBatchReader, a Polars DataFrame, a DuckDB
        relation ...), without copying it."""
        self._native.write_batch(data)

    def write_block(
        self,
        values: Any,
        *,
        channels: Sequence[str],
        units: Sequence[str | None] | None = None,
        device: str = "daq",
        task: str = "task",
        block_index: int | None = None,
        first_sample_index: int | None = None,
        t_utc: _dt.datetime | float | None = None,
        t_mono_ns: int | None = None,
        sample_rate: float | None = None,
        period_ns: int | None = None,
        read_window_ns: int = 0,
        raw: Any = None,
        error: tuple[str, str] | str | None = None,
    ) -> None:
        """Writes one DAQ block: ``values`` is channels x samples (a numpy array, any float
        dtype, or a list of lists), in engineering units.

        ``block_index`` and ``first_sample_index`` count on from the previous block of the
        same device and task when left out; ``t_utc`` (a datetime or seconds since the epoch)
        and ``t_mono_ns`` default to now; ``sample_rate`` (Hz) or ``period_ns`` gives the
        sample clock. ``raw`` holds the raw codes (int16 or int32, same shape); ``error`` marks
        an overrun or other fault: ``("overrun", "buffer overflow")``.
        """
        values, shape = _float64_2d(values)
        channels = list(channels)
        if units is None:
            units = [None] * len(channels)
        samples = shape[-1] if shape else 0
        key = (device, task)
        next_index, next_sample = self._blocks.get(key, (0, 0))
        if block_index is None:
            block_index = next_index
        if first_sample_index is None:
            first_sample_index = next_sample
        if period_ns is None and sample_rate is not None:
            if not sample_rate > 0:
                raise errors.OptionError(f"sample_rate must be positive, got {sample_rate}")
            period_ns = round(1e9 / sample_rate)
        kind, message = (None, None)
        if isinstance(error, tuple):
            kind, message = error
        elif error is not None:
            kind, message = "error", str(error)
        if raw is not None:
            raw = _contiguous(raw)
        self._native.write_block(
            values,
            channels,
            list(units),
            device,
            task,
            int(block_index),
            int(first_sample_index),
            int(t_mono_ns if t_mono_ns is not None else time.monotonic_ns()),
            micros(t_utc if t_utc is not None else _dt.datetime.now(_dt.UTC)),
            period_ns,
            int(read_window_ns),
            raw,
            kind,
            message,
        )
        self._blocks[key] = (int(block_index) + 1, int(first_sample_index) + samples)

    def flush(self) -> None:
        """Hands everything written to the sinks now (with a tape: onto the tape, where it is
        acknowledged under the fsync policy, and from there to each sink's delivery). It does
        not wait for the acknowledgement; :meth:`sync` does."""
        self._native.flush()

    def sync(self) -> None:
        """Flushes, then waits until every row written so far is acknowledged: with a tape,
        durable under its fsync policy (an fsync is forced rather than waiting for the
        interval); without one, written to the sinks. Afterwards :attr:`acknowledged` equals
        :attr:`received`."""
        self._native.sync()

    @property
    def acknowledged(self) -> int:
        """Rows of this run acknowledged: durable on the tape (under its fsync policy), or
        without a tape, flushed to the sinks. Never waits for a flush in progress."""
        return int(self._native.acknowledged)

    @property
    def received(self) -> int:
        """Rows taken by the write calls so far."""
        return int(self._native.received)

    @property
    def queued(self) -> int:
        """Rows written but not yet handed to the sinks (they go within ``flush_interval``,
        or as soon as ``batch_size`` rows wait)."""
        return int(self._native.queued)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return bool(self._native.closed)

    @property
    def progress(self) -> list[dict[str, Any]]:
        """Each sink's delivery from the tape: ``sink``, ``state``, ``cursor``, ``lag_rows``,
        ``lag_seconds``, ``rows``, ``error`` ... (empty without a tape)."""
        result: list[dict[str, Any]] = json.loads(self._native.progress_json())
        return result

    def close(self) -> dict[str, Any]:
        """Flushes, closes the sinks (with a tape: seals it and brings every delivery to its
        end), sets and returns :attr:`summary`. Calling it again returns the same summary."""
        summary: dict[str, Any] = json.loads(self._native.close())
        self.summary = summary
        return summary


class AsyncRecorder:
    """:class:`Recorder` for asyncio: the same arguments, used with ``async with``; every
    method is a coroutine that runs on the recorder's own thread, so the event loop never
    waits for a disk, an fsync or a database.

    >>> import asyncio, tapedeck, tempfile
    >>> d = tempfile.mkdtemp()
    >>> async def main():
    ...     async with tapedeck.AsyncRecorder(tape=f"{d}/tape", sinks=[f"csv:{d}/a.csv"]) as rec:
    ...         await rec.write_rows([{"n": i} for i in range(10)])
    ...     return rec.summary["tape"]["acknowledged"]
    >>> asyncio.run(main())
    10
    """

    def __init__(self, tape: PathLike | None = None, sinks: Sequence[str] = (), **options: Any):
        self._args = (tape, sinks)
        self._options = options
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tapedeck")
        self._rec: Recorder | None = None
        self.summary: dict[str, Any] | None = None

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def _recorder(self) -> Recorder:
        if self._rec is None:
            raise errors.OptionError("the recorder is not open: use `async with AsyncRecorder(...)`")
        return self._rec

    async def open(self) -> Self:
        """Opens the recorder (``async with`` does it)."""
        if self._rec is None:
            try:
                self._rec = await self._run(Recorder, *self._args, **self._options)
            except BaseException:
                self._pool.shutdown(wait=False)
                raise
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _write(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        # A write only converts and queues (the sinks are written by the recorder's own
        # thread), so it runs here unless the queue is filling up -- the sinks are slower than
        # the producer -- when it waits for room on the recorder's thread, not on the loop.
        rec = self._recorder()
        if rec.queued < _tapedeck.Recorder.QUEUE_LIMIT // 2:
            fn(*args, **kwargs)
        else:
            await self._run(fn, *args, **kwargs)

    async def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """See :meth:`Recorder.write_rows`."""
        rows = rows if isinstance(rows, list) else list(rows)
        await self._write(self._recorder().write_rows, rows)

    async def write_batch(self, data: Any) -> None:
        """See :meth:`Recorder.write_batch`. Runs on the recorder's thread: importing a stream
        pulls it (a DuckDB query, a file reader), which may take a while."""
        await self._run(self._recorder().write_batch, data)

    async def write_block(self, values: Any, **metadata: Any) -> None:
        """See :meth:`Recorder.write_block`."""
        await self._write(self._recorder().write_block, values, **metadata)

    async def flush(self) -> None:
        """See :meth:`Recorder.flush`."""
        await self._run(self._recorder().flush)

    async def sync(self) -> None:
        """See :meth:`Recorder.sync`."""
        await self._run(self._recorder().sync)

    @property
    def acknowledged(self) -> int:
        """See :attr:`Recorder.acknowledged`."""
        return self._recorder().acknowledged

    @property
    def progress(self) -> list[dict[str, Any]]:
        """See :attr:`Recorder.progress`."""
        return self._recorder().progress

    async def close(self) -> dict[str, Any] | None:
        """See :meth:`Recorder.close`; a second call returns the same summary."""
        if self._rec is not None and not self._rec.closed:
            try:
                self.summary = await self._run(self._rec.close)
            finally:
                self._pool.shutdown(wait=False)
        return self.summary


def _position(start: Position) -> str:
    if isinstance(start, bool):
        raise errors.OptionError("start: expected 'start', 'end', a sequence number or a datetime")
    if isinstance(start, int):
        if start < 0:
            raise errors.OptionError(f"start: a sequence number is >= 0, got {start}")
        return f"seq:{start}"
    if isinstance(start, _dt.datetime):
        t = start if start.tzinfo is not None else start.replace(tzinfo=_dt.UTC)
        return "time:" + t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(start)


class TapeReader:
    """One pass over a tape, as an Arrow stream (``__arrow_c_stream__``): give it to
    ``pyarrow.table(r)``, ``pyarrow.RecordBatchReader.from_stream(r)``,
    ``polars.from_arrow(r)`` or ``duckdb.sql("select ... from r")``.

    A reader is read once (then ask the tape for another); readers are independent. It never
    hands out a row the tape has not acknowledged, and with ``follow=True`` it waits for new
    rows while a recorder holds the tape and ends when that recorder has stopped and every row
    was read. Create it with :meth:`Tape.reader`.
    """

    def __init__(self, native: Any) -> None:
        self._native = native

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._native.__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> object:
        return self._native.__arrow_c_schema__()

    @property
    def consumed(self) -> bool:
        """Whether the stream was handed out already."""
        return bool(self._native.consumed)

    def read_all(self) -> Any:
        """The rows as a ``pyarrow.Table`` (needs pyarrow)."""
        import pyarrow

        return pyarrow.table(self)


class Tape:
    """A tape directory, for reading; see :func:`open_tape`."""

    def __init__(self, dir: PathLike) -> None:
        self.dir = os.fspath(dir)
        if not os.path.isdir(self.dir):
            raise errors.TapeError(f"tape `{self.dir}`: no such tape directory")

    def __repr__(self) -> str:
        return f"Tape({self.dir!r})"

    def reader(
        self,
        start: Position = "start",
        follow: bool = False,
        *,
        skip_damage: bool = False,
        poll_interval: float = 0.02,
    ) -> TapeReader:
        """A reader from ``start``: ``"start"``, ``"end"``, a sequence number, or a datetime
        (the first frame whose event times reach it). ``follow=True`` waits for rows as they
        become durable while a recorder runs. A damaged frame is an error naming its rows,
        segment and bytes, unless ``skip_damage=True`` leaves them out."""
        native = _tapedeck.Reader(
            self.dir, _position(start), follow, skip_damage, float(poll_interval)
        )
        return TapeReader(native)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """The whole tape as it stands, as an Arrow stream (a new reader from the start)."""
        return self.reader().__arrow_c_stream__(requested_schema)

    def inspect(self) -> dict[str, Any]:
        """Schema, segments, rows, time range and bytes (``tapedeck inspect``)."""
        result: dict[str, Any] = json.loads(_tapedeck.inspect_json(self.dir))
        return result

    def verify(self) -> dict[str, Any]:
        """Checks every CRC and the hash chain (``tapedeck verify``): ``segments``,
        ``frames``, ``rows`` and ``problems`` (empty when the tape is whole)."""
        result: dict[str, Any] = json.loads(_tapedeck.verify_json(self.dir))
        return result


def open_tape(dir: PathLike) -> Tape:
    """Opens the tape in ``dir`` for reading (it may be recorded meanwhile)."""
    return Tape(dir)


def _contiguous(a: Any) -> Any:
    if hasattr(a, "__array_interface__") or hasattr(a, "__array__"):
        import numpy

        return numpy.ascontiguousarray(a)
    return a


def _float64_2d(values: Any) -> tuple[Any, tuple[int, ...]]:
    """``values`` as a C-contiguous float64 buffer, and its shape."""
    if hasattr(values, "__array_interface__") or hasattr(values, "__array__"):
        import numpy

        a = numpy.ascontiguousarray(values, dtype=numpy.float64)
        return a, tuple(a.shape)
    if isinstance(values, memoryview):
        return values, tuple(values.shape or ())
    from array import array

    rows = [list(r) for r in values]
    width = len(rows[0]) if rows else 0
    if any(len(r) != width for r in rows):
        raise errors.InputError("values: every channel needs the same number of samples")
    flat = array("d", (float(x) for r in rows for x in r))
    view = memoryview(flat).cast("B").cast("d", (len(rows), width)) if rows else memoryview(flat)
    return view, (len(rows), width)
