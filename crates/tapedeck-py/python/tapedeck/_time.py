"""Times as tapedeck stores them: microseconds since the Unix epoch, UTC."""

from __future__ import annotations

import datetime as _dt

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def micros(t: _dt.datetime | float) -> int:
    """Microseconds since the Unix epoch: a datetime (naive = UTC) or seconds since it."""
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        delta = t - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return round(float(t) * 1_000_000)
