"""Journal: crash-safe, audited state -- kanta's job, on tapedeck's journal format.

>>> import tapedeck, tempfile
>>> path = tempfile.mkdtemp() + "/run.journal"
>>> with tapedeck.Journal(path, author="ana") as j:
...     j.set("/operator", "ana")
...     j.set("/gains", {"ai0": 1.0})
...     with j.transaction("calibrate") as state:
...         state["gains"]["ai0"] = 1.02
...     j.get("/gains/ai0")
1.02
>>> [r["action"] for r in tapedeck.Journal(path, read_only=True).history()]
['open', 'set', 'set', 'calibrate']

The state is one JSON document. Every change is a record -- an RFC 6902 JSON Patch with its
sequence number, time (µs), action and author, framed with a CRC32C -- appended to the file and
fsynced under the ``fsync`` policy (``"always"``, ``"interval:10ms"`` by default, ``"never"``).
A crash leaves the state as of the last durable record: a torn last record is cut on the next
open; damage in the middle is a ``DamagedError`` naming the record and byte offset (open
``read_only=True`` to read up to it). One writer at a time (``LockedError`` names the other's
pid). Format: ``docs/journal-format.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from . import _tapedeck
from ._time import micros

__all__ = ["Journal", "JournalFollower"]

_MISSING = object()


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        from .errors import OptionError

        raise OptionError(f"`{pointer}` is not a JSON pointer (write it as `/key/sub`)")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


class Journal:
    """A journal file of JSON state; see the module docs.

    Args:
        path: the journal file (created with ``{}`` as its state if missing).
        fsync: ``"always"`` (each commit on the disk before it returns), ``"interval:10ms"``
            (the default), ``"never"``.
        author: recorded as the author of every change.
        snapshot_every: start a new file with a snapshot after this many records (the old file
            is kept, named ``PATH.<seq>-<date>``, and is still read by ``history(all=True)``).
        read_only: read the journal (also while another process writes it), write nothing.
        format: the framing of a new journal's file: ``"json-lines"`` (the default, readable
            in an editor) or ``"msgpack"`` (smaller, faster); an existing journal keeps its own.
        snapshot_bytes: start a new file with a snapshot once the records after the last
            snapshot take this many bytes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: str | None = None,
        author: str | None = None,
        snapshot_every: int | None = None,
        read_only: bool = False,
        format: str | None = None,
        snapshot_bytes: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._native = _tapedeck.Journal(
            self.path, fsync, author, snapshot_every, read_only, format, snapshot_bytes
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> Any:
        """A copy of the whole state."""
        return json.loads(self._native.state_json())

    def get(self, pointer: str = "", default: Any = None) -> Any:
        """The value at a JSON pointer (``/gains/ai0``), or ``default`` when there is none."""
        node: Any = self.state
        for t in _tokens(pointer):
            if isinstance(node, dict) and t in node:
                node = node[t]
            elif isinstance(node, list) and t.isdigit() and int(t) < len(node):
                node = node[int(t)]
            else:
                return default
        return node

    def set(self, pointer: str, value: Any, *, action: str = "set") -> None:
        """Sets the value at a JSON pointer (its parent must exist) as one record."""
        self._native.set_json(action, pointer, json.dumps(value))

    def remove(self, pointer: str, *, action: str = "remove") -> None:
        """Removes the value at a JSON pointer as one record."""
        self._native.remove(action, pointer)

    @contextmanager
    def transaction(self, action: str) -> Iterator[Any]:
        """Yields a copy of the state to change; on leaving the block the difference is
        committed as one record, or -- when the block raises -- nothing is (the error goes on)."""
        state = self.state
        yield state
        self._native.replace_json(action, json.dumps(state))

    def history(self, all: bool = False) -> list[dict[str, Any]]:
        """The records of the live file (the first a snapshot), or with ``all=True`` every
        record kept, oldest first: ``seq``, ``time`` (µs), ``action``, ``author``, ``patch``
        or ``snapshot``."""
        result: list[dict[str, Any]] = json.loads(self._native.history_json(all))
        return result

    def value_at(self, seq: int) -> Any:
        """The state right after record ``seq`` (``None`` past the last record)."""
        v = self._native.value_at_json(seq)
        return None if v is None else json.loads(v)

    def value_as_of(self, when: _dt.datetime) -> Any:
        """The state as it was at ``when`` (naive: UTC); ``None`` before the first record."""
        v = self._native.value_as_of_json(micros(when))
        return None if v is None else json.loads(v)

    @property
    def next_seq(self) -> int:
        """The sequence number the next record gets."""
        return int(self._native.next_seq)

    def snapshot(self) -> None:
        """Writes a snapshot and starts a new file (the old one kept as history)."""
        self._native.snapshot()

    def sync(self) -> None:
        """Waits until every committed record is on the disk."""
        self._native.sync()

    def close(self) -> None:
        """Syncs and releases the journal and its writer lock."""
        self._native.close()


class JournalFollower:
    """Reads a journal while a writer (another process, or this one) commits to it: each
    :meth:`poll` returns the records committed since the last one, across snapshots, taking no
    lock. A record being written is returned once it is whole.

    >>> import tapedeck, tempfile
    >>> path = tempfile.mkdtemp() + "/run.journal"
    >>> j = tapedeck.Journal(path, snapshot_every=2)
    >>> f = tapedeck.JournalFollower(path)
    >>> [r["action"] for r in f.poll()]
    ['open']
    >>> for i in range(3):
    ...     j.set(f"/k{i}", i)
    >>> [(r["seq"], r["action"]) for r in f.poll()]
    [(1, 'set'), (2, 'set'), (3, 'snapshot'), (4, 'set')]
    >>> f.poll()
    []
    """

    def __init__(self, path: str | os.PathLike[str], *, from_seq: int = 0) -> None:
        self.path = os.fspath(path)
        self._native = _tapedeck.JournalFollower(self.path, from_seq)

    def poll(self, max: int = 10_000) -> list[dict[str, Any]]:
        """The records committed since the last poll (at most ``max``), oldest first: ``seq``,
        ``time`` (µs), ``action``, ``author``, ``patch`` or ``snapshot``."""
        result: list[dict[str, Any]] = json.loads(self._native.poll_json(max))
        return result

    @property
    def next_seq(self) -> int:
        """The sequence number of the next record a poll returns."""
        return int(self._native.next_seq)
