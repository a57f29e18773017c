"""Checking a parsed TOML document and building a `Config` from it.

Every problem is collected (one line each, `<file>: <key path>: <problem>`)
and reported together. A value that is wrong is left out, so the
dataclass default stands in while the checks go on; a check that depends
on a value that failed (a reference, a bind) is skipped rather than
reported twice. Entries whose dataclass cannot be built at all (a missing
name, a bad bind) are left out of the per-object checks, but their names
still count for reference resolution.

Rules not obvious from SPEC section 3:
- Times are int or float > 0; websocket_idle_timeout, both
  drain_timeouts and retry_window may be 0. Sizes are ints >= 0, max_header_size >= 1024.
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
- acme = true: https only, host_names required (no wildcards, no IP
  addresses), no certificate/private_key, gateway.acme_directory set, and a
  challenge the CA can reach (see check_acme).
- error_pages: keys are the statuses the gateway makes; each file is read
  here (relative to the config's directory, at most 1 MiB, UTF-8) and its
  bytes kept in the Config, so a page that went missing later cannot fail
  an answer.
- Rewrite rules: a rule with request actions (request_headers, url) is
  judged before the request goes on, so its conditions and those values may
  not use http_resp_* variables. Header names are tokens, the same header
  twice in one table (any case) is refused, and the framing and connection
  headers (rewrite.FORBIDDEN_*) cannot be rewritten. url needs path or
  query; reroute needs path; a path starts with "/" or a variable; a query
  is written without its "?".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import ssl
from typing import Optional
from urllib.parse import urlsplit

from appgw.exchange import rewrite
from appgw.config.model import (
    BackendPool, BackendSettings, Config, ConfigError, Gateway, Listener,
    PathRule, Probe, Redirect, RewriteCondition, RewriteRule, RewriteSet, Rule,
    Server, UrlRewrite, is_host, key_of, parse_hostport, parse_server,
)
from appgw.exchange.errorpages import MAX_PAGE_SIZE, PAGE_STATUSES
from appgw.http.grammar import TOKEN

SECTIONS = ("gateway", "listeners", "backend_pools", "backend_settings", "probes", "rules",
            "rewrite_sets")
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

    def integer(self, name, low, high=None, check=None) -> Optional[int]:
        def in_range(value):
            if high is not None and not low <= value <= high:
                return f"must be between {low} and {high}, got {value}"
            if value < low:
                return f"must be at least {low}, got {value}"
            return None
        return self.keep(name, self.get_typed(name, (int,), "an integer", False), check or in_range)

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


def read_keys(t: Table, cls) -> None:
    """Read and check every key `cls` declares (a model.Key in each field's
    metadata), in field order, into t.values. Keys of kind "custom" are left
    to the caller, and so are checks across keys."""
    for f in dataclasses.fields(cls):
        key = key_of(f)
        if key is not None and key.kind != "custom":
            _READERS[key.kind](t, f.name, key)


_READERS = {
    "string": lambda t, name, key: t.string(name, CHECKS[key.check], key.required),
    "choice": lambda t, name, key: t.choice(name, key.choices),
    "boolean": lambda t, name, key: t.boolean(name),
    "integer": lambda t, name, key: t.integer(name, key.low, key.high, CHECKS[key.check]),
    "seconds": lambda t, name, key: t.seconds(name, key.zero_ok),
    "strings": lambda t, name, key: t.string_list(name, CHECKS[key.check], str.lower if key.lower else None,
                                                  key.required),
}


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


def check_app_form(value: str) -> Optional[str]:
    if value and not _APP_RE.fullmatch(value):
        return f'must be "package.module:callable", got {quote(value)}'
    return None


def check_app_import(t: Table, base_dir: str) -> None:
    """Resolve app_path, then import the app with it: an app that cannot be
    imported is a config problem like any other, reported with the rest
    (so `--check` meets what a start would)."""
    dirs = [os.path.abspath(os.path.join(base_dir, d)) for d in t.values.get("app_path", ())]
    for i, path in enumerate(dirs):
        if not os.path.isdir(path):
            t.add(f"app_path[{i}]", f"{quote(t.values['app_path'][i])} is not a directory")
    if os.path.abspath(base_dir) not in dirs:
        dirs.append(os.path.abspath(base_dir))
    t.values["app_path"] = tuple(dirs)
    app = t.values.get("app")
    if not app or not t.ok("app") or not t.ok("app_path"):
        return
    from appgw.control.apps import AppImportError, import_app

    try:
        import_app(app, dirs)
    except AppImportError as err:
        t.add("app", str(err))


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


def check_writable(path: str) -> Optional[str]:
    """Why a file could not be opened for appending, or None. Nothing is
    created: --check must leave no trace."""
    if os.path.isdir(path):
        return "it is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "permission denied"
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return f"directory {quote(directory)} does not exist"
    return None if os.access(directory, os.W_OK | os.X_OK) else f"permission denied in {quote(directory)}"


def ssl_message(err: Exception) -> str:
    """An ssl error without its " (_ssl.c:1234)" tail."""
    return re.sub(r" \(_ssl\.c:\d+\)$", "", str(err))


# --- sections -------------------------------------------------------------------

def read_gateway(t: Optional[Table], base_dir: str) -> Gateway:
    if t is None:
        return Gateway()
    read_keys(t, Gateway)
    access_log = t.values.get("access_log")
    if access_log not in (None, "", "-"):
        path = t.values["access_log"] = os.path.abspath(os.path.join(base_dir, access_log))
        if (message := check_writable(path)):
            t.add("access_log", f"cannot write {quote(access_log)}: {message}")
    read_gateway_acme(t, base_dir)
    read_error_pages(t, base_dir)
    return t.build(Gateway) or Gateway()


def read_listener(t: Table, base_dir: str) -> Optional[Listener]:
    read_keys(t, Listener)
    host_names = t.values.get("host_names", ())
    for i, host_name in enumerate(host_names):
        if host_name in host_names[:i]:
            t.add(f"host_names[{i}]", f"duplicate host name {quote(host_name)}")
    read_error_pages(t, base_dir)
    acme = t.values.get("acme")
    if t.ok("protocol") and acme:
        check_listener_acme(t, t.values.get("protocol", "http"))
    elif t.ok("protocol"):
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


def read_gateway_acme(t: Table, base_dir: str) -> None:
    """The [gateway] acme_* keys, read: a given acme_storage is stored
    absolute, and acme_trusted_root must be a CA bundle."""
    if (storage := t.values.get("acme_storage")):
        t.values["acme_storage"] = os.path.abspath(os.path.join(base_dir, storage))
    if t.values.get("acme_trusted_root") and (path := check_file(t, "acme_trusted_root", base_dir)):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError) as err:
            t.add("acme_trusted_root", f"not a valid PEM CA bundle: {ssl_message(err)}")


def check_acme_directory(value: str) -> Optional[str]:
    parts = urlsplit(value)
    if value and (has_controls(value) or " " in value or parts.scheme != "https" or not parts.netloc):
        return f"must be an https:// URL (the ACME directory), got {quote(value)}"
    return None


def check_email(value: str) -> Optional[str]:
    local, at, domain = value.partition("@")
    if value and (not local or not at or not is_host(domain) or has_controls(value) or " " in value):
        return f'must be an e-mail address like "admin@example.com", got {quote(value)}'
    return None


def check_listener_acme(t: Table, protocol: str) -> None:
    """acme = true: an https listener whose names the CA can validate; no files."""
    if protocol != "https":
        t.add("acme", "only for https listeners")
        return
    for name in ("certificate", "private_key"):
        if t.values.get(name):
            t.add(name, "not used with acme = true (the certificate comes from the ACME CA)")
    names = t.values.get("host_names", ())
    if t.ok("host_names") and not names:
        t.add("host_names", "required with acme = true: the names to obtain a certificate for")
    for i, name in enumerate(names):
        if name.startswith("*."):
            t.add(f"host_names[{i}]", f"{quote(name)}: a wildcard needs the DNS-01 challenge, which "
                                      "appgw does not answer; list each name with acme = true")
        elif not re.search(r"[a-z]", name.rsplit(".", 1)[-1]):
            t.add(f"host_names[{i}]", f"{quote(name)}: an IP address; acme = true takes DNS names")


def check_acme(listeners: list[Table], gateway: Gateway, problems: Problems) -> None:
    """An ACME listener needs the directory, and a challenge the CA can reach:
    HTTP-01 through an http listener on acme_http_port, or TLS-ALPN-01 on the
    listener itself when it is bound to acme_tls_port."""
    built = [t.obj for t in listeners if t.obj is not None]
    http_ports = {item.port for item in built if item.protocol == "http"}
    for t in listeners:
        listener = t.obj
        if listener is None or not listener.acme or not t.ok("acme"):
            continue
        if not gateway.acme_directory and problems.ok("gateway.acme_directory"):
            problems.add("gateway.acme_directory", f"required: listener {quote(listener.name)} has acme = true")
        if gateway.acme_http_port not in http_ports and listener.port != gateway.acme_tls_port:
            t.add("acme", f"no challenge can reach this listener: HTTP-01 needs an http listener on port "
                          f"{gateway.acme_http_port} (gateway.acme_http_port), TLS-ALPN-01 this listener "
                          f"on port {gateway.acme_tls_port} (gateway.acme_tls_port); it is on {listener.port}")


def read_pool(t: Table, base_dir: str) -> Optional[BackendPool]:
    read_keys(t, BackendPool)
    addresses = t.values.get("servers")
    if addresses is not None:
        servers = [Server(address) for address in addresses]
        for i, server in enumerate(servers):
            if server in servers[:i]:
                t.add(f"servers[{i}]", f"duplicate server {quote(server.address)}")
        t.values["servers"] = tuple(servers)
    check_app_import(t, base_dir)
    if t.ok("servers") and t.ok("app") and not t.values.get("servers") and not t.values.get("app"):
        t.problems.add(t.path, "needs servers or app")
    return t.build(BackendPool)


def read_settings(t: Table, base_dir: str) -> Optional[BackendSettings]:
    read_keys(t, BackendSettings)
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
    read_keys(t, Probe)
    read_match_status(t)
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
    read_keys(t, Redirect)
    if t.ok("listener") and t.ok("url"):
        targets = [name for name in ("listener", "url") if t.values.get(name)]
        if not targets:
            t.problems.add(t.path, "needs listener or url")
        elif len(targets) == 2:
            t.problems.add(t.path, "needs listener or url, not both")
    return t.build(Redirect)


def read_target(t: Table) -> None:
    """A rule's or path entry's target (its keys read): exactly one of
    backend_pool or redirect."""
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
    read_keys(t, PathRule)
    paths = t.values.get("paths") if t.ok("paths") else None
    if paths == ():
        t.add("paths", "must not be empty")
    for i, path in enumerate(paths or ()):
        if path in routed:
            t.add(f"paths[{i}]", f"duplicate path {quote(path)}")
        routed.add(path)
    read_target(t)
    return t.build(PathRule)


def read_rule(t: Table) -> Optional[Rule]:
    read_keys(t, Rule)
    read_target(t)
    routed: set = set()
    path_rules = [read_path_rule(pt, routed) for pt in t.tables("paths")]
    if all(path_rules):
        t.values["paths"] = tuple(path_rules)
    return t.build(Rule)


# --- error pages, compression ---------------------------------------------------

_PAGE_KEYS = {str(status): status for status in PAGE_STATUSES}
_MEDIA_TYPE_RE = re.compile(rf"{TOKEN}/(?:{TOKEN}|\*)")


def check_media_type(value: str) -> Optional[str]:
    if not _MEDIA_TYPE_RE.fullmatch(value) or value.startswith("*"):
        return f'must be a media type such as "text/html" or "text/*", without parameters, got {quote(value)}'
    return None


def read_error_pages(t: Table, base_dir: str) -> None:
    """error_pages = { "502" = "file.html" }: each file read now, its bytes kept."""
    pages = t.table("error_pages")
    if pages is None:
        return
    found = []
    for key, value in pages.raw.items():
        pages.seen.add(key)
        if key not in _PAGE_KEYS:
            statuses = ", ".join(map(str, PAGE_STATUSES))
            pages.add(key, f"must be a status the gateway answers with ({statuses}), got {quote(key)}")
        elif not isinstance(value, str):
            pages.add(key, f"must be a string (a file path), got {describe(value)}")
        elif not value or has_controls(value):
            pages.add(key, f"must be a file path, got {quote(value)}")
        elif (page := read_page(pages, key, os.path.join(base_dir, value), value)) is not None:
            found.append((_PAGE_KEYS[key], page))
    if t.ok("error_pages"):
        t.values["error_pages"] = tuple(sorted(found))


def read_page(t: Table, key: str, path: str, shown: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            page = f.read(MAX_PAGE_SIZE + 1)
    except OSError as err:
        t.add(key, f"cannot read {quote(shown)}: {err.strerror}")
        return None
    if len(page) > MAX_PAGE_SIZE:
        t.add(key, f"{quote(shown)} is larger than 1 MiB")
        return None
    try:
        page.decode("utf-8")
    except UnicodeDecodeError as err:
        t.add(key, f"{quote(shown)} is not UTF-8 (byte {err.start}); it is served as utf-8")
        return None
    return page


# --- rewrite sets ---------------------------------------------------------------

def read_rewrite_set(t: Table) -> Optional[RewriteSet]:
    read_keys(t, RewriteSet)
    names: set = set()
    rules = [read_rewrite_rule(rt, names) for rt in t.tables("rules")]
    if all(rules):
        t.values["rules"] = tuple(rules)
    return t.build(RewriteSet)


def check_variable(value: str) -> Optional[str]:
    if rewrite.variable_phase(value) is None:
        return (f"unknown variable {quote(value)}: one of {', '.join(rewrite.VARIABLES)}, "
                "http_req_<Header-Name> or http_resp_<Header-Name>")
    return None


# The value checks a model.Key names.
CHECKS = {
    "": None,
    "text": check_text,
    "name": check_name,
    "bind": check_bind,
    "admin_bind": check_admin_bind,
    "host_header": check_host_header,
    "host_name": check_host_name,
    "server": check_server,
    "app": check_app_form,
    "cookie_name": check_cookie_name,
    "url_path": check_url_path,
    "route_path": check_route_path,
    "redirect_url": check_redirect_url,
    "redirect_status": check_redirect_status,
    "acme_directory": check_acme_directory,
    "email": check_email,
    "media_type": check_media_type,
    "variable": check_variable,
}


def read_condition(t: Table) -> Optional[RewriteCondition]:
    read_keys(t, RewriteCondition)
    pattern, ignore_case = t.values.get("pattern"), t.values.get("ignore_case")
    if pattern is not None:
        try:
            re.compile(pattern.encode(), re.IGNORECASE if ignore_case else 0)
        except re.error as err:
            t.add("pattern", f"invalid regular expression: {err}")
            t.values.pop("pattern")
    return t.build(RewriteCondition)


def read_rewrite_rule(t: Table, names: set) -> Optional[RewriteRule]:
    """One rule of a set; `names` holds the set's rule names so far."""
    read_keys(t, RewriteRule)
    name = t.values.get("name")
    if name in names:
        t.add("name", f"duplicate name {quote(name)} in this rewrite set")
    names.add(name)
    condition_tables = t.tables("conditions")
    conditions = [read_condition(ct) for ct in condition_tables]
    captures = rewrite.capture_map(conditions)
    request_actions = t.has("request_headers") or t.has("url")
    if request_actions:
        for ct in condition_tables:
            variable = ct.values.get("variable", "")
            if rewrite.variable_phase(variable) == "response":
                ct.add("variable", f"{variable} is only known once the answer arrives, and this rule "
                                   "has request actions (request_headers, url): give those a rule of their own")
    read_header_actions(t, "request_headers", rewrite.FORBIDDEN_REQUEST, captures, "request")
    read_header_actions(t, "response_headers", rewrite.FORBIDDEN_RESPONSE, captures, "response")
    url = t.table("url")
    if url is not None:
        t.values["url"] = read_url(url, captures)
    if t.ok("conditions") and all(conditions):
        t.values["conditions"] = tuple(conditions)
    return t.build(RewriteRule)


def read_template(t: Table, key: str, value: str, captures: dict, phase: str) -> bool:
    """Report what is wrong with a value template; True when it is good."""
    try:
        parts = rewrite.parse_template(value, captures)
    except rewrite.TemplateError as err:
        t.add(key, str(err))
        return False
    if phase == "request" and rewrite.template_phase(parts) == "response":
        t.add(key, "http_resp_* variables are only known for response_headers")
        return False
    return True


def read_header_actions(t: Table, name: str, forbidden, captures: dict, phase: str) -> None:
    """{ "Header-Name" = "value template" }; "" removes the header."""
    headers = t.table(name)
    if headers is None:
        return
    actions, seen = [], {}
    for key, value in headers.raw.items():
        headers.seen.add(key)
        lowered = key.lower()
        if not _TOKEN_RE.fullmatch(key):
            headers.add(key, "must be a header name (letters, digits and !#$%&'*+-.^_`|~)")
        elif lowered in forbidden:
            headers.add(key, f"{key} cannot be rewritten: the gateway sets it itself")
        elif lowered in seen:
            headers.add(key, f"the same header as {quote(seen[lowered])}")
        elif not isinstance(value, str):
            headers.add(key, f"must be a string, got {describe(value)}")
        elif has_controls(value):
            headers.add(key, "must not contain control characters")
        elif read_template(headers, key, value, captures, phase):
            actions.append((key, value))
        seen.setdefault(lowered, key)
    if t.ok(name):
        t.values[name] = tuple(actions)


def read_url(t: Table, captures: dict) -> Optional[UrlRewrite]:
    read_keys(t, UrlRewrite)
    path, query, reroute = t.values.get("path"), t.values.get("query"), t.values.get("reroute")
    if path is None and query is None and t.ok("path") and t.ok("query"):
        t.problems.add(t.path, "needs path or query")
    if reroute and path is None and t.ok("path"):
        t.add("reroute", "needs path: only a rewritten path is routed again")
    if path is not None:
        check_url_template(t, "path", path, captures, "?#")
    if query is not None:
        check_url_template(t, "query", query, captures, "#")
    return t.build(UrlRewrite)


def check_url_template(t: Table, key: str, value: str, captures: dict, refused: str) -> None:
    """A url part: visible ASCII, a path from "/" or a variable, a query without "?"."""
    if key == "path" and not value.startswith(("/", "{")) or key == "query" and value.startswith("?"):
        t.add(key, 'must start with "/" or a variable' if key == "path" else 'is written without its "?"')
    elif any(not 0x21 <= ord(c) <= 0x7e or c in refused for c in value):
        shown = " or ".join(f'"{c}"' for c in refused)
        t.add(key, f"must be visible ASCII without spaces or {shown}, got {quote(value)}")
    elif read_template(t, key, value, captures, "request"):
        return
    t.values.pop(key, None)


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
    check_reference(t, "rewrite_set", names["rewrite_sets"], "rewrite set")
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
        "backend_pools": lambda t: read_pool(t, base_dir),
        "backend_settings": lambda t: read_settings(t, base_dir),
        "probes": read_probe,
        "rules": read_rule,
        "rewrite_sets": read_rewrite_set,
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
    check_acme(sections["listeners"], gateway, problems)
    if any(t.values.get("acme") for t in sections["listeners"]) and not os.path.isabs(gateway.acme_storage):
        # The default storage, resolved like the other paths once it is used.
        storage = os.path.abspath(os.path.join(base_dir, gateway.acme_storage))
        gateway = dataclasses.replace(gateway, acme_storage=storage)
    if problems.lines:
        raise ConfigError(problems.lines)
    built = {section: tuple(t.obj for t in tables) for section, tables in sections.items()}
    return Config(path=filename, gateway=gateway, **built)
