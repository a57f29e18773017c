"""Counters of one worker, kept as plain numbers on the hot path.

The admin endpoint turns them into Prometheus text when scraped, so a
request costs a few integer additions, not a metrics library call."""
import bisect
import collections
import time

# Upper bounds of the backend response-time histogram, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds):
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def quantile(self, q):
        """The q-quantile (0 < q < 1) estimated as Prometheus's
        histogram_quantile does: linear within the bucket it falls in.
        None without observations; the last finite bound when it falls in
        the +Inf bucket (the histogram knows no more)."""
        if not self.count:
            return None
        rank, seen, lower = q * self.count, 0, 0.0
        for bound, n in zip(BUCKETS, self.counts):
            if n and seen + n >= rank:
                return lower + (bound - lower) * (rank - seen) / n
            seen += n
            lower = bound
        return BUCKETS[-1]


class ServerCounters:
    """What the finished requests of one server add up to."""

    __slots__ = ("requests", "errors", "websocket_sessions", "seconds")

    def __init__(self):
        self.requests = 0              # answered, WebSocket sessions excluded
        self.errors = 0                # answered 5xx
        self.websocket_sessions = 0    # ended after a 101
        self.seconds = Histogram()     # request durations as the access log shows them


class Stats:
    def __init__(self):
        self.started = time.time()
        self.requests = collections.Counter()          # (listener, rule, "2xx") -> n
        self.connections_active = collections.Counter()  # listener -> n
        self.websocket_active = 0
        self.websocket_total = 0
        self.bytes_received = 0                        # from clients
        self.bytes_sent = 0                            # to clients
        self.backend_seconds = collections.defaultdict(Histogram)  # pool -> histogram
        self.probes = collections.Counter()            # (pool, "ok"|"fail") -> n
        self.http2_requests = 0                        # of the requests above, those over HTTP/2
        self.http2_connections = 0                     # open client connections speaking HTTP/2
        self.websocket_ended = collections.Counter()   # listener -> sessions ended (their 101s)
        self.servers = collections.defaultdict(ServerCounters)  # server label -> counters

    def request(self, listener, rule, status, received, sent):
        self.requests[(listener, rule, _CLASSES[status // 100])] += 1
        self.bytes_received += received
        self.bytes_sent += sent

    def finished(self, entry, now=None):
        """Counts one finished request or WebSocket session (an
        accesslog.Entry): the one call made wherever an entry is logged,
        whether or not the access log is on."""
        status = entry.status or 0
        self.request(entry.listener, entry.rule, status, entry.received, entry.sent)
        # A session is a 101 over HTTP/1.1, a 200 with an end cause over HTTP/2.
        session = status == 101 or bool(entry.ended)
        if session:
            self.websocket_ended[entry.listener] += 1
        if entry.server == "-":     # refused or redirected: no server took part
            return
        server = self.servers[entry.server]
        if session:
            server.websocket_sessions += 1
            return
        server.requests += 1
        if status >= 500:
            server.errors += 1
        server.seconds.observe((time.time() if now is None else now) - entry.start)


_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx") + ("5xx",) * 5

STATS = Stats()
