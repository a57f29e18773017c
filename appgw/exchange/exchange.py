"""One request's exchange, sans-io: every per-request decision, made once.

An `Exchange` is the request from the moment its head is taken until its
answer is finished. It never blocks and touches no socket: a driver does the
I/O (the greenlet path in proxy.py, the callback path in fastpath.py) and
calls these methods in the order of the phases, handing in what it read and
sending what they return. A driver that stops part-way hands the exchange to
another, and `phase` says where to go on.

    NEW       a head, not yet taken (parsed, routed)
    ROUTED    a server chosen, not yet connected to
    SENDING   bound to a backend connection; `sent` bytes of `up_head` are out
    AWAITING  the request is out; `buf` holds the answer's first bytes
    ANSWERED  the answer head is parsed (`resp`, the body bytes after it in
              `rest`) and the client's head made (`unsent`); nothing sent yet
    RELAYING  the client head is out; `unsent` and `remaining` body bytes are left
    DONE      finished: the backend connection pooled or closed, the line logged

Decisions made here and nowhere else: routing, the request rules (a
rewrite set's request phase, and a re-route), the server (balancer,
affinity cookie), whether a connection needs its stale check, the upstream
head, the answer head's limits and parse, interim answers, the client's
head for every answer (proxied or the gateway's own: the response rules,
compression, error pages), keep-alive, whether the backend connection may
be pooled, the log line. A target without rules pays one attribute test per
phase for them.
"""
import enum
import logging
import time

from appgw.control.accesslog import Entry
from appgw.exchange.compress import Encoder, client_coding, compressed_lines, vary_lines
from appgw.exchange.errorpages import reason as reason_phrase
from appgw.http.errors import BackendError, ClientError
from appgw.http.h1 import CHUNKED, HEAD_END, LENGTH, MAX_RESPONSE_HEAD, NONE, UNTIL_CLOSE, FramingError
from appgw.http.policy import (
    HOP_BY_HOP, backend_head, client_head, cookie_value, gateway_response, parse_request, parse_response, passed_lines,
)
from appgw.exchange.rewrite import RewriteView
from appgw.routing.router import Redirector

log = logging.getLogger("appgw")


class Phase(enum.IntEnum):
    NEW = 0
    ROUTED = 1
    SENDING = 2
    AWAITING = 3
    ANSWERED = 4
    RELAYING = 5
    DONE = 6


NEW, ROUTED, SENDING, AWAITING, ANSWERED, RELAYING, DONE = Phase


class Exchange:
    """One request and its answer. `down` is the client connection that
    carries it: it names the client, the site and the runtime, and logs."""

    __slots__ = ("down", "phase", "head", "req", "entry", "routes", "target", "affinity", "endpoint",
                 "upstream", "set_cookie", "up_head", "sent", "buf", "resp", "rest", "framing", "keep",
                 "reusable", "remaining", "unsent", "error", "started", "response_started", "view", "rewrite",
                 "encoder")

    def __init__(self, down, head: bytes, req=None):
        self.down = down
        self.phase = NEW
        self.head = head            # the raw request head
        self.req = req              # parsed already, when a driver did so
        self.entry = Entry(down.client_ip, down.site.listeners[0].listener.name)
        self.entry.received = len(head)
        self.routes = self.target = self.affinity = self.endpoint = self.upstream = None
        self.set_cookie = None
        self.up_head = b""
        self.sent = 0
        self.buf = b""
        self.resp = self.rest = None
        self.framing = NONE         # of the answer as the client gets it
        self.keep = self.reusable = False
        self.remaining = 0
        self.unsent = b""
        self.error = None           # an error met by a driver that could not answer it (a timeout)
        self.started = 0.0
        self.response_started = False   # a byte of the answer reached the client
        self.view = None            # the rewrite set's variables, when the target has a set
        self.rewrite = None         # what the set does to this request (rewrite.RequestRewrite)
        self.encoder = None         # compress.Encoder of a compressed answer

    @classmethod
    def refused(cls, down, error, received: int):
        """A head refused before it became a request: drive() answers `error`."""
        ex = cls(down, b"")
        ex.entry.received = received
        ex.error = error
        return ex

    # -- the request ---------------------------------------------------------

    def take(self):
        """Parse (unless done) and route the request. Returns the target: a
        Backend (the driver goes on with choose), a Redirector (answer it
        with redirect()) or an ACME ChallengeAnswer (answer it with
        challenge_answer()). Raises ClientError for a request to refuse."""
        down = self.down
        req = self.req
        if req is None:
            gateway = down.gateway
            req = self.req = parse_request(self.head, gateway.max_body_size, gateway.allow_underscores_in_headers)
        runtime = down.runtime
        if runtime.access_log.enabled:
            runtime.access_log.fill_request(self.entry, req)
        acme = runtime.acme
        if acme.http01_binds:   # before routing; a gateway without ACME pays this test only
            challenge = acme.http01_answer(down.site.bind, req.method, req.path)
            if challenge is not None:
                self.target = challenge
                return challenge
        routes = self.routes = down.site.listener_for(req.host)
        if routes is None:
            raise ClientError(404, "no listener for host %s" % req.host.decode("latin-1"))
        self.entry.listener, self.entry.rule = routes.listener.name, routes.rule.name
        target = self.target = routes.route(req.path)
        if type(target) is Redirector:
            return target
        if target.rewrite is not None:
            target = self.request_rules(target)
            if type(target) is Redirector:
                return target
        name = target.settings.affinity_cookie
        if name:
            self.affinity = cookie_value(req.headers, name.encode())
        return target

    def request_rules(self, target):
        """Run the target's rewrite set on the request; a rewritten path with
        reroute is routed again through the rule's paths, once: the new
        target's own set does not run."""
        down = self.down
        self.view = RewriteView(self.req, down.client_ip, down.client_port, down.site.protocol == "https",
                                self.routes.listener.port)
        rewrite = self.rewrite = target.rewrite.request(self.view)
        if rewrite is not None and rewrite.reroute and rewrite.path is not None:
            target = self.target = self.routes.route(rewrite.path)
        return target

    def redirect(self) -> bytes:
        """The answer to a request routed to a redirect."""
        req, target = self.req, self.target
        location = target.location(req.host, req.path, req.query)
        self.keep = req.keep_alive and req.framing == NONE and not self.down.runtime.stopping
        return self.gateway_answer(target.status, (b"Location: " + location,), self.keep)

    def challenge_answer(self) -> bytes:
        """The answer to an ACME HTTP-01 validation request."""
        self.keep = self.req.keep_alive and self.req.framing == NONE and not self.down.runtime.stopping
        return self.gateway_answer(200, (b"Content-Type: application/octet-stream", b"Cache-Control: no-store"),
                                   self.keep, self.target.body)

    def choose(self, tried=()):
        """A server of the target's pool not in `tried`, or None."""
        return self.target.choose(tried, self.affinity)

    def no_server(self, tried, waited=False) -> BackendError:
        pool = self.target.pool.name
        reason = "no server of pool %s could be reached" % pool if tried else "no healthy server in pool %s" % pool
        if waited:
            reason += " within the retry window of %gs" % self.target.settings.retry_window
        return BackendError(502, reason)

    @property
    def stale_check(self) -> bool:
        """A body-less idempotent request is replayed if a reused connection
        proves closed, so it may skip the check at checkout."""
        req = self.req
        return not (req.framing == NONE and req.idempotent)

    def bind(self, endpoint, upstream):
        """The request is bound to a backend connection: it counts as active
        from here, and its upstream head is made."""
        self.endpoint, self.upstream = endpoint, upstream
        self.entry.server = endpoint.label
        target = self.target
        settings = target.settings
        name = settings.affinity_cookie
        if name and self.affinity != endpoint.cookie:
            # A new client, or its server left: (re)write the cookie.
            self.set_cookie = b"Set-Cookie: %s=%s; Path=/; HttpOnly" % (name.encode(), endpoint.cookie)
        else:
            self.set_cookie = None
        req, routes = self.req, self.routes
        if settings.host_name:
            host = settings.host_name.encode()
        elif settings.pick_host_name_from_backend:
            host = endpoint.address_host.encode()
        else:
            host = req.host
        self.up_head = backend_head(req, host, routes.proto, routes.port, self.down.client_ip.encode(), self.rewrite)
        endpoint.active += 1
        self.started = time.monotonic()
        self.sent = 0
        self.phase = SENDING

    def may_replay(self, error: BackendError) -> bool:
        """The backend connection failed before any byte of an answer: a
        request that is safe to repeat goes once more on a new connection
        (nginx's proxy_next_upstream error); a timeout is never repeated."""
        req = self.req
        return error.replayable and req.framing == NONE and req.idempotent

    def unbind(self):
        """Back to ROUTED: the server went away before any byte of the
        request reached it, and another (or the same, back) will take it."""
        self.endpoint.active -= 1
        self.endpoint = self.upstream = None
        self.phase = ROUTED

    def rebind(self, upstream):
        """A new connection to the same server, for the replay."""
        self.upstream = upstream
        self.sent = 0
        self.buf = b""
        self.phase = SENDING

    def request_sent(self):
        self.phase = AWAITING

    # -- the answer --------------------------------------------------------

    def take_answer_head(self, buf, end=None):
        """(Response, bytes after its head) once `buf` holds a whole head,
        else None. `end`: where its CRLFCRLF starts, when the caller found it
        already. Raises BackendError for a head that is invalid or too
        large. The body bytes after the head are not copied."""
        if end is None:
            end = buf.find(HEAD_END)
        if end < 0:
            if len(buf) > MAX_RESPONSE_HEAD:
                raise BackendError(502, "response head from backend too large")
            return None
        try:
            resp = parse_response(bytes(buf[:end + 4]), self.req.method)
        except FramingError as exc:
            raise BackendError(502, "invalid response from backend: %s" % exc) from None
        return resp, memoryview(buf)[end + 4:]

    def timed_out(self) -> BackendError:
        return BackendError(504, "backend did not answer within %gs" % self.target.settings.request_timeout)

    def continue_head(self) -> bytes:
        """The gateway's own 100 Continue, sent before a body is read."""
        return client_head(_CONTINUE, NONE, True, 1)

    def interim(self, resp) -> bytes:
        """What a client is sent of an interim (1xx) answer that is not a
        WebSocket's 101: HTTP/1.1 clients get it, except 100, which is the
        gateway's own to send."""
        if resp.status == 101:
            raise BackendError(502, "backend switched protocols unasked")
        if resp.status == 100 or self.req.minor != 1:
            return b""
        return client_head(resp, NONE, True, 1)

    def is_upgrade(self, resp) -> bool:
        return resp.status == 101 and self.req.websocket

    def respond(self, resp, rest=b"") -> bytes:
        """The client's head for the backend's answer `resp`: the one place a
        proxied answer's head is made. Decides the client framing, keep-alive
        and whether the backend connection may be pooled."""
        req = self.req
        down = self.down
        runtime = down.runtime
        runtime.stats.backend_seconds[self.target.pool.name].observe(time.monotonic() - self.started)
        self.resp, self.rest = resp, rest
        self.entry.status = resp.status
        extra = (self.set_cookie,) if self.set_cookie else ()
        self.phase = ANSWERED
        target = self.target
        if target.rewrite is not None and target.rewrite.has_response:
            resp.passed = target.rewrite.response(self.view, passed_lines(resp), resp.status, resp.headers)
            resp.drop = HOP_BY_HOP
        if resp.status == 101:
            # HTTP ends here for this connection: the relay owns it next.
            self.keep = self.reusable = False
            self.framing = NONE
            self.unsent = client_head(resp, NONE, True, req.minor, extra + _UPGRADE_LINES)
            return self.unsent
        framing = resp.framing
        if framing == CHUNKED or framing == UNTIL_CLOSE:
            framing = CHUNKED if req.minor == 1 else UNTIL_CLOSE
            if framing == UNTIL_CLOSE and resp.codings:
                raise BackendError(502, "transfer coding an HTTP/1.0 client cannot receive")
        if target.compress is not None and req.minor == 1:
            framing = self.compression(resp, framing)
        self.framing = framing
        self.keep = req.keep_alive and framing != UNTIL_CLOSE and not runtime.stopping
        # Some servers (gevent's pywsgi among them) send a body after a HEAD
        # answer; it would poison the next request on a pooled connection.
        self.reusable = resp.keep_alive and req.method != b"HEAD"
        # What body() lets through: a Content-Length body, and nothing after a
        # body-less answer (bytes there make the connection unclean).
        self.remaining = resp.content_length if resp.framing == LENGTH else 0
        self.unsent = client_head(resp, framing, self.keep, req.minor, extra)
        return self.unsent

    def compression(self, resp, framing):
        """Compress the answer when its type, size and request allow and the
        client accepts a coding; the client framing then is chunked. An
        answer that might be compressed for another client says Vary."""
        req = self.req
        lines = passed_lines(resp)
        if not self.target.compress.eligible(req.method, resp.status, lines, resp.content_length,
                                             transfer_codings=resp.codings):
            return framing
        coding, ranged = client_coding(req.headers)
        if coding is None or ranged:
            resp.passed = vary_lines(lines)
        else:
            resp.passed = compressed_lines(lines, coding)
            self.encoder = Encoder(coding)
            framing = CHUNKED
        resp.drop = HOP_BY_HOP
        return framing

    def body(self, data):
        """A piece of a Content-Length (or body-less) answer as read: what of it belongs to
        the body. Bytes past the length make the connection unclean."""
        remaining = self.remaining
        if len(data) > remaining:
            data = data[:remaining]
            self.reusable = False
        self.remaining = remaining - len(data)
        return data

    def unclean(self):
        """The backend connection cannot carry another request."""
        self.reusable = False

    # -- ending ------------------------------------------------------------

    def release(self, reusable: bool):
        """The backend connection's part in the request is over (once)."""
        endpoint, upstream = self.endpoint, self.upstream
        if upstream is None:
            return
        self.upstream = None
        endpoint.active -= 1
        if reusable:
            endpoint.checkin(upstream)
        else:
            upstream.close()

    def hand_over(self):
        """The backend connection belongs to a WebSocket relay now."""
        self.upstream = None
        self.phase = DONE

    def finish(self) -> bool:
        """Pool or drop the backend connection, log. True when the client
        connection may carry another request."""
        self.release(self.reusable)
        self.phase = DONE
        self.down.log(self.entry)
        return self.keep

    def fail(self, error):
        """The answer to an error met at any phase: (bytes to send, keep).
        b"" when nothing can be said any more (the answer has begun). The
        driver logs once it has sent it."""
        self.release(False)
        self.phase = DONE
        req = self.req
        entry = self.entry
        if isinstance(error, ClientError):
            # After a refused head the next request's start cannot be trusted;
            # a 404 leaves nothing of its request unread, so it may go on.
            keep = (error.status == 404 and req is not None and req.framing == NONE
                    and req.keep_alive and not self.down.runtime.stopping)
        else:
            keep = False
            if self.response_started:
                return b"", False
        # The reason names pools, servers and addresses: the logs get it,
        # the client the error page or a generic body.
        entry.reason = error.reason
        if error.status >= 500:
            log.warning("%d to %s for %s: %s", error.status, self.down.client_ip, _what(req), error.reason)
        else:
            log.debug("%d to %s for %s: %s", error.status, self.down.client_ip, _what(req), error.reason)
        routes = self.routes
        content_type, body = (routes.pages if routes is not None else self.down.site.pages).body(error.status)
        return self.gateway_answer(error.status, (b"Content-Type: " + content_type,), keep, body), keep

    def gateway_answer(self, status: int, lines, keep: bool, body=b"") -> bytes:
        """The head (and body) of an answer the gateway makes itself."""
        self.entry.status = status
        resp = gateway_response(status, reason_phrase(status), list(lines), len(body))
        minor = self.req.minor if self.req is not None else 1
        return client_head(resp, LENGTH if body else NONE, keep, minor) + body


def _what(req) -> str:
    """The request, for a log line."""
    if req is None:
        return "a request that could not be read"
    return "%s %s" % (req.method.decode("latin-1"), req.target.decode("latin-1")[:200])


_UPGRADE_LINES = (b"Upgrade: websocket", b"Connection: Upgrade")
_CONTINUE = gateway_response(100, b"Continue", [], 0)
