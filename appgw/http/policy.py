"""Request policy, sans-io: turn a raw head into a checked Request, or a ClientError.

llhttp already refuses most malformed input (obs-fold, whitespace before the
colon, CR/LF/NUL in values, bad Content-Length, CL with TE); this layer adds
what it lets through and the gateway's own rules (SPEC 4), then builds the
heads sent on from parsed values only, never by copying raw bytes.
"""
import logging
from dataclasses import dataclass
from typing import Optional

from appgw.http import early
from appgw.http import headlines
from appgw.http.errors import ClientError
from appgw.http.h1 import (
    CHUNKED, LENGTH, NONE, UNTIL_CLOSE, FramingError, header_tokens, parse_head, parse_response_head,
)

log = logging.getLogger("appgw")

# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones the gateway sets itself.
HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection",
))
GATEWAY_SET = frozenset((b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host", b"expect"))
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


@dataclass(slots=True, init=False, eq=False)
class Request:
    """One checked client request, filled field by field by parse_request
    (or, for HTTP/2, request_from_h2): no __init__ to run per request."""

    method: bytes
    target: bytes             # origin form, as the backend gets it
    minor: int                # HTTP/1.x minor version (1 for HTTP/2)
    headers: list             # (name, value) pairs as sent, names keep their spelling
    host: bytes
    path: bytes
    query: bytes
    keep_alive: bool
    framing: str              # NONE, LENGTH or CHUNKED (h1.py)
    content_length: int
    expect_continue: bool
    websocket: bool
    drop: frozenset           # lower-cased names that must not be forwarded
    forwarded_for: Optional[bytes]   # the client's X-Forwarded-For, joined
    head_size: int
    # The "Name: value" lines a backend gets as they are, made while the
    # fields were read (every field the gateway reads is one it drops or
    # rewrites); names that Connection lists are taken out later.
    passed: list

    @property
    def idempotent(self):
        return self.method in IDEMPOTENT


def parse_request(head: bytes, max_body_size: int = 0, allow_underscores: bool = False) -> Request:
    """Check one request head (bytes up to and including CRLFCRLF).

    The first wrong line decides the answer, as early.HeadScanner decides
    it while a head arrives. Header names with "_" are dropped unless
    `allow_underscores`: a WSGI backend maps "-" and "_" to the same environ
    key, so "Content_Length" would be a header the gateway did not act on."""
    method, target, minor, authority = headlines.request_line(head)
    try:
        _, headers = parse_head(headlines.for_llhttp(head, method))
    except FramingError as exc:
        raise early.first_wrong_line(head) or headlines.framing_error(exc) from None

    req = Request()
    req.method, req.minor, req.headers, req.head_size = method, minor, headers, len(head)
    hosts, lengths, codings, connection, upgrade, passed = [], [], [], [], [], []
    expect = forwarded_for = None
    for name, value in headers:
        lname = name.lower()
        field = _REQUEST_FIELDS.get(lname)
        if field is None:
            if lname not in _NOT_PASSED:
                if _UNDERSCORE in name and not allow_underscores:
                    log.debug("request header %r dropped: its name has an underscore", name)
                    continue
                passed.append(name + b": " + value)
            continue
        if field == _HOST:
            headlines.judge_host(hosts, value, authority)
            hosts.append(value)
        elif field == _LENGTH:
            headlines.judge_length(lengths, value)
            lengths.append(value)
        elif field == _CODING:
            headlines.judge_coding(minor)
            codings.append(value)
        elif field == _CONNECTION:
            connection += _connection_tokens(value)
        elif field == _UPGRADE:
            upgrade += header_tokens(value)
        elif field == _EXPECT:
            expect = value.strip().lower()
        else:
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value

    if not hosts and minor == 1:
        raise ClientError(400, "missing Host header")
    req.host = authority if authority is not None else hosts[0].strip() if hosts else b""
    req.target = target
    path, _, query = target.partition(b"?")
    req.path, req.query = path, query
    if codings:
        if len(codings) > 1 or codings[0].strip().lower() != b"chunked":
            raise ClientError(501, "unsupported transfer coding")
        req.content_length, req.framing = 0, CHUNKED
    elif lengths:
        req.content_length = int(lengths[0].strip())
        if max_body_size and req.content_length > max_body_size:
            raise ClientError(413, "request body larger than %d bytes" % max_body_size)
        req.framing = LENGTH if req.content_length else NONE
    else:
        req.content_length, req.framing = 0, NONE
    req.expect_continue = expect == b"100-continue" and minor == 1
    req.keep_alive = _keeps_alive(minor, connection)
    req.websocket = bool(upgrade) and method == b"GET" and b"websocket" in upgrade and b"upgrade" in connection
    if req.websocket and req.framing != NONE:
        raise ClientError(400, "WebSocket upgrade with a body")
    req.drop = _hop_by_hop(connection)
    req.forwarded_for = forwarded_for
    req.passed = passed
    return req


# The request fields the gateway acts on.
_HOST, _LENGTH, _CODING, _CONNECTION, _UPGRADE, _EXPECT, _FORWARDED_FOR = range(7)
_REQUEST_FIELDS = {b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _CODING,
                   b"connection": _CONNECTION, b"upgrade": _UPGRADE, b"expect": _EXPECT,
                   b"x-forwarded-for": _FORWARDED_FOR}
_NOT_PASSED = HOP_BY_HOP | GATEWAY_SET
# A byte as an int: `in` then scans without taking a buffer, 8x faster per header.
_UNDERSCORE = ord("_")


def backend_head(req: Request, host: bytes, proto: bytes, port: bytes, client_ip: bytes, rewrite=None) -> bytes:
    """The head sent to a backend, re-serialized from parsed values.

    Hop-by-hop headers and the names Connection lists are dropped first; the
    X-Forwarded-* headers are added after, so a client cannot strip them.
    `rewrite` (a rewrite.RequestRewrite) changes the target and edits the
    header lines last, so a rewrite set may set X-Forwarded-* too (the
    framing and Host lines are not its to change: the config refuses that)."""
    target = req.target if rewrite is None else rewrite.target(req)
    lines = [b"%s %s HTTP/1.1" % (req.method, target), b"Host: " + host]
    lines += req.passed if req.drop is HOP_BY_HOP else _without(req.passed, req.drop)
    if req.websocket:
        lines.append(b"Upgrade: websocket")
        lines.append(b"Connection: Upgrade")
    elif req.framing == CHUNKED:
        lines.append(b"Transfer-Encoding: chunked")
    elif req.framing == LENGTH:
        lines.append(b"Content-Length: %d" % req.content_length)
    elif req.method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"Content-Length: 0")
    forwarded = client_ip if req.forwarded_for is None else req.forwarded_for + b", " + client_ip
    lines.append(b"X-Forwarded-For: " + forwarded)
    lines.append(b"X-Forwarded-Proto: " + proto)
    lines.append(b"X-Forwarded-Port: " + port)
    lines.append(b"X-Original-Host: " + req.host)
    if rewrite is not None and rewrite.headers:
        lines[1:] = rewrite.apply_headers(lines[1:])
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def passed_lines(resp) -> list:
    """The answer's header lines that go on to the client."""
    return resp.passed if resp.drop is HOP_BY_HOP else _without(resp.passed, resp.drop)


def _without(lines, names):
    """The "Name: value" lines whose name is not in `names` (lower case)."""
    return [line for line in lines if line[:line.index(b":")].lower() not in names]


def cookie_value(headers, name: bytes):
    """The value of cookie `name` in the request's Cookie headers, or None."""
    prefix = name + b"="
    for hname, value in headers:
        if hname.lower() == b"cookie":
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    return part[len(prefix):].strip(b'"')
    return None


@dataclass(slots=True, init=False, eq=False)
class Response:
    """An answer head: a backend's (parse_response) or the gateway's own
    (gateway_response). Status, framing and the headers to pass on."""

    minor: int
    status: int
    reason: bytes
    headers: object           # (name, value) pairs as the backend sent them
    framing: str              # how the body is delimited as it comes from the backend
    # The backend's Content-Length, or None when it sent none. For HEAD and
    # 304 it describes the entity, not this message, and is kept.
    content_length: Optional[int]
    keep_alive: bool          # the backend connection may carry another request
    bodiless: bool
    drop: frozenset           # lower-cased names not passed on
    codings: list             # transfer codings other than chunked
    passed: list              # the "Name: value" lines that go on


def gateway_response(status: int, reason: bytes, lines: list, length: int) -> Response:
    """An answer the gateway makes itself, as the model a client head is made from."""
    resp = Response()
    resp.minor, resp.status, resp.reason, resp.headers = 1, status, reason, ()
    resp.passed, resp.drop, resp.codings = lines, HOP_BY_HOP, []
    resp.content_length = length or None   # a body-less answer says "Content-Length: 0" only where it may
    resp.framing = LENGTH if length else NONE
    resp.keep_alive = True
    resp.bodiless = status < 200 or status == 204 or status == 304
    return resp


# The response fields that decide framing and connection reuse.
_RESPONSE_FIELDS = {b"content-length": _LENGTH, b"transfer-encoding": _CODING, b"connection": _CONNECTION}


def parse_response(head: bytes, request_method: bytes) -> Response:
    """Parse a backend response head; raises FramingError when it is not HTTP."""
    minor, status, headers = parse_response_head(head)
    resp = Response()
    resp.minor, resp.status, resp.headers = minor, status, headers
    resp.reason = head[13:head.index(b"\r\n")]   # after "HTTP/1.x NNN ", which llhttp checked
    length = None
    codings, connection, passed = [], (), []
    for name, value in headers:
        lname = name.lower()
        field = _RESPONSE_FIELDS.get(lname)
        if field is None:
            if lname not in HOP_BY_HOP:
                passed.append(name + b": " + value)
            continue
        if field == _LENGTH:
            value = value.strip()
            if length is not None and value != length:
                raise FramingError("invalid Content-Length from backend")
            length = value
        elif field == _CODING:
            codings += header_tokens(value)
        else:
            connection = (connection or []) + _connection_tokens(value)
    resp.keep_alive = _keeps_alive(minor, connection)
    resp.drop = _hop_by_hop(connection)
    resp.passed = passed
    resp.content_length = None
    if length is not None:
        if not length.isdigit() or len(length) > 18:
            raise FramingError("invalid Content-Length from backend")
        resp.content_length = int(length)
    resp.bodiless = request_method == b"HEAD" or status < 200 or status == 204 or status == 304
    if resp.bodiless:
        resp.framing = NONE
        resp.codings = []
        return resp
    # Codings other than chunked are not undone: they go on to the client.
    resp.codings = [c for c in codings if c != b"chunked"] if codings else codings
    if codings:
        if codings[-1] != b"chunked":
            resp.framing, resp.keep_alive = UNTIL_CLOSE, False
        else:
            resp.framing = CHUNKED
    elif resp.content_length is not None:
        resp.framing = LENGTH if resp.content_length else NONE
    else:
        resp.framing, resp.keep_alive = UNTIL_CLOSE, False
    return resp


_KEEP_ALIVE = [b"keep-alive"]


def _keeps_alive(minor, connection):
    """Whether a message of HTTP/1.`minor` whose Connection header lists
    `connection` leaves its connection open."""
    return b"close" not in connection if minor == 1 else b"keep-alive" in connection


def _hop_by_hop(connection):
    """The names not passed on: HOP_BY_HOP and those Connection lists. A plain
    "keep-alive", nearly every message's, adds nothing: no new set then."""
    return HOP_BY_HOP.union(connection) if connection and connection != _KEEP_ALIVE else HOP_BY_HOP


def _connection_tokens(value):
    # Nearly every backend says just "keep-alive" or "close".
    lowered = value.lower()
    if lowered == b"keep-alive" or lowered == b"close":
        return [lowered]
    return header_tokens(value)


def client_head(resp: Response, framing: str, keep_alive: bool, client_minor: int, extra=()) -> bytes:
    """The head sent to the client: the backend's headers less hop-by-hop ones,
    with framing and Connection set for this client connection."""
    lines = [b"HTTP/1.%d %d %s" % (client_minor, resp.status, resp.reason)]
    lines += passed_lines(resp)
    if framing == CHUNKED:
        lines.append(b"Transfer-Encoding: " + b", ".join(resp.codings + [b"chunked"]))
    elif resp.content_length is not None and resp.status != 204 and resp.status >= 200:   # RFC 9110 8.6
        lines.append(b"Content-Length: %d" % resp.content_length)
    elif framing == NONE and not resp.bodiless:
        lines.append(b"Content-Length: 0")
    lines.extend(extra)
    if not keep_alive:
        lines.append(b"Connection: close")
    elif client_minor == 0:
        lines.append(b"Connection: keep-alive")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)

