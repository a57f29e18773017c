"""The configuration: one TOML file parsed once into frozen dataclasses.

A `Config` is an immutable snapshot. A reload builds a new one and swaps it
in, so a connection keeps the snapshot it started with.

This module holds the data types, each key declared once as a field with
its default and how it is read (see "how each key is read" below), and the
address grammar they share; the checks that build a `Config` from TOML
live in `appgw.config.check`, the entry points (`parse_config`,
`load_config`) in `appgw.config.load`. A problem is one line:
``<filename>: <key path>: <problem>``.

Decisions recorded here (the README repeats them):
- `backend_settings = ""` (or omitted) in a rule or path entry means the
  built-in defaults, `DEFAULT_SETTINGS` (http, port 80, ...).
- `probe = ""` (or omitted) in backend settings means `DEFAULT_PROBE`.
- Relative file paths (certificate, private_key, trusted_root, an
  access_log file, app_path entries) are resolved against the config
  file's directory and stored absolute. Error pages are read at load: the
  Config holds their bytes.
- A path entry's `rewrite_set` ("" = the rule's) and `compress` (absent =
  the rule's) replace the rule's: `Rule.rewrite_set_for`, `Rule.compress_for`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import MISSING, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional


class ConfigError(Exception):
    """A config file that cannot be used; `.problems` holds one line per problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- address grammar, shared by the dataclasses and the checks -------------

_PORT_RE = re.compile(r"[0-9]{1,5}")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOTTED_NUMBERS_RE = re.compile(r"[0-9.]+")


def _quote(text: str) -> str:
    """JSON quoting keeps a problem line one line, whatever the value holds."""
    return json.dumps(text, ensure_ascii=False)


def is_host(text: str) -> bool:
    """True for an IPv4 address or a DNS name (IPv6 goes in brackets)."""
    if _DOTTED_NUMBERS_RE.fullmatch(text):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    return len(text) <= 253 and _HOSTNAME_RE.fullmatch(text) is not None


def parse_port(text: str) -> int:
    """A decimal port 1-65535, or ValueError."""
    if not _PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535, got {_quote(text)}")
    return int(text)


def parse_hostport(text: str, port_required: bool = True) -> tuple[str, Optional[int]]:
    """Split "host:port" or "[v6addr]:port" into (host, port).

    The host comes back lowercased and, for IPv6, without brackets and in
    compressed form; the port is None when absent and not required.
    Raises ValueError with a message fit for a problem line.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError('missing "]" after the IPv6 address')
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(f"{_quote(host)} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ValueError('expected ":port" after "]"')
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = text.partition(":")
        if ":" in port_text:
            raise ValueError('write IPv6 addresses in brackets, e.g. "[::1]:8080"')
        if not sep and port_required:
            raise ValueError('the port is missing ("host:port")')
        if not sep:
            port_text = None
        if not host:
            raise ValueError("the host is missing")
        if not is_host(host):
            raise ValueError(f"{_quote(host)} is not an IP address or host name")
        host = host.lower()
    if port_text is None:
        if port_required:
            raise ValueError('the port is missing ("host:port")')
        return host, None
    return host, parse_port(port_text)


def format_hostport(host: str, port: Optional[int]) -> str:
    """The inverse of parse_hostport: brackets around IPv6 hosts."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_server(address: str) -> tuple[str, str, Optional[int], str]:
    """A pool's server string -> (kind, host, port, path); ValueError if invalid.

    Forms: "host", "host:port", "[v6addr]", "[v6addr]:port", "unix:/abs/path".
    """
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path.startswith("/"):
            raise ValueError('a unix socket needs an absolute path: "unix:/run/app.sock"')
        if any(ord(c) < 32 or ord(c) == 127 for c in path):
            raise ValueError("control characters in the socket path")
        return "unix", "", None, path
    if "://" in address:
        raise ValueError('write "host:port", not a URL')
    host, port = parse_hostport(address, port_required=False)
    return "tcp", host, port, ""


def _derive(obj, **values):
    """Set init=False fields of a frozen dataclass from __post_init__."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


# --- how each key is read ------------------------------------------------------
#
# Every key is declared once: as a field of its section's dataclass, with its
# default and, in the field's metadata, how its TOML value is read and
# checked (config.check.read_keys does that for every field in order). A
# `check` names a value check of config.check.CHECKS ("name", "bind", ...),
# so this module stays free of the checks themselves. Keys of kind "custom"
# (tables, arrays of tables, files read at load) are read by their
# section's own code in config.check. Fields without a Key are derived.

@dataclass(frozen=True)
class Key:
    kind: str                      # string choice boolean integer seconds strings custom
    check: str = ""                # string, strings, integer: a check of config.check.CHECKS
    required: bool = False
    low: int = 0                   # integer: the range
    high: Optional[int] = None
    zero_ok: bool = False          # seconds: 0 allowed
    choices: tuple = ()            # choice
    lower: bool = False            # strings: stored lower-case


def _field(default, key: Key) -> Any:
    if default is MISSING:
        return field(metadata={"key": key})
    return field(default=default, metadata={"key": key})


def string(default=MISSING, check="text", required=False) -> Any:
    return _field(default, Key("string", check=check, required=required))


def entry_name() -> Any:
    """A section entry's required name."""
    return string(check="name", required=True)


def choice(default, *choices) -> Any:
    return _field(default, Key("choice", choices=choices))


def boolean(default) -> Any:
    return _field(default, Key("boolean"))


def integer(default, low=0, high=None, check="") -> Any:
    return _field(default, Key("integer", low=low, high=high, check=check))


def seconds(default, zero_ok=False) -> Any:
    return _field(default, Key("seconds", zero_ok=zero_ok))


def strings(default=MISSING, check="text", lower=False, required=False) -> Any:
    return _field(default, Key("strings", check=check, lower=lower, required=required))


def custom(default=MISSING) -> Any:
    return _field(default, Key("custom"))


def key_of(f) -> Optional[Key]:
    """The Key of a dataclass field (None for a derived field)."""
    return f.metadata.get("key")


# --- the data ---------------------------------------------------------------

DEFAULT_COMPRESS_TYPES = (
    "text/html", "text/css", "text/plain", "text/javascript", "application/javascript",
    "application/json", "application/xml", "image/svg+xml",
)

@dataclass(frozen=True)
class Gateway:
    """[gateway]; admin_host/admin_port derive from admin_bind ("" and 0 when it is "")."""

    workers: int = integer(1, 1, 64)
    admin_bind: str = string("127.0.0.1:9901", check="admin_bind")
    access_log: str = string("-")                  # a file is stored absolute, and must be writable
    log_format: str = choice("combined", "combined", "json")
    client_header_timeout: float = seconds(10)
    client_idle_timeout: float = seconds(60)
    max_header_size: int = integer(32768, 1024)
    max_body_size: int = integer(0)
    max_connections: int = integer(10000, 1)
    drain_timeout: float = seconds(30, zero_ok=True)
    # Automatic certificates (appgw/acme/manager.py). The two ports are those
    # the CA's validation connections arrive on (80 and 443 unless forwarded).
    acme_directory: str = string("", check="acme_directory")
    acme_email: str = string("", check="email")
    acme_storage: str = string("acme", check="name")
    acme_trusted_root: str = string("")
    acme_http_port: int = integer(80, 1, 65535)
    acme_tls_port: int = integer(443, 1, 65535)
    error_pages: tuple[tuple[int, bytes], ...] = custom(())    # (status, page bytes), read at load
    compress_types: tuple[str, ...] = strings(DEFAULT_COMPRESS_TYPES, check="media_type", lower=True)
    compress_min_size: int = integer(1024)
    allow_underscores_in_headers: bool = boolean(False)
    admin_host: str = field(init=False, default="")
    admin_port: int = field(init=False, default=0)

    def __post_init__(self):
        if self.admin_bind:
            host, port = parse_hostport(self.admin_bind)
            _derive(self, admin_host=host, admin_port=port)


@dataclass(frozen=True)
class Listener:
    """[[listeners]]; host/port derive from bind. host_names are lowercase."""

    name: str = entry_name()
    bind: str = string(check="bind", required=True)
    protocol: str = choice("http", "http", "https")
    host_names: tuple[str, ...] = strings((), check="host_name", lower=True)
    certificate: str = string("")
    private_key: str = string("")
    http2: bool = boolean(False)     # https: "h2" by ALPN; http: h2 with prior knowledge
    max_concurrent_streams: int = integer(100, 1, 2 ** 31 - 1)
    error_pages: tuple[tuple[int, bytes], ...] = custom(())    # beat the gateway's for the same status
    acme: bool = boolean(False)
    host: str = field(init=False, default="")
    port: int = field(init=False, default=0)

    def __post_init__(self):
        host, port = parse_hostport(self.bind)
        _derive(self, host=host, port=port)

    @property
    def address(self) -> str:
        """The bind in canonical form, e.g. "0.0.0.0:80" or "[::]:443"."""
        return format_hostport(self.host, self.port)


@dataclass(frozen=True)
class Server:
    """One server of a pool. kind "tcp" (host, port or None) or "unix" (path).

    port is None when the address names none: the backend settings' port applies.
    """

    address: str
    kind: str = field(init=False, default="tcp")
    host: str = field(init=False, default="")
    port: Optional[int] = field(init=False, default=None)
    path: str = field(init=False, default="")

    def __post_init__(self):
        kind, host, port, path = parse_server(self.address)
        _derive(self, kind=kind, host=host, port=port, path=path)


@dataclass(frozen=True)
class BackendPool:
    """[[backend_pools]]: remote servers and/or an in-process WSGI app ("pkg.mod:callable").

    `app_path`: the directories put on sys.path for the app's import,
    absolute, the config file's own directory last (config_check adds it).
    """

    name: str = entry_name()
    servers: tuple[Server, ...] = strings((), check="server")    # read as strings, stored as Servers
    app: str = string("", check="app")
    app_path: tuple[str, ...] = strings(())
    load_balancing: str = choice("round_robin", "round_robin", "least_connections")


@dataclass(frozen=True)
class BackendSettings:
    """[[backend_settings]]; port None means 80 for http, 443 for https."""

    name: str = entry_name()
    protocol: str = choice("http", "http", "https")
    port: Optional[int] = integer(None, 1, 65535)
    request_timeout: float = seconds(20)
    websocket_idle_timeout: float = seconds(0, zero_ok=True)
    connect_timeout: float = seconds(5)
    probe: str = string("")
    host_name: str = string("", check="host_header")
    pick_host_name_from_backend: bool = boolean(False)
    affinity_cookie: str = string("", check="cookie_name")
    drain_timeout: float = seconds(0, zero_ok=True)
    verify_tls: bool = boolean(True)
    trusted_root: str = string("")
    retry_window: float = seconds(0, zero_ok=True)

    def __post_init__(self):
        if self.port is None:
            _derive(self, port=443 if self.protocol == "https" else 80)

    @property
    def websocket_timeout(self) -> float:
        """Idle timeout of a WebSocket session: websocket_idle_timeout if > 0, else request_timeout."""
        return self.websocket_idle_timeout or self.request_timeout


@dataclass(frozen=True)
class Probe:
    """[[probes]]; "" / 0 fields fall back to the settings' protocol, host_name or server address, port."""

    name: str = entry_name()
    protocol: str = choice("", "", "http", "https")
    host: str = string("", check="host_header")
    port: int = integer(0, 0, 65535)
    path: str = string("/", check="url_path")
    interval: float = seconds(30)
    timeout: float = seconds(30)
    unhealthy_threshold: int = integer(3, 1)
    healthy_threshold: int = integer(1, 1)
    match_status: tuple[tuple[int, int], ...] = custom(((200, 399),))
    match_body: str = string("", check="")

    def status_matches(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.match_status)


@dataclass(frozen=True)
class Redirect:
    """A rule's or path entry's redirect: to a listener or to a URL (exactly one)."""

    listener: str = string("", check="name")
    url: str = string("", check="redirect_url")
    status: int = integer(301, check="redirect_status")
    include_path: bool = boolean(True)
    include_query: bool = boolean(True)


@dataclass(frozen=True)
class PathRule:
    """[[rules.paths]]: exact paths or prefixes ending in "/*"; a pool or a redirect."""

    paths: tuple[str, ...] = strings(check="route_path", required=True)
    backend_pool: str = string("")
    backend_settings: str = string("")
    redirect: Optional[Redirect] = custom(None)
    rewrite_set: str = string("")                 # "" = the rule's
    compress: Optional[bool] = boolean(None)      # None = the rule's


@dataclass(frozen=True)
class Rule:
    """[[rules]]: the one rule of `listener`; its own target is the default for unmatched paths."""

    name: str = entry_name()
    listener: str = string(check="name", required=True)
    backend_pool: str = string("")
    backend_settings: str = string("")
    redirect: Optional[Redirect] = custom(None)
    paths: tuple[PathRule, ...] = custom(())
    rewrite_set: str = string("")
    compress: bool = boolean(False)

    def rewrite_set_for(self, entry: Optional[PathRule]) -> str:
        """The set that applies to a request routed by `entry` (None: the rule itself)."""
        return entry.rewrite_set if entry is not None and entry.rewrite_set else self.rewrite_set

    def compress_for(self, entry: Optional[PathRule]) -> bool:
        """An entry's own `compress`, when it has one, replaces the rule's."""
        return self.compress if entry is None or entry.compress is None else entry.compress


@dataclass(frozen=True)
class RewriteCondition:
    """One condition of a rewrite rule: `variable` matches `pattern` (or, negated, does not)."""

    variable: str = string(check="variable", required=True)
    pattern: str = string(check="", required=True)      # a regular expression, compiled at load
    ignore_case: bool = boolean(False)
    negate: bool = boolean(False)


@dataclass(frozen=True)
class UrlRewrite:
    """A rewrite rule's url action; None leaves that part as the client sent it."""

    path: Optional[str] = string(None, check="")
    query: Optional[str] = string(None, check="")
    reroute: bool = boolean(False)


@dataclass(frozen=True)
class RewriteRule:
    """[[rewrite_sets.rules]]; header actions keep the order written, "" removes."""

    name: str = entry_name()
    conditions: tuple[RewriteCondition, ...] = custom(())
    request_headers: tuple[tuple[str, str], ...] = custom(())
    response_headers: tuple[tuple[str, str], ...] = custom(())
    url: Optional[UrlRewrite] = custom(None)


@dataclass(frozen=True)
class RewriteSet:
    """[[rewrite_sets]]: rules run in the order written."""

    name: str = entry_name()
    rules: tuple[RewriteRule, ...] = custom(())


DEFAULT_SETTINGS = BackendSettings(name="")
"""Used where a rule or path entry names no backend_settings."""

DEFAULT_PROBE = Probe(name="")
"""Used where backend settings name no probe (SPEC section 6)."""


def _index(items) -> Mapping:
    return MappingProxyType({item.name: item for item in items})


@dataclass(frozen=True)
class Config:
    """One loaded, fully checked configuration: every reference resolves.

    `path` is the file name as given. The *_by_name lookups are read-only.
    """

    path: str
    gateway: Gateway = field(default_factory=Gateway)
    listeners: tuple[Listener, ...] = ()
    backend_pools: tuple[BackendPool, ...] = ()
    backend_settings: tuple[BackendSettings, ...] = ()
    probes: tuple[Probe, ...] = ()
    rules: tuple[Rule, ...] = ()
    rewrite_sets: tuple[RewriteSet, ...] = ()
    listener_by_name: Mapping[str, Listener] = field(init=False, repr=False, compare=False)
    pool_by_name: Mapping[str, BackendPool] = field(init=False, repr=False, compare=False)
    settings_by_name: Mapping[str, BackendSettings] = field(init=False, repr=False, compare=False)
    probe_by_name: Mapping[str, Probe] = field(init=False, repr=False, compare=False)
    rule_by_listener: Mapping[str, Rule] = field(init=False, repr=False, compare=False)
    rewrite_set_by_name: Mapping[str, RewriteSet] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _derive(
            self,
            listener_by_name=_index(self.listeners),
            pool_by_name=_index(self.backend_pools),
            settings_by_name=_index(self.backend_settings),
            probe_by_name=_index(self.probes),
            rule_by_listener=MappingProxyType({r.listener: r for r in self.rules}),
            rewrite_set_by_name=_index(self.rewrite_sets),
        )

    def __reduce__(self):
        # the mapping proxies cannot be pickled; rebuild them instead
        return (Config, (self.path, self.gateway, self.listeners, self.backend_pools,
                         self.backend_settings, self.probes, self.rules, self.rewrite_sets))

    def settings(self, name: str) -> BackendSettings:
        """The named backend settings; DEFAULT_SETTINGS for ""."""
        return self.settings_by_name[name] if name else DEFAULT_SETTINGS

    def probe(self, name: str) -> Probe:
        """The named probe; DEFAULT_PROBE for ""."""
        return self.probe_by_name[name] if name else DEFAULT_PROBE


# --- entry points -----------------------------------------------------------
