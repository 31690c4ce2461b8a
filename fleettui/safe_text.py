"""Text from the fleet, made harmless for a terminal.

Host and GPU names, labels, rejected payloads and query results come from
machines we do not control: an escape sequence in them (`\\x1b]0;…\\x07` sets
the terminal's title, `\\x1b[2J` clears it) must show as characters, never act.
Two forms:

- `escaped(s)`: `\\x1b`-style escapes (`fleettui sql` tables, csv/json to a TTY):
  says exactly which byte was there.
- `pictured(s)`: the same length, each control character replaced by its Unicode
  control picture (␛, ␇, …): for the app, where widths and style spans must not
  move.

Control characters are C0 (except none), DEL, C1, and the invisible bidi and
zero-width format characters that reorder or hide what is shown. Rich markup is
a separate matter: the app renders data as `rich.text.Text` (never markup).
"""

from __future__ import annotations

import logging
import re

_BIDI = "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_CONTROL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI}]")

_PICTURES = {c: chr(0x2400 + c) for c in range(0x20)}
_PICTURES[0x7F] = "\u2421"  # ␡
_PICTURES.update({c: "\ufffd" for c in range(0x80, 0xA0)})
_PICTURES.update({ord(c): "\ufffd" for c in _BIDI})


def has_control(s: str) -> bool:
    return _CONTROL.search(s) is not None


def escaped(s: str) -> str:
    """Every control character as a visible escape: '\\x1b', '\\u202e'."""
    if not has_control(s):
        return s
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", s
    )


def pictured(s: str) -> str:
    """Every control character as one visible character: the length is unchanged."""
    return s.translate(_PICTURES) if has_control(s) else s


class EscapingFormatter(logging.Formatter):
    """Log lines to a terminal: fleet text in a message (a topic, a target's reason
    phrase, a Prometheus error) is `escaped`, its newlines too, so it can neither act
    on the terminal nor forge a log line; a traceback keeps its own line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        return _by_line(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _by_line(super().formatStack(stack_info))


def _by_line(text: str) -> str:
    return "\n".join(escaped(line) for line in text.split("\n"))


def log_to_stderr(level: int, fmt: str) -> None:
    """`logging.basicConfig` to stderr, with fleet text escaped (EscapingFormatter)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
