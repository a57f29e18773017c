"""The counters of one worker as a JSON-able state, and the sum of several
(for the admin endpoint of `workers = N`, see peers.py).

Counters are summed (requests, bytes, sessions, histograms, probes), and so
are the open connections and sessions of each server. Pure: tested without
sockets.
"""
from appgw.control.stats import BUCKETS, Stats


def dump(stats, servers):
    """One worker's counters (a Stats) and the open connections and sessions
    of each of its servers (`servers` as admin.servers_by_pool gives them)."""
    return {
        "started": stats.started,
        "requests": [[listener, rule, cls, n] for (listener, rule, cls), n in stats.requests.items()],
        "connections_active": dict(stats.connections_active),
        "websocket_active": stats.websocket_active,
        "websocket_total": stats.websocket_total,
        "bytes_received": stats.bytes_received,
        "bytes_sent": stats.bytes_sent,
        "backend_seconds": {pool: _histogram(h) for pool, h in stats.backend_seconds.items()},
        "probes": [[pool, result, n] for (pool, result), n in stats.probes.items()],
        "http2_requests": stats.http2_requests,
        "http2_connections": stats.http2_connections,
        "websocket_ended": dict(stats.websocket_ended),
        "servers": {label: [c.requests, c.errors, c.websocket_sessions, _histogram(c.seconds)]
                    for label, c in stats.servers.items()},
        "endpoints": {endpoint_key(pool, settings, endpoint): [endpoint.active, len(endpoint.sessions)]
                      for pool, endpoints in servers for settings, endpoint in endpoints},
    }


def endpoint_key(pool, settings, endpoint):
    return "%s\n%s\n%s" % (pool, settings, endpoint.label)


def add(stats, state):
    """Adds a dumped worker's counters into `stats` (a Stats); returns its
    endpoints' {key: [active, sessions]}."""
    for listener, rule, cls, n in state["requests"]:
        stats.requests[(listener, rule, cls)] += n
    for listener, n in state["connections_active"].items():
        stats.connections_active[listener] += n
    stats.websocket_active += state["websocket_active"]
    stats.websocket_total += state["websocket_total"]
    stats.bytes_received += state["bytes_received"]
    stats.bytes_sent += state["bytes_sent"]
    for pool, h in state["backend_seconds"].items():
        _add_histogram(stats.backend_seconds[pool], h)
    for pool, result, n in state["probes"]:
        stats.probes[(pool, result)] += n
    stats.http2_requests += state["http2_requests"]
    stats.http2_connections += state["http2_connections"]
    for listener, n in state["websocket_ended"].items():
        stats.websocket_ended[listener] += n
    for label, (requests, errors, sessions, h) in state["servers"].items():
        counters = stats.servers[label]
        counters.requests += requests
        counters.errors += errors
        counters.websocket_sessions += sessions
        _add_histogram(counters.seconds, h)
    return state["endpoints"]


def merged(own, others):
    """A Stats of this worker's `own` dumped state plus the `others'`, with
    this worker's start time, and every endpoint's summed [active, sessions]."""
    stats = Stats()
    stats.started = own["started"]
    endpoints = {}
    for state in [own] + list(others):
        for key, (active, sessions) in add(stats, state).items():
            total = endpoints.setdefault(key, [0, 0])
            total[0] += active
            total[1] += sessions
    return stats, endpoints


def _histogram(h):
    return [list(h.counts), h.sum, h.count]


def _add_histogram(h, dumped):
    counts, total, count = dumped
    if len(counts) != len(BUCKETS) + 1:
        raise ValueError("histogram of %d buckets" % len(counts))
    for i, n in enumerate(counts):
        h.counts[i] += n
    h.sum += total
    h.count += count
