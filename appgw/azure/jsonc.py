"""JSON with the comments ARM templates may carry (`//` to the end of the line, `/* */`).

Comments become white space of the same length (newlines kept), so the
positions in json's error messages stay those of the file.
"""

from __future__ import annotations

import json
import re

# a string (with its escapes), a line comment, a block comment, or anything else
_PIECE_RE = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?(?:\*/|$)|[^"/]+|/', re.S)


def strip_comments(text: str) -> str:
    def blank(match):
        piece = match.group(0)
        if piece.startswith(("//", "/*")):
            return re.sub(r"[^\n]", " ", piece)
        return piece
    return _PIECE_RE.sub(blank, text)


def loads(text: str):
    """json.loads after strip_comments; raises json.JSONDecodeError like json does."""
    return json.loads(strip_comments(text))
