"""What the compat layers share: a sink that writes through a tapedeck recorder, the pipe loop
with a real flush timer, and the checks alicatlib and dtollib make of names and arguments."""

from __future__ import annotations

import asyncio
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import AsyncRecorder
from ..errors import OptionError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

TapeDir = str | os.PathLike[str] | None


def check_identifier(what: str, name: str) -> None:
    """A SQL table or schema name as both references accept it, else ``ValueError``."""
    if not IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not a plain identifier (pattern ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$)"
        )


def path_uri(scheme: str, path: Path, tape: object, params: Mapping[str, str]) -> str:
    """A file sink's URI. Without a tape an earlier run's file is replaced, as the references
    open theirs with mode "w"; with a tape the delivery resumes the file from its cursor."""
    query = dict(params)
    if tape is None:
        query.setdefault("overwrite", "true")
    q = "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in query.items())
    return f"{scheme}:{path}" + (f"?{q}" if q else "")


def check_postgres(config: Any, names: Sequence[str]) -> None:
    """The checks both references make of a PostgreSQL configuration: exactly one of ``dsn``
    and ``host``, plain identifiers for ``names``, a sane pool and statement timeout."""
    if (config.dsn is None) == (config.host is None):
        raise ValueError(
            "PostgresConfig: give exactly one of dsn and host"
            + (" (they are mutually exclusive)" if config.dsn is not None else "")
        )
    for name in names:
        check_identifier(name, getattr(config, name))
    if config.pool_min_size < 1 or config.pool_max_size < config.pool_min_size:
        raise ValueError("PostgresConfig: need 1 <= pool_min_size <= pool_max_size")
    if config.statement_timeout_ms < 0:
        raise ValueError("PostgresConfig: statement_timeout_ms must be >= 0")


def postgres_uri(config: Any, params: Sequence[tuple[str, str]]) -> str:
    """The tapedeck sink URI of a reference's PostgreSQL configuration (``dsn``, or ``host``,
    ``port``, ``user``, ``password``, ``database``) with ``params``; a DSN's ``sslmode`` is
    kept. The URI holds the password, if any: tapedeck removes it from every message."""
    extra: list[tuple[str, str]] = []
    base: str
    if config.dsn is not None:
        u = urllib.parse.urlparse(str(config.dsn))
        base = urllib.parse.urlunparse(u._replace(query="", fragment=""))
        extra = [(k, v) for k, v in urllib.parse.parse_qsl(u.query) if k == "sslmode"]
    else:
        auth = ""
        if config.user:
            auth = urllib.parse.quote(config.user, safe="")
            if config.password:
                auth += ":" + urllib.parse.quote(config.password, safe="")
            auth += "@"
        base = f"postgres://{auth}{config.host}:{config.port}/{config.database or ''}"
    return base + "?" + urllib.parse.urlencode([*params, *extra])


class RecorderSink:
    """A sink of the references' shape (``open``, ``close``, ``async with``) that writes through
    a tapedeck recorder with one sink URI, and an optional tape that makes it exactly once.
    Subclasses give the URI (``_uri``) and turn their records into rows (``_row``)."""

    def __init__(self, tape: TapeDir) -> None:
        self._tape = tape
        self._rec: AsyncRecorder | None = None
        self._closed = False
        self.summary: dict[str, Any] | None = None

    def _uri(self) -> str:
        raise NotImplementedError

    def _row(self, item: Any) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        """Whether the sink is open."""
        return self._rec is not None

    @property
    def acknowledged(self) -> int:
        """Records of this run that are safe: on the tape (durable under its fsync policy),
        or without a tape, written to the sink."""
        return self._rec.acknowledged if self._rec is not None else 0

    async def open(self) -> None:
        """Opens the sink (and its tape): the URI is checked, the file or table prepared."""
        if self._rec is not None:
            return
        # batch_size=1: each write_many is handed to the sink at once, as one batch (by the
        # recorder's thread; the event loop does not wait for it).
        rec = AsyncRecorder(self._tape, [self._uri()], batch_size=1, flush_interval=3600.0)
        await rec.open()
        self._rec = rec
        self._closed = False

    def _recorder(self, call: str) -> AsyncRecorder:
        if self._rec is None:
            word = "after close()" if self._closed else "before open()"
            raise RuntimeError(f"{type(self).__name__}: {call} called {word}")
        return self._rec

    async def write_many(self, items: Sequence[Any]) -> None:
        """Writes the records as one batch: handed to the sink (with a tape: onto the tape) by
        the recorder's thread at once; an error there is raised by the next call or close()."""
        rec = self._recorder("write_many")
        if not items:
            return
        if type(items) is list and type(items[0]) is dict:
            # Rows that are dicts already go as they are (the recorder only reads them); a list
            # that turns out to hold other records is converted below.
            try:
                await rec.write_rows(items)
                return
            except TypeError:
                if all(type(x) is dict for x in items):
                    raise
        await rec.write_rows([self._row(x) for x in items])

    async def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Writes rows that are dicts already, as one batch."""
        rec = self._recorder("write_rows")
        if rows:
            await rec.write_rows(rows)

    async def close(self) -> None:
        """Flushes and closes (with a tape: delivers everything acknowledged first)."""
        rec, self._rec = self._rec, None
        if rec is not None:
            self._closed = True
            self.summary = await rec.close()

    async def __aenter__(self) -> Any:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class FileSink(RecorderSink):
    """A :class:`RecorderSink` writing one file: ``_scheme`` names the tapedeck sink, ``_params``
    its URI parameters; ``_make_parent`` creates the file's folder as the reference does."""

    _scheme = ""
    _make_parent = False

    def __init__(self, path: str | os.PathLike[str], tape: TapeDir, params: Mapping[str, str] | None = None):
        super().__init__(tape)
        self.path = Path(path)
        self._params = dict(params or {})

    def _uri(self) -> str:
        if self._make_parent:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return path_uri(self._scheme, self.path, self._tape, self._params)


def parquet_params(compression: str, use_dictionary: bool, row_group_size: int | None) -> dict[str, str]:
    """The ``parquet:`` URI parameters for the references' ParquetSink arguments, checked as
    they check them (brotli is not built into tapedeck: an ``OptionError`` saying so)."""
    if row_group_size is not None and row_group_size < 1:
        raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
    if compression == "brotli":
        raise OptionError("ParquetSink: brotli is not built into tapedeck; use zstd, snappy, gzip or lz4")
    params = {"compression": compression, "dictionary": str(use_dictionary).lower()}
    if row_group_size is not None:
        params["row_group_rows"] = str(row_group_size)
    return params


async def drain(
    stream: AsyncIterator[Any],
    write_many: Callable[[list[Any]], Awaitable[None]],
    *,
    batch_size: int,
    flush_interval: float,
    single: Callable[[Any], bool] | None = None,
) -> int:
    """Reads ``stream`` into ``write_many``, ``batch_size`` records at a time and at least
    every ``flush_interval`` seconds -- by a timer task, so records held when the stream goes
    quiet are written -- and writes what it holds before an error from the stream (or a
    cancellation) propagates. ``single(item)`` says whether an item is one record; when it
    says no, the item is a mapping whose values are the records (alicatlib's ticks). Returns
    the number of records written."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not flush_interval > 0:
        raise ValueError(f"flush_interval must be > 0, got {flush_interval}")
    buffer: list[Any] = []
    written = 0
    loop = asyncio.get_running_loop()
    last_flush = loop.time()
    lock = asyncio.Lock()

    async def flush() -> None:
        nonlocal last_flush, written
        async with lock:
            if buffer:
                taken = buffer[:]
                buffer.clear()
                # A cancellation (of the pipe, or of the timer when the stream ends) lets a
                # write already begun finish: the records it took are then written, not lost.
                task = asyncio.ensure_future(write_many(taken))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    await task
                    written += len(taken)
                    raise
                written += len(taken)
            last_flush = loop.time()

    async def timer() -> None:
        while True:
            await asyncio.sleep(max(0.0, last_flush + flush_interval - loop.time()))
            if loop.time() - last_flush >= flush_interval:
                await flush()

    ticker = asyncio.create_task(timer())
    try:
        append = buffer.append
        async for item in stream:
            if single is None or single(item):
                append(item)
            else:
                buffer.extend(item.values())
            if len(buffer) >= batch_size:
                if ticker.done():
                    ticker.result()  # the timer's flush failed: raise its error here
                await flush()
    finally:
        # The timer is stopped between its flushes (under the lock), never inside one.
        async with lock:
            ticker.cancel()
        try:
            await ticker
        except asyncio.CancelledError:
            pass
        # What was received is written, also when the stream failed or the task was cancelled.
        await asyncio.shield(flush())
    return written
