"""An `Imported` config as TOML text that reads like a hand-written appgw.toml.

Sections come in the order the README documents them; tables keep the
template's names and order; a header says where the file came from and
which placeholder files it needs, with the openssl command that makes a
test certificate. Pure: values in, text out.
"""

from __future__ import annotations

import json
import re

from appgw.azure.model import Imported, Table

SECTIONS = (  # (attribute, TOML array-of-tables name, nested array name)
    ("listeners", "listeners", None),
    ("backend_pools", "backend_pools", None),
    ("backend_settings", "backend_settings", None),
    ("probes", "probes", None),
    ("rules", "rules", "paths"),
    ("rewrite_sets", "rewrite_sets", "rules"),
)
# Inline tables whose keys are data (header names, status codes): always quoted.
_DATA_KEYS = {"error_pages", "request_headers", "response_headers"}
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def toml_string(text: str) -> str:
    # JSON's escapes (\" \\ \n \uXXXX) are all valid in a TOML basic string.
    return json.dumps(text, ensure_ascii=False)


def toml_key(key: str, quoted: bool = False) -> str:
    return key if not quoted and _BARE_KEY_RE.fullmatch(key) else toml_string(key)


def toml_value(value, data_keys: bool = False, indent: str = "") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = ", ".join(f"{toml_key(k, data_keys)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list):
        if any(isinstance(item, dict) for item in value):
            lines = [f"{indent}  {toml_value(item)}," for item in value]
            return "[\n" + "\n".join(lines) + f"\n{indent}]"
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def comment(text: str) -> str:
    """Text fit for a TOML comment: control characters (a newline would end it) escaped."""
    return _CONTROL_RE.sub(lambda m: json.dumps(m.group(0))[1:-1], text)


def _table_lines(header: str, table: Table, indent: str = "") -> list:
    lines = [f"{indent}# {comment(line)}" for line in table.comment]
    lines.append(f"{indent}[{header}]" if header == "gateway" else f"{indent}[[{header}]]")
    for key, value in table.values.items():
        line = f"{indent}{toml_key(key)} = {toml_value(value, key in _DATA_KEYS, indent)}"
        note = table.notes.get(key)
        lines.append(f"{line}  # {comment(note)}" if note else line)
    return lines


def _header(imported: Imported, source: str, date: str) -> list:
    lines = [
        f"# appgw.toml imported from {source} (gateway {toml_string(imported.name)}) on {date}",
        "# by `appgw import-azure`; names are the template's. Check it with `appgw -c FILE --check`.",
    ]
    if imported.certificates:
        lines += ["#", "# Certificates to put in place (the template's own are not copied):"]
        width = max(len(p.file) for p in imported.certificates)
        lines += [f"#   {p.file.ljust(width)}  {p.note}" for p in imported.certificates]
        pairs = [p.file[:-len(".pem")] for p in imported.certificates
                 if p.file.endswith(".pem") and any(q.file == p.file[:-4] + ".key"
                                                    for q in imported.certificates)]
        if pairs:
            lines += ["# A self-signed test certificate for each (from the directory of this file):",
                      "#   mkdir -p certs"]
            for base in pairs:
                cn = _common_name(imported, base + ".pem")
                lines.append(f"#   openssl req -x509 -newkey rsa:2048 -nodes -days 30 "
                             f"-subj /CN={cn} -keyout {base}.key -out {base}.pem")
    if imported.error_pages:
        lines += ["#", "# Error pages to put in place (the template serves them from these URLs):"]
        width = max(len(p.file) for p in imported.error_pages)
        lines += [f"#   {p.file.ljust(width)}  {p.note}" for p in imported.error_pages]
    return lines


def _common_name(imported: Imported, certificate: str) -> str:
    for table in imported.listeners:
        if table.values.get("certificate") == certificate and table.values.get("host_names"):
            return table.values["host_names"][0].replace("*.", "www.", 1)
    return "localhost"


def emit(imported: Imported, source: str, date: str) -> str:
    """The TOML text; `source` names the template in the header, `date` is YYYY-MM-DD."""
    blocks = ["\n".join(comment(line) for line in _header(imported, source, date))]
    if imported.gateway.values:
        blocks.append("\n".join(_table_lines("gateway", imported.gateway)))
    for attribute, name, nested in SECTIONS:
        for table in getattr(imported, attribute):
            lines = _table_lines(name, table)
            for inner in table.nested:
                lines += _table_lines(f"{name}.{nested}", inner, "  ")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
