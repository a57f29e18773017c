"""The common exchange, served from the event loop with no greenlet switch.

A keep-alive connection that waits for its next request parks its greenlet;
its socket's read watcher waits instead. A request that needs nothing
unusual (no body, no upgrade, a backend pool with a pooled plain
connection, an answer framed by Content-Length) is then served from the
watchers' callbacks in the hub: read, parse, send, read, send. That halves
the CPU a request costs compared with a greenlet waking for each read. The
request, and an answer that came whole and small, are sent at the end of the
loop iteration with the other sends of the burst (appgw/coalesce.py).

Everything else wakes the connection's greenlet with a continuation, and
proxy.Connection carries on from exactly where the request stands: before
anything was sent (`exchange`), after the request went out (`complete`),
or in the middle of an answer the client did not take at once
(`complete_body`). Callbacks run in the hub, so nothing here may block:
sockets are used through their non-blocking kernel objects only.
"""
import functools
import logging

from gevent import get_hub, getcurrent

from . import acme_challenges, coalesce, policy
from .balancer import Backend
from .errors import BackendError, ClientError
from .http1 import HEAD_END, LENGTH, MAX_RESPONSE_HEAD, NONE, FramingError
from .sockio import PLAIN, READ_BUFFER, READ_VIEW, RECV

log = logging.getLogger("appgw")

# park() returns this when the greenlet must go on reading a request head.
READ_ON = object()

# Answers up to this size wait for the end of the loop iteration to be sent
# (see coalesce); larger ones go at once, from the read buffer, uncopied.
HELD_BODY = 16384


def usable(sock) -> bool:
    """A plain TCP client socket; TLS connections stay on the greenlet path."""
    return type(sock) is PLAIN


class FastPath:
    """One client connection's callbacks while its greenlet is parked."""

    __slots__ = ("conn", "raw", "client_event", "glet", "loop", "tick", "timer", "since", "reading",
                 "client_closed", "p", "buf", "resp", "keep", "reusable", "remaining")

    def __init__(self, conn):
        self.conn = conn
        self.raw = conn.sock._sock
        self.client_event = conn.sock._read_event
        self.glet = None
        self.loop = get_hub().loop
        self.tick = min(conn.gateway.client_header_timeout, conn.gateway.client_idle_timeout)
        self.timer = None           # the libev timer armed now, if any
        self.since = 0.0            # when the present state began, in loop time
        self.reading = False        # client_event is started
        self.client_closed = False
        self.p = None               # the proxy.Pending in flight
        self.buf = b""              # the answer's head so far
        self.resp = None            # the answer, once its head is parsed
        self.keep = self.reusable = False
        self.remaining = 0          # body bytes still to relay

    # -- the greenlet's side ---------------------------------------------------

    def park(self):
        """Serve requests from callbacks until one needs the greenlet.

        Returns a continuation (a callable returning whether the connection
        may carry another request), READ_ON (a head is incomplete: go on
        with read_head), or None (the connection is over)."""
        self.glet = getcurrent()
        self.wait_for_request()
        self.start_clock()
        try:
            return get_hub().switch()
        finally:
            # Normally done already; not when the greenlet is killed.
            self.stop()
            self.drop_request()

    def stop(self):
        if self.reading:
            self.client_event.stop()
            self.reading = False
        if self.timer is not None:
            self.timer.stop()
            self.timer = None
        if self.p is not None:
            self.p.upstream._read_event.stop()

    def throw(self, error):
        """gevent's socket.close() wakes whoever waits on the socket by
        throwing into the watcher callback's owner: here, the socket was
        closed under a parked connection (a stop, a reload)."""
        self.abandon()

    def resume(self, step):
        """Hand the connection back to its greenlet with `step`."""
        self.stop()
        self.p = self.resp = None
        self.glet.switch(step)

    # -- timeouts -----------------------------------------------------------------
    # One timer per parked connection, and one clock: each state (waiting for
    # a request, waiting for the backend) notes when it began, and the timer
    # checks the state's deadline when it fires. It is re-armed only then,
    # never per request, and for at most `tick`, the shortest timeout a state
    # can have, so it can never fire after a deadline.

    def start_clock(self):
        self.timer = self.loop.timer(self.tick)
        self.timer.start(self.on_clock)

    def on_clock(self):
        now = self.loop.now()
        p = self.p
        if p is not None:
            deadline = self.since + p.settings.request_timeout
        else:
            gw = self.conn.gateway
            deadline = self.since + (gw.client_idle_timeout if self.conn.served else gw.client_header_timeout)
        if now < deadline:
            self.timer = self.loop.timer(min(deadline - now, self.tick))
            self.timer.start(self.on_clock)
        elif p is None:
            self.resume(None)       # idle too long: close, as read_head does
        else:
            error = BackendError(504, "backend did not answer within %gs" % p.settings.request_timeout)
            self.resume(functools.partial(self.conn.guarded, p.entry, self.conn.give_up, p, error))

    # -- waiting for a request -------------------------------------------------

    def wait_for_request(self):
        self.conn.waiting = True
        self.since = self.loop.now()
        if not self.reading:
            self.client_event.start(self.on_client)
            self.reading = True

    def on_client(self):
        try:
            data = bytes(READ_VIEW[:self.raw.recv_into(READ_BUFFER, RECV)])
        except BlockingIOError:
            return
        except OSError:
            data = b""
        conn = self.conn
        if self.p is not None:
            # The client spoke while its request is in flight: keep it for
            # later, and stop reading at EOF or once a head's worth is held.
            if not data:
                self.client_closed = True
            conn.buf += data
            if not data or len(conn.buf) > conn.gateway.max_header_size:
                self.client_event.stop()
                self.reading = False
            return
        if not data:
            return self.resume(None)
        conn.buf += data
        self.next_request()

    def next_request(self):
        conn = self.conn
        buf = conn.buf
        end = buf.find(HEAD_END)
        if end < 0 or end + 4 > conn.gateway.max_header_size or buf[:1] in (b"\r", b"\n"):
            return self.resume(READ_ON)
        head, conn.buf = buf[:end + 4], buf[end + 4:]
        conn.waiting = False
        try:
            self.begin(head)
        except Exception:
            self.crash()

    # -- the request -------------------------------------------------------------

    def begin(self, head):
        """Send the request on a pooled connection, or give it to the greenlet."""
        conn = self.conn
        req = endpoint = None
        if not conn.runtime.stopping:
            try:
                req = policy.parse_request(head, conn.gateway.max_body_size)
            except ClientError:
                pass            # the greenlet answers it
            # ACME HTTP-01 paths are answered on the greenlet, before routing.
            if req is not None and req.framing == NONE and not req.websocket \
                    and not req.path.startswith(acme_challenges.PREFIX):
                routes = conn.site.listener_for(req.host)
                backend = routes.route(req.path) if routes is not None else None
                if type(backend) is Backend:
                    affinity = conn.affinity(req, backend)
                    endpoint = backend.choose((), affinity)
        if endpoint is None:
            return self.resume(functools.partial(conn.exchange, head, req))

        conn.req = req
        conn.response_started = False
        entry = conn.new_entry(head, req, routes)
        # Replayable requests skip the stale check, as on the greenlet path.
        upstream = endpoint.checkout_idle(not req.idempotent) if endpoint.tls is None else None
        if upstream is None:
            # A new connection (or TLS): the greenlet connects, to the server
            # chosen here, so that round robin moves on once per request.
            return self.resume(functools.partial(conn.guarded, entry, conn.forward, req, routes, backend, entry,
                                                 endpoint))
        conn.chose(backend, endpoint, affinity, entry)
        self.p = conn.pending(req, routes, backend, endpoint, upstream, entry)
        self.since = self.loop.now()    # request_timeout runs from here
        coalesce.later(self.send_request, self.p)

    def send_request(self, p):
        if self.p is not p:
            return      # the connection ended first
        try:
            sent = p.upstream._sock.send(p.head)
        except OSError:
            sent = 0
        try:
            if sent < len(p.head):
                # A full buffer or a dead pooled connection: the greenlet sends
                # the rest, and replays the request if the connection is gone.
                return self.resume(functools.partial(self.conn.guarded, p.entry, self.conn.complete, p, sent))
            self.awaiting(p)
        except Exception:
            self.crash()

    def awaiting(self, p):
        """The request is out: wait for the answer, within request_timeout."""
        self.buf = b""
        self.resp = None
        p.upstream._read_event.start(self.on_backend)
        if p.settings.request_timeout < self.tick:
            self.tick = p.settings.request_timeout
            self.timer.stop()
            self.start_clock()

    # -- the answer --------------------------------------------------------------

    def on_backend(self):
        p = self.p
        try:
            size = p.upstream._sock.recv_into(READ_BUFFER)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        try:
            if self.resp is None:
                self.answer_head(p, size)
            else:
                self.answer_body(p, READ_VIEW[:size])
        except Exception:
            self.crash()

    def answer_head(self, p, size):
        conn = self.conn
        if self.buf:
            buf = self.buf + READ_VIEW[:size]
            end = buf.find(HEAD_END)
        else:
            buf = READ_VIEW[:size]
            end = READ_BUFFER.find(HEAD_END, 0, size)
        if end < 0:
            if size and len(buf) <= MAX_RESPONSE_HEAD:
                self.buf = bytes(buf)
                return
            resp = None     # closed (the greenlet replays or answers 502), or too large
        else:
            try:
                resp = policy.parse_response(bytes(buf[:end + 4]), p.req.method)
            except FramingError:
                resp = None
        if resp is None or resp.status < 200:
            # Not an answer, or an interim one: the greenlet reads on from here.
            return self.resume(functools.partial(conn.guarded, p.entry, conn.complete, p, len(p.head), bytes(buf)))
        rest = memoryview(buf)[end + 4:]   # no copy: sent before the buffer is read into again
        if resp.framing != LENGTH and resp.framing != NONE:
            # Chunked or until close: the greenlet relays it, head already parsed.
            return self.resume(functools.partial(conn.guarded, p.entry, conn.complete, p, len(p.head), b"",
                                                 (resp, bytes(rest))))
        req = p.req

        runtime = conn.runtime
        runtime.stats.backend_seconds[p.pool].observe(p.elapsed())
        self.keep = req.keep_alive and not runtime.stopping
        # Some servers send a body after a HEAD answer: never pool those.
        self.reusable = resp.keep_alive and req.method != b"HEAD"
        head = policy.client_head(resp, resp.framing, self.keep, req.minor,
                                  (conn.set_cookie,) if conn.set_cookie else ())
        p.entry.status = resp.status
        remaining = resp.content_length if resp.framing == LENGTH else 0
        if len(rest) > remaining:
            self.reusable = False
            rest = rest[:remaining]
        self.resp = resp
        self.remaining = remaining - len(rest)
        conn.response_started = True
        if self.remaining or len(rest) > HELD_BODY:
            return self.to_client(p, head, rest)
        # A whole answer, and small: it goes out with the burst's other sends
        # (copied: the read buffer is read into again before then). Nothing
        # more is read from the backend meanwhile.
        p.upstream._read_event.stop()
        coalesce.later(self.send_answer, (p, head, bytes(rest)))

    def send_answer(self, args):
        p, head, body = args
        if self.p is not p:
            return      # the connection ended first
        try:
            self.to_client(p, head, body)
        except Exception:
            self.crash()

    def answer_body(self, p, data):
        if not data:
            # The backend closed mid-body: the greenlet ends the connection.
            return self.resume(functools.partial(
                self.conn.guarded, p.entry, self.conn.complete_body, p, False, False, b"", self.remaining))
        if len(data) > self.remaining:
            data, self.reusable = data[:self.remaining], False
        self.remaining -= len(data)
        self.to_client(p, data, b"")

    def to_client(self, p, first, second):
        """Send without blocking; what the client does not take at once goes
        to the greenlet, with the rest of the body."""
        try:
            sent = self.raw.sendmsg((first, second)) if second else self.raw.send(first)
        except OSError:
            sent = 0
        p.entry.sent += sent
        if sent < len(first) + len(second):
            # Copied out of the shared read buffer: the greenlet sends it later.
            unsent = bytes(first[sent:]) + bytes(second) if sent < len(first) else bytes(second[sent - len(first):])
            return self.resume(functools.partial(
                self.conn.guarded, p.entry, self.conn.complete_body, p, self.keep, self.reusable,
                unsent, self.remaining))
        if self.remaining:
            self.since = self.loop.now()   # request_timeout between reads, as on the greenlet path
            return
        self.finish(p)

    def finish(self, p):
        conn = self.conn
        p.upstream._read_event.stop()
        self.p = self.resp = None
        conn.release(p, self.reusable)
        conn.log(p.entry)
        conn.served += 1
        if not self.keep or conn.runtime.stopping:
            # Stopping: the stop's sweep of idle connections may have passed
            # this one while its answer was on the way (or held).
            return self.resume(None)
        if conn.buf:
            return self.next_request()   # pipelined, or sent before a FIN
        if self.client_closed:
            return self.resume(None)
        self.wait_for_request()

    def crash(self):
        """A bug must not leave the connection hanging in the loop."""
        log.exception("internal error serving a request; closing the connection")
        self.abandon()

    def abandon(self):
        """End the connection, and the request in flight if there is one."""
        self.stop()
        self.drop_request()
        self.resume(None)

    def drop_request(self):
        p, self.p = self.p, None
        if p is not None:
            self.conn.release(p, False)
