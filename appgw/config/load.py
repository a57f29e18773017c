"""The entry points: TOML text or a file in, a checked `Config` out.

`load_config(path)` and `parse_config(text, filename)` either return a
complete, cross-checked `Config` or raise `ConfigError` carrying every
problem of the file, one line each: ``<filename>: <key path>: <problem>``;
a TOML syntax error is ``<filename>: line L, column C: <what is wrong>``.
"""
import os
import re
from typing import Optional

from appgw.config.check import build_config
from appgw.config.model import Config, ConfigError

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python < 3.11
    import toml as _toml

_TOML_POSITION_RE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)
_TOML_END_RE = re.compile(r"^(.*) \(at end of document\)$", re.S)


def _toml_error_line(filename: str, text: str, err: Exception) -> str:
    """`<file>: line L, column C: <message>` from tomllib's (or toml's) error."""
    message = str(err)
    lineno, colno = getattr(err, "lineno", None), getattr(err, "colno", None)
    if lineno is not None and colno is not None:  # the toml package; 3.14's tomllib
        message = getattr(err, "msg", message)
    elif (match := _TOML_POSITION_RE.match(message)):
        message, lineno, colno = match.group(1), int(match.group(2)), int(match.group(3))
    elif (match := _TOML_END_RE.match(message)):
        lines = text.split("\n")
        message, lineno, colno = match.group(1), len(lines), len(lines[-1]) + 1
    else:
        return f"{filename}: {message}"
    message = _TOML_POSITION_RE.sub(r"\1", message)  # toml's msg may repeat the position
    return f"{filename}: line {lineno}, column {colno}: {message}"


def parse_config(text: str, filename: str = "appgw.toml", base_dir: Optional[str] = None) -> Config:
    """Parse and check TOML text; `filename` is only used in problem lines.

    Relative file paths in the config resolve against `base_dir`, by default
    the directory of `filename`. Raises ConfigError with every problem.
    """
    try:
        raw = _toml.loads(text)
    except Exception as err:  # tomllib.TOMLDecodeError / toml.TomlDecodeError
        if type(err).__name__ not in ("TOMLDecodeError", "TomlDecodeError"):
            raise
        raise ConfigError([_toml_error_line(filename, text, err)]) from None
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(filename))
    return build_config(raw, filename, base_dir)


def load_config(path: str) -> Config:
    """Read and check the file at `path`; raises ConfigError with every problem."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: cannot read: not UTF-8 (byte {err.start})"]) from None
    return parse_config(text, path)
