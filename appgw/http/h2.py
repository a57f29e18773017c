"""HTTP/2 towards clients, sans-io: the h2 connection, its limits, and the
mapping between a stream's header block and appgw's request model.

h2 (python-hyper) parses frames, keeps stream states and flow-control
windows. What it leaves to the application, and this module adds:
- SETTINGS: max_concurrent_streams (listener key), the header list size
  (gateway.max_header_size), ENABLE_CONNECT_PROTOCOL=1 (RFC 8441), all in
  force from the first SETTINGS frame rather than after the client's ACK.
- Budgets for what h2 answers but does not count (RFC 9113 section 10.5):
  streams the client resets (rapid reset, CVE-2023-44487), PING, SETTINGS,
  PRIORITY, and empty DATA frames. Past a budget the connection ends with
  GOAWAY ENHANCE_YOUR_CALM.
- Header validation: h2's own is turned off and `request_from_h2` checks
  the block with the grammar the HTTP/1 path uses (regular expressions,
  not h2's per-character Python loops), so a malformed request is a
  stream error (RFC 9113 8.1.1) instead of h2's connection error, and what
  a backend receives in HTTP/1.1 is as strictly checked as an HTTP/1 head.
h2 keeps what it does well: the CONTINUATION bound (64 frames per block,
each at most SETTINGS_MAX_FRAME_SIZE), HPACK bomb protection (the decoder's
max_header_list_size), window overflow (FLOW_CONTROL_ERROR), stream-id
order, and content-length against the DATA received.
"""
import base64
import hashlib
import os
import re
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from appgw.http import grammar
from appgw.http.errors import ClientError
from appgw.http.h1 import CHUNKED, LENGTH, NONE
from appgw.http.policy import GATEWAY_SET, HOP_BY_HOP, Request

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Connection-specific fields: never valid in HTTP/2 (RFC 9113 8.2.2).
CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive",
                                 b"transfer-encoding", b"upgrade"))
# Not sent to a client in a response: hop-by-hop for HTTP/1 plus the above.
_RESPONSE_DROPPED = HOP_BY_HOP | CONNECTION_SPECIFIC | frozenset((b"http2-settings",))
_NOT_PASSED = HOP_BY_HOP | GATEWAY_SET | frozenset((b"host", b"content-length", b"cookie", b"x-forwarded-for"))

# RFC 9113 8.2.1: lower-case names; the values an HTTP/1.1 field-value allows
# (no CTL but HTAB), without leading or trailing whitespace.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
_METHOD = re.compile(grammar.TOKEN.encode())
_PATH = re.compile(rb"/[\x21-\x7e]*")     # what an HTTP/1.1 request-target may carry

# Per-field overhead when sizing a header list (RFC 9113 6.5.2), the measure
# SETTINGS_MAX_HEADER_LIST_SIZE and the 431 check share.
FIELD_OVERHEAD = 32
# The decoder cuts the connection past this many times max_header_size: a
# block that large is an attack (HPACK bomb), not a request to answer 431.
HARD_HEADER_FACTOR = 4

STREAM_WINDOW = 65535            # per stream: what a client may send ahead of our reading
CONNECTION_WINDOW = 1 << 20      # all streams together


class Malformed(ClientError):
    """A header block that breaks HTTP/2's rules (RFC 9113 8.1.1): the
    stream is reset with PROTOCOL_ERROR rather than answered."""

    def __init__(self, reason):
        super().__init__(400, reason)


class H2Request(Request):
    """A Request made from a stream's header block; `protocol` names the
    client's protocol for the log, `stream_id` the stream, `ws_key` the
    Sec-WebSocket-Key made for the backend of an extended CONNECT."""

    __slots__ = ("protocol", "stream_id", "ws_key")


def request_from_h2(headers, end_stream: bool, max_header_size: int, max_body_size: int = 0,
                    stream_id: int = 0, allow_underscores: bool = False) -> H2Request:
    """The checked Request of one HTTP/2 header block (a list of (name,
    value) bytes pairs as h2 decoded them), filled as parse_request fills it
    from an HTTP/1.1 head, so an exchange serves both alike.

    `end_stream`: the HEADERS frame ended the stream (no body follows).
    `allow_underscores`: pass fields whose names have "_" (else dropped, as
    over HTTP/1: a WSGI backend cannot tell X_User from X-User).
    Raises Malformed for what RFC 9113 calls malformed, ClientError with its
    status for the gateway's own refusals (405, 413, 431, 501)."""
    pseudo, fields = {}, []
    size = 0
    regular = False
    for name, value in headers:
        size += len(name) + len(value) + FIELD_OVERHEAD
        if name[:1] == b":":
            if regular:
                raise Malformed("pseudo-header %s after a regular field" % _show(name))
            if name not in _PSEUDO:
                raise Malformed("unknown pseudo-header %s" % _show(name))
            if name in pseudo:
                raise Malformed("pseudo-header %s repeated" % _show(name))
            pseudo[name] = value
            continue
        regular = True
        if _NAME.fullmatch(name) is None:
            raise Malformed("invalid field name %s" % _show(name))
        if _VALUE.fullmatch(value) is None:
            raise Malformed("invalid value in field %s" % _show(name))
        fields.append((name, value))
    if size > max_header_size:
        raise ClientError(431, "request header block larger than %d bytes" % max_header_size)

    method = pseudo.get(b":method")
    if method is None or _METHOD.fullmatch(method) is None:
        raise Malformed("missing or invalid :method")
    protocol = pseudo.get(b":protocol")
    websocket = False
    if method == b"CONNECT":
        if protocol is None:
            raise ClientError(405, "CONNECT is not supported")
        if protocol != b"websocket":
            raise ClientError(501, "extended CONNECT for %s is not supported" % _show(protocol))
        websocket = True
    elif protocol is not None:
        raise Malformed(":protocol without CONNECT")

    scheme, path = pseudo.get(b":scheme"), pseudo.get(b":path")
    if scheme is None or path is None:
        raise Malformed("missing :scheme or :path")
    if scheme not in (b"http", b"https"):
        raise Malformed("unsupported :scheme %s" % _show(scheme))
    if path == b"*" and method == b"OPTIONS":
        pass
    elif _PATH.fullmatch(path) is None:
        raise Malformed("invalid :path")

    req = H2Request()
    req.protocol, req.stream_id, req.ws_key = b"HTTP/2.0", stream_id, None
    req.method = b"GET" if websocket else method
    req.minor = 1
    req.target = path
    req.path, _, req.query = path.partition(b"?")
    req.head_size = size
    req.keep_alive = True
    req.expect_continue = False
    req.websocket = websocket
    req.drop = HOP_BY_HOP

    hosts, lengths, cookies, passed = [], [], [], []
    forwarded_for = None
    for name, value in fields:
        if name not in _NOT_PASSED:
            if b"_" not in name or allow_underscores:
                passed.append(name + b": " + value)
        elif name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
        elif name in CONNECTION_SPECIFIC:
            raise Malformed("connection-specific field %s" % _show(name))
        elif name == b"te":
            if value.lower() != b"trailers":
                raise Malformed("te other than trailers")
        elif name == b"expect":
            req.expect_continue = value.lower() == b"100-continue"
    if cookies:
        # RFC 9113 8.2.3: crumbs are joined into one field for HTTP/1.1.
        passed.append(b"cookie: " + b"; ".join(cookies))
    if websocket:
        # RFC 8441 has no key: the backend's HTTP/1.1 handshake gets a fresh one.
        req.ws_key = base64.b64encode(os.urandom(16))
        passed = [line for line in passed if not line.startswith((b"sec-websocket-key:", b"sec-websocket-accept:"))]
        passed.append(b"Sec-WebSocket-Key: " + req.ws_key)
        if not any(line.startswith(b"sec-websocket-version:") for line in passed):
            passed.append(b"Sec-WebSocket-Version: 13")
    req.passed = passed
    req.forwarded_for = forwarded_for
    req.headers = fields if not cookies or len(cookies) == 1 else \
        [f for f in fields if f[0] != b"cookie"] + [(b"cookie", b"; ".join(cookies))]
    _set_host(req, pseudo.get(b":authority"), hosts)
    _set_framing(req, lengths, end_stream, max_body_size)
    if websocket and end_stream:
        raise Malformed("extended CONNECT that ends its stream")
    return req


def _set_host(req, authority, hosts):
    if len(hosts) > 1:
        raise Malformed("more than one host field")
    if authority is None and not hosts:
        raise Malformed("neither :authority nor host")
    if authority is not None and hosts and hosts[0] != authority:
        raise Malformed("host differs from :authority")
    host = authority if authority is not None else hosts[0]
    if b"@" in host:
        raise Malformed("userinfo in :authority")
    if not host or grammar.HOST.fullmatch(host) is None:
        raise Malformed("invalid :authority")
    req.host = host


def _set_framing(req, lengths, end_stream, max_body_size):
    if len(lengths) > 1 and len(set(lengths)) > 1:
        raise Malformed("differing content-length fields")
    length = None
    if lengths:
        value = lengths[0]
        if grammar.DIGITS.fullmatch(value) is None or len(value) > 18:
            raise Malformed("invalid content-length")
        length = int(value)
    if end_stream:
        if length:
            raise Malformed("content-length %d but the stream ended with its headers" % length)
        req.content_length, req.framing = 0, NONE
        return
    if max_body_size and length is not None and length > max_body_size:
        raise ClientError(413, "request body larger than %d bytes" % max_body_size)
    if length is not None:
        req.content_length, req.framing = length, LENGTH if length else NONE
    elif req.websocket:
        req.content_length, req.framing = 0, NONE   # the stream's DATA is the tunnel, not a body
    else:
        # A body of unknown length: chunked to the backend (RFC 9113 8.2.2).
        req.content_length, req.framing = 0, CHUNKED


def response_headers(status: int, passed, drop=HOP_BY_HOP, content_length=None, extra=()):
    """An h2 header list for an answer: `passed` holds "Name: value" lines
    (a Response's .passed, or the gateway's own), `drop` the lower-case names
    not to pass on (a Response's .drop); connection-specific fields never go.
    `content_length` is added when not None; `extra` lines come last."""
    headers = [(b":status", b"%d" % status)]
    for line in passed:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in drop or name in _RESPONSE_DROPPED or name == b"content-length":
            continue
        headers.append((name, value.strip()))
    if content_length is not None and status >= 200:    # never on a 1xx (RFC 9110 8.6)
        headers.append((b"content-length", b"%d" % content_length))
    for line in extra:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return headers


def trailer_headers(lines):
    """An h2 trailer block from "Name: value" lines (a chunked body's
    trailer section): lower-cased, without connection-specific fields or
    a content-length (RFC 9110 6.5.1: no framing fields in trailers)."""
    block = []
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in _RESPONSE_DROPPED or name == b"content-length" or name == b"transfer-encoding":
            continue
        block.append((name, value.strip()))
    return block


def _show(value: bytes) -> str:
    return repr(value[:40])[1:]


# -- the connection -------------------------------------------------------------

class Budget:
    """A token bucket: `burst` events at once, refilled at `rate` a second."""

    __slots__ = ("burst", "rate", "tokens", "stamp")

    def __init__(self, burst, rate, now):
        self.burst, self.rate = burst, rate
        self.tokens, self.stamp = float(burst), now

    def take(self, now) -> bool:
        """Spend one token; False when none is left."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Cut(Exception):
    """The connection must end: the GOAWAY is queued in data_to_send()."""

    def __init__(self, error_code, reason):
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


class GoawayFilter:
    """Takes the client's GOAWAY(NO_ERROR) frames out of its bytes before h2
    sees them. h2 ends the whole connection on a GOAWAY it receives, while
    RFC 9113 6.8 lets the streams already open finish: a client that says
    it is done (after its last request, or mid-upload) still gets its
    answers. Other GOAWAYs (errors, or too large to be one) pass to h2."""

    FRAME_HEADER = 9
    LARGEST = 16384     # our SETTINGS_MAX_FRAME_SIZE (the default): h2 refuses larger frames

    def __init__(self):
        self.preface = len(PREFACE)    # bytes of the client's preface still to pass on
        self.payload = 0          # bytes of the current frame's payload still to pass on
        self.held = b""           # an unfinished frame header, or GOAWAY frame

    def feed(self, data: bytes):
        """(the bytes for h2, [last_stream_id of each GOAWAY(NO_ERROR) taken out])."""
        if self.held:
            data, self.held = self.held + data, b""
        n, i = len(data), 0
        if self.preface:          # the client's connection preface: h2 checks it
            i = min(self.preface, n)
            self.preface -= i
        keep, start, goaways = [], 0, []
        while i < n:
            if self.payload:
                step = min(self.payload, n - i)
                self.payload -= step
                i += step
                continue
            body = end = i + self.FRAME_HEADER
            goaway = False
            if end <= n:
                length = int.from_bytes(data[i:i + 3], "big")
                goaway = data[i + 3] == 0x7 and 8 <= length <= self.LARGEST
                if goaway:
                    end += length
            if end > n:   # an unfinished header, or GOAWAY: held back until the rest comes
                keep.append(data[start:i])
                self.held, start = data[i:], n
                break
            if goaway and int.from_bytes(data[i + 5:body], "big") & 0x7FFFFFFF == 0 \
                    and int.from_bytes(data[body + 4:body + 8], "big") == ErrorCodes.NO_ERROR:
                goaways.append(int.from_bytes(data[body:body + 4], "big") & 0x7FFFFFFF)
                keep.append(data[start:i])
                i = start = end
                continue
            self.payload = length
            i = body
        if start == 0 and not self.held:
            return data, goaways      # nothing taken out: no copy
        keep.append(data[start:])
        return b"".join(keep), goaways


class Frontend:
    """One client connection's HTTP/2 state, sans-io: bytes in, events out,
    bytes to send. Only the events a driver acts on come out of receive():
    RequestReceived, DataReceived, StreamEnded, StreamReset, WindowUpdated,
    RemoteSettingsChanged, ConnectionTerminated, TrailersReceived."""

    # Budgets: (burst, refill per second). A browser resets a few streams
    # when a page is left and pings rarely; these are far above that.
    RESETS = (None, 10)          # burst: twice max_concurrent_streams
    PINGS = (50, 10)
    SETTINGS = (20, 2)
    PRIORITIES = (500, 100)
    EMPTY_FRAMES = (100, 20)

    def __init__(self, max_concurrent_streams=100, max_header_size=32768, clock=time.monotonic):
        self.clock = clock
        self.max_streams = max_concurrent_streams
        self.max_header_size = max_header_size
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_inbound_headers=False, normalize_inbound_headers=False,
                                           validate_outbound_headers=False, normalize_outbound_headers=False)
        conn = self.conn = h2.connection.H2Connection(config)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_size,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        # In force at once: the settings above only take effect in h2 when
        # the client acknowledges them, and a hostile client never does.
        conn.decoder.max_header_list_size = max_header_size * HARD_HEADER_FACTOR
        now = clock()
        burst = self.RESETS[0] or 2 * max_concurrent_streams
        self.resets = Budget(burst, self.RESETS[1], now)
        self.pings = Budget(*self.PINGS, now)
        self.settings = Budget(*self.SETTINGS, now)
        self.priorities = Budget(*self.PRIORITIES, now)
        self.empty_frames = Budget(*self.EMPTY_FRAMES, now)
        self.out = bytearray()
        self.last_stream_id = None     # set by goaway(): later streams are refused
        self.last_admitted = 0         # the highest stream handed to a driver
        self.dispatched = 0            # ... by a receive() that returned
        self.closed = False
        self._receiving = False
        self.goaways = GoawayFilter()

    def start(self):
        """Queue the server preface: SETTINGS, and room on the connection window."""
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    def data_to_send(self) -> bytes:
        if self.out:
            data = bytes(self.out) + self.conn.data_to_send()
            self.out.clear()
            return data
        return self.conn.data_to_send()

    def receive(self, data, running=0) -> list:
        """Feed bytes from the client; the events to act on. `running`: the
        streams whose work is still under way, counted against
        max_concurrent_streams even after the client reset them, so a
        reset does not free a place while the backend still works on it.
        Raises Cut when the connection must end."""
        if self.closed:
            return []
        self.dispatched = self.last_admitted
        data, goaways = self.goaways.feed(data)
        try:
            events = self.conn.receive_data(data) if data else []
        except h2.exceptions.DenialOfServiceError as exc:
            self.closed = True
            raise Cut(ErrorCodes.ENHANCE_YOUR_CALM, str(exc)) from None
        except h2.exceptions.ProtocolError as exc:
            self.closed = True
            raise Cut(exc.error_code, str(exc) or type(exc).__name__) from None
        now = self.clock()
        kept = []
        self._receiving = True
        try:
            self._account(events, kept, running, now)
        finally:
            self._receiving = False
        for last_stream_id in goaways:
            # The client opens no more streams; those it opened go on.
            event = h2.events.ConnectionTerminated()
            event.error_code, event.last_stream_id = ErrorCodes.NO_ERROR, last_stream_id
            kept.append(event)
        return kept

    def _account(self, events, kept, running, now):
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                if not self._admit(event.stream_id, running, now):
                    continue
                running += 1
                self.last_admitted = event.stream_id
            elif kind is h2.events.DataReceived:
                if not event.data and event.stream_ended is None and not self.empty_frames.take(now):
                    self._cut("empty DATA frames flood")
            elif kind is h2.events.StreamReset:
                if event.remote_reset and not self.resets.take(now):
                    self._cut("streams reset too often")
            elif kind is h2.events.PingReceived:
                if not self.pings.take(now):
                    self._cut("PING flood")
                continue
            elif kind is h2.events.RemoteSettingsChanged:
                if not self.settings.take(now):
                    self._cut("SETTINGS flood")
            elif kind is h2.events.PriorityUpdated:
                if not self.priorities.take(now):
                    self._cut("PRIORITY flood")
                continue
            elif kind in _IGNORED:
                continue
            kept.append(event)

    def _admit(self, stream_id, running, now) -> bool:
        refuse = self.last_stream_id is not None and stream_id > self.last_stream_id
        if not refuse and running >= self.max_streams:
            # The client opened more streams than it may while the work of
            # streams it reset is still going on: refused, and counted.
            if not self.resets.take(now):
                self._cut("streams opened past max_concurrent_streams too often")
            refuse = True
        if refuse:
            self.reset(stream_id, ErrorCodes.REFUSED_STREAM)
        return not refuse

    def reset(self, stream_id, code=ErrorCodes.CANCEL):
        """Reset a stream if h2 still knows it open."""
        try:
            self.conn.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            pass

    def refused(self, stream_id):
        """A stream error of our own (a malformed request): costs the client
        a reset from its budget like one it sent."""
        self.reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
        if not self.resets.take(self.clock()):
            self._cut("malformed requests too often")

    def _cut(self, reason):
        # The events of a receive() that cuts are never acted on: the GOAWAY
        # names the last stream a driver was handed before, so the client
        # knows which requests were not processed.
        served = self.dispatched if self._receiving else self.last_admitted
        self.last_stream_id = min(served, self.last_stream_id if self.last_stream_id is not None else served)
        self.close(ErrorCodes.ENHANCE_YOUR_CALM)
        raise Cut(ErrorCodes.ENHANCE_YOUR_CALM, reason)

    def goaway(self):
        """Graceful shutdown: tell the client the last stream that will be
        served (the highest it opened) while those streams go on; h2's own
        close_connection would end them, so the frame is made here."""
        if self.closed or self.last_stream_id is not None:
            return
        self.last_stream_id = self.conn.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self.out += self.conn.data_to_send()
        self.out += frame.serialize()

    def close(self, code=ErrorCodes.NO_ERROR):
        """The final GOAWAY; nothing more is sent on any stream after it."""
        if self.closed:
            return
        self.closed = True
        last = self.last_stream_id if self.last_stream_id is not None else self.conn.highest_inbound_stream_id
        try:
            self.conn.close_connection(error_code=code, last_stream_id=last)
        except h2.exceptions.ProtocolError:
            pass


_IGNORED = (h2.events.SettingsAcknowledged, h2.events.PingAckReceived, h2.events.AlternativeServiceAvailable,
            h2.events.UnknownFrameReceived)


def websocket_accept(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a backend must answer `key` with (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
