"""StreamCache: read an Arrow stream once, replay it to many readers -- batchcorder's API,
with a crash-safe tape as its disk tier.

>>> import pyarrow as pa, tapedeck
>>> t = pa.table({"n": list(range(10))})
>>> cache = tapedeck.StreamCache(pa.RecordBatchReader.from_batches(t.schema, t.to_batches(3)))
>>> [pa.table(cache).num_rows for _ in range(3)]    # replayed; upstream read once
[10, 10, 10]
>>> cache.ingested_count, cache.upstream_exhausted
(4, True)

What differs from batchcorder 0.1.3, on purpose:

- The disk tier (``disk_path``) is a tape: every batch is CRC-checked when it is read back, and
  a cache opened again on the same ``disk_path`` -- after ``close()`` or after the process died
  -- replays every batch it had ingested (``StreamCache(None, disk_path=...)`` replays only),
  then continues with a new upstream. ``close()`` keeps the tape; delete the directory to drop
  it. ``fsync="always"`` makes each ingested batch durable before it is handed out.
- A full tier is a ``CacheFullError`` (a ``MemoryError``) naming the capacity; the batch that
  did not fit is kept and offered again -- never dropped.
- Hot copies above ``memory_capacity`` are let go oldest first when there is a disk tier (they
  are on the tape); without one, ``memory_capacity`` is a hard limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Self

from . import _tapedeck

__all__ = ["StreamCache", "StreamCacheReader"]


def _batch(native: Any) -> Any:
    """A pyarrow RecordBatch when pyarrow is there, else the native batch (which any Arrow
    library imports through ``__arrow_c_array__``)."""
    try:
        import pyarrow
    except ImportError:
        return native
    return pyarrow.record_batch(native)


class StreamCacheReader:
    """One independent pass over a :class:`StreamCache`: iterate it (batches), or hand it to
    an Arrow library (``__arrow_c_stream__``, which consumes it). Single use."""

    def __init__(self, native: Any, cache: StreamCache) -> None:
        self._native = native
        self._cache = cache

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        b = self._native.next_batch()
        if b is None:
            raise StopIteration
        return _batch(b)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._native.__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> object:
        return self._native.__arrow_c_schema__()

    @property
    def schema(self) -> Any:
        """The batches' schema (a ``pyarrow.Schema``)."""
        return self._cache.schema

    @property
    def closed(self) -> bool:
        """True once the reader was handed out as a stream."""
        return bool(self._native.consumed)

    def cast(self, target_schema: Any) -> Any:
        """The remaining batches cast to ``target_schema`` (a ``pyarrow.RecordBatchReader``);
        consumes the reader."""
        import pyarrow

        return pyarrow.RecordBatchReader.from_stream(self).cast(target_schema)


class _CastingStreamCache:
    """A replayable view of a cache with every batch cast to ``schema``."""

    def __init__(self, cache: StreamCache, schema: Any) -> None:
        self._cache = cache
        self.schema = schema

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        import pyarrow

        reader = pyarrow.RecordBatchReader.from_stream(self._cache.reader()).cast(self.schema)
        return reader.__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> object:
        return self.schema.__arrow_c_schema__()

    def cast(self, target_schema: Any) -> _CastingStreamCache:
        return _CastingStreamCache(self._cache, target_schema)


class StreamCache:
    """Reads ``reader`` (anything with ``__arrow_c_stream__``) once, lazily, and replays it
    to any number of independent readers, on any threads.

    Args:
        reader: the upstream stream; ``None`` to replay a ``disk_path`` written earlier.
        memory_capacity: bytes of batches held in memory (without ``disk_path`` a hard limit:
            ``CacheFullError`` when reached; default: no limit).
        disk_path: a directory for the disk tier, a tape (created, or reopened and replayed).
        disk_capacity: bytes the disk tier may hold (``CacheFullError`` beyond).
        fsync: the disk tier's durability: ``"never"`` (default, as batchcorder), ``"always"``,
            ``"interval:100ms"``.
    """

    def __init__(
        self,
        reader: Any = None,
        memory_capacity: int | None = None,
        disk_path: str | os.PathLike[str] | None = None,
        disk_capacity: int | None = None,
        *,
        fsync: str | None = None,
    ) -> None:
        self._native = _tapedeck.StreamCache(
            reader,
            memory_capacity,
            os.fspath(disk_path) if disk_path is not None else None,
            disk_capacity,
            fsync,
        )

    def reader(self, from_start: bool = True) -> StreamCacheReader:
        """A new reader from the first batch, or (``from_start=False``) from the frontier:
        only batches not ingested yet."""
        return StreamCacheReader(self._native.reader(from_start), self)

    def __iter__(self) -> Iterator[Any]:
        return self.reader(True)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """A fresh reader from the first batch, as an Arrow C stream: ``pyarrow.table(cache)``
        works any number of times."""
        return self.reader(True).__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> object:
        return self._native.__arrow_c_schema__()

    @property
    def schema(self) -> Any:
        """The stream's schema (a ``pyarrow.Schema``; needs pyarrow)."""
        import pyarrow

        return pyarrow.schema(self._native)

    @property
    def ingested_count(self) -> int:
        """Batches pulled from upstream so far (with those replayed from the disk tier)."""
        return int(self._native.ingested_count)

    @property
    def upstream_exhausted(self) -> bool:
        """Whether upstream has ended."""
        return bool(self._native.upstream_exhausted)

    @property
    def memory_bytes(self) -> int:
        """Bytes of batches held in memory."""
        return int(self._native.memory_bytes)

    @property
    def disk_bytes(self) -> int:
        """Bytes on the disk tier's tape."""
        return int(self._native.disk_bytes)

    def ingest_all(self) -> int:
        """Pulls upstream to its end now; returns the number of batches cached."""
        return int(self._native.ingest_all())

    def cast(self, target_schema: Any) -> _CastingStreamCache:
        """A replayable view with every batch cast to ``target_schema`` (needs pyarrow)."""
        return _CastingStreamCache(self, target_schema)

    def close(self) -> None:
        """Frees the memory tier, seals the disk tier's tape (kept) and fails every reader
        from now on. Idempotent."""
        self._native.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
