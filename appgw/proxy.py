"""The connection handler: one greenlet per client connection.

read head -> check (policy) -> route (router) -> pick a server (balancer) ->
send the head and stream the body -> read the answer and stream it back ->
keep-alive loop. One greenlet does the whole exchange, so a request costs no
greenlet switches beyond the waits for I/O. After a 101 the relay takes over.
"""
import functools
import socket
import time

from gevent import GreenletExit

from . import fastpath, relay, sockio
from .acme_challenges import http01_response
from .accesslog import Entry
from .errors import BackendError, ClientError
from .http1 import (
    CHUNKED, HEAD_END, LAST_CHUNK, LENGTH, MAX_RESPONSE_HEAD, NONE, UNTIL_CLOSE, ChunkedDecoder, FramingError, chunk,
)
from .policy import backend_head, client_head, cookie_value, parse_request, parse_response
from .router import Redirector

RECV = sockio.RECV
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 501: "Not Implemented",
           502: "Bad Gateway", 504: "Gateway Timeout"}


class ClientGone(Exception):
    """The client closed or reset its connection; nothing more can be said to it."""


def error_response(status: int, reason: str, keep_alive=False, minor=1) -> bytes:
    body = ("%d %s: %s\n" % (status, REASONS.get(status, ""), reason)).encode()
    return b"HTTP/1.%d %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s" % (
        minor, status, REASONS.get(status, "").encode(), len(body),
        b"" if keep_alive else b"Connection: close\r\n", body)


class Connection:
    """State of one client connection across its requests."""

    __slots__ = ("sock", "client_ip", "site", "runtime", "gateway", "buf", "served",
                 "response_started", "waiting", "set_cookie", "handed_over", "timers", "req", "fast")

    def __init__(self, sock, client_ip, site, runtime):
        self.sock = sock
        self.client_ip = client_ip
        self.site = site
        self.runtime = runtime
        self.gateway = runtime.config.gateway
        self.buf = b""
        self.served = 0
        self.waiting = False   # idle between requests: a graceful stop may close it
        self.handed_over = False  # a WebSocket relay owns the socket now
        self.timers = {}          # seconds -> sockio.Timer, reused across requests
        self.req = None           # the request being served
        self.set_cookie = None
        self.response_started = False
        self.fast = fastpath.FastPath(self) if fastpath.usable(sock) else None
        # Bounds every send to a client that stops reading (reads set their own).
        sock.settimeout(self.gateway.client_idle_timeout)

    def timer(self, seconds):
        timer = self.timers.get(seconds)
        if timer is None:
            timer = self.timers[seconds] = sockio.Timer(seconds)
        return timer

    def close(self):
        """Shut the client socket down; whatever greenlet waits on it wakes."""
        relay.shutdown(self.sock, socket.SHUT_RDWR)

    # -- the keep-alive loop -------------------------------------------------

    def serve(self):
        try:
            while not self.runtime.stopping or not self.served:
                if self.fast is not None and not self.buf:
                    step = self.fast.park()
                    if step is None:
                        break
                    if step is not fastpath.READ_ON:
                        if not step():
                            break
                        self.served += 1
                        continue
                head = self.read_head()
                if head is None or not self.exchange(head):
                    break
                self.served += 1
        except (ClientGone, OSError, GreenletExit):
            pass

    def read_head(self):
        """The next request head, or None when the client left or idled out.

        The first byte of a request may take client_idle_timeout (on a new
        connection client_header_timeout); the whole head must then arrive
        within client_header_timeout of that byte."""
        gw = self.gateway
        buf = self.buf.lstrip(b"\r\n") if self.buf[:1] in (b"\r", b"\n") else self.buf
        deadline = None
        while True:
            end = buf.find(HEAD_END)
            if end >= 0:
                if end + 4 > gw.max_header_size:
                    return self.refuse(ClientError(431, "request head larger than %d bytes" % gw.max_header_size))
                self.buf = buf[end + 4:]
                return buf[:end + 4]
            if len(buf) > gw.max_header_size:
                return self.refuse(ClientError(431, "request head larger than %d bytes" % gw.max_header_size))
            self.waiting = not buf
            if self.waiting and self.runtime.stopping:
                return None
            if buf and deadline is None:
                deadline = time.monotonic() + gw.client_header_timeout
            if deadline is None:
                timeout = gw.client_idle_timeout if self.served else gw.client_header_timeout
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return self.refuse(ClientError(408, "request head not received in time"))
            try:
                if self.served and not buf:
                    # After an answer the next request is rarely there yet: wait first.
                    data = sockio.recv_after_wait(self.sock, RECV, self.timer(timeout))
                else:
                    self.sock.settimeout(timeout)
                    data = sockio.recv(self.sock, RECV)
            except socket.timeout:
                if buf:
                    return self.refuse(ClientError(408, "request head not received in time"))
                return None
            self.waiting = False
            if not data:
                return None
            buf = (buf + data).lstrip(b"\r\n") if not buf else buf + data

    def refuse(self, error: ClientError, entry=None, minor=1):
        """Answer an error and end the connection: after a refused head, the
        next request's start cannot be trusted."""
        entry = entry or Entry(self.client_ip, self.site.listeners[0].listener.name)
        payload = error_response(error.status, error.reason, minor=minor)
        entry.status = error.status
        try:
            self.sock.sendall(payload)
            entry.sent += len(payload)
        except OSError:
            pass
        self.log(entry)
        return None

    def log(self, entry):
        stats = self.runtime.stats
        stats.request(entry.listener, entry.rule, entry.status or 0, entry.received, entry.sent)
        if self.runtime.access_log.enabled:
            self.runtime.access_log.write(entry)

    # -- one request ---------------------------------------------------------

    def exchange(self, head: bytes, req=None) -> bool:
        """Serve one request; True when the connection may carry another.
        `req`: the head as the fast path parsed it already, if it did."""
        entry = Entry(self.client_ip, self.site.listeners[0].listener.name)
        entry.received = len(head)
        self.req = req
        self.response_started = False
        return self.guarded(entry, self.dispatch, head, entry)

    def new_entry(self, head, req, routes):
        """The log entry of a request the fast path serves."""
        entry = Entry(self.client_ip, routes.listener.name)
        entry.received = len(head)
        entry.rule = routes.rule.name
        if self.runtime.access_log.enabled:
            self.runtime.access_log.fill_request(entry, req)
        return entry

    def dispatch(self, head, entry):
        runtime = self.runtime
        req = self.req
        if req is None:
            req = self.req = parse_request(head, self.gateway.max_body_size)
        if runtime.access_log.enabled:
            runtime.access_log.fill_request(entry, req)
        challenge = runtime.acme.http01_answer(self.site.bind, req.path)  # ACME HTTP-01, before routing
        if challenge is not None:
            return self.acme_answer(req, challenge, entry)
        routes = self.site.listener_for(req.host)
        if routes is None:
            raise ClientError(404, "no listener for host %s" % req.host.decode("latin-1"))
        entry.listener, entry.rule = routes.listener.name, routes.rule.name
        target = routes.route(req.path)
        if isinstance(target, Redirector):
            return self.redirect(req, target, entry)
        if req.websocket:
            return self.websocket(req, routes, target, entry)
        return self.forward(req, routes, target, entry)

    def guarded(self, entry, step, *args) -> bool:
        """Run a step of the current request (self.req) and turn what goes
        wrong into the answer the client sees. True when the connection may
        carry another request."""
        try:
            return step(*args)
        except ClientError as error:
            req = self.req
            if error.status == 404 and req is not None and req.framing == NONE:
                # Nothing of the request is left unread: the connection can go on.
                keep = req.keep_alive and not self.runtime.stopping
                entry.status = 404
                self.send(error_response(404, error.reason, keep, req.minor), entry)
                self.log(entry)
                return keep
            self.refuse(error, entry, req.minor if req else 1)
            return False
        except BackendError as error:
            if self.response_started:
                self.log(entry)
                return False
            entry.status = error.status
            try:
                self.send(error_response(error.status, error.reason, minor=self.req.minor), entry)
            except ClientGone:
                pass
            self.log(entry)
            return False
        except ClientGone:
            entry.status = entry.status or 499
            self.log(entry)
            return False

    def send(self, data, entry):
        try:
            sockio.sendall(self.sock, data)
        except OSError as exc:
            raise ClientGone() from exc
        entry.sent += len(data)

    def redirect(self, req, target, entry):
        location = target.location(req.host, req.path, req.query)
        keep = req.keep_alive and req.framing == NONE and not self.runtime.stopping
        entry.status = target.status
        self.send(b"HTTP/1.%d %d %s\r\nLocation: %s\r\nContent-Length: 0\r\n%s\r\n" % (
            req.minor, target.status, _REDIRECT_REASONS[target.status], location,
            b"" if keep else b"Connection: close\r\n"), entry)
        self.log(entry)
        return keep

    def acme_answer(self, req, body, entry):
        keep = req.keep_alive and req.framing == NONE and not self.runtime.stopping
        entry.status = 200
        self.send(http01_response(body, req.minor, keep, req.method == b"HEAD"), entry)
        self.log(entry)
        return keep

    # -- to the backend and back ---------------------------------------------

    def open_upstream(self, req, backend, entry, chosen=None):
        """Connect to a server of the pool (first to `chosen` when given),
        trying the next one when a connect fails; nothing has been sent
        yet, so any request may move on."""
        tried = []
        affinity = self.affinity(req, backend)
        while True:
            endpoint, chosen = chosen or backend.choose(tried, affinity), None
            if endpoint is None:
                reason = "no healthy server in pool %s" % backend.pool.name if not tried else \
                    "no server of pool %s could be reached" % backend.pool.name
                raise BackendError(502, reason)
            try:
                # A body-less idempotent request is replayed if a reused
                # connection proves closed, so it can skip the stale check.
                sock = endpoint.checkout(not (req.framing == NONE and req.idempotent))
            except (OSError, ValueError) as exc:  # ValueError: ssl refusing its arguments
                endpoint.connect_failed(exc)
                tried.append(endpoint)
                continue
            self.chose(backend, endpoint, affinity, entry)
            return endpoint, sock

    @staticmethod
    def affinity(req, backend):
        """The affinity cookie's value when the pool's settings use one."""
        name = backend.settings.affinity_cookie
        return cookie_value(req.headers, name.encode()) if name else None

    def chose(self, backend, endpoint, affinity, entry):
        entry.server = endpoint.label
        self.set_cookie = None
        name = backend.settings.affinity_cookie
        if name and affinity != endpoint.cookie:
            # A new client, or its server left: (re)write the cookie.
            self.set_cookie = b"Set-Cookie: %s=%s; Path=/; HttpOnly" % (name.encode(), endpoint.cookie)

    def pending(self, req, routes, backend, endpoint, upstream, entry):
        """The request bound to a backend connection; counts as active."""
        settings = backend.settings
        if settings.host_name:
            host = settings.host_name.encode()
        elif settings.pick_host_name_from_backend:
            host = endpoint.address_host.encode()
        else:
            host = req.host
        head = backend_head(req, host, routes.proto, routes.port, self.client_ip.encode())
        endpoint.active += 1
        return Pending(req, head, settings, backend.pool.name, endpoint, upstream, entry)

    def release(self, p, reusable):
        """The backend connection's part in the request is over."""
        p.endpoint.active -= 1
        if reusable:
            p.endpoint.checkin(p.upstream)
        else:
            p.upstream.close()

    def forward(self, req, routes, backend, entry, chosen=None) -> bool:
        endpoint, upstream = self.open_upstream(req, backend, entry, chosen)
        return self.complete(self.pending(req, routes, backend, endpoint, upstream, entry))

    def complete(self, p, sent=0, partial=b"", answer=None) -> bool:
        """Send the request (its head's first `sent` bytes are out already),
        read the answer (`partial`: its first bytes, already read; `answer`:
        its head parsed and the bytes after it), relay it, and pool or close
        the backend connection. The fast path resumes here when a request
        or answer needs more than it handles."""
        reusable = False
        try:
            resp, rest = answer or self.send_and_read(p, sent, partial)
            self.runtime.stats.backend_seconds[p.pool].observe(p.elapsed())
            keep, reusable = self.relay_response(p.req, resp, rest, p.upstream, p.entry)
            # Some servers (gevent's pywsgi among them) send a body after a HEAD
            # answer; it would poison the next request on a pooled connection.
            reusable = reusable and p.req.method != b"HEAD"
            self.log(p.entry)
            return keep
        finally:
            self.release(p, reusable)

    def complete_body(self, p, keep, reusable, unsent, remaining) -> bool:
        """Resumed by the fast path when the client did not take an answer at
        once: send `unsent`, then relay the `remaining` body bytes."""
        clean = False
        try:
            self.response_started = True
            self.sock.settimeout(self.gateway.client_idle_timeout)
            if unsent:
                self.send(unsent, p.entry)
            clean = self.relay_rest(remaining, p.upstream, p.entry)
            self.log(p.entry)
            return keep
        finally:
            self.release(p, reusable and clean)

    def give_up(self, p, error):
        """The fast path's request timed out: close its backend connection
        and answer `error`."""
        self.release(p, False)
        raise error

    def send_and_read(self, p, sent=0, partial=b""):
        """Send the request, read the answer's head: (resp, rest).

        A body-less idempotent request whose connection fails before any
        answer (a pooled connection closed meanwhile, a backend that dropped
        it) is sent once more on a new connection, as nginx's
        proxy_next_upstream does for errors; a timeout (504) is not retried.
        p.upstream is then the new connection."""
        req = p.req
        try:
            if sent < len(p.head):
                self.send_request(req, p.head[sent:] if sent else p.head, p.upstream, p.entry)
            return self.read_response_head(req, p.upstream, p.entry, partial)
        except BackendError as error:
            if not error.replayable or req.framing != NONE or not req.idempotent:
                raise
            p.upstream.close()
        try:
            p.upstream = p.endpoint.connect()
        except (OSError, ValueError) as exc:
            p.endpoint.connect_failed(exc)
            raise BackendError(502, "backend connection failed: %s" % exc) from None
        self.send_request(req, p.head, p.upstream, p.entry)
        return self.read_response_head(req, p.upstream, p.entry)

    def send_request(self, req, head, upstream, entry):
        """Send the head, then stream the body, re-framed for the backend."""
        if req.framing == NONE:
            self.to_backend(upstream, head)
            return
        if req.expect_continue and not self.buf:
            self.send(CONTINUE, entry)
        if req.framing == LENGTH:
            self.stream_length_body(req, head, upstream, entry)
        else:
            self.stream_chunked_body(req, head, upstream, entry)

    def stream_length_body(self, req, head, upstream, entry):
        remaining = req.content_length
        first, self.buf = self.buf[:remaining], self.buf[remaining:]
        self.to_backend(upstream, head + first)
        remaining -= len(first)
        entry.received += len(first)
        while remaining:
            data = self.from_client(min(RECV, remaining))
            remaining -= len(data)
            entry.received += len(data)
            self.to_backend(upstream, data)

    def stream_chunked_body(self, req, head, upstream, entry):
        decoder = ChunkedDecoder()
        limit = self.gateway.max_body_size
        data, self.buf = self.buf, b""
        pending = head
        while True:
            try:
                pieces = decoder.feed(data)
            except FramingError as exc:
                raise ClientError(400, "malformed chunked body: %s" % exc) from None
            if limit and decoder.total > limit:
                raise ClientError(413, "request body larger than %d bytes" % limit)
            if pieces:
                pending += b"".join([chunk(p) for p in pieces if p])
            if decoder.done:
                entry.received += len(data) - len(decoder.rest)
                self.buf = decoder.rest
                self.to_backend(upstream, pending + LAST_CHUNK)
                return
            entry.received += len(data)
            if pending:
                self.to_backend(upstream, pending)
                pending = b""
            data = self.from_client(RECV)

    def from_client(self, size):
        self.sock.settimeout(self.gateway.client_idle_timeout)
        try:
            data = sockio.recv(self.sock, size)
        except socket.timeout:
            raise ClientError(408, "request body not received in time") from None
        except OSError as exc:
            raise ClientGone() from exc
        if not data:
            raise ClientGone()
        return data

    @staticmethod
    def to_backend(upstream, data):
        try:
            sockio.sendall(upstream, data)
        except socket.timeout:
            raise BackendError(504, "backend did not accept the request in time") from None
        except OSError as exc:
            raise BackendError(502, "backend connection failed: %s" % (exc.strerror or exc), True) from None

    def read_response_head(self, req, upstream, entry, buf=b""):
        """(Response, bytes after its head); `buf` holds what was read of it
        already. Interim 1xx answers are passed on to HTTP/1.1 clients (100
        is ours to send, so it is dropped)."""
        timeout = upstream.gettimeout()   # the settings' request_timeout
        fresh = not buf     # no byte of an answer yet: a failure may be replayed
        while True:
            end = buf.find(HEAD_END)
            if end >= 0:
                # The body that came with the head is not copied out.
                head, rest = buf[:end + 4], memoryview(buf)[end + 4:]
                try:
                    resp = parse_response(head, req.method)
                except FramingError as exc:
                    raise BackendError(502, "invalid response from backend: %s" % exc) from None
                if resp.status == 101 and req.websocket:
                    resp.headers = head  # relayed unchanged
                    return resp, rest
                if resp.status < 200:
                    if resp.status == 101:
                        raise BackendError(502, "backend switched protocols unasked")
                    if resp.status != 100 and req.minor == 1:
                        self.send(head, entry)
                    buf = bytes(rest)
                    fresh = False
                    continue
                return resp, rest
            if len(buf) > MAX_RESPONSE_HEAD:
                raise BackendError(502, "response head from backend too large")
            try:
                data = sockio.recv_after_wait(upstream, RECV, self.timer(timeout)) if not buf \
                    else sockio.recv(upstream, RECV)
            except socket.timeout:
                raise BackendError(504, "backend did not answer within %gs" % timeout) from None
            except OSError as exc:
                reason = "backend connection failed: %s" % (exc.strerror or exc)
                raise BackendError(502, reason, fresh and not buf) from None
            if not data:
                raise BackendError(502, "backend closed the connection without answering", fresh and not buf)
            buf += data

    def relay_response(self, req, resp, rest, upstream, entry):
        """Send head and body to the client. Returns (client connection stays,
        backend connection is clean and may be reused)."""
        framing = resp.framing
        if framing in (CHUNKED, UNTIL_CLOSE):
            framing = CHUNKED if req.minor == 1 else UNTIL_CLOSE
        if framing == UNTIL_CLOSE and resp.codings:
            raise BackendError(502, "transfer coding an HTTP/1.0 client cannot receive")
        keep = req.keep_alive and framing != UNTIL_CLOSE and not self.runtime.stopping
        self.sock.settimeout(self.gateway.client_idle_timeout)   # for each send of the answer
        head = client_head(resp, framing, keep, req.minor, (self.set_cookie,) if self.set_cookie else ())
        entry.status = resp.status
        if resp.framing == NONE:
            self.send(head, entry)
            clean = not rest
        elif resp.framing == LENGTH:
            clean = self.relay_length(head, rest, resp.content_length, upstream, entry)
        elif resp.framing == CHUNKED:
            clean = self.relay_chunked(head, rest, framing, upstream, entry)
        else:
            clean = self.relay_until_close(head, rest, framing, upstream, entry)
        return keep, clean and resp.keep_alive

    def from_backend(self, upstream):
        """A piece of response body; a failure now can only close the client."""
        try:
            data = sockio.recv(upstream, RECV)
        except OSError:
            data = b""
        if not data:
            raise ClientGone()  # the client sees a short body or a missing last chunk
        return data

    def relay_length(self, head, rest, remaining, upstream, entry):
        clean = len(rest) <= remaining
        first = rest[:remaining]
        self.response_started = True
        try:
            sockio.send_parts(self.sock, head, first)
        except OSError as exc:
            raise ClientGone() from exc
        entry.sent += len(head) + len(first)
        return self.relay_rest(remaining - len(first), upstream, entry) and clean

    def relay_rest(self, remaining, upstream, entry):
        """Relay the last `remaining` bytes of a body; False when the backend
        sent more than that (the connection is not clean)."""
        clean = True
        while remaining:
            data = self.from_backend(upstream)
            if len(data) > remaining:
                data, clean = data[:remaining], False
            remaining -= len(data)
            self.send(data, entry)
        return clean

    def relay_chunked(self, head, rest, framing, upstream, entry):
        decoder = ChunkedDecoder()
        pending, data = head, bytes(rest)
        while True:
            try:
                pieces = decoder.feed(data)
            except FramingError as exc:
                if not self.response_started:   # nothing sent yet: a clean 502
                    raise BackendError(502, "invalid chunked body from backend: %s" % exc) from None
                raise ClientGone() from None
            if pieces:
                if framing == CHUNKED:
                    pending += b"".join([chunk(p) for p in pieces if p])
                else:
                    pending += b"".join(pieces)
            if decoder.done:
                self.response_started = True
                self.send(pending + LAST_CHUNK if framing == CHUNKED else pending, entry)
                return not decoder.rest
            if pending:
                self.response_started = True
                self.send(pending, entry)
                pending = b""
            data = self.from_backend(upstream)

    def relay_until_close(self, head, rest, framing, upstream, entry):
        self.response_started = True
        self.send(head + (chunk(rest) if rest and framing == CHUNKED else rest), entry)
        while True:
            try:
                data = sockio.recv(upstream, RECV)
            except OSError:
                raise ClientGone() from None
            if not data:
                if framing == CHUNKED:
                    self.send(LAST_CHUNK, entry)
                return False
            self.send(chunk(data) if framing == CHUNKED else data, entry)

    # -- WebSocket -------------------------------------------------------------

    def websocket(self, req, routes, backend, entry) -> bool:
        endpoint, upstream = self.open_upstream(req, backend, entry)
        p = self.pending(req, routes, backend, endpoint, upstream, entry)
        try:
            resp, rest = self.send_and_read(p)
            if resp.status != 101:
                keep, _ = self.relay_response(req, resp, rest, p.upstream, entry)
                self.log(entry)
                return keep
            entry.status = 101
            head = resp.headers   # the backend's 101 head, relayed as it is
            if self.set_cookie:
                head = head[:-2] + self.set_cookie + b"\r\n\r\n"
            self.send(head + rest, entry)
            early, self.buf = self.buf, b""
            session = relay.Session(self.sock, p.upstream, p.settings.websocket_timeout)
            self.hand_over(session, endpoint, entry, early)
            p = None   # the session owns the backend connection now
            return False
        finally:
            if p is not None:
                self.release(p, False)

    def hand_over(self, session, endpoint, entry, early):
        """HTTP is over: the relay owns both sockets from here, and this
        connection's greenlet ends (an idle session holds none)."""
        runtime = self.runtime
        self.handed_over = True
        endpoint.sessions.add(session)
        runtime.sessions.add(session)
        runtime.stats.websocket_active += 1
        runtime.stats.websocket_total += 1
        session.start(early, functools.partial(_session_ended, runtime, endpoint, entry))


class Pending:
    """A request bound to a backend connection, with what it takes to
    finish it from wherever it stands."""

    __slots__ = ("req", "head", "settings", "pool", "endpoint", "upstream", "entry", "started")

    def __init__(self, req, head, settings, pool, endpoint, upstream, entry):
        self.req, self.head, self.settings, self.pool = req, head, settings, pool
        self.endpoint, self.upstream, self.entry = endpoint, upstream, entry
        self.started = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.started


def _session_ended(runtime, endpoint, entry, session):
    endpoint.sessions.discard(session)
    runtime.sessions.discard(session)
    endpoint.active -= 1
    stats = runtime.stats
    stats.websocket_active -= 1
    stats.connections_active[entry.listener] -= 1
    entry.received += session.up
    entry.sent += session.down
    entry.ended = session.ended
    stats.request(entry.listener, entry.rule, entry.status, entry.received, entry.sent)
    if runtime.access_log.enabled:
        runtime.access_log.write(entry)


_REDIRECT_REASONS = {301: b"Moved Permanently", 302: b"Found", 303: b"See Other",
                     307: b"Temporary Redirect", 308: b"Permanent Redirect"}
