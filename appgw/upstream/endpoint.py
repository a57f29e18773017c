"""Endpoints: one server as reached with one backend settings, and its keep-alive pool.

An idle pooled connection that the backend closed meanwhile is found at
checkout with a non-blocking peek (readable means FIN or stray bytes) and
dropped, so most stale connections never carry a request.
"""
import hashlib
import socket
import ssl
import time

from gevent.monkey import get_original

from appgw.control.health import HealthState
from appgw.upstream.sockio import PLAIN, kernel, read_watcher

# The unpatched select: a zero-timeout poll that never yields to the hub.
_real_select = get_original("select", "select")

MAX_IDLE = 256


def tls_client_context(verify: bool, trusted_root: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=trusted_root or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF   # a bare FIN is a half-close (WebSocket)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Endpoint:
    """Where and how to connect, the health state the balancer reads, the
    count of requests in flight (least_connections) and the idle connections."""

    __slots__ = ("key", "label", "host", "port", "path", "tls", "server_hostname",
                 "address_host", "connect_timeout", "request_timeout", "health", "active", "idle", "sessions", "cookie")

    def __init__(self, key, label, *, host="", port=0, path="", tls=None, connect_timeout=5.0,
                 request_timeout=20.0, healthy_threshold=1, unhealthy_threshold=3):
        self.key = key
        self.label = label            # shown in logs and /backend-health
        self.host, self.port, self.path = host, port, path
        self.tls = tls
        # Also for an IP address: ssl then sends no SNI but checks the
        # certificate's IP subjectAltName.
        self.server_hostname = host if tls is not None and host else None
        # Host header for pick_host_name_from_backend.
        self.address_host = (host if ":" not in host else "[%s]" % host) + ("" if port in (80, 443) else ":%d" % port) \
            if host else "localhost"
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.health = HealthState(label, healthy_threshold, unhealthy_threshold)
        self.active = 0
        self.idle = []
        self.sessions = set()   # open WebSocket relays, for draining a removed server
        self.cookie = None      # affinity cookie value, set by the snapshot

    def set_cookie_identity(self, pool_name, address):
        """The affinity cookie names the server by a hash of pool and address
        as written in the config: every appgw instance computes the same."""
        self.cookie = hashlib.sha256(("%s|%s" % (pool_name, address)).encode()).hexdigest()[:20].encode()

    def connect(self):
        if self.path:
            sock = connect_unix(self.path, self.connect_timeout)
        else:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.server_hostname)
            except BaseException:
                sock.close()
                raise
        # Each wait for an answer from now on, for the connection's life: an
        # endpoint belongs to one backend settings.
        sock.settimeout(self.request_timeout)
        self.health.wakeup.fire()   # the server is reachable: requests waiting for one may try
        return sock

    def checkout(self, check=True):
        """A live idle connection if there is one, else a new one."""
        return self.checkout_idle(check) or self.connect()

    def checkout_idle(self, check=True):
        """A live idle connection, or None; never blocks. `check=False`
        skips the stale check (a syscall) of a plain connection for
        requests the caller will simply send again on a new connection if
        the reused one turns out closed."""
        idle = self.idle
        while idle:
            sock = idle.pop()
            if type(sock) is PLAIN:
                read_watcher(sock).stop()
                if not check or _still_open(sock):
                    return sock
            # No watcher drops a TLS connection that turned readable while
            # idle (what arrived may wait decrypted inside TLS), so it is
            # checked every time: bytes a backend sent late would otherwise
            # be read as the answer to the next request, another client's.
            elif _still_open(sock):
                return sock
            sock.close()
        return None

    def checkin(self, sock):
        if len(self.idle) >= MAX_IDLE:
            sock.close()
            return
        self.idle.append(sock)
        if type(sock) is PLAIN:
            # An idle connection has nothing to say: when it turns readable
            # the server closed it (or misbehaves), and it is dropped then,
            # not found stale by a request. The watcher also stays started
            # between requests, which spares libev an epoll_ctl per request.
            read_watcher(sock).start(self._idle_readable, sock)

    def _idle_readable(self, sock):
        try:
            self.idle.remove(sock)
        except ValueError:
            pass
        _discard(sock)

    def close_idle(self):
        while self.idle:
            _discard(self.idle.pop())

    def abort_sessions(self, why):
        for session in list(self.sessions):
            session.abort(why)

    def connect_failed(self, exc):
        self.health.passive_failure(time.time(), connect_failure_reason(exc))


def connect_unix(path, timeout):
    """A connected unix-socket stream (in-process apps, unix: servers)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_failure_reason(exc) -> str:
    if isinstance(exc, socket.gaierror):
        return "cannot resolve: %s" % (exc.strerror or exc)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "connect timeout"
    if isinstance(exc, ssl.SSLError):
        return "TLS error: %s" % (exc.reason or exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return "connect failed: %s" % (exc.strerror or exc)


def _discard(sock):
    # Stop the pool's watcher first: gevent's close() would otherwise try to
    # wake it as if a greenlet were waiting.
    if type(sock) is PLAIN:
        read_watcher(sock).stop()
    sock.close()


def _still_open(sock) -> bool:
    # An idle keep-alive connection has nothing to say: readable means the
    # server sent FIN (or stray bytes, or a TLS close_notify), so drop it.
    if type(sock) is PLAIN:
        try:
            return not kernel(sock).recv(1, socket.MSG_PEEK)   # b"": FIN; data: stray bytes
        except BlockingIOError:
            return True
        except OSError:
            return False
    if sock.pending():
        return False
    try:
        readable, _, _ = _real_select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable

