"""The admin endpoint (SPEC 8): /healthz, /backend-health, /metrics, the
status page (/) and its data (/status.json).

A small gevent WSGI server of its own, apart from the listeners. Every
answer is computed at request time from the runtime's current snapshot and
the plain counters of appgw.stats; nothing here is on the proxy's path. One
greenlet samples the request counters every rates.STEP seconds for the
page's rates and sparklines.
"""
import ipaddress
import json
import logging
import os
import time

import gevent
from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appgw.acme import report as cert_report
from appgw.control.health import HEALTHY, UNHEALTHY
from appgw.control.listener import bind_socket
from appgw.control.peers import gather
from appgw.control.peerstate import PeerBook, dump
from appgw.control.rates import RateHistory
from appgw.control.stats import BUCKETS
from appgw.control.status_doc import listener_totals, status_document
from appgw.control.status_page import PAGE

log = logging.getLogger("appgw.admin")


class AdminServer:
    """Serves the admin endpoint on gateway.admin_bind; does nothing when it is ""."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.server = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(runtime, self.view))
        self.registry.register(cert_report.ExpiryCollector(runtime))
        self.history = RateHistory()
        self.sampler = None
        self.book = PeerBook(runtime.since) if runtime.peers is not None else None

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
        self.sampler = gevent.spawn(self._sample_forever)
        log.info("admin endpoint on http://%s/", gateway.admin_bind)

    def stop(self):
        if self.sampler is not None:
            self.sampler.kill(block=False)
            self.sampler = None
        if self.server is not None:
            self.server.stop(timeout=1)
            self.server = None

    def _sample_forever(self):
        # Paced by the monotonic clock, so a slow sample does not drift the grid.
        due = time.monotonic()
        while True:
            stats = self.view()[0]
            self.history.sample(time.monotonic(), listener_totals(stats))
            due += self.history.step
            gevent.sleep(max(0.0, due - time.monotonic()))

    def view(self):
        """(counters, {endpoint key: [active, sessions]} or None, workers
        that reported): this worker's own, or with `workers = N` the sum
        over every worker that answered."""
        runtime = self.runtime
        peers = runtime.peers
        if peers is None:
            return runtime.stats, None, 1
        own = dump(runtime.stats, servers_by_pool(runtime.snapshot), runtime.since, os.getpid())
        answers = gather(peers)
        try:
            answered = self.book.update(answers)
            stats, endpoints = self.book.total(own)
        except (KeyError, TypeError, ValueError) as exc:   # a state this code did not write
            log.warning("the other workers' counters are left out: %s", exc)
            return runtime.stats, None, 1
        return stats, endpoints, 1 + answered

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
        return "text/html; charset=utf-8", PAGE

    def page_status_json(self):
        runtime = self.runtime
        stats, endpoints, reporting = self.view()
        workers = runtime.peers.count if runtime.peers is not None else 1
        doc = status_document(runtime.snapshot, servers_by_pool(runtime.snapshot), stats,
                              self.history, time.time(), time.monotonic(), workers,
                              endpoints=endpoints, reporting=reporting)
        doc["certificates"] = cert_report.certificates(runtime)["certificates"]
        return "application/json", json.dumps(doc).encode()

    def page_certificates(self):
        body = json.dumps(cert_report.certificates(self.runtime), indent=2) + "\n"
        return "application/json", body.encode()


PAGES = {
    "/healthz": AdminServer.page_healthz,
    "/backend-health": AdminServer.page_backend_health,
    "/metrics": AdminServer.page_metrics,
    "/": AdminServer.page_status,
    "/status.json": AdminServer.page_status_json,
    "/certificates": AdminServer.page_certificates,
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
    used, seen = {}, set()
    for backend in snapshot.backends.values():
        # Entries with their own rules have Backends of their own over the
        # same endpoints: each endpoint once.
        for endpoint in backend.endpoints:
            if id(endpoint) not in seen:
                seen.add(id(endpoint))
                used.setdefault(backend.pool.name, []).append((backend.settings.name, endpoint))
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
            "state_change": _change_json(endpoint.health),
            "last_passive_failure": _passive_json(endpoint.health.passive),
        } for settings_name, endpoint in servers]})
    return {"backend_pools": pools}


def _change_json(health):
    """Why the server is in its state: the result that last changed it,
    a probe's or a connect's while proxying (`source`)."""
    if health.changed is None:
        return None
    return {"time": iso_time(health.changed), "source": health.source, "reason": health.reason}


def _passive_json(failure):
    if failure is None:
        return None
    return {"time": iso_time(failure.time), "reason": failure.reason}


def _probe_json(result):
    if result is None:
        return None
    return {"time": iso_time(result.time), "ok": result.ok, "status": result.status, "reason": result.reason}


def iso_time(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# -- metrics -------------------------------------------------------------------

class Collector:
    """Reads the counters (`view()`, as AdminServer.view gives them) and the
    current snapshot when scraped."""

    def __init__(self, runtime, view):
        self.runtime = runtime
        self.view = view

    def collect(self):
        stats, _, reporting = self.view()
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

        yield GaugeMetricFamily("appgw_workers_reporting",
                                "Worker processes whose counters these are (workers = N: those that answered).",
                                value=reporting)

        probes = CounterMetricFamily("appgw_probes", "Health probes, by pool and result (ok, fail).",
                                     labels=["pool", "result"])
        for (pool_name, result), n in sorted(stats.probes.items()):
            probes.add_metric([pool_name, result], n)
        yield probes


def _label(value):
    return "" if value is None else str(value)
