"""The configuration: one TOML file parsed once into frozen dataclasses.

A `Config` is an immutable snapshot. A reload builds a new one and swaps it
in, so a connection keeps the snapshot it started with.

This module holds the data types and the address grammar they share; the
checks that build a `Config` from TOML live in `appgw.config.check`, the
entry points (`parse_config`, `load_config`) in `appgw.config.load`. A
problem is one line: ``<filename>: <key path>: <problem>``.

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
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional


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


# --- the data ---------------------------------------------------------------

DEFAULT_COMPRESS_TYPES = (
    "text/html", "text/css", "text/plain", "text/javascript", "application/javascript",
    "application/json", "application/xml", "image/svg+xml",
)

@dataclass(frozen=True)
class Gateway:
    """[gateway]; admin_host/admin_port derive from admin_bind ("" and 0 when it is "")."""

    workers: int = 1
    admin_bind: str = "127.0.0.1:9901"
    access_log: str = "-"
    log_format: str = "combined"
    client_header_timeout: float = 10
    client_idle_timeout: float = 60
    max_header_size: int = 32768
    max_body_size: int = 0
    max_connections: int = 10000
    drain_timeout: float = 30
    # Automatic certificates (appgw/acme/manager.py). The two ports are those
    # the CA's validation connections arrive on (80 and 443 unless forwarded).
    acme_directory: str = ""
    acme_email: str = ""
    acme_storage: str = "acme"
    acme_trusted_root: str = ""
    acme_http_port: int = 80
    acme_tls_port: int = 443
    error_pages: tuple[tuple[int, bytes], ...] = ()    # (status, page bytes), read at load
    compress_types: tuple[str, ...] = DEFAULT_COMPRESS_TYPES
    compress_min_size: int = 1024
    allow_underscores_in_headers: bool = False
    admin_host: str = field(init=False, default="")
    admin_port: int = field(init=False, default=0)

    def __post_init__(self):
        if self.admin_bind:
            host, port = parse_hostport(self.admin_bind)
            _derive(self, admin_host=host, admin_port=port)


@dataclass(frozen=True)
class Listener:
    """[[listeners]]; host/port derive from bind. host_names are lowercase."""

    name: str
    bind: str
    protocol: str = "http"
    host_names: tuple[str, ...] = ()
    certificate: str = ""
    private_key: str = ""
    http2: bool = False              # https: "h2" by ALPN; http: h2 with prior knowledge
    max_concurrent_streams: int = 100
    acme: bool = False
    error_pages: tuple[tuple[int, bytes], ...] = ()    # beat the gateway's for the same status
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

    name: str
    servers: tuple[Server, ...] = ()
    app: str = ""
    app_path: tuple[str, ...] = ()
    load_balancing: str = "round_robin"


@dataclass(frozen=True)
class BackendSettings:
    """[[backend_settings]]; port None means 80 for http, 443 for https."""

    name: str
    protocol: str = "http"
    port: Optional[int] = None
    request_timeout: float = 20
    websocket_idle_timeout: float = 0
    connect_timeout: float = 5
    probe: str = ""
    host_name: str = ""
    pick_host_name_from_backend: bool = False
    affinity_cookie: str = ""
    drain_timeout: float = 0
    verify_tls: bool = True
    trusted_root: str = ""
    retry_window: float = 0

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

    name: str
    protocol: str = ""
    host: str = ""
    port: int = 0
    path: str = "/"
    interval: float = 30
    timeout: float = 30
    unhealthy_threshold: int = 3
    healthy_threshold: int = 1
    match_status: tuple[tuple[int, int], ...] = ((200, 399),)
    match_body: str = ""

    def status_matches(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.match_status)


@dataclass(frozen=True)
class Redirect:
    """A rule's or path entry's redirect: to a listener or to a URL (exactly one)."""

    listener: str = ""
    url: str = ""
    status: int = 301
    include_path: bool = True
    include_query: bool = True


@dataclass(frozen=True)
class PathRule:
    """[[rules.paths]]: exact paths or prefixes ending in "/*"; a pool or a redirect."""

    paths: tuple[str, ...]
    backend_pool: str = ""
    backend_settings: str = ""
    redirect: Optional[Redirect] = None
    rewrite_set: str = ""                 # "" = the rule's
    compress: Optional[bool] = None       # None = the rule's


@dataclass(frozen=True)
class Rule:
    """[[rules]]: the one rule of `listener`; its own target is the default for unmatched paths."""

    name: str
    listener: str
    backend_pool: str = ""
    backend_settings: str = ""
    redirect: Optional[Redirect] = None
    paths: tuple[PathRule, ...] = ()
    rewrite_set: str = ""
    compress: bool = False

    def rewrite_set_for(self, entry: Optional[PathRule]) -> str:
        """The set that applies to a request routed by `entry` (None: the rule itself)."""
        return entry.rewrite_set if entry is not None and entry.rewrite_set else self.rewrite_set

    def compress_for(self, entry: Optional[PathRule]) -> bool:
        """An entry's own `compress`, when it has one, replaces the rule's."""
        return self.compress if entry is None or entry.compress is None else entry.compress


@dataclass(frozen=True)
class RewriteCondition:
    """One condition of a rewrite rule: `variable` matches `pattern` (or, negated, does not)."""

    variable: str
    pattern: str
    ignore_case: bool = False
    negate: bool = False


@dataclass(frozen=True)
class UrlRewrite:
    """A rewrite rule's url action; None leaves that part as the client sent it."""

    path: Optional[str] = None
    query: Optional[str] = None
    reroute: bool = False


@dataclass(frozen=True)
class RewriteRule:
    """[[rewrite_sets.rules]]; header actions keep the order written, "" removes."""

    name: str
    conditions: tuple[RewriteCondition, ...] = ()
    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    url: Optional[UrlRewrite] = None


@dataclass(frozen=True)
class RewriteSet:
    """[[rewrite_sets]]: rules run in the order written."""

    name: str
    rules: tuple[RewriteRule, ...] = ()


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
