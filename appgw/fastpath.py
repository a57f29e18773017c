"""The common exchange, served from the event loop with no greenlet switch.

A keep-alive connection that waits for its next request parks its greenlet;
its socket's read watcher waits instead. A request that needs nothing
unusual (no body, no upgrade, a backend pool with a pooled plain
connection, an answer framed by Content-Length) is then served from the
watchers' callbacks in the hub: read, parse, send, read, send. That halves
the CPU a request costs compared with a greenlet waking for each read. The
request, and an answer that came whole and small, are sent at the end of the
loop iteration with the other sends of the burst (appgw/coalesce.py).

Every decision is the request's `Exchange`'s (exchange.py); this module
only does the non-blocking I/O around it. Anything else wakes the
connection's greenlet with the exchange itself, and proxy.Connection.drive
carries on from the exchange's phase: before a server was connected to
(NEW, ROUTED), with the request head partly sent (SENDING), with part of
the answer head read (AWAITING), with an answer the greenlet relays
(ANSWERED), or in the middle of an answer the client did not take at once
(RELAYING); a timeout is handed over as the exchange's `error`. Callbacks
run in the hub, so nothing here may block: sockets are used through their
non-blocking kernel objects only.
"""
import logging

from gevent import get_hub, getcurrent

from . import coalesce, policy
from .balancer import Backend
from .errors import BackendError, ClientError
from .exchange import AWAITING, RELAYING, ROUTED, Exchange
from .http1 import HEAD_END, LENGTH, MAX_RESPONSE_HEAD, NONE
from .sockio import PLAIN, READ_BUFFER, READ_VIEW, RECV, kernel, read_watcher

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
                 "client_closed", "ex", "buf")

    def __init__(self, conn):
        self.conn = conn
        self.raw = kernel(conn.sock)
        self.client_event = read_watcher(conn.sock)
        self.glet = None
        self.loop = get_hub().loop
        self.tick = min(conn.gateway.client_header_timeout, conn.gateway.client_idle_timeout)
        self.timer = None           # the libev timer armed now, if any
        self.since = 0.0            # when the present state began, in loop time
        self.reading = False        # client_event is started
        self.client_closed = False
        self.ex = None              # the Exchange bound to a backend connection, while in flight
        self.buf = b""              # the answer's head so far

    # -- the greenlet's side ---------------------------------------------------

    def park(self):
        """Serve requests from callbacks until one needs the greenlet.

        Returns an Exchange to drive on from its phase, READ_ON (a head is
        incomplete: go on with read_head), or None (the connection is over)."""
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
        if self.ex is not None:
            read_watcher(self.ex.upstream).stop()

    def throw(self, error):
        """gevent's socket.close() wakes whoever waits on the socket by
        throwing into the watcher callback's owner: here, the socket was
        closed under a parked connection (a stop, a reload)."""
        self.abandon()

    def resume(self, step):
        """Hand the connection back to its greenlet: an Exchange to go on
        with, READ_ON or None."""
        self.stop()
        self.ex = None
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
        ex = self.ex
        if ex is not None:
            deadline = self.since + ex.target.settings.request_timeout
        else:
            gw = self.conn.gateway
            deadline = self.since + (gw.client_idle_timeout if self.conn.served else gw.client_header_timeout)
        if now < deadline:
            self.timer = self.loop.timer(min(deadline - now, self.tick))
            self.timer.start(self.on_clock)
        elif ex is None:
            self.resume(None)       # idle too long: close, as read_head does
        else:
            ex.error = ex.timed_out()
            self.resume(ex)

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
        if self.ex is not None:
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
            # An unfinished head is judged as far as it came, as read_head does.
            if end < 0 and len(buf) <= conn.gateway.max_header_size and buf[:1] not in (b"\r", b"\n"):
                error = conn.judge_early(buf)
                if error is not None:
                    return self.resume(Exchange.refused(conn, error, len(buf)))
            return self.resume(READ_ON)
        head, conn.buf = buf[:end + 4], buf[end + 4:]
        conn.waiting = False
        try:
            self.begin(Exchange(conn, head))
        except Exception:
            self.crash()

    # -- the request -------------------------------------------------------------

    def begin(self, ex):
        """Send the request on a pooled connection, or give it to the greenlet.
        Taken here: a body-less request, not an upgrade, routed to a pool."""
        conn = self.conn
        endpoint = None
        if not conn.runtime.stopping:
            try:
                req = ex.req = policy.parse_request(ex.head, conn.gateway.max_body_size,
                                                    conn.gateway.allow_underscores_in_headers)
            except ClientError:
                req = None          # the greenlet answers it
            if req is not None and req.framing == NONE and not req.websocket:
                try:
                    target = ex.take()
                except ClientError:
                    target = None   # the greenlet takes it again and answers
                if type(target) is Backend:
                    ex.phase = ROUTED
                    endpoint = ex.choose()
        if endpoint is None:
            return self.resume(ex)
        upstream = endpoint.checkout_idle(ex.stale_check) if endpoint.tls is None else None
        if upstream is None:
            # A new connection (or TLS): the greenlet connects, to the server
            # chosen here, so that round robin moves on once per request.
            ex.endpoint = endpoint
            return self.resume(ex)
        ex.bind(endpoint, upstream)
        self.ex = ex
        self.since = self.loop.now()    # request_timeout runs from here
        coalesce.later(self.send_request, ex)

    def send_request(self, ex):
        if self.ex is not ex:
            return      # the connection ended first
        head = ex.up_head
        try:
            sent = kernel(ex.upstream).send(head)
        except OSError:
            sent = 0
        try:
            if sent < len(head):
                # A full buffer or a dead pooled connection: the greenlet sends
                # the rest, and replays the request if the connection is gone.
                ex.sent = sent
                return self.resume(ex)
            ex.request_sent()
            self.awaiting(ex)
        except Exception:
            self.crash()

    def awaiting(self, ex):
        """The request is out: wait for the answer, within request_timeout."""
        self.buf = b""
        read_watcher(ex.upstream).start(self.on_backend)
        timeout = ex.target.settings.request_timeout
        if timeout < self.tick:
            self.tick = timeout
            self.timer.stop()
            self.start_clock()

    # -- the answer --------------------------------------------------------------

    def on_backend(self):
        ex = self.ex
        try:
            size = kernel(ex.upstream).recv_into(READ_BUFFER)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        try:
            if ex.phase is AWAITING:
                self.answer_head(ex, size)
            else:
                self.answer_body(ex, READ_VIEW[:size])
        except Exception:
            self.crash()

    def answer_head(self, ex, size):
        if self.buf:
            buf = self.buf + READ_VIEW[:size]
            end = buf.find(HEAD_END)
        else:
            buf = READ_VIEW[:size]
            end = READ_BUFFER.find(HEAD_END, 0, size)
        if end < 0 and size and len(buf) <= MAX_RESPONSE_HEAD:
            self.buf = bytes(buf)
            return
        try:
            answer = ex.take_answer_head(buf, end) if size else None
        except BackendError:
            answer = None
        if answer is None or answer[0].status < 200:
            # Closed (the greenlet replays or answers 502), too large, invalid
            # or interim: the greenlet reads on from what came.
            ex.buf = bytes(buf)
            return self.resume(ex)
        resp, rest = answer     # rest: no copy, sent before the buffer is read into again
        try:
            head = ex.respond(resp, rest)
        except BackendError as error:
            ex.error = error
            return self.resume(ex)
        if (resp.framing != LENGTH and resp.framing != NONE) or ex.encoder is not None:
            # Chunked, until close or compressed: the greenlet relays it, head already made.
            ex.rest = bytes(rest)
            return self.resume(ex)
        body = ex.body(rest)
        ex.unsent = b""     # the head goes out from here, not from ex.unsent
        ex.response_started = True
        ex.phase = RELAYING
        if ex.remaining or len(body) > HELD_BODY:
            return self.to_client(ex, head, body)
        # A whole answer, and small: it goes out with the burst's other sends
        # (copied: the read buffer is read into again before then). Nothing
        # more is read from the backend meanwhile.
        read_watcher(ex.upstream).stop()
        coalesce.later(self.send_answer, (ex, head, bytes(body)))

    def send_answer(self, args):
        ex, head, body = args
        if self.ex is not ex:
            return      # the connection ended first
        try:
            self.to_client(ex, head, body)
        except Exception:
            self.crash()

    def answer_body(self, ex, data):
        if not data:
            # The backend closed mid-body: the greenlet ends the connection.
            return self.resume(ex)
        self.to_client(ex, ex.body(data), b"")

    def to_client(self, ex, first, second):
        """Send without blocking; what the client does not take at once goes
        to the greenlet, with the rest of the body."""
        try:
            sent = self.raw.sendmsg((first, second)) if second else self.raw.send(first)
        except OSError:
            sent = 0
        ex.entry.sent += sent
        if sent < len(first) + len(second):
            # Copied out of the shared read buffer: the greenlet sends it later.
            ex.unsent = bytes(first[sent:]) + bytes(second) if sent < len(first) \
                else bytes(second[sent - len(first):])
            return self.resume(ex)
        if ex.remaining:
            self.since = self.loop.now()   # request_timeout between reads, as on the greenlet path
            return
        self.finish(ex)

    def finish(self, ex):
        conn = self.conn
        read_watcher(ex.upstream).stop()
        self.ex = None
        keep = ex.finish()
        conn.served += 1
        if not keep or conn.runtime.stopping:
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
        ex, self.ex = self.ex, None
        if ex is not None:
            ex.release(False)
