"""Checking a parsed TOML document and building a `Config` from it.

Every problem is collected (one line each, `<file>: <key path>: <problem>`)
and reported together. A value that is wrong is left out, so the
dataclass default stands in while the checks go on; a check that depends
on a value that failed (a reference, a bind) is skipped rather than
reported twice. Entries whose dataclass cannot be built at all (a missing
name, a bad bind) are left out of the per-object checks, but their names
still count for reference resolution.

Rules not obvious from SPEC section 3:
- Times are int or float > 0; websocket_idle_timeout and both
  drain_timeouts may be 0. Sizes are ints >= 0, max_header_size >= 1024.
  workers 1-64, max_connections >= 1. Booleans must be TOML booleans.
- A rule and each path entry have exactly one of backend_pool or redirect;
  backend_settings beside a redirect is an error (it would be ignored).
- Each listener has exactly one rule. Listeners may share a bind only with
  the same protocol, at most one without host_names, and no host name twice.
  Two binds on one port where one host is a wildcard (0.0.0.0, ::) are
  reported, since the second could not be bound.
- A redirect to the listener of its own rule is reported (a loop).
- trusted_root with an http backend, and certificate/private_key on an
  http listener, are errors (they would be ignored).
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
from typing import Optional
from urllib.parse import urlsplit

from appgw.config import (
    BackendPool, BackendSettings, Config, ConfigError, Gateway, Listener,
    PathRule, Probe, Redirect, Rule, Server, is_host, parse_hostport,
    parse_server,
)
from appgw.grammar import TOKEN

SECTIONS = ("gateway", "listeners", "backend_pools", "backend_settings", "probes", "rules")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_TOKEN_RE = re.compile(TOKEN)
_APP_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_STATUS_RE = re.compile(r"([0-9]{3})(?:-([0-9]{3}))?")
_WILDCARD_HOSTS = ("0.0.0.0", "::")


def quote(value) -> str:
    """A value as a problem line shows it: JSON quoting keeps the line one line."""
    return json.dumps(value, ensure_ascii=False)


def describe(value) -> str:
    """`string "10s"`, `integer 1`, `boolean true`, ... for "got ..." messages."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return f"date-time {value}"


def one_of(choices) -> str:
    """'"a" or "b"', '"a", "b" or "c"'."""
    shown = [quote(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def has_controls(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


class Problems:
    """The problem lines of one file, and the key paths that had one."""

    def __init__(self, filename: str):
        self.filename = filename
        self.lines: list[str] = []
        self.failed: set[str] = set()

    def add(self, key: str, message: str) -> None:
        self.failed.add(key)
        self.lines.append(f"{self.filename}: {key}: {message}")

    def ok(self, key: str) -> bool:
        """No problem at `key` or below it."""
        return not any(f == key or f.startswith((key + "[", key + ".")) for f in self.failed)


class Table:
    """One TOML table being read.

    Each getter checks one key; a good value is stored in `values` (ready
    for `dataclass(**values)`) and returned, a bad one is reported and None
    returned. `finish()` reports the keys nobody asked for.
    """

    def __init__(self, problems: Problems, path: str, raw: dict):
        self.problems, self.path, self.raw = problems, path, raw
        self.values: dict = {}
        self.seen: set[str] = set()
        self.obj = None  # the dataclass built from values, if it could be
        self.sub: dict = {}  # name -> Table or list of Tables read below this one
        self.broken: set[str] = set()  # keys whose value had the wrong type

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def add(self, name: str, message: str) -> None:
        self.problems.add(self.key(name), message)

    def ok(self, name: str) -> bool:
        return self.problems.ok(self.key(name))

    def has(self, name: str) -> bool:
        return name in self.raw

    def get_typed(self, name, kinds, kind_name, required):
        self.seen.add(name)
        if name not in self.raw:
            if required:
                self.add(name, "is required")
            return None
        value = self.raw[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.add(name, f"must be {kind_name}, got {describe(value)}")
            self.broken.add(name)
            return None
        return value

    def keep(self, name, value, check=None):
        message = check(value) if check and value is not None else None
        if message:
            self.add(name, message)
            return None
        if value is not None:
            self.values[name] = value
        return value

    def string(self, name, check=None, required=False) -> Optional[str]:
        return self.keep(name, self.get_typed(name, (str,), "a string", required), check)

    def choice(self, name, choices) -> Optional[str]:
        def check(value):
            return None if value in choices else f"must be {one_of(choices)}, got {quote(value)}"
        return self.string(name, check)

    def boolean(self, name) -> Optional[bool]:
        return self.keep(name, self.get_typed(name, (bool,), "true or false", False))

    def integer(self, name, low, high=None) -> Optional[int]:
        def check(value):
            if high is not None and not low <= value <= high:
                return f"must be between {low} and {high}, got {value}"
            if value < low:
                return f"must be at least {low}, got {value}"
            return None
        return self.keep(name, self.get_typed(name, (int,), "an integer", False), check)

    def seconds(self, name, zero_ok=False) -> Optional[float]:
        def check(value):
            if not math.isfinite(value):
                return f"must be a finite number, got {value}"
            if value < 0 or (value == 0 and not zero_ok):
                return f"must be {'0 or more' if zero_ok else 'greater than 0'}, got {value}"
            return None
        return self.keep(name, self.get_typed(name, (int, float), "a number", False), check)

    def string_list(self, name, check=None, convert=None, required=False) -> Optional[tuple]:
        """An array of strings; each element is checked, then converted."""
        items = self.get_typed(name, (list,), "an array of strings", required)
        if items is None:
            return None
        result = []
        for i, item in enumerate(items):
            where = f"{name}[{i}]"
            if not isinstance(item, str):
                self.add(where, f"must be a string, got {describe(item)}")
            elif check and (message := check(item)):
                self.add(where, message)
            else:
                result.append(convert(item) if convert else item)
        return self.keep(name, tuple(result) if self.ok(name) else None)

    def table(self, name, required=False) -> Optional["Table"]:
        raw = self.get_typed(name, (dict,), "a table", required)
        result = None if raw is None else Table(self.problems, self.key(name), raw)
        self.sub[name] = result
        return result

    def tables(self, name) -> list["Table"]:
        """An array of tables ([[name]]); entries that are not tables are reported and skipped."""
        raw = self.get_typed(name, (list,), f"an array of tables ([[{name}]])", False) or []
        result = []
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                result.append(Table(self.problems, self.key(f"{name}[{i}]"), item))
            else:
                self.add(f"{name}[{i}]", f"must be a table, got {describe(item)}")
                self.broken.add(name)
        self.sub[name] = result
        return result

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.add(name, "unknown key")

    def build(self, cls):
        """cls(**values), or None when problems left it unbuildable."""
        self.finish()
        try:
            self.obj = cls(**self.values)
        except (TypeError, ValueError):
            if self.problems.ok(self.path):
                raise  # a check missed something: a bug here, not in the file
        return self.obj


# --- single values ------------------------------------------------------------

def check_text(value: str) -> Optional[str]:
    return "must not contain control characters" if has_controls(value) else None


def check_name(value: str) -> Optional[str]:
    if not value:
        return "must not be empty"
    return "must not contain control characters" if has_controls(value) else None


def check_bind(value: str) -> Optional[str]:
    try:
        parse_hostport(value)
    except ValueError as err:
        return f'must be "host:port" or "[v6addr]:port", got {quote(value)}: {err}'
    return None


def check_admin_bind(value: str) -> Optional[str]:
    return check_bind(value) if value else None


def check_host_header(value: str) -> Optional[str]:
    """A value sent as a Host header: host name or address, optionally ":port"."""
    if not value:
        return None
    try:
        parse_hostport(value, port_required=False)
    except ValueError:
        return f'must be a host name or address, optionally with ":port", got {quote(value)}'
    return None


def check_host_name(value: str) -> Optional[str]:
    """A listener's host name: a DNS name, or "*.suffix"."""
    name = value[2:] if value.startswith("*.") else value
    if "*" in name or not is_host(name):
        return f'must be a host name or "*.suffix" (no port, "*" only as "*."), got {quote(value)}'
    return None


def check_server(value: str) -> Optional[str]:
    try:
        parse_server(value)
    except ValueError as err:
        return f"{quote(value)} is not a server address: {err}"
    return None


def check_app(value: str) -> Optional[str]:
    """The spec's form, then the import itself: an app that cannot be
    imported is a config problem like any other, reported with the rest."""
    if value and not _APP_RE.fullmatch(value):
        return f'must be "package.module:callable", got {quote(value)}'
    if value:
        from appgw.apps import AppImportError, import_app

        try:
            import_app(value)
        except AppImportError as err:
            return str(err)
    return None


def check_cookie_name(value: str) -> Optional[str]:
    if value and not _TOKEN_RE.fullmatch(value):
        return f"must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {quote(value)}"
    return None


def check_url_path(value: str) -> Optional[str]:
    if not value.startswith("/"):
        return f'must start with "/", got {quote(value)}'
    if has_controls(value) or " " in value:
        return f"must not contain spaces or control characters, got {quote(value)}"
    return None


def check_route_path(value: str) -> Optional[str]:
    """A rule path: exact, or a prefix ending in "/*"; the query is never part of it."""
    message = check_url_path(value)
    if message:
        return message
    if "?" in value or "#" in value:
        return f'must not contain "?" or "#" (the query is ignored), got {quote(value)}'
    if "*" in value[:-1] or (value.endswith("*") and not value.endswith("/*")):
        return f'"*" is only allowed as a trailing "/*", got {quote(value)}'
    return None


def check_redirect_url(value: str) -> Optional[str]:
    parts = urlsplit(value)
    if has_controls(value) or " " in value or parts.scheme not in ("http", "https") or not parts.netloc:
        return f"must be an absolute http:// or https:// URL, got {quote(value)}"
    return None


def check_redirect_status(value: int) -> Optional[str]:
    if value not in REDIRECT_STATUSES:
        return f"must be one of 301, 302, 303, 307 or 308, got {value}"
    return None


def parse_status_range(value) -> Optional[tuple[int, int]]:
    """"200", "200-399" or 200 -> (lo, hi) within 100-599, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _STATUS_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return None
    lo = int(match.group(1))
    hi = int(match.group(2) or lo)
    return (lo, hi) if 100 <= lo <= hi <= 599 else None


def check_file(t: Table, name: str, base_dir: str) -> Optional[str]:
    """Resolve a file path key against base_dir, store it absolute; report if unreadable."""
    value = t.values.get(name)
    if not value:
        return None
    path = os.path.join(base_dir, value)
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        t.add(name, f"cannot read {quote(value)}: {err.strerror}")
        t.values.pop(name)
        return None
    t.values[name] = os.path.abspath(path)
    return t.values[name]


def ssl_message(err: Exception) -> str:
    """An ssl error without its " (_ssl.c:1234)" tail."""
    return re.sub(r" \(_ssl\.c:\d+\)$", "", str(err))


# --- sections -------------------------------------------------------------------

def read_gateway(t: Optional[Table], base_dir: str) -> Gateway:
    if t is None:
        return Gateway()
    t.integer("workers", 1, 64)
    t.string("admin_bind", check_admin_bind)
    access_log = t.string("access_log", check_text)
    if access_log not in (None, "", "-"):
        t.values["access_log"] = os.path.abspath(os.path.join(base_dir, access_log))
    t.choice("log_format", ("combined", "json"))
    t.seconds("client_header_timeout")
    t.seconds("client_idle_timeout")
    t.integer("max_header_size", 1024)
    t.integer("max_body_size", 0)
    t.integer("max_connections", 1)
    t.seconds("drain_timeout", zero_ok=True)
    return t.build(Gateway) or Gateway()


def read_listener(t: Table, base_dir: str) -> Optional[Listener]:
    t.string("name", check_name, required=True)
    t.string("bind", check_bind, required=True)
    t.choice("protocol", ("http", "https"))
    host_names = t.string_list("host_names", check_host_name, str.lower) or ()
    for i, host_name in enumerate(host_names):
        if host_name in host_names[:i]:
            t.add(f"host_names[{i}]", f"duplicate host name {quote(host_name)}")
    t.string("certificate", check_text)
    t.string("private_key", check_text)
    t.boolean("http2")
    t.integer("max_concurrent_streams", 1, 2 ** 31 - 1)
    if t.ok("protocol"):
        check_listener_tls(t, t.values.get("protocol", "http"), base_dir)
    return t.build(Listener)


def check_listener_tls(t: Table, protocol: str, base_dir: str) -> None:
    """https needs a readable, matching certificate and key; http takes neither."""
    names = ("certificate", "private_key")
    if protocol == "http":
        for name in names:
            if t.values.get(name):
                t.add(name, "only for https listeners")
        return
    for name in names:
        if t.ok(name) and not t.values.get(name):
            t.add(name, "required for https listeners")
    certificate, key = [check_file(t, name, base_dir) for name in names]
    if certificate and key:
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate, key, password=lambda: b"")
        except (ssl.SSLError, OSError) as err:
            t.problems.add(t.path, "certificate and private_key do not match or are not "
                                   f"valid PEM: {ssl_message(err)}")


def read_pool(t: Table) -> Optional[BackendPool]:
    t.string("name", check_name, required=True)
    addresses = t.string_list("servers", check_server)
    if addresses is not None:
        servers = [Server(address) for address in addresses]
        for i, server in enumerate(servers):
            if server in servers[:i]:
                t.add(f"servers[{i}]", f"duplicate server {quote(server.address)}")
        t.values["servers"] = tuple(servers)
    t.string("app", check_app)
    t.choice("load_balancing", ("round_robin", "least_connections"))
    if t.ok("servers") and t.ok("app") and not t.values.get("servers") and not t.values.get("app"):
        t.problems.add(t.path, "needs servers or app")
    return t.build(BackendPool)


def read_settings(t: Table, base_dir: str) -> Optional[BackendSettings]:
    t.string("name", check_name, required=True)
    t.choice("protocol", ("http", "https"))
    t.integer("port", 1, 65535)
    t.seconds("request_timeout")
    t.seconds("websocket_idle_timeout", zero_ok=True)
    t.seconds("connect_timeout")
    t.string("probe", check_text)
    t.string("host_name", check_host_header)
    t.boolean("pick_host_name_from_backend")
    t.string("affinity_cookie", check_cookie_name)
    t.seconds("drain_timeout", zero_ok=True)
    t.boolean("verify_tls")
    t.string("trusted_root", check_text)
    if t.values.get("host_name") and t.values.get("pick_host_name_from_backend"):
        t.problems.add(t.path, "host_name and pick_host_name_from_backend exclude each other")
    if t.values.get("trusted_root") and t.ok("protocol"):
        check_trusted_root(t, base_dir)
    return t.build(BackendSettings)


def check_trusted_root(t: Table, base_dir: str) -> None:
    if t.values.get("protocol", "http") != "https":
        t.add("trusted_root", "only for https backends")
    elif (path := check_file(t, "trusted_root", base_dir)):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError) as err:
            t.add("trusted_root", f"not a valid PEM CA bundle: {ssl_message(err)}")


def read_probe(t: Table) -> Optional[Probe]:
    t.string("name", check_name, required=True)
    t.choice("protocol", ("", "http", "https"))
    t.string("host", check_host_header)
    t.integer("port", 0, 65535)
    t.string("path", check_url_path)
    t.seconds("interval")
    t.seconds("timeout")
    t.integer("unhealthy_threshold", 1)
    t.integer("healthy_threshold", 1)
    read_match_status(t)
    t.string("match_body")
    return t.build(Probe)


def read_match_status(t: Table) -> None:
    items = t.get_typed("match_status", (list,), 'an array like ["200-399"]', False)
    if items is None:
        return
    if not items:
        t.add("match_status", "must not be empty")
    ranges = []
    for i, item in enumerate(items):
        status_range = parse_status_range(item)
        if status_range is None:
            t.add(f"match_status[{i}]", 'must be a status "200" or a range "200-399" '
                                        f"within 100-599, got {describe(item)}")
        ranges.append(status_range)
    if t.ok("match_status"):
        t.values["match_status"] = tuple(ranges)


def read_redirect(t: Table) -> Redirect:
    t.string("listener", check_name)
    t.string("url", check_redirect_url)
    t.keep("status", t.get_typed("status", (int,), "an integer", False), check_redirect_status)
    t.boolean("include_path")
    t.boolean("include_query")
    if t.ok("listener") and t.ok("url"):
        targets = [name for name in ("listener", "url") if t.values.get(name)]
        if not targets:
            t.problems.add(t.path, "needs listener or url")
        elif len(targets) == 2:
            t.problems.add(t.path, "needs listener or url, not both")
    return t.build(Redirect)


def read_target(t: Table) -> None:
    """A rule's or path entry's target: exactly one of backend_pool or redirect."""
    t.string("backend_pool", check_text)
    t.string("backend_settings", check_text)
    redirect = t.table("redirect")
    if redirect is not None:
        t.values["redirect"] = read_redirect(redirect)
    if not t.ok("backend_pool") or (t.has("redirect") and redirect is None):
        return
    has_pool, has_redirect = bool(t.values.get("backend_pool")), redirect is not None
    if not has_pool and not has_redirect:
        t.problems.add(t.path, "needs backend_pool or redirect")
    elif has_pool and has_redirect:
        t.problems.add(t.path, "needs backend_pool or redirect, not both")
    elif has_redirect and t.values.get("backend_settings"):
        t.add("backend_settings", "not used with a redirect")


def read_path_rule(t: Table, routed: set) -> Optional[PathRule]:
    """One [[rules.paths]] entry; `routed` holds the rule's paths so far."""
    paths = t.string_list("paths", check_route_path, required=True)
    if paths == ():
        t.add("paths", "must not be empty")
    for i, path in enumerate(paths or ()):
        if path in routed:
            t.add(f"paths[{i}]", f"duplicate path {quote(path)}")
        routed.add(path)
    read_target(t)
    return t.build(PathRule)


def read_rule(t: Table) -> Optional[Rule]:
    t.string("name", check_name, required=True)
    t.string("listener", check_name, required=True)
    read_target(t)
    routed: set = set()
    path_rules = [read_path_rule(pt, routed) for pt in t.tables("paths")]
    if all(path_rules):
        t.values["paths"] = tuple(path_rules)
    return t.build(Rule)


# --- across sections ---------------------------------------------------------

def read_section(tables: list[Table], read, complete: bool) -> Optional[set]:
    """Read each entry and report repeated names; returns every name declared.

    Broken entries still declare their name. None when some entry's name
    could not be read (or the section itself was broken): a reference to
    an unknown name may mean that entry, so references into this section
    are not checked.
    """
    names: set = set()
    for t in tables:
        read(t)
        complete = complete and t.ok("name")
        name = t.values.get("name")
        if name in names:
            t.add("name", f"duplicate name {quote(name)}")
        elif name is not None:
            names.add(name)
    return names if complete else None


def check_reference(t: Table, key: str, names: Optional[set], kind: str) -> None:
    value = t.values.get(key)
    if value and t.ok(key) and names is not None and value not in names:
        t.add(key, f"no {kind} named {quote(value)}")


def check_target_references(t: Table, listener: Optional[str], names: dict) -> None:
    check_reference(t, "backend_pool", names["backend_pools"], "backend pool")
    check_reference(t, "backend_settings", names["backend_settings"], "backend settings")
    redirect = t.sub.get("redirect")
    if redirect is None:
        return
    check_reference(redirect, "listener", names["listeners"], "listener")
    if listener and redirect.values.get("listener") == listener:
        redirect.add("listener", f"redirects to its own listener {quote(listener)}, a loop")


def check_rule_references(rules: list[Table], names: dict) -> None:
    for t in rules:
        check_reference(t, "listener", names["listeners"], "listener")
        listener = t.values.get("listener")
        check_target_references(t, listener, names)
        for path_table in t.sub.get("paths", []):
            check_target_references(path_table, listener, names)


def check_rule_per_listener(listeners: list[Table], rules: list[Table], names: dict) -> None:
    """Every listener has exactly one rule."""
    if names["listeners"] is None:
        return
    owner: dict = {}
    for t in rules:
        listener = t.values.get("listener")
        if listener not in names["listeners"]:
            continue
        if listener in owner:
            t.add("listener", f"listener {quote(listener)} already has rule {owner[listener]}")
        else:
            owner[listener] = quote(t.values["name"]) if "name" in t.values else t.path
    if names["rules"] is None or not all("listener" in t.values for t in rules):
        return  # the rule that is broken may be the missing one
    for t in listeners:
        name = t.values.get("name")
        if name is not None and name not in owner:
            t.problems.add(t.path, f"no rule for listener {quote(name)}")


def binds_overlap(a: str, b: str) -> bool:
    """Two different hosts on one port that cannot both be bound: one is a wildcard.

    "::" is dual-stack (Python leaves IPV6_V6ONLY off), so it covers IPv4 too.
    """
    for x, y in ((a, b), (b, a)):
        if x == "::" or (x == "0.0.0.0" and ":" not in y):
            return True
    return False


def check_shared_bind(t: Table, group: list[Listener]) -> None:
    """Listeners on one bind: same protocol, one catch-all at most, no host name twice."""
    listener, first = t.obj, group[0]
    if listener.protocol != first.protocol:
        t.add("protocol", f"{quote(listener.protocol)} differs from {quote(first.protocol)} "
                          f"of listener {quote(first.name)} on the same bind {listener.address}")
    for key in ("http2", "max_concurrent_streams"):
        # Chosen before the Host is known (the h2c preface, the ALPN answer).
        mine, theirs = getattr(listener, key), getattr(first, key)
        if t.ok(key) and mine != theirs:
            t.add(key, f"{str(mine).lower()} differs from {str(theirs).lower()} "
                       f"of listener {quote(first.name)} on the same bind {listener.address}")
    catch_all = next((other for other in group if not other.host_names), None)
    if not listener.host_names and catch_all:
        t.problems.add(t.path, f"listener {quote(catch_all.name)} already takes every host name "
                               f"on {listener.address}; a listener sharing it needs host_names")
    served = {name: other.name for other in group for name in other.host_names}
    for i, name in enumerate(listener.host_names):
        if name in served:
            t.add(f"host_names[{i}]", f"{quote(name)} is already served on {listener.address} "
                                      f"by listener {quote(served[name])}")


def check_binds(listeners: list[Table], gateway: Gateway, gateway_table: Optional[Table]) -> None:
    groups: dict = {}  # (host, port) -> [Listener]
    for t in listeners:
        if t.obj is None or not all(t.ok(k) for k in ("bind", "protocol", "host_names")):
            continue
        listener = t.obj
        group = groups.setdefault((listener.host, listener.port), [])
        if group:
            check_shared_bind(t, group)
        elif (other := overlapping(groups, listener.host, listener.port)):
            t.add("bind", f"{listener.address} overlaps {other.address} of listener "
                          f"{quote(other.name)}: they cannot both be bound")
        group.append(listener)
    if gateway.admin_port and gateway_table is not None and gateway_table.ok("admin_bind"):
        other = groups.get((gateway.admin_host, gateway.admin_port), [None])[0]
        other = other or overlapping(groups, gateway.admin_host, gateway.admin_port)
        if other:
            gateway_table.add("admin_bind", f"{gateway.admin_bind} conflicts with listener "
                                            f"{quote(other.name)} on {other.address}")


def overlapping(groups: dict, host: str, port: int) -> Optional[Listener]:
    for (other_host, other_port), group in groups.items():
        if other_port == port and other_host != host and binds_overlap(other_host, host):
            return group[0]
    return None


def build_config(raw: dict, filename: str, base_dir: str) -> Config:
    """Check a parsed TOML document: the Config, or ConfigError with every problem."""
    problems = Problems(filename)
    root = Table(problems, "", raw)
    gateway_table = root.table("gateway")
    sections = {name: root.tables(name) for name in SECTIONS[1:]}
    root.finish()
    gateway = read_gateway(gateway_table, base_dir)
    readers = {
        "listeners": lambda t: read_listener(t, base_dir),
        "backend_pools": read_pool,
        "backend_settings": lambda t: read_settings(t, base_dir),
        "probes": read_probe,
        "rules": read_rule,
    }
    names = {}
    for section, read in readers.items():
        names[section] = read_section(sections[section], read, section not in root.broken)
    for section, what in (("listeners", "listener"), ("rules", "rule")):
        if section not in root.broken and not sections[section]:
            problems.add(section, f"at least one {what} is required")
    check_rule_references(sections["rules"], names)
    for t in sections["backend_settings"]:
        check_reference(t, "probe", names["probes"], "probe")
    check_rule_per_listener(sections["listeners"], sections["rules"], names)
    check_binds(sections["listeners"], gateway, gateway_table)
    if problems.lines:
        raise ConfigError(problems.lines)
    built = {section: tuple(t.obj for t in tables) for section, tables in sections.items()}
    return Config(path=filename, gateway=gateway, **built)
