"""A drop-in for ``dtollib.sinks``, recording through tapedeck.

Change ``from dtollib.sinks import pipe, ParquetSink`` to
``from tapedeck.compat.dtollib import pipe, ParquetSink``: the same names and constructor
arguments; readings go through ``write_many`` and :func:`pipe`, DAQ blocks through ``write``
and :func:`pipe_blocks`, raw codes through :class:`RawCountsSink`'s ``write_raw``. Readings and
blocks are dtollib's own ``DaqReading`` / ``DaqBlock`` objects, read by their attributes
(dtollib is never imported), or plain dicts for readings.

What differs, on purpose -- what dtollib gets wrong:

- :func:`pipe` flushes on a real timer (a quiet stream is still written after
  ``flush_interval_s``) and writes what it received before a stream error propagates.
- :func:`block_to_rows` stamps every sample from one anchor -- the block's first sample, ``t0``
  in UTC and ``t_mono_ns`` less the block's span in monotonic time -- so the two time columns
  agree (dtollib mixes the block's end and its midpoint, half a block apart).
- Times are stored as timestamps, not ISO text; a channel named like a fixed key does not
  overwrite it (it is kept as ``value_<name>``).
- ``ParquetSink`` and ``RawCountsSink`` leave readable files after a kill when given ``tape=DIR``
  (every acknowledged record is delivered on the next open); ``.dt-raw`` payloads are written
  little-endian whatever the host; the ``overrun_marker`` flag is set for overruns only.
- Every sink takes ``tape=DIR``: records reach it exactly once across crashes.
"""

from __future__ import annotations

import datetime as _dt
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from ._common import (
    FileSink,
    RecorderSink,
    TapeDir,
    check_identifier,
    check_postgres,
    drain,
    parquet_params,
    path_uri,
    postgres_uri,
)

__all__ = [
    "CsvSink",
    "InMemorySink",
    "JsonlSink",
    "ParquetSink",
    "PostgresConfig",
    "PostgresSink",
    "RawCountsSink",
    "SqliteSink",
    "block_to_rows",
    "pipe",
    "pipe_blocks",
    "reading_to_row",
]

_FIXED = ("device", "task", "t_mono_ns", "t_utc", "t_midpoint_mono_ns", "requested_at",
          "received_at", "latency_s", "error_type", "error_message")


def _error(err: Any) -> tuple[str | None, str | None]:
    if err is None:
        return None, None
    cls = type(err)
    return f"{cls.__module__}.{cls.__qualname__}", str(err)


def reading_to_row(reading: Any) -> dict[str, Any]:
    """A flat row for one reading: ``device``, ``task``, its times and latency, one column per
    channel, ``<channel>_unit`` per unit, ``error_type``, ``error_message``. A dict is taken
    as a row."""
    if isinstance(reading, Mapping):
        return dict(reading)
    row: dict[str, Any] = {
        "device": reading.device,
        "task": getattr(reading, "task", None),
        "t_mono_ns": reading.t_mono_ns,
        "t_utc": reading.t_utc,
        "t_midpoint_mono_ns": getattr(reading, "t_midpoint_mono_ns", None),
        "requested_at": reading.requested_at,
        "received_at": reading.received_at,
        "latency_s": reading.latency_s,
    }
    for name, value in getattr(reading, "values", {}).items():
        row[f"value_{name}" if name in _FIXED else name] = value
    for name, unit in getattr(reading, "units", {}).items():
        row[f"{name}_unit"] = unit
    row["error_type"], row["error_message"] = _error(getattr(reading, "error", None))
    return row


def _period_ns(block: Any) -> int:
    period = getattr(block, "block_period_ns", None)
    if period:
        return int(period)
    rate = getattr(block, "sample_rate_hz", None)
    if rate:
        return round(1e9 / float(rate))
    n = max(1, int(block.samples_per_channel))
    span = block.read_finished_at - block.read_started_at
    return int(span.total_seconds() * 1e9) // n


def _first_sample(block: Any, period: int) -> tuple[int, _dt.datetime]:
    """Monotonic ns and UTC time of the block's first sample. dtollib stamps ``t_mono_ns`` when
    the block's callback arrives (after its last sample) and ``t0`` at its first sample."""
    n = int(block.samples_per_channel)
    mono = int(block.t_mono_ns) - max(0, n - 1) * period
    t0 = getattr(block, "t0", None)
    if t0 is None:
        t0 = block.t_utc - _dt.timedelta(microseconds=(n - 1) * period / 2000)
    return mono, t0


def block_to_rows(block: Any) -> list[dict[str, Any]]:
    """One row per channel and sample, channel by channel: ``device``, ``task``, ``channel``,
    ``block_index``, ``sample_index``, ``t_mono_ns``, ``t_utc``, ``value``, ``unit``,
    ``error_type``, ``error_message``; every sample stamped from the block's first sample."""
    period = _period_ns(block)
    mono0, utc0 = _first_sample(block, period)
    units = getattr(block, "units", {}) or {}
    etype, emsg = _error(getattr(block, "error", None))
    rows: list[dict[str, Any]] = []
    first = int(block.first_sample_index)
    n = int(block.samples_per_channel)
    for c, channel in enumerate(block.channels):
        values = block.data[c]
        for k in range(n):
            rows.append(
                {
                    "device": block.device,
                    "task": getattr(block, "task", None),
                    "channel": channel,
                    "block_index": int(block.block_index),
                    "sample_index": first + k,
                    "t_mono_ns": mono0 + k * period,
                    "t_utc": utc0 + _dt.timedelta(microseconds=k * period / 1000),
                    "value": float(values[k]),
                    "unit": units.get(channel),
                    "error_type": etype,
                    "error_message": emsg,
                }
            )
    return rows


def _block_args(block: Any) -> tuple[Any, dict[str, Any]]:
    """A dtollib block as the arguments of :meth:`tapedeck.Recorder.write_block`."""
    period = _period_ns(block)
    mono0, utc0 = _first_sample(block, period)
    units = getattr(block, "units", {}) or {}
    err = getattr(block, "error", None)
    error = None
    if err is not None:
        name = type(err).__name__
        error = ("overrun" if "Overrun" in name else name, str(err))
    started, finished = getattr(block, "read_started_at", None), getattr(block, "read_finished_at", None)
    window = int((finished - started).total_seconds() * 1e9) if started and finished else 0
    return block.data, {
        "channels": list(block.channels),
        "units": [units.get(c) for c in block.channels],
        "device": block.device,
        "task": getattr(block, "task", None) or "task",
        "block_index": int(block.block_index),
        "first_sample_index": int(block.first_sample_index),
        "t_utc": utc0,
        "t_mono_ns": mono0,
        "period_ns": period if getattr(block, "block_period_ns", None) or getattr(block, "sample_rate_hz", None) else None,
        "read_window_ns": window,
        "raw": getattr(block, "raw_codes", None),
        "error": error,
    }


class _DaqSink(RecorderSink):
    """A tapedeck-backed dtollib sink: readings by ``write_many``, blocks by ``write``."""

    def _row(self, item: Any) -> dict[str, Any]:
        return reading_to_row(item)

    async def write(self, block: Any) -> None:
        """Writes one DAQ block (handed on at once by the recorder's thread)."""
        rec = self._recorder("write")
        values, metadata = _block_args(block)
        await rec.write_block(values, **metadata)


class InMemorySink:
    """Keeps readings and blocks in lists (tests): ``readings``, ``blocks``, ``is_open``."""

    def __init__(self) -> None:
        self.readings: list[Any] = []
        self.blocks: list[Any] = []
        self._open = False

    @property
    def is_open(self) -> bool:
        """Whether the sink is open."""
        return self._open

    async def open(self) -> None:
        """Opens the sink (again, after a close)."""
        self._open = True

    def _check(self, call: str) -> None:
        if not self._open:
            raise RuntimeError(f"InMemorySink: {call} called while not open")

    async def write_many(self, items: Sequence[Any]) -> None:
        """Appends readings; ``RuntimeError`` when the sink is not open."""
        self._check("write_many")
        self.readings.extend(items)

    async def write(self, block: Any) -> None:
        """Appends one block; ``RuntimeError`` when the sink is not open."""
        self._check("write")
        self.blocks.append(block)

    async def close(self) -> None:
        """Closes the sink; what was written is kept."""
        self._open = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class CsvSink(_DaqSink, FileSink):
    """CSV with a header; blocks (one row per channel and sample) only with
    ``accept_blocks=True``."""

    _scheme = "csv"

    def __init__(self, path: str | os.PathLike[str], *, accept_blocks: bool = False, tape: TapeDir = None):
        super().__init__(path, tape, {"accept_blocks": "true"} if accept_blocks else {})


class JsonlSink(_DaqSink, FileSink):
    """One JSON object per line; blocks (one line per channel and sample) only with
    ``accept_blocks=True``."""

    _scheme = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, accept_blocks: bool = False, tape: TapeDir = None):
        super().__init__(path, tape, {"accept_blocks": "true"} if accept_blocks else {})


class ParquetSink(_DaqSink, FileSink):
    """A Parquet file; blocks in the long layout (one row per channel and sample), as dtollib."""

    _scheme = "parquet"
    _make_parent = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd",
        use_dictionary: bool = True,
        row_group_size: int | None = None,
        tape: TapeDir = None,
    ) -> None:
        super().__init__(path, tape, parquet_params(compression, use_dictionary, row_group_size))
        self.compression = compression
        self._params["blocks"] = "long"


class SqliteSink(_DaqSink):
    """Readings into ``table_readings``, one summary row per block into ``table_blocks``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table_readings: str = "readings",
        table_blocks: str = "blocks",
        journal_mode: Literal["WAL", "DELETE", "MEMORY", "TRUNCATE", "PERSIST", "OFF"] = "WAL",
        synchronous: Literal["FULL", "NORMAL", "OFF", "EXTRA"] = "NORMAL",
        busy_timeout_ms: int = 5000,
        tape: TapeDir = None,
    ) -> None:
        check_identifier("table_readings", table_readings)
        check_identifier("table_blocks", table_blocks)
        if busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be >= 0, got {busy_timeout_ms}")
        super().__init__(tape)
        self.path = Path(path)
        self._query = (
            f"table={table_readings}&blocks_table={table_blocks}&journal_mode={journal_mode}"
            f"&synchronous={synchronous}&busy_timeout={int(busy_timeout_ms)}"
        )

    def _uri(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:{self.path}?{self._query}"


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """Where and how :class:`PostgresSink` writes; dtollib's fields and checks."""

    dsn: str | None = field(default=None, repr=False)  # may hold a password
    host: str | None = None
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    schema: str = "public"
    table_readings: str = "readings"
    table_blocks: str = "blocks"
    pool_min_size: int = 1
    pool_max_size: int = 4
    statement_timeout_ms: int = 30000
    command_timeout_s: float = 10.0
    create_tables: bool = False
    use_copy: bool = True

    def __post_init__(self) -> None:
        check_postgres(self, ("schema", "table_readings", "table_blocks"))
        if not self.command_timeout_s > 0:
            raise ValueError("PostgresConfig: command_timeout_s must be > 0")

    def target(self) -> str:
        """``scheme://host:port/db.schema``, without user or password (for logs)."""
        if self.dsn is not None:
            u = urllib.parse.urlparse(self.dsn)
            return f"{u.scheme}://{u.hostname or '?'}:{u.port or self.port}/{u.path.lstrip('/') or '?'}.{self.schema}"
        return f"postgresql://{self.host}:{self.port}/{self.database or '?'}.{self.schema}"

    def uri(self) -> str:
        """The tapedeck sink URI for this configuration (it holds the password, if any)."""
        return postgres_uri(
            self,
            [
                ("table", self.table_readings),
                ("blocks_table", self.table_blocks),
                ("schema", self.schema),
                ("create_table", "true" if self.create_tables else "false"),
                ("use_copy", "true" if self.use_copy else "false"),
                ("statement_timeout", f"{self.statement_timeout_ms}ms"),
            ],
        )


class PostgresSink(_DaqSink):
    """Readings and block summaries into PostgreSQL, by binary COPY; a server that goes away
    is retried while records are kept."""

    def __init__(self, config: PostgresConfig, *, tape: TapeDir = None):
        super().__init__(tape)
        self.config = config

    def _uri(self) -> str:
        return self.config.uri()


class RawCountsSink(_DaqSink):
    """Raw codes into a ``.dt-raw`` file (dtollib's format, little-endian), one chunk per
    block, by ``write_raw``."""

    def __init__(self, path: str | os.PathLike[str], *, file_metadata: Mapping[str, Any] | None = None,
                 tape: TapeDir = None):
        super().__init__(tape)
        self.path = Path(path)
        self.file_metadata = dict(file_metadata or {})

    def _uri(self) -> str:
        return path_uri("raw", self.path, self._tape, {})

    async def write_raw(self, block: Any) -> None:
        """Writes one block's raw codes (``block.raw_codes``, int16 or int32)."""
        if getattr(block, "raw_codes", None) is None:
            raise ValueError("RawCountsSink.write_raw: the block has no raw_codes")
        await self.write(block)


async def pipe(
    stream: AsyncIterator[Any],
    sink: Any,
    *,
    batch_size: int = 64,
    flush_interval_s: float = 1.0,
) -> int:
    """Drains readings into an open ``sink``, ``batch_size`` at a time and at least every
    ``flush_interval_s`` seconds (a real timer: a quiet stream is still written); writes what
    it received before a stream error propagates. Returns the readings written."""
    return await drain(stream, sink.write_many, batch_size=batch_size, flush_interval=flush_interval_s)


async def pipe_blocks(stream: AsyncIterator[Any], sink: Any, *, flush_interval_s: float | None = None) -> int:
    """Writes each DAQ block of ``stream`` to an open ``sink`` (``sink.write(block)``);
    returns the blocks written. ``flush_interval_s`` is accepted for dtollib's signature: every
    block is written (and flushed) as it comes."""
    if flush_interval_s is not None and not flush_interval_s > 0:
        raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
    n = 0
    async for block in stream:
        await sink.write(block)
        n += 1
    return n
