"""The HTTP/1 client connection and its greenlet driver of the exchange.

One greenlet per client connection reads heads and drives each request's
`Exchange` through its phases: connect, send the head and stream the body,
read the answer head, relay the answer, finish; then the keep-alive loop.
A request costs no greenlet switches beyond the waits for I/O. The fast
path (fastpath.py) serves the common exchange from event-loop callbacks and
hands the greenlet any exchange it cannot finish: `drive` goes on from the
exchange's phase. After a 101 the relay takes over.
"""
import functools
import socket
import time

import gevent
import gevent.select
from gevent import GreenletExit

from appgw.downstream import h1_fast as fastpath
from appgw.upstream import relay
from appgw.upstream import sockio
from appgw.http.early import HeadScanner
from appgw.upstream.balancer import RetryWindow
from appgw.http.errors import BackendError, ClientError
from appgw.exchange.exchange import ANSWERED, AWAITING, NEW, RELAYING, ROUTED, SENDING, Exchange
from appgw.http.h1 import CHUNKED, HEAD_END, LAST_CHUNK, LENGTH, NONE, ChunkedDecoder, FramingError, chunk
from appgw.acme.challenges import ChallengeAnswer
from appgw.routing.router import Redirector

RECV = sockio.RECV
EARLY_ANSWER_WAIT = 1.0    # seconds for the answer of a backend that stopped taking the body


class ClientGone(Exception):
    """The client closed or reset its connection; nothing more can be said to it."""


class Connection:
    """State of one client connection across its requests."""

    __slots__ = ("sock", "client_ip", "client_port", "site", "runtime", "gateway", "buf", "served", "waiting",
                 "handed_over", "timers", "fast", "counted", "scan", "linger")

    def __init__(self, sock, client_ip, site, runtime, client_port=0):
        self.sock = sock
        self.client_ip = client_ip
        self.client_port = client_port
        self.site = site
        self.runtime = runtime
        self.gateway = runtime.config.gateway
        self.buf = b""
        self.served = 0
        self.waiting = False   # idle between requests: a graceful stop may close it
        self.handed_over = False  # a WebSocket relay owns the socket now
        self.timers = {}          # seconds -> sockio.Timer, reused across requests
        # The listener whose appgw_connections_active counts this connection
        # (the bind's first: Host has not chosen one when it is accepted).
        self.counted = site.listeners[0].listener.name
        self.scan = None          # the early judge of a head that came in pieces
        self.linger = False       # answered before the request body was read: see listener.linger
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
                    ex = self.fast.park()
                    if ex is None:
                        break
                    if ex is not fastpath.READ_ON:
                        if not self.drive(ex):
                            break
                        self.served += 1
                        continue
                head = self.read_head()
                if head is None or not self.drive(Exchange(self, head)):
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
                    return self.refuse(ClientError(431, "request head larger than %d bytes" % gw.max_header_size),
                                       len(buf))
                self.buf, self.scan = buf[end + 4:], None
                return buf[:end + 4]
            if len(buf) > gw.max_header_size:
                return self.refuse(ClientError(431, "request head larger than %d bytes" % gw.max_header_size),
                                   len(buf))
            if buf:
                error = self.judge_early(buf)
                if error is not None:
                    return self.refuse(error, len(buf))
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
                    return self.refuse(ClientError(408, "request head not received in time"), len(buf))
            try:
                if self.served and not buf:
                    # After an answer the next request is rarely there yet: wait first.
                    data = sockio.recv_after_wait(self.sock, RECV, self.timer(timeout))
                else:
                    self.sock.settimeout(timeout)
                    data = sockio.recv(self.sock, RECV)
            except socket.timeout:
                if buf:
                    return self.refuse(ClientError(408, "request head not received in time"), len(buf))
                return None
            self.waiting = False
            if not data:
                return None
            buf = (buf + data).lstrip(b"\r\n") if not buf else buf + data

    def judge_early(self, buf):
        """The verdict on the unfinished head `buf` so far: a ClientError to
        answer at once, or None to wait for more (see early.HeadScanner)."""
        if self.scan is None:
            self.scan = HeadScanner()
        return self.scan.verdict(buf)

    def refuse(self, error: ClientError, received: int):
        """Answer a head that never became a request (its `received` bytes
        counted in the access log), and end the connection."""
        self.answer_error(Exchange.refused(self, error, received), error)
        return None

    def log(self, entry):
        self.runtime.stats.finished(entry)
        if self.runtime.access_log.enabled:
            self.runtime.access_log.write(entry)

    def send(self, data, entry):
        try:
            sockio.sendall(self.sock, data)
        except OSError as exc:
            raise ClientGone() from exc
        entry.sent += len(data)

    # -- one request, from wherever it stands --------------------------------

    def drive(self, ex) -> bool:
        """Serve the exchange from its phase on; True when the connection may
        carry another request. Whatever goes wrong, at any phase, becomes the
        answer the client sees (ex.fail)."""
        try:
            if ex.error is not None:
                raise ex.error
            if ex.phase is NEW:
                target = ex.take()
                if type(target) is Redirector:
                    self.send(ex.redirect(), ex.entry)
                    return ex.finish()
                if type(target) is ChallengeAnswer:
                    self.send(ex.challenge_answer(), ex.entry)
                    return ex.finish()
                ex.phase = ROUTED
            if ex.phase is ROUTED:
                self.connect(ex)
            if ex.phase <= AWAITING:
                self.send_and_read(ex)
            if ex.phase is ANSWERED:
                if ex.resp.status == 101:
                    return self.websocket(ex)
                self.relay_answer(ex)
            if ex.phase is RELAYING:
                self.relay_rest(ex)
            return ex.finish()
        except (ClientError, BackendError) as error:
            return self.answer_error(ex, error)
        except ClientGone:
            ex.release(False)
            ex.entry.status = ex.entry.status or 499
            self.log(ex.entry)
            return False
        except BaseException:
            ex.release(False)
            raise

    def answer_error(self, ex, error) -> bool:
        payload, keep = ex.fail(error)
        if not keep and (ex.req is None or ex.req.framing != NONE):
            self.linger = True    # a body (or the rest of a refused head) may be on its way still
        if payload:
            try:
                self.send(payload, ex.entry)
            except ClientGone:
                keep = False
        self.log(ex.entry)
        return keep

    # -- to the backend ------------------------------------------------------

    def connect(self, ex):
        """Connect to a server of the pool (first to the one the fast path
        chose, if it did), trying the next one when a connect fails: nothing
        has been sent yet, so any request may move on."""
        tried = []
        # retry_window: with no server to take it, the request waits for one
        # (woken by a probe or a connect that succeeds), then tries them all again.
        retry = RetryWindow(ex.target, self.runtime.stop_requested) if ex.target.settings.retry_window else None
        endpoint = ex.endpoint or ex.choose(tried)
        while True:
            if endpoint is None:
                if retry is None or not retry.wait():
                    raise ex.no_server(tried, retry is not None)
                tried = []
                endpoint = ex.choose(tried)
                continue
            try:
                sock = endpoint.checkout(ex.stale_check)
            except (OSError, ValueError) as exc:  # ValueError: ssl refusing its arguments
                endpoint.connect_failed(exc)
                tried.append(endpoint)
                endpoint = ex.choose(tried)
                continue
            ex.bind(endpoint, sock)
            return

    def send_and_read(self, ex):
        """Send the request (from ex.sent), read the answer's head. A request
        the exchange may replay goes once more on a new connection when the
        first one fails before any byte of an answer."""
        replayed = False
        while True:
            try:
                if ex.phase is SENDING:
                    self.send_request(ex)
                    ex.request_sent()
                self.read_answer_head(ex)
                return
            except BackendError as error:
                if ex.phase is SENDING and ex.req.framing != NONE and self.early_answer(ex):
                    return
                if replayed or not ex.may_replay(error):
                    raise
            replayed = True
            ex.upstream.close()
            try:
                upstream = ex.endpoint.connect()
            except (OSError, ValueError) as exc:
                ex.endpoint.connect_failed(exc)
                if not ex.target.settings.retry_window:
                    raise BackendError(502, "backend connection failed: %s" % exc) from None
                # The server went away under the request (a restart): it
                # waits for a server of the pool, as a new request would.
                ex.unbind()
                self.connect(ex)
                continue
            ex.rebind(upstream)

    def early_answer(self, ex) -> bool:
        """The backend stopped taking the request body: it may have answered
        first (a 413, a 401 before an upload), and that answer is relayed,
        as nginx does. The client's connection ends after it, since the rest
        of its body is unread. False when no answer head came."""
        ex.req.keep_alive = False
        ex.upstream.settimeout(EARLY_ANSWER_WAIT)
        try:
            self.read_answer_head(ex)
        except BackendError:
            return False
        ex.reusable = False
        self.linger = True
        return True

    def send_request(self, ex):
        """Send the head, then stream the body, re-framed for the backend."""
        req, upstream = ex.req, ex.upstream
        head = ex.up_head[ex.sent:] if ex.sent else ex.up_head
        if req.framing == NONE:
            self.to_backend(upstream, head)
            return
        if req.expect_continue and not self.buf:
            self.send(ex.continue_head(), ex.entry)
        if req.framing == LENGTH:
            self.stream_length_body(ex, head)
        else:
            self.stream_chunked_body(ex, head)

    def stream_length_body(self, ex, head):
        upstream, entry = ex.upstream, ex.entry
        remaining = ex.req.content_length
        first, self.buf = self.buf[:remaining], self.buf[remaining:]
        self.to_backend(upstream, head + first)
        remaining -= len(first)
        entry.received += len(first)
        while remaining:
            data = self.from_client(min(RECV, remaining), ex)
            remaining -= len(data)
            entry.received += len(data)
            self.to_backend(upstream, data)

    def stream_chunked_body(self, ex, head):
        upstream, entry = ex.upstream, ex.entry
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
            data = self.from_client(RECV, ex)

    def from_client(self, size, ex):
        """A piece of the request body. While nothing from the client is
        there, the backend of the exchange `ex` is watched too: one that
        answers before the whole body came (a 413, a 401) is heard at once,
        not after the client's next bytes or its idle timeout."""
        sock, timeout = self.sock, self.gateway.client_idle_timeout
        try:
            data = sockio.recv_now(sock, size)
            while data is None:
                if not self.wait_client_or_backend(ex.upstream, timeout):
                    self.backend_spoke(ex)
                    continue
                sock.settimeout(timeout)
                data = sockio.recv(sock, size)
        except socket.timeout:
            raise ClientError(408, "request body not received in time") from None
        except OSError as exc:
            raise ClientGone() from exc
        if not data:
            raise ClientGone()
        return data

    def wait_client_or_backend(self, upstream, timeout) -> bool:
        """Until the client's socket is readable (True) or the backend's
        (False: it spoke before the body was all sent)."""
        if type(upstream) is not sockio.PLAIN and upstream.pending():
            return False
        readable = gevent.select.select([self.sock, upstream], [], [], timeout)[0]
        if upstream in readable:
            return False
        if not readable:
            raise socket.timeout()
        return True

    def backend_spoke(self, ex):
        """The backend sent something while the body was still going to it.
        Interim answers (a 100, a 103) are passed on and the body goes on; a
        final answer, or the backend's end, stops the body: BackendError,
        and early_answer relays what came."""
        try:
            data = sockio.recv(ex.upstream, RECV)
        except OSError as exc:
            raise BackendError(502, "backend connection failed: %s" % (exc.strerror or exc)) from None
        if not data:
            raise BackendError(502, "backend closed the connection before the request body was sent")
        final, ex.buf = self.pass_interims(ex, ex.buf + data)
        if final is not None:
            raise BackendError(502, "backend answered before the request body was sent")
        # else nothing, or a head still coming: the body goes on meanwhile

    def pass_interims(self, ex, buf):
        """Sends the client the interim answers (1xx, but an awaited 101) at
        the start of `buf`; returns (the final head's (Response, rest) or
        None when none is whole yet, the bytes after the interims)."""
        while True:
            answer = ex.take_answer_head(buf)
            if answer is None:
                return None, buf
            resp, rest = answer
            if resp.status >= 200 or ex.is_upgrade(resp):
                return answer, buf
            interim = ex.interim(resp)
            if interim:
                self.send(interim, ex.entry)
            buf = bytes(rest)

    @staticmethod
    def to_backend(upstream, data):
        try:
            sockio.sendall(upstream, data)
        except socket.timeout:
            raise BackendError(504, "backend did not accept the request in time") from None
        except OSError as exc:
            raise BackendError(502, "backend connection failed: %s" % (exc.strerror or exc), True) from None

    def read_answer_head(self, ex):
        """Read until the answer head is whole (ex.buf holds what came
        already), passing interim answers on; the exchange makes the
        client's head."""
        upstream = ex.upstream
        buf, ex.buf = ex.buf, b""
        fresh = not buf     # no byte of an answer yet: a failure may be replayed
        while True:
            if buf:
                final, left = self.pass_interims(ex, buf)
                if final is not None:
                    ex.respond(*final)
                    return
                if left is not buf:    # an interim answer went on: no replay now
                    fresh = False
                    buf = left
            try:
                data = sockio.recv_after_wait(upstream, RECV, self.timer(upstream.gettimeout())) if not buf \
                    else sockio.recv(upstream, RECV)
            except socket.timeout:
                raise ex.timed_out() from None
            except OSError as exc:
                reason = "backend connection failed: %s" % (exc.strerror or exc)
                raise BackendError(502, reason, fresh and not buf) from None
            if not data:
                raise BackendError(502, "backend closed the connection without answering", fresh and not buf)
            buf += data

    # -- back to the client --------------------------------------------------

    def relay_answer(self, ex):
        """Send the client head and the body, re-framed as the exchange chose."""
        resp, head, rest = ex.resp, ex.unsent, ex.rest
        ex.unsent = b""
        self.sock.settimeout(self.gateway.client_idle_timeout)   # for each send of the answer
        entry = ex.entry
        if ex.encoder is not None:
            self.relay_compressed(ex, head, rest)
        elif resp.framing == NONE or resp.framing == LENGTH:
            first = ex.body(rest)
            ex.response_started = True
            try:
                sockio.send_parts(self.sock, head, first)
            except OSError as exc:
                raise ClientGone() from exc
            entry.sent += len(head) + len(first)
            ex.phase = RELAYING
        elif resp.framing == CHUNKED:
            self.relay_chunked(ex, head, rest)
        else:
            self.relay_until_close(ex, head, rest)

    def from_backend(self, upstream):
        """A piece of response body; a failure now can only close the client."""
        try:
            data = sockio.recv(upstream, RECV)
        except OSError:
            data = b""
        if not data:
            raise ClientGone()  # the client sees a short body or a missing last chunk
        return data

    def relay_rest(self, ex):
        """Send what the client has not taken yet, then relay the rest of a
        Content-Length body."""
        ex.response_started = True
        self.sock.settimeout(self.gateway.client_idle_timeout)
        if ex.unsent:
            unsent, ex.unsent = ex.unsent, b""
            self.send(unsent, ex.entry)
        while ex.remaining:
            self.send(ex.body(self.from_backend(ex.upstream)), ex.entry)

    def relay_chunked(self, ex, head, rest):
        framing, upstream, entry = ex.framing, ex.upstream, ex.entry
        decoder = ChunkedDecoder()
        pending, data = head, bytes(rest)
        while True:
            try:
                pieces = decoder.feed(data)
            except FramingError as exc:
                if not ex.response_started:   # nothing sent yet: a clean 502
                    raise BackendError(502, "invalid chunked body from backend: %s" % exc) from None
                raise ClientGone() from None
            if pieces:
                if framing == CHUNKED:
                    pending += b"".join([chunk(p) for p in pieces if p])
                else:
                    pending += b"".join(pieces)
            if decoder.done:
                ex.response_started = True
                self.send(pending + LAST_CHUNK if framing == CHUNKED else pending, entry)
                if decoder.rest:
                    ex.unclean()
                return
            if pending:
                ex.response_started = True
                self.send(pending, entry)
                pending = b""
            data = self.from_backend(upstream)

    def relay_compressed(self, ex, head, rest):
        """Decode the backend's framing, encode, send chunked. The encoder
        takes a bounded piece at a time and the loop is served between
        pieces, so a large compressible answer never holds up other
        connections; memory stays one read and one piece."""
        entry, encoder = ex.entry, ex.encoder
        ex.response_started = True
        self.send(head, entry)
        for data in self.backend_body(ex, rest):
            for out in encoder.pieces(data):
                self.send(chunk(out), entry)
                gevent.sleep(0)
        tail = encoder.finish()
        self.send((chunk(tail) if tail else b"") + LAST_CHUNK, entry)

    def backend_body(self, ex, rest):
        """The answer's body as it comes, its backend framing undone."""
        framing, upstream = ex.resp.framing, ex.upstream
        if framing == LENGTH:
            data = ex.body(rest)
            while True:
                if data:
                    yield data
                if not ex.remaining:
                    return
                data = ex.body(self.from_backend(upstream))
        elif framing == CHUNKED:
            decoder = ChunkedDecoder()
            data = bytes(rest)
            while True:
                try:
                    pieces = decoder.feed(data)
                except FramingError:
                    raise ClientGone() from None   # the client sees a missing last chunk
                for piece in pieces:
                    if piece:
                        yield piece
                if decoder.done:
                    if decoder.rest:
                        ex.unclean()
                    return
                data = self.from_backend(upstream)
        else:
            ex.unclean()
            if rest:
                yield bytes(rest)
            while True:
                try:
                    data = sockio.recv(upstream, RECV)
                except OSError:
                    raise ClientGone() from None
                if not data:
                    return
                yield data

    def relay_until_close(self, ex, head, rest):
        """An answer that ends when the backend closes: chunked to an
        HTTP/1.1 client, as it comes to an HTTP/1.0 one (which then sees the
        close)."""
        chunked, entry = ex.framing == CHUNKED, ex.entry
        ex.response_started = True
        pending = head
        for data in self.backend_body(ex, rest):
            self.send(pending + (chunk(data) if chunked else data), entry)
            pending = b""
        if pending or chunked:
            self.send(pending + (LAST_CHUNK if chunked else b""), entry)

    # -- WebSocket -------------------------------------------------------------

    def websocket(self, ex) -> bool:
        """The backend said 101: send its head and what followed it, then
        HTTP is over and the relay owns both sockets (this greenlet ends: an
        idle session holds none)."""
        self.send(ex.unsent + bytes(ex.rest), ex.entry)
        early, self.buf = self.buf, b""
        session = relay.Session(self.sock, ex.upstream, ex.target.settings.websocket_timeout)
        endpoint, entry = ex.endpoint, ex.entry
        ex.hand_over()
        runtime = self.runtime
        self.handed_over = True
        endpoint.sessions.add(session)
        runtime.sessions.add(session)
        runtime.stats.websocket_active += 1
        runtime.stats.websocket_total += 1
        session.start(early, functools.partial(_session_ended, runtime, endpoint, entry, self.counted))
        return False


def _session_ended(runtime, endpoint, entry, counted, session):
    endpoint.sessions.discard(session)
    runtime.sessions.discard(session)
    endpoint.active -= 1
    stats = runtime.stats
    stats.websocket_active -= 1
    stats.connections_active[counted] -= 1
    entry.received += session.up
    entry.sent += session.down
    entry.ended = session.ended
    stats.finished(entry)
    if runtime.access_log.enabled:
        runtime.access_log.write(entry)
