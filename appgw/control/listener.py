"""Listening sockets: one gevent StreamServer per bind address, TLS with SNI.

Sockets are bound before anything serves, so a bind failure stops the start
with the address and the reason. TLS handshakes run in the connection's own
greenlet, bounded by client_header_timeout.
"""
import errno
import socket
import ssl
import time

from gevent.pool import Pool
from gevent.server import StreamServer

from appgw.downstream import h2conn
from appgw.downstream import h2 as h2stream
from appgw.http.h2 import PREFACE
from appgw.downstream.h1 import Connection


class BindError(Exception):
    pass


def bind_socket(host: str, port: int, backlog: int = 1024, reuse_port: bool = False,
                listen: bool = True) -> socket.socket:
    """A bound socket, listening unless `listen` is False; `reuse_port` lets
    each worker bind an address added by a reload alongside its siblings."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from None
    return sock


def listen_all(sockets, backlog: int = 1024) -> None:
    """Start listening on sockets bound by bind_all(listen=False): all of
    them or, raising BindError, none (every one is closed then)."""
    for (host, port), sock in sockets.items():
        try:
            sock.listen(backlog)
        except OSError as exc:
            for other in sockets.values():
                other.close()
            raise _bind_error(host, port, exc) from None


def _bind_error(host, port, exc):
    where = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno == errno.EACCES:
        reason = "permission denied"
    return BindError("cannot listen on %s: %s" % (where, reason))


def bind_all(config, keep=(), inherited=None, reuse_port=False, listen=True):
    """Sockets for every bind of `config` not in `keep` (taken from
    `inherited` where there); all of them or, raising BindError, none. Every
    address is bound before any listens, so a start that fails on one never
    accepted a connection on another; with `listen` False the caller starts
    them listening (listen_all) once its other addresses are bound too."""
    inherited = inherited if inherited is not None else {}
    sockets, problems = {}, []
    for listener in config.listeners:
        bind = (listener.host, listener.port)
        if bind in sockets or bind in keep:
            continue
        try:
            sockets[bind] = inherited.pop(bind, None) or bind_socket(*bind, reuse_port=reuse_port, listen=False)
        except BindError as exc:
            problems.append(str(exc))
    if problems:
        for sock in sockets.values():
            sock.close()
        raise BindError("\n".join(problems))
    if listen:
        listen_all(sockets)
    return sockets


LINGER_TIME = 2.0            # seconds a lingering close reads for at most
LINGER_BYTES = 4 << 20       # and bytes


def linger(sock):
    """nginx's lingering close, for a connection answered before its request
    body was read: closing with unread bytes would send a reset, and the
    client, still sending, could lose the answer before reading it. So our
    side is shut first, then what the client still sends is read and
    dropped, until it closes or for LINGER_TIME (LINGER_BYTES) at most."""
    deadline = time.monotonic() + LINGER_TIME
    try:
        sock.shutdown(socket.SHUT_WR)    # on TLS: the raw socket's, what follows is not decrypted
        dropped = 0
        while dropped < LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return
            dropped += len(data)
    except (OSError, ValueError):
        pass


def base_context(alpn=("http/1.1",)) -> ssl.SSLContext:
    """A server context without a certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(alpn))
    # A peer ending its direction with a bare FIN (no close_notify) is a
    # half-close to relay, not a fatal TLS error.
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    return ctx


def alpn_for(listener):
    """What a listener offers by ALPN: "h2" first when it speaks HTTP/2."""
    return ("h2", "http/1.1") if listener.http2 else ("http/1.1",)


def server_context(listener) -> ssl.SSLContext:
    ctx = base_context(alpn_for(listener))
    ctx.load_cert_chain(listener.certificate, listener.private_key)
    return ctx


class TLSContexts:
    """The certificates of every listener on an https bind, chosen by SNI.

    Listeners with acme = true take theirs from the ACME manager at each
    handshake, so a renewed certificate serves the next handshake; while one
    has none, its names' handshakes fail rather than get another's."""

    def __init__(self, site, acme):
        self.by_listener = {routes.listener.name: server_context(routes.listener)
                            for routes in site.listeners if not routes.listener.acme}
        self.site = site
        self.acme = acme
        # Listeners sharing a bind share http2: the default offers what they all do.
        self.default = base_context(alpn_for(site.listeners[0].listener))
        self.default.sni_callback = self._pick

    def _pick(self, ssl_object, server_name, _ctx):
        listener = self.site.certificate_for(server_name or "").listener
        ctx = self.by_listener.get(listener.name) or self.acme.context_for(listener.name, server_name)
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = ctx
        return None


class _Server(StreamServer):
    """The connection handler closes its own socket: after a WebSocket
    upgrade the relay owns it and outlives the handler's greenlet."""

    def do_close(self, *args):
        pass


class BindServer:
    """One bind address: accepts, wraps TLS, hands each connection to the proxy."""

    def __init__(self, bind, sock, runtime):
        self.bind = bind
        self.runtime = runtime
        self.tls = None
        self.server = _Server(sock, self.handle, spawn=Pool(runtime.config.gateway.max_connections))

    def set_site(self, site):
        self.tls = TLSContexts(site, self.runtime.acme) if site.protocol == "https" else None

    def start(self):
        self.server.start()

    def stop_accepting(self):
        self.server.stop_accepting()
        self.server.close()

    def handle(self, sock, address):
        runtime = self.runtime
        site = runtime.snapshot.sites.get(self.bind)
        if site is None:  # removed by a reload while this connection waited
            sock.close()
            return
        listener = site.listeners[0].listener.name
        runtime.stats.connections_active[listener] += 1
        conn = None
        try:
            timeout = runtime.config.gateway.client_header_timeout
            http2, early = False, b""
            if self.tls is not None:
                tls = self.handshake(sock, timeout)
                if tls is None:
                    return
                sock = tls
                http2 = tls.selected_alpn_protocol() == "h2"
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if site.listeners[0].listener.http2:
                    http2, early = sniff_preface(sock, timeout)
                    if http2 is None:
                        return
            ip, port = (address[0], address[1]) if isinstance(address, tuple) else ("unix", 0)
            if http2:
                conn = h2conn.Session(sock, ip, site, runtime, h2stream.serve_stream, early, port)
            else:
                conn = Connection(sock, ip, site, runtime, port)
                conn.buf = early
            runtime.connections.add(conn)
            conn.serve()
        finally:
            runtime.connections.discard(conn)
            if conn is None or not conn.handed_over:
                if getattr(conn, "linger", False) and not runtime.stopping:
                    linger(sock)
                runtime.stats.connections_active[listener] -= 1
                sock.close()

    def handshake(self, sock, timeout):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.tls.default
        acme = self.runtime.acme
        if self.bind in acme.alpn_binds and acme.alpn_pending():
            context = acme.challenge_context(sock, timeout) or context
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        tls.settimeout(timeout)
        try:
            tls.do_handshake()
        except (OSError, ValueError):
            tls.close()
            return None
        if context is not self.tls.default:   # a TLS-ALPN-01 validation: nothing follows
            tls.close()
            return None
        return tls


def sniff_preface(sock, timeout):
    """(True, bytes read) when a plain connection starts with the HTTP/2
    preface (h2c with prior knowledge), (False, bytes read) when it does not,
    (None, b"") when the client sent nothing in time. The first bytes are
    peeked, not read, so an HTTP/1 request is read by its own path; only a
    preface that arrives in pieces is read, and handed on."""
    sock.settimeout(timeout)
    try:
        seen = sock.recv(len(PREFACE), socket.MSG_PEEK)
        if not seen:
            return None, b""
        if not PREFACE.startswith(seen[:len(PREFACE)]):
            return False, b""
        if len(seen) == len(PREFACE):
            return True, b""
        got = b""
        while len(got) < len(PREFACE) and PREFACE.startswith(got):
            data = sock.recv(len(PREFACE) - len(got))
            if not data:
                return None, b""
            got += data
        return PREFACE.startswith(got) and len(got) == len(PREFACE), got
    except OSError:   # socket.timeout included
        return None, b""
