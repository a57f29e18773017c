"""One HTTP/2 stream driven through the exchange, like an HTTP/1 request.

The backend half is the HTTP/1 greenlet driver's own (proxy.Connection:
connect, send the head and body, read the answer head, replay): the stream
driver inherits it and replaces only what faces the client. The exchange
makes every decision and every client head; a head it makes in HTTP/1.1
form (an answer, an error, a redirect, an interim answer) is read back into
its fields and sent as HEADERS. A proxied answer's HEADERS are made from
the fields its HTTP/1.1 head is made of (the backend's Response and the
affinity Set-Cookie), sparing a second parse per request.

After a backend's 101 for an extended CONNECT (RFC 8441) the stream becomes
a tunnel: its DATA carries the WebSocket bytes both ways, END_STREAM is a
half-close, RST_STREAM a reset.
"""
import socket
import time

import gevent
from h2.errors import ErrorCodes

from appgw.upstream import sockio
from appgw.http.errors import BackendError, ClientError
from appgw.exchange.exchange import Exchange
from appgw.downstream.h2conn import StreamGone
from appgw.http.h2 import Cut, Malformed, request_from_h2, response_headers, trailer_headers, websocket_accept
from appgw.http.h1 import CHUNKED, HEAD_END, LAST_CHUNK, LENGTH, NONE, ChunkedDecoder, FramingError, chunk
from appgw.http.policy import parse_response
from appgw.downstream.h1 import ClientGone, Connection


def serve_stream(session, stream):
    """The handler of every HTTP/2 stream (h2conn.Session calls it in the
    stream's own greenlet)."""
    driver = StreamDriver(session, stream)
    ex = Exchange(driver, b"")
    gw = session.gateway
    try:
        ex.req = request_from_h2(stream.headers, stream.end_stream, gw.max_header_size, gw.max_body_size, stream.id,
                                 gw.allow_underscores_in_headers)
    except Malformed:
        ex.entry.status = 400
        driver.log(ex.entry)
        try:
            session.frontend.refused(stream.id)
        except Cut:
            session.close()
        stream.closed = True
        return
    except ClientError as error:
        driver.answer_error(ex, error)
        return
    ex.entry.received = ex.req.head_size
    try:
        driver.drive(ex)
    except StreamGone:
        # Reset by the client (or the connection ended) wherever the
        # exchange stood: drive() let go of its backend connection.
        ex.entry.status = ex.entry.status or 499
        driver.log(ex.entry)
    finally:
        for seconds, timer in driver.timers.items():
            timer.watcher.stop()
            session.timer_pool.setdefault(seconds, []).append(timer)


class StreamDriver(Connection):
    """proxy.Connection's driver of the exchange for one stream: the
    backend half inherited, the client half on the stream."""

    __slots__ = ("session", "stream")

    def __init__(self, session, stream):
        # Not Connection.__init__: there is no client socket of our own and
        # no fast path; the fields the inherited methods read are set here.
        self.sock = None
        self.client_ip = session.client_ip
        self.client_port = session.client_port
        self.scan = None
        self.site = session.site
        self.runtime = session.runtime
        self.gateway = session.gateway
        self.buf = b""
        self.served = 0
        self.waiting = False
        self.handed_over = False
        self.timers = {}
        self.fast = None
        self.counted = session.site.listeners[0].listener.name
        self.session = session
        self.stream = stream

    def timer(self, seconds):
        """A timer of this stream's own (a timer serves one greenlet at a
        time), taken from the connection's spares: making one per request
        costs more than the request's other waits."""
        timer = self.timers.get(seconds)
        if timer is None:
            spare = self.session.timer_pool.get(seconds)
            timer = self.timers[seconds] = spare.pop() if spare else sockio.Timer(seconds)
        return timer

    def log(self, entry):
        entry.version = b"HTTP/2.0"
        self.runtime.stats.http2_requests += 1
        Connection.log(self, entry)

    # -- the client half ---------------------------------------------------------

    def send(self, data, entry):
        """An answer the exchange made in HTTP/1.1 form (head and short
        body): an interim answer, an error, a redirect."""
        end = data.find(HEAD_END)
        resp = parse_response(bytes(data[:end + 4]), self.method())
        body = data[end + 4:]
        headers = response_headers(resp.status, resp.passed, resp.drop, resp.content_length)
        entry.sent += len(data)
        if resp.status < 200:
            self.call(self.stream.send_headers, headers)
            return
        self.call(self.stream.send_headers, headers, not body)
        if body:
            self.call(self.stream.send_data, body, True, self.gateway.client_idle_timeout)

    def method(self):
        return b"GET"   # never HEAD: a gateway answer's Content-Length is its own body's

    @staticmethod
    def call(step, *args):
        """A stream operation; what ends the stream for the client ends the exchange."""
        try:
            return step(*args)
        except StreamGone:
            raise ClientGone() from None
        except socket.timeout:
            raise ClientGone() from None

    def from_client(self, size, ex):
        try:
            data = self.stream.read(self.gateway.client_idle_timeout)
        except socket.timeout:
            raise ClientError(408, "request body not received in time") from None
        except StreamGone:
            raise ClientGone() from None
        if not data:
            raise ClientGone()   # h2 holds the stream to its content-length: this is a reset
        return data

    def stream_chunked_body(self, ex, head):
        """A body of unknown length (no content-length): chunked to the backend."""
        upstream, entry = ex.upstream, ex.entry
        limit = self.gateway.max_body_size
        stream = self.stream
        pending = head
        total = 0
        while True:
            try:
                data = stream.read(self.gateway.client_idle_timeout)
            except socket.timeout:
                raise ClientError(408, "request body not received in time") from None
            except StreamGone:
                raise ClientGone() from None
            if not data:
                self.to_backend(upstream, pending + LAST_CHUNK)
                return
            total += len(data)
            entry.received += len(data)
            if limit and total > limit:
                raise ClientError(413, "request body larger than %d bytes" % limit)
            self.to_backend(upstream, pending + chunk(data))
            pending = b""

    def relay_answer(self, ex):
        """The answer's HEADERS and its body as DATA, flow control
        permitting; compressed when the exchange chose so."""
        resp, rest, stream, entry = ex.resp, ex.rest, self.stream, ex.entry
        ex.unsent = b""
        encoder = ex.encoder
        # The fields the exchange made its client head from, after its rules
        # and compression edited them (its HTTP/1.1 form is not read back: a
        # second parse per request).
        length = None
        if encoder is None and (resp.framing == LENGTH or (resp.bodiless and resp.status != 204)):
            length = resp.content_length
        headers = response_headers(resp.status, resp.passed, resp.drop, length,
                                   (ex.set_cookie,) if ex.set_cookie else ())
        timeout = self.gateway.client_idle_timeout
        if encoder is None and (resp.framing == NONE or resp.framing == LENGTH):
            first = ex.body(rest)
            done = not ex.remaining
            self.call(stream.send_headers, headers, done and not first)
            ex.response_started = True
            if first:
                self.call(stream.send_data, first, done, timeout)
            entry.sent += len(first)
            while ex.remaining:
                data = ex.body(self.from_backend(ex.upstream))
                self.call(stream.send_data, data, not ex.remaining, timeout)
                entry.sent += len(data)
            return
        self.call(stream.send_headers, headers)
        ex.response_started = True
        if encoder is None and resp.framing == CHUNKED:
            self.relay_chunked_h2(ex, bytes(rest), timeout)
            return
        for data in self.backend_body(ex, rest):
            for out in (encoder.pieces(data) if encoder is not None else (data,)):
                self.call(stream.send_data, out, False, timeout)
                entry.sent += len(out)
        tail = encoder.finish() if encoder is not None else b""
        self.call(stream.send_data, tail, True, timeout)
        entry.sent += len(tail)

    def relay_chunked_h2(self, ex, data, timeout):
        """A chunked answer's pieces as DATA, its trailer fields (if any) as
        the stream's last HEADERS."""
        decoder = ChunkedDecoder()
        stream = self.stream
        while True:
            try:
                pieces = decoder.feed(data)
            except FramingError:
                raise ClientGone() from None   # the stream is reset: the client sees a cut body
            for piece in pieces:
                if piece:
                    self.call(stream.send_data, piece, False, timeout)
                    ex.entry.sent += len(piece)
            if decoder.done:
                if decoder.rest:
                    ex.unclean()
                trailers = trailer_headers(decoder.trailers)
                if trailers:
                    self.call(stream.send_headers, trailers, True)
                else:
                    self.call(stream.end)
                return
            data = self.from_backend(ex.upstream)

    # -- WebSocket over HTTP/2 -------------------------------------------------------

    def websocket(self, ex) -> bool:
        """The backend accepted the upgrade: answer 200 with what it
        negotiated, then carry the bytes both ways until both sides ended."""
        resp, req = ex.resp, ex.req
        accept = next((v.strip() for n, v in resp.headers if n.lower() == b"sec-websocket-accept"), None)
        if req.ws_key is None or accept != websocket_accept(req.ws_key):
            raise BackendError(502, "backend answered the WebSocket handshake with a wrong Sec-WebSocket-Accept")
        passed = [line for line in resp.passed if not line.lower().startswith(b"sec-websocket-accept:")]
        headers = response_headers(200, passed, resp.drop, None, (ex.set_cookie,) if ex.set_cookie else ())
        stream, entry = self.stream, ex.entry
        self.call(stream.send_headers, headers)
        ex.response_started = True
        entry.status = 200
        upstream, endpoint = ex.upstream, ex.endpoint
        early = bytes(ex.rest)
        ex.hand_over()
        stats = self.runtime.stats
        stats.websocket_active += 1
        stats.websocket_total += 1
        tunnel = Tunnel(stream, upstream, ex.target.settings.websocket_timeout)
        try:
            tunnel.run(early)
        finally:
            stats.websocket_active -= 1
            endpoint.active -= 1
            upstream.close()
            entry.received += tunnel.up
            entry.sent += tunnel.down
            entry.ended = tunnel.ended
            self.log(entry)
        return False


class Tunnel:
    """The bytes of one bridged WebSocket: client DATA -> backend in a
    greenlet of its own, backend -> client DATA in the stream's greenlet.
    Flow control on the stream and blocking sends on the socket are the
    backpressure both ways; no byte either way for `idle` seconds ends it."""

    __slots__ = ("stream", "upstream", "idle", "last", "up", "down", "ended", "backend_done")

    def __init__(self, stream, upstream, idle):
        self.stream, self.upstream, self.idle = stream, upstream, idle
        self.last = time.monotonic()
        self.up = self.down = 0
        self.ended = ""             # the first cause, in the relay's words (+ "client reset")
        self.backend_done = False   # the backend ended its direction (END_STREAM sent)

    def end(self, why):
        self.ended = self.ended or why

    def run(self, early):
        pump = gevent.spawn(self.pump_up)
        try:
            self.pump_down(early)
            if self.backend_done:
                pump.join()   # the backend is done sending: the client may still be
        finally:
            if not pump.dead:
                pump.kill(block=False)
            if not self.backend_done:
                self.stream.reset(ErrorCodes.CANCEL)

    def gone_why(self):
        """The stream was taken from under the tunnel: by the client's reset,
        or by a stop that cut its connection at drain_timeout (logged as the
        HTTP/1.1 relay logs it)."""
        stream = self.stream
        if stream.session.runtime.stopping and not stream.reset_by_client:
            return "stopped"
        return "client reset"

    def quiet_for(self):
        return time.monotonic() - self.last

    def pump_up(self):
        stream, upstream = self.stream, self.upstream
        try:
            while True:
                try:
                    data = stream.read(max(0.01, self.idle - self.quiet_for()))
                except socket.timeout:
                    if self.quiet_for() >= self.idle:
                        self.end("idle timeout")
                        break
                    continue
                if not data:
                    self.end("client close")
                    upstream.shutdown(socket.SHUT_WR)   # the client's END_STREAM: a half-close
                    return
                self.last = time.monotonic()
                sockio.sendall(upstream, data)
                self.up += len(data)
        except StreamGone:
            self.end(self.gone_why())
        except OSError:
            self.end("error")
        self._shut()

    def pump_down(self, early):
        stream, upstream = self.stream, self.upstream
        data = early
        try:
            while True:
                if data:
                    self.last = time.monotonic()
                    stream.send_data(data, False, self.idle)
                    self.down += len(data)
                upstream.settimeout(max(0.01, self.idle - self.quiet_for()))
                try:
                    data = upstream.recv(sockio.RECV)
                except socket.timeout:
                    if self.quiet_for() >= self.idle:
                        self.end("idle timeout")
                        self._shut()
                        return
                    data = b""
                    continue
                if not data:
                    stream.end()   # the backend's FIN: END_STREAM, the client may go on sending
                    self.backend_done = True
                    self.end("backend close")
                    return
        except (StreamGone, socket.timeout):
            self.end(self.gone_why())
        except OSError:
            self.end("error")
        self._shut()

    def _shut(self):
        try:
            self.upstream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
