"""Counters of one worker, kept as plain numbers on the hot path.

The admin endpoint turns them into Prometheus text when scraped, so a
request costs a few integer additions, not a metrics library call."""
import bisect
import collections

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


class Stats:
    def __init__(self):
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

    def request(self, listener, rule, status, received, sent):
        self.requests[(listener, rule, _CLASSES[status // 100])] += 1
        self.bytes_received += received
        self.bytes_sent += sent


_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx") + ("5xx",) * 5

STATS = Stats()
