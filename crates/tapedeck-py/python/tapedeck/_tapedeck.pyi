"""The native module of tapedeck (Rust, PyO3); use the `tapedeck` package's wrappers."""

from typing import Any

__version__: str

def sinks_json() -> str:
    """Every sink scheme with its parameters, as JSON."""

def inspect_json(dir: str) -> str:
    """`tapedeck inspect DIR --json`."""

def verify_json(dir: str) -> str:
    """`tapedeck verify DIR --json`."""

class Recorder:
    """Rows, Arrow data and DAQ blocks into sinks, directly or through a tape."""

    def __init__(
        self,
        tape: str | None = None,
        sinks: list[str] = ...,
        batch_size: int = 64,
        flush_interval: float = 1.0,
        fsync: str | None = None,
        compression: str | None = None,
        frame_rows: int | None = None,
        retain: str | None = None,
        segment_bytes: int | None = None,
        disk_full_timeout: float | None = 0.0,
    ) -> None: ...
    def write_rows(self, rows: Any) -> None:
        """Writes an iterable of dicts."""
    def write_batch(self, data: Any) -> None:
        """Writes Arrow data (`__arrow_c_stream__` or `__arrow_c_array__`)."""
    def write_block(
        self,
        values: Any,
        channels: list[str],
        units: list[str | None],
        device: str,
        task: str,
        block_index: int,
        first_sample_index: int,
        t_mono_ns: int,
        t_utc_us: int,
        period_ns: int | None = None,
        read_window_ns: int = 0,
        raw: Any = None,
        error_kind: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Writes one DAQ block (C-contiguous float64 values, channels x samples)."""
    def flush(self) -> None:
        """Hands everything written to the sinks (or the tape)."""
    def sync(self) -> None:
        """Flushes and waits until everything written is acknowledged."""
    @property
    def acknowledged(self) -> int:
        """Rows acknowledged by the tape, or flushed to the sinks without one."""
    QUEUE_LIMIT: int
    @property
    def queued(self) -> int:
        """Rows written but not yet handed to the sinks."""
    @property
    def received(self) -> int:
        """Rows taken by the write calls."""
    @property
    def closed(self) -> bool:
        """Whether close() ran."""
    def progress_json(self) -> str:
        """Each delivery's status, as JSON."""
    def close(self) -> str:
        """Flushes, closes, finishes the deliveries; the summary as JSON."""

class Reader:
    """One pass over a tape as an Arrow C stream."""

    def __init__(
        self,
        dir: str,
        start: str = "start",
        follow: bool = False,
        skip_damage: bool = False,
        poll_interval: float = 0.02,
    ) -> None: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    def __arrow_c_schema__(self) -> object: ...
    @property
    def position(self) -> int | None:
        """The next sequence number it hands out."""
    @property
    def consumed(self) -> bool:
        """Whether the stream was handed out."""

class StreamCache:
    """One upstream Arrow stream, read once, replayed to many readers."""

    def __init__(
        self,
        reader: Any = None,
        memory_capacity: int | None = None,
        disk_path: str | None = None,
        disk_capacity: int | None = None,
        fsync: str | None = None,
    ) -> None: ...
    def reader(self, from_start: bool = True) -> CacheReader: ...
    def ingest_all(self) -> int: ...
    @property
    def ingested_count(self) -> int: ...
    @property
    def upstream_exhausted(self) -> bool: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def disk_bytes(self) -> int: ...
    def __arrow_c_schema__(self) -> object: ...
    def close(self) -> None: ...

class CacheReader:
    """One pass over a StreamCache."""

    def next_batch(self) -> Batch | None: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    def __arrow_c_schema__(self) -> object: ...
    @property
    def consumed(self) -> bool: ...

class Batch:
    """One record batch (`__arrow_c_array__`)."""

    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]: ...
    def __arrow_c_schema__(self) -> object: ...
    @property
    def num_rows(self) -> int: ...
    def __len__(self) -> int: ...

class Journal:
    """The audited state journal."""

    def __init__(
        self,
        path: str,
        fsync: str | None = None,
        author: str | None = None,
        snapshot_every: int | None = None,
        read_only: bool = False,
        format: str | None = None,
        snapshot_bytes: int | None = None,
    ) -> None: ...
    def state_json(self) -> str: ...
    def set_json(self, action: str, pointer: str, value: str) -> None: ...
    def remove(self, action: str, pointer: str) -> None: ...
    def replace_json(self, action: str, state: str) -> None: ...
    def history_json(self, all: bool = False) -> str: ...
    def value_at_json(self, seq: int) -> str | None: ...
    def value_as_of_json(self, time_us: int) -> str | None: ...
    def snapshot(self) -> None: ...
    def sync(self) -> None: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def version(self) -> int: ...
    def close(self) -> None: ...

class JournalFollower:
    """Reads a journal while it is written."""

    def __init__(self, path: str, from_seq: int = 0) -> None: ...
    def poll_json(self, max: int = 10000) -> str: ...
    @property
    def next_seq(self) -> int: ...
