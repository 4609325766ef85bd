"""Strings from people and files, made safe to show: control characters written as escapes.

The one rule for every place srat shows such a string: the terminal (srat_tui.render.format
wraps it for Rich) and the pictures the engine draws (the t-SNE legend's class names).
"""

from __future__ import annotations

import re
from typing import Any

# What a terminal would act on instead of showing: C0 and C1 control characters and DEL (ESC
# starts the sequences that retitle a window or clear the screen), the Unicode line and
# paragraph separators, and the bidirectional controls that make text read other than it is.
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(value: Any, *, newlines: bool = False) -> str:
    """`value` as text that is shown rather than obeyed: every control character written as its
    escape ("\\x1b", "\\t", "\\u202e"), everything else (non-ASCII letters included) as is.

    newlines: keep line breaks (a multi-line message) instead of writing them as "\\n".
    """
    text = value if isinstance(value, str) else str(value)
    if newlines:
        return "\n".join(_CONTROL.sub(_escape, line) for line in text.split("\n"))
    return _CONTROL.sub(_escape, text)
