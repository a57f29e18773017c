"""The counters of one worker as a JSON-able state, and the sum of several
(for the admin endpoint of `workers = N`, see peers.py).

Counters are summed (requests, bytes, sessions, histograms, probes), and so
are the gauges: open connections, sessions, and each server's. A sum of
counters must only grow, or Prometheus reads a reset where there was none:
`PeerBook` keeps worker 0's memory of the others for that. Pure: tested
without sockets.
"""
from appgw.control.stats import BUCKETS, Stats


def dump(stats, servers, since=0.0, pid=0):
    """One worker's counters (a Stats) and the open connections and sessions
    of each of its servers (`servers` as admin.servers_by_pool gives them);
    `since` (time.monotonic(), one clock for every process) and `pid` say
    which process it is."""
    return {
        "pid": pid,
        "since": since,
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


def add(stats, state, sign=1, gauges=True):
    """Adds a dumped worker's counters (times `sign`) into `stats` (a
    Stats), and its gauges when `gauges`; returns its endpoints'
    {key: [active, sessions]} ({} without gauges)."""
    for listener, rule, cls, n in state["requests"]:
        stats.requests[(listener, rule, cls)] += sign * n
    stats.websocket_total += sign * state["websocket_total"]
    stats.bytes_received += sign * state["bytes_received"]
    stats.bytes_sent += sign * state["bytes_sent"]
    for pool, h in state["backend_seconds"].items():
        _add_histogram(stats.backend_seconds[pool], h, sign)
    for pool, result, n in state["probes"]:
        stats.probes[(pool, result)] += sign * n
    stats.http2_requests += sign * state["http2_requests"]
    for listener, n in state["websocket_ended"].items():
        stats.websocket_ended[listener] += sign * n
    for label, (requests, errors, sessions, h) in state["servers"].items():
        counters = stats.servers[label]
        counters.requests += sign * requests
        counters.errors += sign * errors
        counters.websocket_sessions += sign * sessions
        _add_histogram(counters.seconds, h, sign)
    if not gauges:
        return {}
    for listener, n in state["connections_active"].items():
        stats.connections_active[listener] += n
    stats.websocket_active += state["websocket_active"]
    stats.http2_connections += state["http2_connections"]
    return state["endpoints"]


def merged(own, others, base=(), offsets=()):
    """A Stats of this worker's `own` dumped state plus the `others'`, plus
    the counters of `base` states less those of `offsets` (see PeerBook),
    with this worker's start time; and every endpoint's summed [active,
    sessions]."""
    stats = Stats()
    stats.started = own["started"]
    endpoints = {}
    for state in [own] + list(others):
        for key, (active, sessions) in add(stats, state).items():
            total = endpoints.setdefault(key, [0, 0])
            total[0] += active
            total[1] += sessions
    for state in base:
        add(stats, state, gauges=False)
    for state in offsets:
        add(stats, state, sign=-1, gauges=False)
    return stats, endpoints


class PeerBook:
    """Worker 0's memory of the other workers, so that the sums it shows
    only grow while it runs:
    - a worker that does not answer (busy, stopped, being replaced) counts
      with what it answered last;
    - a worker that was replaced (another pid at its index) leaves what it
      had counted in a baseline;
    - a worker that was running before this worker 0 began (worker 0 itself
      was replaced) counts only what it did since: the sums start again from
      zero with the admin endpoint, as after a restart, which Prometheus
      reads as the reset it is.
    """

    def __init__(self, own_since):
        self.own_since = own_since
        self.last = {}        # index -> the state it answered last
        self.offsets = {}     # index -> its state when first seen, when it predates this worker
        self.base = Stats()   # what replaced workers had counted (less their offsets)

    def update(self, answers):
        """Takes {index: state, or None for no answer}; returns how many answered."""
        answered = 0
        for index, state in answers.items():
            if state is None:
                continue
            answered += 1
            last = self.last.get(index)
            if last is not None and last["pid"] != state["pid"]:
                add(self.base, last, gauges=False)
                offset = self.offsets.pop(index, None)
                if offset is not None:
                    add(self.base, offset, sign=-1, gauges=False)
            if (last is None or last["pid"] != state["pid"]) and state["since"] < self.own_since:
                self.offsets[index] = state
            self.last[index] = state
        return answered

    def total(self, own):
        """merged() of `own` and every worker as last seen."""
        return merged(own, self.last.values(), [dump(self.base, ())], self.offsets.values())


def _histogram(h):
    return [list(h.counts), h.sum, h.count]


def _add_histogram(h, dumped, sign=1):
    counts, total, count = dumped
    if len(counts) != len(BUCKETS) + 1:
        raise ValueError("histogram of %d buckets" % len(counts))
    for i, n in enumerate(counts):
        h.counts[i] += sign * n
    h.sum += sign * total
    h.count += sign * count
