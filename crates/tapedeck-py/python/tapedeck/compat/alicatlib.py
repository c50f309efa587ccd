"""A drop-in for ``alicatlib.sinks``, recording through tapedeck.

Change ``from alicatlib.sinks import pipe, CsvSink`` to
``from tapedeck.compat.alicatlib import pipe, CsvSink``: the same names, constructor arguments,
``async with`` / ``open`` / ``write_many`` / ``close`` and ``pipe(source, sink, *, batch_size=64,
flush_interval=1.0)`` returning a summary with ``started_at``, ``finished_at`` and
``samples_emitted``. Samples are alicatlib's own ``Sample`` objects (read by their attributes,
``device``, ``unit_id``, ``t_utc``, ``t_mono_ns``, ``requested_at``, ``received_at``,
``latency_s`` and ``reading.as_dict()``; alicatlib is never imported) or plain dicts.

What differs, on purpose -- what alicatlib gets wrong:

- ``pipe`` flushes on a real timer: a stream that goes quiet is still written after
  ``flush_interval`` seconds (alicatlib checks the timer only when a sample arrives).
- Samples already received are written when the stream raises or is cancelled, before the
  error propagates (alicatlib drops its buffer).
- ``ParquetSink`` writes a file that is readable after a kill: with ``tape=DIR`` every
  acknowledged row is on the tape and delivered to the file on the next run; without it, the
  rows go to the file in row groups of the flushes.
- Times are stored as timestamps, not ISO text (a PostgreSQL column is ``timestamptz``), and
  values of a column are converted to its type instead of failing the batch.
- Writing and fsyncing happen on a worker thread, never on the event loop.
- Every sink takes ``tape=DIR``: rows go onto a crash-safe tape first and reach the sink
  exactly once, whenever the process dies (``tapedeck deliver DIR --sink URI`` finishes a
  delivery a crash interrupted; reopening the sink with the same tape does it too).
"""

from __future__ import annotations

import datetime as _dt
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from ._common import (
    FileSink,
    RecorderSink,
    TapeDir,
    check_identifier,
    check_postgres,
    drain,
    parquet_params,
    postgres_uri,
)

__all__ = [
    "AcquisitionSummary",
    "CsvSink",
    "InMemorySink",
    "JsonlSink",
    "ParquetSink",
    "PostgresConfig",
    "PostgresSink",
    "SampleSink",
    "SqliteSink",
    "pipe",
    "sample_to_row",
]

_SAMPLE_TIMES = ("t_utc", "t_mono_ns", "requested_at", "received_at", "midpoint_at", "latency_s")
_ECHOES = ("received_at", "Unit_ID", "unit_id")


def sample_to_row(sample: Any) -> dict[str, Any]:
    """A flat row for one sample: ``device``, ``unit_id``, the sample's times and latency,
    the reading's fields, ``status`` -- alicatlib's column order. A dict is taken as a row."""
    if type(sample) is dict:
        return sample  # a row already (read, never changed)
    if isinstance(sample, Mapping):
        return dict(sample)
    row: dict[str, Any] = {"device": sample.device, "unit_id": sample.unit_id}
    for name in _SAMPLE_TIMES:
        value = getattr(sample, name, None)
        if value is not None:
            row[name] = value
    reading = getattr(sample, "reading", None)
    if reading is None:
        reading = getattr(sample, "frame", None)
    if reading is not None:
        fields = reading.as_dict() if hasattr(reading, "as_dict") else dict(reading)
        for echo in _ECHOES:
            fields.pop(echo, None)
        row.update(fields)
    return row


class SampleSink(Protocol):
    """What ``pipe`` writes to: ``open``, ``write_many``, ``close``, ``async with``."""

    async def open(self) -> None:
        """Opens the destination."""

    async def write_many(self, samples: Sequence[Any]) -> None:
        """Writes one batch of samples."""

    async def close(self) -> None:
        """Flushes and closes the destination."""


@dataclass(slots=True)
class AcquisitionSummary:
    """What :func:`pipe` did: when it started and finished, and the samples handed to the
    sink (``samples_late`` and ``max_drift_ms`` are alicatlib's fields, always 0 here)."""

    started_at: _dt.datetime
    finished_at: _dt.datetime | None = None
    samples_emitted: int = 0
    samples_late: int = 0
    max_drift_ms: float = 0.0


class _SampleSink(RecorderSink):
    """A tapedeck-backed sink of alicatlib samples (rows by :func:`sample_to_row`)."""

    def _row(self, item: Any) -> dict[str, Any]:
        return sample_to_row(item)


class InMemorySink:
    """Keeps the samples in a list (tests): ``samples``, ``is_open``."""

    def __init__(self) -> None:
        self._samples: list[Any] = []
        self._open = False

    @property
    def samples(self) -> list[Any]:
        """Every sample written, in order (the live list)."""
        return self._samples

    @property
    def is_open(self) -> bool:
        """Whether the sink is open."""
        return self._open

    async def open(self) -> None:
        """Opens the sink (again, after a close)."""
        self._open = True

    async def write_many(self, samples: Sequence[Any]) -> None:
        """Appends the samples; ``RuntimeError`` when the sink is not open."""
        if not self._open:
            raise RuntimeError("InMemorySink: write_many called before open()")
        self._samples.extend(samples)

    async def close(self) -> None:
        """Closes the sink; the samples are kept."""
        self._open = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class CsvSink(_SampleSink, FileSink):
    """CSV with a header; the columns are locked by the first batch."""

    _scheme = "csv"

    def __init__(self, path: str | os.PathLike[str], *, tape: TapeDir = None):
        super().__init__(path, tape)


class JsonlSink(_SampleSink, FileSink):
    """One JSON object per line, each with its own keys."""

    _scheme = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, tape: TapeDir = None):
        super().__init__(path, tape)


class SqliteSink(_SampleSink):
    """A SQLite table; each batch one transaction. The database file is appended to."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "samples",
        create_table: bool = True,
        journal_mode: Literal["WAL", "DELETE", "MEMORY", "TRUNCATE", "PERSIST", "OFF"] = "WAL",
        synchronous: Literal["FULL", "NORMAL", "OFF", "EXTRA"] = "NORMAL",
        busy_timeout_ms: int = 5000,
        tape: TapeDir = None,
    ) -> None:
        check_identifier("table", table)
        if busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be >= 0, got {busy_timeout_ms}")
        super().__init__(tape)
        self.path = Path(path)
        self.table = table
        self._params = {
            "table": table,
            "create_table": "true" if create_table else "false",
            "journal_mode": journal_mode,
            "synchronous": synchronous,
            "busy_timeout": str(int(busy_timeout_ms)),
        }

    def _uri(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        q = "&".join(f"{k}={v}" for k, v in self._params.items())
        return f"sqlite:{self.path}?{q}"


class ParquetSink(_SampleSink, FileSink):
    """A Parquet file (zstd by default); one row group per batch at most ``row_group_size``."""

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


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """Where and how :class:`PostgresSink` writes; alicatlib's fields and checks."""

    dsn: str | None = field(default=None, repr=False)  # may hold a password
    host: str | None = None
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    schema: str = "public"
    table: str = "samples"
    pool_min_size: int = 1
    pool_max_size: int = 4
    statement_timeout_ms: int = 30000
    command_timeout_s: float = 10.0
    connect_timeout_s: float = 30.0
    close_timeout_s: float = 10.0
    create_table: bool = False
    use_copy: bool = True

    def __post_init__(self) -> None:
        check_postgres(self, ("schema", "table"))
        for name in ("command_timeout_s", "connect_timeout_s", "close_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PostgresConfig: {name} must be > 0")

    def target(self) -> str:
        """``host:port/db.schema.table``, without user or password (for logs)."""
        if self.dsn is not None:
            u = urllib.parse.urlparse(self.dsn)
            host, port, db = u.hostname or "?", u.port or self.port, u.path.lstrip("/") or "?"
        else:
            host, port, db = self.host or "?", self.port, self.database or "?"
        return f"{host}:{port}/{db}.{self.schema}.{self.table}"

    def uri(self) -> str:
        """The tapedeck sink URI for this configuration (it holds the password, if any)."""
        return postgres_uri(
            self,
            [
                ("table", self.table),
                ("schema", self.schema),
                ("create_table", "true" if self.create_table else "false"),
                ("use_copy", "true" if self.use_copy else "false"),
                ("connect_timeout", f"{self.connect_timeout_s}s"),
                ("statement_timeout", f"{self.statement_timeout_ms}ms"),
                ("close_timeout", f"{self.close_timeout_s}s"),
            ],
        )


class PostgresSink(_SampleSink):
    """A PostgreSQL table, by binary COPY (``use_copy``), one transaction per batch; a
    server that goes away is retried while rows are kept."""

    def __init__(self, config: PostgresConfig, *, tape: TapeDir = None):
        super().__init__(tape)
        self.config = config

    def _uri(self) -> str:
        return self.config.uri()


async def pipe(
    source: AsyncIterator[Any] | Any,
    sink: Any,
    *,
    batch_size: int = 64,
    flush_interval: float = 1.0,
) -> AcquisitionSummary:
    """Drains ``source`` -- an async iterator of ``{device: Sample}`` tick mappings (or of
    single samples / row dicts), or an alicatlib ``Recording`` -- into an open ``sink``,
    ``batch_size`` samples at a time and at least every ``flush_interval`` seconds.

    The timer is real: samples held when the stream goes quiet are written once
    ``flush_interval`` has passed. When the stream raises or the task is cancelled, the
    samples already received are written before the error propagates. The sink is neither
    opened nor closed here (``async with sink:`` around the call does that).
    """
    summary = AcquisitionSummary(started_at=_dt.datetime.now(_dt.UTC))
    summary.samples_emitted = await drain(
        getattr(source, "stream", source),
        sink.write_many,
        batch_size=batch_size,
        flush_interval=flush_interval,
        single=_single,
    )
    summary.finished_at = _dt.datetime.now(_dt.UTC)
    return summary


def _single(item: Any) -> bool:
    """Whether a stream item is one sample or row (else a tick: ``{device: Sample}``)."""
    if type(item) is dict:
        # A row names its device as text; a tick maps device names to samples.
        return type(item.get("device")) is str
    return not isinstance(item, Mapping) or _is_row(item)


def _is_row(item: Mapping[Any, Any]) -> bool:
    """A row dict (values are plain data) rather than a tick mapping of device -> Sample."""
    for v in item.values():
        return not hasattr(v, "device")
    return True
