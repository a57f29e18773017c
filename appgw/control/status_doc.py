"""The JSON document behind the status page (GET /status.json).

Built at request time from the current snapshot, the plain counters of
appgw.stats and the rate history; pure apart from reading those. The page
(appgw/control/status_page.py) only renders what this returns, so everything a
person reads there is also here for a script.
"""
import os

from appgw import __version__
from appgw.control.peerstate import endpoint_key
from appgw.control.rates import WINDOW


def status_document(snapshot, servers, stats, history, wall_now, mono_now, workers=1,
                    endpoints=None, reporting=1):
    """The whole page's data. `servers`: [(pool name, [(settings name,
    endpoint)])] as admin.servers_by_pool gives them. `snapshot` is None
    before the first one is built (the admin endpoint binds first): then
    there is only the header. With several workers, `stats` are their sums,
    `endpoints` {peers.endpoint_key: [active, sessions]} summed too, and
    `reporting` how many workers answered."""
    totals = listener_totals(stats)
    doc = {
        "version": __version__,
        "pid": os.getpid(),
        "workers": workers,
        "workers_reporting": reporting,
        "time": wall_now,
        "started": stats.started,
        "uptime": max(0.0, wall_now - stats.started),
        "rate_window": WINDOW,
        "history_step": history.step,
        "totals": {
            "requests": sum(n for (_, _, cls), n in stats.requests.items() if cls != "1xx"),
            "errors": sum(n for (_, _, cls), n in stats.requests.items() if cls == "5xx"),
            "websocket_sessions_ended": sum(stats.websocket_ended.values()),
            "websocket_sessions_open": stats.websocket_active,
            "connections_open": sum(stats.connections_active.values()),
            "http2_requests": stats.http2_requests,
            "http2_connections_open": stats.http2_connections,
            "bytes_received": stats.bytes_received,
            "bytes_sent": stats.bytes_sent,
            "rate": _sum_rates(history, totals, mono_now),
        },
        "listeners": [],
        "backend_pools": [],
    }
    if snapshot is None:
        return doc
    config = snapshot.config
    for listener in config.listeners:
        rule = config.rule_by_listener[listener.name]
        doc["listeners"].append({
            "name": listener.name,
            "protocol": listener.protocol,
            "bind": listener.address,
            "host_names": list(listener.host_names),
            "rule": rule.name,
            "default": target(rule),
            "paths": [{"paths": list(p.paths), "target": target(p)} for p in rule.paths],
            "connections_open": stats.connections_active.get(listener.name, 0),
            "responses": responses(stats, listener.name),
            "rate": history.rate(listener.name, mono_now, totals.get(listener.name, 0)),
            "history": history.series(listener.name),
        })
    doc["backend_pools"] = pools(snapshot, servers, stats, endpoints)
    # Over the configured listeners, so that no traffic yet reads 0, not "no data".
    rates = [listener["rate"] for listener in doc["listeners"] if listener["rate"] is not None]
    doc["totals"]["rate"] = sum(rates) if rates else None
    return doc


def listener_totals(stats):
    """listener -> every request and session it finished: what the rate
    history samples."""
    totals = {}
    for (listener, _, _), n in stats.requests.items():
        totals[listener] = totals.get(listener, 0) + n
    return totals


def _sum_rates(history, totals, mono_now):
    rates = [history.rate(name, mono_now, total) for name, total in totals.items()]
    rates = [r for r in rates if r is not None]
    return sum(rates) if rates else None


def responses(stats, listener):
    """Answers of one listener by class, with its 101s counted as the
    WebSocket sessions they began (each is logged when it ends)."""
    out = {"websocket": stats.websocket_ended.get(listener, 0), "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    for (name, _, cls), n in stats.requests.items():
        if name == listener and cls in out:
            out[cls] += n
    return out


def target(item):
    """A rule's or path entry's target: a pool with its settings, or a redirect."""
    if item.redirect is not None:
        r = item.redirect
        return {"redirect": r.status, "to": ("listener " + r.listener) if r.listener else r.url}
    return {"pool": item.backend_pool, "settings": item.backend_settings or "(defaults)"}


def pools(snapshot, servers, stats, summed=None):
    out = []
    for pool_name, endpoints in servers:
        rows = []
        for settings_name, endpoint in endpoints:
            health, counters = endpoint.health, stats.servers.get(endpoint.label)
            last = health.last
            active, sessions = endpoint.active, len(endpoint.sessions)
            if summed is not None:
                active, sessions = summed.get(endpoint_key(pool_name, settings_name, endpoint), (active, sessions))
            rows.append({
                "address": endpoint.label,
                "backend_settings": settings_name or "(defaults)",
                "health": health.state,
                "since": health.since,
                "reason": health.reason,
                "last_probe": None if last is None else {
                    "time": last.time, "ok": last.ok, "status": last.status, "reason": last.reason},
                "in_flight": max(0, active - sessions),
                "websocket_open": sessions,
                "requests": counters.requests if counters else 0,
                "errors": counters.errors if counters else 0,
                "websocket_sessions": counters.websocket_sessions if counters else 0,
                "p50": counters.seconds.quantile(0.5) if counters else None,
                "p99": counters.seconds.quantile(0.99) if counters else None,
            })
        out.append({"name": pool_name, "load_balancing": snapshot.config.pool_by_name[pool_name].load_balancing,
                    "servers": rows})
    return out
