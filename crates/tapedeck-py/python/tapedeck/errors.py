"""The exceptions tapedeck raises.

Every error is a :class:`TapedeckError`, and also an instance of the built-in exception a
Python program would catch for that kind of failure:

==========================  ===========================  ==========================================
class                       also a                       raised for
==========================  ===========================  ==========================================
``UsageError``              ``ValueError``               bad input from the caller (base of the next three)
``UriError``                ``ValueError``               a malformed sink URI, an unknown scheme or
                                                         parameter (the message lists the valid ones)
``OptionError``             ``ValueError``               a bad option (``fsync``, ``batch_size`` ...)
``DestinationExistsError``  ``FileExistsError``          a sink file that exists (``?overwrite=true``)
``SchemaError``             ``TypeError``                rows whose columns or types do not fit
``InputError``              ``ValueError``               a malformed row, value or DAQ block
``ConnectError``            ``ConnectionError``          a database that cannot be reached
``StorageError``            ``OSError``                  an I/O failure (``e.errno``: ``ENOSPC`` ...)
``LockedError``             --                           a tape or journal another process holds
``TapeError``               --                           a tape that cannot be read as asked
``DamagedError``            --                           damage found (CRC, torn or forged data)
``SinkError``               --                           a sink that failed while writing
``ArrowDataError``          ``ValueError``               Arrow data that cannot be read
``ReaderConsumedError``     ``RuntimeError``             a reader read a second time
``CacheFullError``          ``MemoryError``              a StreamCache tier at its capacity
``CacheClosedError``        ``ValueError``               a StreamCache used after close()
==========================  ===========================  ==========================================

Messages name the path, URI, column, byte offset or sequence range involved, say what to do,
and never contain a password.
"""

from __future__ import annotations

__all__ = [
    "ArrowDataError",
    "CacheClosedError",
    "CacheFullError",
    "ConnectError",
    "DamagedError",
    "DestinationExistsError",
    "InputError",
    "LockedError",
    "OptionError",
    "ReaderConsumedError",
    "SchemaError",
    "SinkError",
    "StorageError",
    "TapeError",
    "TapedeckError",
    "UriError",
    "UsageError",
]


class TapedeckError(Exception):
    """Base class of every error tapedeck raises."""


class UsageError(TapedeckError, ValueError):
    """The caller's input or configuration is wrong; nothing was written."""


class UriError(UsageError):
    """A sink URI is malformed, or names an unknown scheme or parameter."""


class OptionError(UsageError):
    """An option has a value tapedeck cannot use."""


class DestinationExistsError(UsageError, FileExistsError):
    """A sink's file exists; add ``?overwrite=true`` (or ``append=true``) to its URI."""


class SchemaError(TapedeckError, TypeError):
    """Rows whose columns or types do not fit the schema locked by the first batch."""


class InputError(TapedeckError, ValueError):
    """A malformed row, value or DAQ block."""


class ConnectError(TapedeckError, ConnectionError):
    """A database cannot be reached (with a tape, rows are kept and delivered later)."""


class StorageError(TapedeckError, OSError):
    """An I/O failure; ``errno`` says which (``errno.ENOSPC`` for a full disk)."""


class LockedError(TapedeckError):
    """Another process holds the tape or journal."""


class TapeError(TapedeckError):
    """A tape that is missing, damaged or cannot be read as asked."""


class DamagedError(TapeError):
    """Damage found: a checksum, a torn record, a broken hash chain."""


class SinkError(TapedeckError):
    """A sink failed while writing."""


class ArrowDataError(TapedeckError, ValueError):
    """Arrow data that cannot be read or stored."""


class ReaderConsumedError(TapedeckError, RuntimeError):
    """A reader is read once; ask the tape for another one."""


class CacheFullError(TapedeckError, MemoryError):
    """A StreamCache tier is at its capacity; nothing was dropped (the batch is offered again)."""


class CacheClosedError(TapedeckError, ValueError):
    """A StreamCache (or one of its readers) used after ``close()``."""
