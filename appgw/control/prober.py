"""Active health probes: one greenlet per endpoint, probing with `requests`.

The process is monkey-patched by appgw.cli before `requests` or `ssl` are
imported, so every probe blocks only its own greenlet.

A probe is a GET of `probe.path` to the endpoint's address on the probe's
port (else the endpoint's), with the probe's protocol (else the settings'),
and `Host` from the probe, else the settings' host_name, else the server
address. It succeeds when the status is in `match_status` and the first
`BODY_LIMIT` bytes of the body contain `match_body`. The whole probe
(connect, TLS, request, answer) is bounded by `timeout`.

Each prober owns a requests `HTTPAdapter`, requests' transport, which
always hands out the one urllib3 pool built for its endpoint (TCP or unix
socket, TLS or not); the connection is kept alive between probes when the
server allows it, which saves about 40 % of the CPU of a probe. The prober
sends through the adapter, not a `Session`: a probe wants none of what a
session adds (cookies kept between requests, redirects followed, proxies
from the environment, merged defaults), and skipping it saves CPU on every
probe (see `Probers`).
"""
import logging
import random
import socket
import ssl
import time

import gevent
import requests
from gevent.event import Event
import urllib3
from gevent.monkey import get_original
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from appgw.control.health import ProbeResult
from appgw.control.stats import STATS
from appgw.upstream.endpoint import connect_unix, tls_client_context

_real_select = get_original("select", "select")

log = logging.getLogger("appgw.prober")

BODY_LIMIT = 64 * 1024      # match_body is looked for in this much of the body
JITTER = 0.1                # each wait is interval x [1 - JITTER, 1 + JITTER]
TICK_RANGE = (0.001, 0.1)   # the grid wake-ups are rounded to: interval x JITTER, within this
HURRY_INTERVAL = 0.1        # the interval at most while requests wait for the server (retry_window)
USER_AGENT = "appgw-probe"


class ProbeTarget:
    """Everything one endpoint's probe needs, worked out once: the URL, the
    headers, the TLS settings and the urllib3 pool to use."""

    def __init__(self, endpoint, settings, probe):
        self.probe = probe
        self.scheme = probe.protocol or settings.protocol
        https = self.scheme == "https"
        if endpoint.path:
            port = 0
            address_name = "localhost"   # a unix socket has no host name of its own
        else:
            port = probe.port or endpoint.port
            address_name = _host_for_header(endpoint.host, port, https)
        self.host_header = probe.host or settings.host_name or address_name
        self.path = probe.path or "/"
        tls = None
        if https:
            tls = tls_client_context(settings.verify_tls, settings.trusted_root)
        # SNI and the certificate check use the name the probe asks for (its
        # Host), unless that is an IP literal or a unix-socket placeholder.
        tls_name = _strip_port(self.host_header)
        if tls_name == "localhost" and endpoint.path:
            tls_name = None
        self.timeout = urllib3.Timeout(connect=probe.timeout, read=probe.timeout)
        pool_kw = dict(timeout=self.timeout, maxsize=1, retries=False)
        if https:
            pool_kw.update(ssl_context=tls, server_hostname=tls_name or endpoint.host or None,
                           cert_reqs="CERT_REQUIRED" if settings.verify_tls else "CERT_NONE")
        if endpoint.path:
            cls = _UnixHTTPSConnectionPool if https else _UnixHTTPConnectionPool
            self.pool = cls("localhost", socket_path=endpoint.path, **pool_kw)
            url_host = "localhost"
        else:
            cls = _TCPHTTPSConnectionPool if https else _TCPHTTPConnectionPool
            self.pool = cls(endpoint.host, port, **pool_kw)
            url_host = "[%s]:%d" % (endpoint.host, port) if ":" in endpoint.host else "%s:%d" % (endpoint.host, port)
        self.url = "%s://%s%s" % (self.scheme, url_host, self.path)
        # Prepared once: preparing a request and merging the session's
        # settings cost more CPU than sending it.
        self.request = requests.Request("GET", self.url, headers={
            "Host": self.host_header, "User-Agent": USER_AGENT, "Accept": "*/*"}).prepare()


class _Adapter(HTTPAdapter):
    """Always the endpoint's own pool; TLS was configured when it was built.

    A probe sends the same request every time, never through a proxy, and
    reads only the status and the body: the request target is worked out
    once, and the response carries no copy of the headers and no cookies."""

    def __init__(self, pool, request):
        super().__init__(max_retries=0)
        self._pool = pool
        self._target = request.path_url

    def request_url(self, request, proxies):
        return self._target

    def build_response(self, req, resp):
        response = requests.Response()
        response.status_code = resp.status
        response.reason = resp.reason
        response.raw = resp
        response.url = req.url
        response.request = req
        response.connection = self
        return response

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):
        return self._pool

    def cert_verify(self, conn, url, verify, cert):
        pass

    def close(self):
        self._pool.close()


class _CheapCheckMixin:
    """urllib3 asks whether an idle connection is still open before reusing
    it; with gevent's patched poll that costs a watcher each time, while the
    unpatched select with a zero timeout never blocks (as in upstream.py)."""

    @property
    def is_connected(self):
        if self.sock is None:
            return False
        try:
            return not _real_select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False


class _TCPHTTPConnection(_CheapCheckMixin, HTTPConnection):
    pass


class _TCPHTTPSConnection(_CheapCheckMixin, HTTPSConnection):
    pass


class _TCPHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _TCPHTTPConnection


class _TCPHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _TCPHTTPSConnection


class _UnixConnectionMixin(_CheapCheckMixin):
    """Connects to `socket_path` (passed through the pool's conn_kw) instead of host:port."""

    def __init__(self, *args, socket_path, **kwargs):
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self):
        return connect_unix(self.socket_path, self.timeout)


class _UnixHTTPConnection(_UnixConnectionMixin, HTTPConnection):
    pass


class _UnixHTTPSConnection(_UnixConnectionMixin, HTTPSConnection):
    pass


class _UnixHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _UnixHTTPConnection


class _UnixHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _UnixHTTPSConnection


def probe_once(adapter, target) -> ProbeResult:
    """One probe, bounded by the probe's timeout as a whole."""
    probe = target.probe
    started = time.time()
    try:
        with gevent.Timeout(probe.timeout):
            response = adapter.send(target.request, stream=True, timeout=target.timeout)
            try:
                status = response.status_code
                # Read even when no body is matched: a body read to its end
                # hands the connection back to the pool for the next probe;
                # a longer one is cut off and its connection closed.
                body = _read_some(response.raw, BODY_LIMIT)
            finally:
                response.close()
    except gevent.Timeout:
        return ProbeResult(started, False, None, "timeout")
    except Exception as exc:  # requests' and urllib3's failures, OSError, ...
        return ProbeResult(started, False, None, failure_reason(exc))
    if not probe.status_matches(status):
        return ProbeResult(started, False, status, "status %d not in %s" % (status, format_ranges(probe.match_status)))
    if probe.match_body and probe.match_body.encode() not in body:
        return ProbeResult(started, False, status, "body does not contain %r" % probe.match_body)
    return ProbeResult(started, True, status, "status %d" % status)


def _read_some(raw, limit):
    """Up to `limit` bytes of the decoded body. urllib3's stream (not its
    read(amt), which leaves chunked bodies to http.client) names what is
    wrong with a broken chunked body."""
    data = b""
    for piece in raw.stream(16384, decode_content=True):
        data += piece
        if len(data) >= limit:
            break
    return data[:limit]


def next_due(started, interval, draw):
    """When to probe next, for a probe that started at `started` (monotonic)
    and a jitter `draw` in [1 - JITTER, 1 + JITTER]: see Prober."""
    tick = min(max(interval * JITTER, TICK_RANGE[0]), TICK_RANGE[1])
    return round((started + interval * draw) / tick) * tick


def format_ranges(ranges) -> str:
    return ",".join(str(lo) if lo == hi else "%d-%d" % (lo, hi) for lo, hi in ranges)


def failure_reason(exc) -> str:
    """A short reason for a probe that got no answer: timeout, connection
    refused, TLS error, cannot resolve, or the error's own words."""
    chain = _causes(exc)
    # Specific causes first: urllib3's NewConnectionError (refused, cannot
    # resolve) is a subclass of its ConnectTimeoutError.
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "cannot resolve: %s" % (e.strerror or e)
        if isinstance(e, FileNotFoundError):
            return "no such socket"
        if isinstance(e, ssl.SSLCertVerificationError):
            return "TLS error: %s" % (e.verify_message or getattr(e, "reason", None) or e)
        if isinstance(e, ssl.SSLError):
            code = getattr(e, "reason", None)
            return "TLS error: %s" % (code.lower().replace("_", " ") if code else _short(e))
    for e in chain:
        if isinstance(e, (TimeoutError, requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)) \
                or type(e) in (requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
            return "timeout"
    for e in chain:
        if isinstance(e, urllib3.exceptions.SSLError):
            return "TLS error: %s" % _short(e)
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if isinstance(e, urllib3.exceptions.ProtocolError):
            return "bad answer: %s" % _short(e)
    for e in reversed(chain):
        if isinstance(e, OSError) and e.strerror:
            return "connection failed: %s" % e.strerror.lower()
    return "probe failed: %s" % _short(exc)


def _causes(exc):
    """The exception and everything it wraps (cause, context, first arg)."""
    seen, todo = [], [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in e.args if isinstance(a, BaseException)]
    return seen


def _short(exc):
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _host_for_header(host, port, https):
    shown = "[%s]" % host if ":" in host else host
    return shown if port == (443 if https else 80) else "%s:%d" % (shown, port)


def _strip_port(host_header):
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header


class Prober:
    """The greenlet that probes one endpoint: at once, then every interval
    (with jitter), until stopped.

    Wake-ups are rounded to the nearest tick of a grid, interval x JITTER
    apart (within TICK_RANGE), on the monotonic clock every prober shares:
    probers due in the same tick run back to back in one turn of the event
    loop instead of one by one between idle gaps. A probe that runs alone
    after an idle gap costs about twice the CPU of one that runs next to
    others (its code and data have left the caches), so this halves the cost
    of probing. Rounding to the nearest tick keeps the mean wait at one
    interval, and the jitter still moves each prober among the ticks it
    spans (three or more), so they spread over the grid. The ticks are at
    most 100 ms apart so that a
    tick's burst of probes, which proxied requests arriving then wait for,
    stays small: the probes due in 100 ms.

    While requests wait for the server (a pool's retry_window), the
    interval is HURRY_INTERVAL at most, so that a server coming back is
    seen within that even with a long interval; a request that starts
    waiting sets `hurry`, which shortens the sleep in progress."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.pool_name, _, settings, probe = endpoint.key
        self.target = ProbeTarget(endpoint, settings, probe)
        endpoint.health.label = "%s (pool %s)" % (endpoint.label, self.pool_name)
        self.adapter = _Adapter(self.target.pool, self.target.request)
        self.greenlet = None
        self.hurry = endpoint.health.wakeup.hurry = Event()

    def start(self):
        self.greenlet = gevent.spawn(self._run)

    def stop(self):
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        self.adapter.close()

    def _run(self):
        probe = self.target.probe
        counters = STATS.probes
        ok_key, fail_key = (self.pool_name, "ok"), (self.pool_name, "fail")
        while True:
            started = time.monotonic()
            result = probe_once(self.adapter, self.target)
            self.endpoint.health.record(result)
            counters[ok_key if result.ok else fail_key] += 1
            log.debug("probe %s: %s", self.endpoint.label, result.reason)
            self.sleep(started, probe.interval, random.uniform(1 - JITTER, 1 + JITTER))

    def sleep(self, started, interval, draw):
        """Until the next probe is due; sooner while requests wait."""
        wakeup = self.endpoint.health.wakeup
        while True:
            hurried = min(interval, HURRY_INTERVAL) if wakeup.waiters else interval
            self.hurry.clear()
            if not self.hurry.wait(max(0.0, next_due(started, hurried, draw) - time.monotonic())):
                return


class Probers:
    """The probers of the current snapshot, one per endpoint.

    Cost, measured (2-core dev box): 100 servers at interval 1 s take about
    6 % of one core, ~0.6 ms of CPU per probe with the connection kept alive,
    nearly all of it in urllib3 and http.client."""

    def __init__(self):
        self.by_key = {}

    def update(self, snapshot):
        """Start probers for new endpoints and stop those no longer in the
        snapshot; an endpoint carried over keeps its prober and its state."""
        keep = {}
        for key, endpoint in snapshot.endpoints.items():
            prober = self.by_key.pop(key, None)
            if prober is not None and prober.endpoint is not endpoint:
                prober.stop()
                prober = None
            if prober is None:
                prober = Prober(endpoint)
                prober.start()
            keep[key] = prober
        for prober in self.by_key.values():
            prober.stop()
        self.by_key = keep

    def stop(self):
        for prober in self.by_key.values():
            prober.stop()
        self.by_key = {}
