"""The admin endpoint (SPEC 8): /healthz, /backend-health, /metrics and a status page.

A small gevent WSGI server of its own, apart from the listeners. Every
answer is computed at request time from the runtime's current snapshot and
the plain counters of appgw.stats; nothing here is on the proxy's path.
"""
import html
import ipaddress
import json
import logging
import time

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .health import HEALTHY, UNHEALTHY
from .listener import bind_socket
from .stats import BUCKETS

log = logging.getLogger("appgw.admin")

REFRESH_SECONDS = 5


class AdminServer:
    """Serves the admin endpoint on gateway.admin_bind; does nothing when it is ""."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.server = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(runtime))

    def start(self):
        """Binds (raising listener.BindError when it cannot) and serves."""
        gateway = self.runtime.config.gateway
        if not gateway.admin_bind:
            return
        if not _is_loopback(gateway.admin_host):
            log.warning("the admin endpoint listens on %s, which is not a loopback address: "
                        "anyone who reaches it sees the backends and the metrics", gateway.admin_bind)
        sock = bind_socket(gateway.admin_host, gateway.admin_port, backlog=64)
        self.server = WSGIServer(sock, self.app, log=None, error_log=log)
        self.server.start()
        log.info("admin endpoint on http://%s/", gateway.admin_bind)

    def stop(self):
        if self.server is not None:
            self.server.stop(timeout=1)
            self.server = None

    # -- the WSGI app ----------------------------------------------------------

    def app(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        page = PAGES.get(environ.get("PATH_INFO", ""))
        if page is None:
            status, ctype, body, extra = "404 Not Found", "text/plain; charset=utf-8", b"not found\n", []
        elif method not in ("GET", "HEAD"):
            status, ctype, body, extra = ("405 Method Not Allowed", "text/plain; charset=utf-8",
                                          b"method not allowed\n", [("Allow", "GET, HEAD")])
        else:
            ctype, body = page(self)
            status, extra = "200 OK", []
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")] + extra)
        return [b"" if method == "HEAD" else body]

    def page_healthz(self):
        return "text/plain; charset=utf-8", b"ok"

    def page_backend_health(self):
        body = json.dumps(backend_health(self.runtime.snapshot), indent=2) + "\n"
        return "application/json", body.encode()

    def page_metrics(self):
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def page_status(self):
        return "text/html; charset=utf-8", status_page(self.runtime).encode()


PAGES = {
    "/healthz": AdminServer.page_healthz,
    "/backend-health": AdminServer.page_backend_health,
    "/metrics": AdminServer.page_metrics,
    "/": AdminServer.page_status,
}


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- backend health ------------------------------------------------------------

def servers_by_pool(snapshot):
    """[(pool name, [(settings name, endpoint)])] for every pool of the
    config, in config order; a pool that no rule uses has no servers."""
    if snapshot is None:    # not built yet: the admin endpoint binds first
        return []
    used = {}
    for (pool_name, settings_name), backend in snapshot.backends.items():
        used.setdefault(pool_name, []).extend((settings_name, e) for e in backend.endpoints)
    return [(pool.name, used.get(pool.name, [])) for pool in snapshot.config.backend_pools]


def backend_health(snapshot):
    """The JSON document of GET /backend-health (SPEC 8)."""
    pools = []
    for pool_name, servers in servers_by_pool(snapshot):
        pools.append({"name": pool_name, "servers": [{
            "address": endpoint.label,
            "backend_settings": settings_name,
            "health": endpoint.health.state,
            "last_probe": _probe_json(endpoint.health.last),
        } for settings_name, endpoint in servers]})
    return {"backend_pools": pools}


def _probe_json(result):
    if result is None:
        return None
    return {"time": iso_time(result.time), "ok": result.ok, "status": result.status, "reason": result.reason}


def iso_time(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# -- metrics -------------------------------------------------------------------

class Collector:
    """Reads STATS and the current snapshot when scraped."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        stats = self.runtime.stats
        snapshot = self.runtime.snapshot

        requests = CounterMetricFamily("appgw_requests", "Requests answered, by listener, rule and status class.",
                                       labels=["listener", "rule", "code_class"])
        for (listener, rule, code_class), n in sorted(stats.requests.items()):
            requests.add_metric([_label(listener), _label(rule), code_class], n)
        yield requests

        connections = GaugeMetricFamily("appgw_connections_active", "Open client connections, by listener.",
                                        labels=["listener"])
        for listener, n in sorted(stats.connections_active.items()):
            connections.add_metric([_label(listener)], n)
        yield connections

        by_protocol = CounterMetricFamily("appgw_requests_by_protocol", "Requests answered, by client protocol.",
                                          labels=["protocol"])
        total = sum(stats.requests.values())
        by_protocol.add_metric(["HTTP/1"], total - stats.http2_requests)
        by_protocol.add_metric(["HTTP/2"], stats.http2_requests)
        yield by_protocol
        yield GaugeMetricFamily("appgw_http2_connections_active", "Open client connections speaking HTTP/2.",
                                value=stats.http2_connections)

        yield GaugeMetricFamily("appgw_websocket_sessions_active", "Open WebSocket sessions.",
                                value=stats.websocket_active)
        yield CounterMetricFamily("appgw_websocket_sessions", "WebSocket sessions opened.",
                                  value=stats.websocket_total)
        yield CounterMetricFamily("appgw_bytes_received", "Bytes received from clients.",
                                  value=stats.bytes_received)
        yield CounterMetricFamily("appgw_bytes_sent", "Bytes sent to clients.", value=stats.bytes_sent)

        healthy = GaugeMetricFamily("appgw_healthy_servers", "Healthy servers, by pool.", labels=["pool"])
        unhealthy = GaugeMetricFamily("appgw_unhealthy_servers", "Unhealthy servers, by pool.", labels=["pool"])
        for pool_name, servers in servers_by_pool(snapshot):
            states = [endpoint.health.state for _, endpoint in servers]
            healthy.add_metric([pool_name], states.count(HEALTHY))
            unhealthy.add_metric([pool_name], states.count(UNHEALTHY))
        yield healthy
        yield unhealthy

        histogram = HistogramMetricFamily("appgw_backend_response_seconds",
                                          "Time from sending a request to a backend to its response head, by pool.",
                                          labels=["pool"])
        for pool_name, h in sorted(stats.backend_seconds.items()):
            buckets, total = [], 0
            for bound, n in zip(BUCKETS + (float("inf"),), h.counts):
                total += n
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
            histogram.add_metric([pool_name], buckets, h.sum)
        yield histogram

        probes = CounterMetricFamily("appgw_probes", "Health probes, by pool and result (ok, fail).",
                                     labels=["pool", "result"])
        for (pool_name, result), n in sorted(stats.probes.items()):
            probes.add_metric([pool_name, result], n)
        yield probes


def _label(value):
    return "" if value is None else str(value)


# -- the status page -------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f2f2f2; }
.Healthy { background: #c8f0c8; color: #0a5a0a; font-weight: bold; }
.Unhealthy { background: #f8c8c8; color: #8a0000; font-weight: bold; }
.Unknown { background: #eee; color: #555; font-weight: bold; }
.muted { color: #777; }
"""


def status_page(runtime):
    """A page a person reads at a glance: every pool as a table, a coloured
    state per server, the counters; it refreshes itself."""
    snapshot, stats = runtime.snapshot, runtime.stats
    e = html.escape
    out = ['<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
           '<meta http-equiv="refresh" content="%d">' % REFRESH_SECONDS,
           '<title>appgw status</title><style>%s</style></head><body>' % _STYLE,
           '<h1>appgw status</h1>',
           '<p class="muted">%s &middot; refreshes every %d s &middot; '
           '<a href="/backend-health">backend-health</a> &middot; <a href="/metrics">metrics</a></p>'
           % (e(iso_time(time.time())), REFRESH_SECONDS)]
    for pool_name, servers in servers_by_pool(snapshot):
        out.append('<h2>Pool %s</h2>' % e(pool_name))
        if not servers:
            out.append('<p class="muted">not used by any rule</p>')
            continue
        out.append('<table><tr><th>server</th><th>backend settings</th><th>health</th>'
                   '<th>last probe</th><th>result</th></tr>')
        for settings_name, endpoint in servers:
            state, last = endpoint.health.state, endpoint.health.last
            when = iso_time(last.time) if last else "-"
            result = last.reason if last else "no answer yet"
            out.append('<tr><td>%s</td><td>%s</td><td class="%s">%s</td><td>%s</td><td>%s</td></tr>' % (
                e(endpoint.label), e(settings_name or "(default)"), state, state, when, e(result)))
        out.append('</table>')
    out.append('<h2>Traffic</h2><table><tr><th>listener</th><th>rule</th><th>class</th><th>requests</th></tr>')
    for (listener, rule, code_class), n in sorted(stats.requests.items()):
        out.append('<tr><td>%s</td><td>%s</td><td>%s</td><td>%d</td></tr>' % (
            e(str(listener)), e(str(rule or "")), e(code_class), n))
    if not stats.requests:
        out.append('<tr><td colspan="4" class="muted">no requests yet</td></tr>')
    out.append('</table><table>')
    for name, value in (("open connections", sum(stats.connections_active.values())),
                        ("of which HTTP/2", stats.http2_connections),
                        ("requests over HTTP/2", stats.http2_requests),
                        ("WebSocket sessions open", stats.websocket_active),
                        ("WebSocket sessions total", stats.websocket_total),
                        ("bytes received", stats.bytes_received),
                        ("bytes sent", stats.bytes_sent)):
        out.append('<tr><th>%s</th><td>%d</td></tr>' % (name, value))
    out.append('</table></body></html>\n')
    return "\n".join(out)
