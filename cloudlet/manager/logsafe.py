"""Log lines that a client cannot forge: control characters never reach the log.

Request paths, JSON keys and header values come from clients; one raw
newline in a logged message would let a client write a line of its own
("... ERROR ...") into the Manager's log, and a terminal escape could
rewrite what an operator sees. Quoting at every call site is not enough on
its own (aiohttp, the standard library and exception texts log too), so the
daemon's one log handler escapes the *final* text of every record.

A record therefore always takes exactly one line: a traceback is kept, with
its line breaks written as ``\\n``.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

__all__ = ["FORMAT", "EscapingFormatter", "escape_controls", "install"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 controls, DEL and C1 controls (U+0085 is a line break to many tools), the
# Unicode line and paragraph separators, and the bidirectional overrides that
# can make a line read as something else on screen.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control or line-breaking character written as an escape."""
    return _UNSAFE.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """A Formatter whose output is always one line of printable text.

    The escaping runs on the finished line (message, arguments, exception
    and stack text alike), so no source of log text can bypass it.
    """

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def install(level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) through an EscapingFormatter.

    Used instead of ``logging.basicConfig`` by the daemon's entry point. A
    handler installed by an earlier call is replaced, not doubled.
    """
    root = logging.getLogger()
    root.setLevel(level)  # first: a bad level name raises before anything changes
    for old in [h for h in root.handlers if isinstance(h.formatter, EscapingFormatter)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EscapingFormatter(FORMAT))
    root.addHandler(handler)
    return handler
