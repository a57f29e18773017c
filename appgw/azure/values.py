"""Values as ARM templates have them, shared by the evaluator and its functions.

ARM compares property and parameter names without regard to case; its
types are string, int, bool, array, object (and null); `string()` shows
bools as True/False and other values as compact JSON.
"""

from __future__ import annotations

import json


class TemplateError(Exception):
    """One problem with a template: `<json path>: <problem>`."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


def lookup(mapping: dict, name: str):
    """Case-insensitive key lookup, as ARM does for property names: (key, value) or None."""
    if name in mapping:
        return name, mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if key.lower() == lowered:
            return key, value
    return None


def type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def show(value) -> str:
    """A value in one line for messages."""
    return json.dumps(value, ensure_ascii=False)


def to_text(value) -> str:
    """string() of ARM: strings as they are, True/False, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def short(value) -> str:
    text = show(value)
    return text if len(text) <= 60 else text[:57] + "..."
