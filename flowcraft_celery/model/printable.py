"""Text from outside (ids, names, values, messages) made safe for a log line or a terminal.

Every id, name and value the system prints goes through `printable`: control characters (C0,
C1, DEL, line and paragraph separators, format and unassigned characters) are escaped as
`\\r`, `\\x1b`, `\\u2028`, so a value can neither forge a log line, nor send escape sequences to
whoever tails a log, nor make grep treat a log as binary; long values are cut to their first
`limit` characters (escaped) plus `...(N chars)`, so one value cannot make a line of thousands of
characters.
"""

from __future__ import annotations

import unicodedata

#: How much of a value a log line or a table cell shows by default.
DEFAULT_LIMIT = 120
#: Escapes of the usual control characters (the rest are `\xNN`, `\uNNNN`).
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def unsafe(char: str) -> bool:
    """A control, format, surrogate, private or unassigned character, or a line/paragraph separator."""
    return unicodedata.category(char)[0] == "C" or char in "\u2028\u2029\u0085"


def _escaped(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """`text` (made a string) with control characters escaped and, past `limit` characters
    (None: never), cut to `<first limit characters>...(N chars)`."""
    raw = text if isinstance(text, str) else str(text)
    if limit is not None and len(raw) > limit:
        return f"{_escape(raw[:limit])}...({len(raw)} chars)"
    return _escape(raw)


def _escape(raw: str) -> str:
    if raw.isprintable() and raw.isascii():
        return raw
    return "".join(_escaped(char) if unsafe(char) else char for char in raw)
