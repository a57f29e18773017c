"""The one-screen summary printed by `appgw -c FILE --check`.

Shape: listeners -> their rule -> (paths) -> target; then each pool with
its servers and, per backend settings it is used with, those settings and
their probe. Takes a Config, returns text; for listeners with acme = true it
also reads what the ACME storage holds.
"""

from __future__ import annotations

from appgw.acme.report import check_lines
from appgw.config import (
    DEFAULT_PROBE, BackendSettings, Config, Probe, Redirect, Server, format_hostport,
)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _redirect(redirect: Redirect) -> str:
    where = f'listener "{redirect.listener}"' if redirect.listener else redirect.url
    kept = [part for part, keep in (("path", redirect.include_path),
                                    ("query", redirect.include_query)) if keep]
    keeps = f" (keeps {' and '.join(kept)})" if kept else ""
    return f"redirect {redirect.status} to {where}{keeps}"


def _target(item) -> str:
    """A rule's or path entry's target in one phrase."""
    if item.redirect is not None:
        return _redirect(item.redirect)
    settings = f'"{item.backend_settings}"' if item.backend_settings else "default settings"
    return f'pool "{item.backend_pool}" with {settings}'


def _listener_lines(config: Config) -> list[str]:
    lines = []
    for listener in config.listeners:
        hosts = ", ".join(listener.host_names) or "any host"
        lines.append(f'listener "{listener.name}"  {listener.protocol}://{listener.address}  {hosts}'
                     f'{_pages(listener.error_pages)}')
        if listener.http2:
            lines.append(_http2_line(listener))
        lines.extend(check_lines(config, listener))
        rule = config.rule_by_listener.get(listener.name)
        if rule is None:
            continue
        lines.append(f'  rule "{rule.name}": {_target(rule)}{_shaping(rule, None)}')
        for path_rule in rule.paths:
            lines.append(f"    {', '.join(path_rule.paths)}: {_target(path_rule)}{_shaping(rule, path_rule)}")
    return lines


def _http2_line(listener) -> str:
    """How a listener with http2 = true takes HTTP/2; HTTP/1.1 is served beside it."""
    if listener.protocol == "https":
        how = "h2 offered by ALPN (then http/1.1)"
    else:
        how = "h2c accepted with prior knowledge (and HTTP/1.1)"
    return f"  http2: {how}, max {listener.max_concurrent_streams} concurrent streams"


def _shaping(rule, entry) -> str:
    """What shapes the answers of a rule or path entry, as its own or inherited."""
    parts = []
    if rule.rewrite_set_for(entry):
        parts.append(f'rewrite set "{rule.rewrite_set_for(entry)}"')
    if rule.compress_for(entry):
        parts.append("compressed")
    return "; " + ", ".join(parts) if parts else ""


def _pages(pages, before="  ") -> str:
    """The statuses that have a page: "  error pages 502, 504"."""
    return f"{before}error pages {', '.join(str(status) for status, _ in pages)}" if pages else ""


def _server(server: Server, port: int) -> str:
    if server.kind == "unix":
        return server.address
    return format_hostport(server.host, server.port or port)


def _settings_line(settings: BackendSettings) -> str:
    parts = [f"{settings.protocol} port {settings.port}",
             f"request {_seconds(settings.request_timeout)}",
             f"websocket idle {_seconds(settings.websocket_timeout)}",
             f"connect {_seconds(settings.connect_timeout)}"]
    if settings.host_name:
        parts.append(f"Host {settings.host_name}")
    elif settings.pick_host_name_from_backend:
        parts.append("Host from server")
    if settings.retry_window:
        parts.append(f"retry window {_seconds(settings.retry_window)}")
    if settings.affinity_cookie:
        parts.append(f"affinity cookie {settings.affinity_cookie}")
    if settings.protocol == "https" and not settings.verify_tls:
        parts.append("TLS not verified")
    return ", ".join(parts)


def _probe_line(probe: Probe, settings: BackendSettings) -> str:
    name = f'"{probe.name}"' if probe.name else "default"
    protocol = probe.protocol or settings.protocol
    port = f":{probe.port}" if probe.port else ""
    host = f", Host {probe.host}" if probe.host else ""
    statuses = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in probe.match_status)
    body = f', body has "{probe.match_body}"' if probe.match_body else ""
    return (f"probe {name}: GET {protocol}://SERVER{port}{probe.path}{host}"
            f" every {_seconds(probe.interval)}"
            f" (timeout {_seconds(probe.timeout)}), down after {probe.unhealthy_threshold},"
            f" up after {probe.healthy_threshold}, status {statuses}{body}")


def _settings_by_pool(config: Config) -> dict[str, list[str]]:
    """Pool name -> names of the backend settings it is used with, in rule order."""
    used: dict[str, list[str]] = {}
    for rule in config.rules:
        for item in (rule, *rule.paths):
            if item.redirect is None:
                names = used.setdefault(item.backend_pool, [])
                if item.backend_settings not in names:
                    names.append(item.backend_settings)
    return used


def _pool_lines(config: Config) -> list[str]:
    lines = []
    used = _settings_by_pool(config)
    for pool in config.backend_pools:
        note = "" if pool.name in used else "  (not used by any rule)"
        lines.append(f'pool "{pool.name}"  {pool.load_balancing}{note}')
        for settings_name in used.get(pool.name, [""]):
            settings = config.settings(settings_name)
            probe = config.probe(settings.probe) if settings.probe else DEFAULT_PROBE
            label = f'"{settings_name}"' if settings_name else "default settings"
            servers = [_server(s, settings.port) for s in pool.servers]
            if pool.app:
                servers.append(f"app:{pool.app}")
            lines.append(f"  with {label}: {_settings_line(settings)}")
            lines.append(f"    servers: {', '.join(servers)}")
            lines.append(f"    {_probe_line(probe, settings)}")
    return lines


def summarize(config: Config) -> str:
    """The summary of a checked Config, one line per fact, about a screen for the sample."""
    gw = config.gateway
    admin = gw.admin_bind or "off"
    log = {"-": "stdout", "": "off"}.get(gw.access_log, gw.access_log)
    lines = [
        f"{config.path}: ok",
        f"gateway: {gw.workers} worker(s), admin {admin}, access log {log} ({gw.log_format}),"
        f" max {gw.max_connections} connections, drain {_seconds(gw.drain_timeout)}"
        f"{_pages(gw.error_pages, ', ')}",
    ]
    return "\n".join(lines + _listener_lines(config) + _pool_lines(config))
