"""Drop-in replacements for the sink layers of other acquisition libraries.

- :mod:`tapedeck.compat.alicatlib` -- ``alicatlib.sinks`` (``pipe``, ``CsvSink`` ...).

Each takes those libraries' own objects by duck typing (it never imports them) and adds an
optional ``tape=DIR`` that makes the sink exactly once across crashes.
"""
