"""Property tests of the request policy (issue 6, item 6).

Random and mutated request heads go through `policy.parse_request` exactly as
the connection handler cuts them (up to the first CRLFCRLF). It may only
refuse with a ClientError carrying one of the gateway's statuses; whatever it
accepts must re-serialize (`backend_head`) to one unambiguous request that
httptools parses back to the same method, target, Host, framing and headers,
and that the policy itself accepts again unchanged.
"""
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appgw.http.errors import ClientError
from appgw.http.h1 import CHUNKED, LAST_CHUNK, LENGTH, NONE
from appgw.http.policy import backend_head, parse_request
from test_corpus import ACCEPTED, parse_forwarded

pytestmark = pytest.mark.sansio

STATUSES = {400, 405, 413, 431, 501}
MAX_BODY = 4096
CLIENT_IP = b"10.1.2.3"
# SPEC 4's hop-by-hop list (written out here, not taken from the code under test).
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
              b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection"}
GATEWAY_HEADERS = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host")
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a/b?c=d HTTP/1.0\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: app.example:8080\r\nContent-Length: 5\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET http://evil.example/x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Forwarded-For\r\n\r\n",
    b"DELETE /r HTTP/1.1\r\nHost: [::1]:80\r\nCookie: a=b\r\nCookie: c=d\r\nX-Empty:\r\n\r\n",
] + sorted({case.raw.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" for case in ACCEPTED})


def cut_head(data: bytes) -> bytes:
    """What the gateway's reader hands the policy: up to the first CRLFCRLF."""
    end = data.find(b"\r\n\r\n")
    return data + b"\r\n\r\n" if end < 0 else data[:end + 4]


# --- strategies -----------------------------------------------------------------------

NASTY = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b"\x0b", b"\x0c", b":", b",", b";", b"\x7f",
         b"\xff", b"\"", b"\\", b"@", b"/", b"?", b"#", b"%", b"0x", b"+", b"-", b"_", b"*"]
HEADER_NAMES = [b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Transfer-Encoding",
                b"transfer-encoding", b"Connection", b"Upgrade", b"Expect", b"X-Forwarded-For",
                b"X-Forwarded-Proto", b"X-Original-Host", b"Keep-Alive", b"TE", b"Trailer", b"Proxy-Connection",
                b"X-A", b"Cookie", b"Sec-WebSocket-Key", b"HTTP2-Settings"]
HEADER_VALUES = [b"x", b"", b"0", b"5", b" 5", b"5 ", b"+5", b"1_0", b"0x5", b"-1", b"5, 5",
                 b"99999999999999999999", b"4097", b"chunked", b"Chunked", b" chunked", b"\x0bchunked",
                 b"chunked, identity", b"identity", b"gzip, chunked", b"close", b"keep-alive", b"Upgrade",
                 b"upgrade, X-Forwarded-For", b"websocket", b"h2c", b"100-continue", b"evil.example",
                 b"a b", b"user@evil", b"[::1]:80", b"x:80", b"x:", b"1.2.3.4", b"\xe9t\xe9", b"a\tb"]
# The headers that decide framing and routing, with values near their edges.
FRAMING = {
    b"Content-Length": [b"5", b"0", b"4096", b"4097", b" 5", b"+5", b"1_0", b"0x5", b"5, 5", b"-1", b"",
                        b"099", b"18446744073709551616"],
    b"Transfer-Encoding": [b"chunked", b"CHUNKED", b" chunked", b"chunked, identity", b"identity",
                           b"\x0bchunked", b"chunked ", b"chunked,", b",chunked", b"gzip, chunked"],
    b"Connection": [b"close", b"keep-alive", b"Upgrade", b"X-Forwarded-For, Host", b"content-length",
                    b"transfer-encoding, te", b"upgrade, http2-settings"],
    b"Upgrade": [b"websocket", b"WebSocket", b"h2c", b"websocket, h2c"],
}
METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
           b"POST", b"PUT", b"get", b"G ET", b"PRI", b"FOO", b"", b"GET\x00"]
TARGETS = [b"/", b"/a?b=c", b"*", b"http://evil.example/x", b"https://e.example:1/", b"http://u@e/x",
           b"evil.example:443", b"", b"/a b", b"/a\x00", b"//x", b"/%00", b"ftp://x/", b"http://e?q"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/0.9", b""]
# Weighted toward the valid spelling, so that many heads reach the policy's own checks.
SEPARATORS = [b": "] * 8 + [b":", b" : ", b":\t", b"\t:", b" :", b"::"]
LINE_ENDS = [b"\r\n"] * 20 + [b"\n", b"\r", b"\r\n ", b"\r\n\t", b""]


def fragments():
    return st.one_of(st.sampled_from(NASTY), st.sampled_from(HEADER_VALUES),
                     st.binary(min_size=1, max_size=6))


@st.composite
def built_heads(draw):
    """Heads assembled from hostile parts. Half are "clean": a well-formed
    request line, Host, and well-spelled field lines whose values sit at the
    edges of the framing rules, so that many reach the policy's own checks;
    the rest mix in bad separators, line ends, names and request lines."""
    clean = draw(st.booleans())
    if clean or draw(st.booleans()):
        line = b"%s %s %s" % (draw(st.sampled_from(METHODS[:11])), draw(st.sampled_from(TARGETS[:6])),
                              draw(st.sampled_from(VERSIONS[:3])))
    else:
        method = draw(st.sampled_from(METHODS))
        target = draw(st.one_of(st.sampled_from(TARGETS), st.binary(max_size=12).map(lambda b: b"/" + b)))
        version = draw(st.sampled_from(VERSIONS))
        line = method + draw(st.sampled_from([b" ", b"  ", b"\t"])) + target + b" " + version
    lines = [line]
    if clean or draw(st.booleans()):
        lines.append(b"Host: " + draw(st.sampled_from(HEADER_VALUES[-12:])))
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            name, value = draw(st.sampled_from(sorted(FRAMING.items())))
            value = draw(st.sampled_from(value))
        elif clean:
            name, value = draw(st.sampled_from(HEADER_NAMES)), draw(st.sampled_from(HEADER_VALUES))
        else:
            name = draw(st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=8)))
            value = draw(st.one_of(st.sampled_from(HEADER_VALUES),
                                   st.lists(fragments(), max_size=4).map(b"".join)))
        lines.append(name + (b": " if clean else draw(st.sampled_from(SEPARATORS))) + value)
    ends = [b"\r\n" if clean else draw(st.sampled_from(LINE_ENDS)) for _ in lines]
    return cut_head(b"".join(line + end for line, end in zip(lines, ends)) + b"\r\n")


@st.composite
def mutated_heads(draw):
    """A valid head with a few bytes inserted, removed, replaced or lines duplicated."""
    head = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "case"]))
        pos = draw(st.integers(0, max(len(head) - 1, 0)))
        if op == "insert":
            head[pos:pos] = draw(fragments())
        elif op == "delete" and head:
            head[pos:pos + draw(st.integers(1, 3))] = b""
        elif op == "replace" and head:
            head[pos] = draw(st.integers(0, 255))
        elif op == "duplicate":
            lines = bytes(head).split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 3)) if len(lines) > 3 else 1
                j = draw(st.integers(1, len(lines) - 2))
                lines.insert(j, lines[i])
                head = bytearray(b"\r\n".join(lines))
        elif op == "case" and head:
            head[pos:pos + 4] = bytes(head[pos:pos + 4]).swapcase()
    return cut_head(bytes(head))


random_heads = st.binary(max_size=200).map(cut_head)
random_printable_heads = st.lists(
    st.sampled_from([b"GET", b" ", b"/", b"HTTP/1.1", b"\r\n", b"Host", b":", b"x", b"Content-Length",
                     b"Transfer-Encoding", b"chunked", b"5", b"\n", b"\r", b"\t", b"\x00", b","]),
    max_size=40).map(b"".join).map(cut_head)


# --- the properties -----------------------------------------------------------------------

def reparse(data: bytes, websocket: bool):
    """The one request in `data`, as h11 (independent of the gateway's llhttp,
    and taking any token as a method) reads it."""
    requests = parse_forwarded(data, upgrade_ok=websocket)
    assert len(requests) == 1, f"not exactly one request: {data!r}"
    if websocket:
        assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1, "bytes after the upgrade head"
        assert requests[0].values(b"upgrade") == [b"websocket"], f"WebSocket handshake lost its upgrade: {data!r}"
    return requests[0]


def check_head(head: bytes):
    try:
        req = parse_request(head, MAX_BODY)
    except ClientError as error:
        assert error.status in STATUSES, (error.status, error.reason, head)
        assert isinstance(error.reason, str) and "\n" not in error.reason
        return None
    check_accepted(req)
    return req


def check_accepted(req):
    data = backend_head(req, req.host, b"https", b"8443", CLIENT_IP)
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1
    body = {LENGTH: b"b" * req.content_length, CHUNKED: LAST_CHUNK}.get(req.framing, b"")
    parsed = reparse(data + body, req.websocket)

    assert parsed.method == req.method
    assert parsed.url == req.target
    assert parsed.version == "1.1"
    lower = [(n.lower(), v) for n, v in parsed.headers]
    names = [n for n, _ in lower]

    def only(name):
        found = [v for n, v in lower if n == name]
        assert len(found) == 1, (name, lower)
        return found[0]

    assert only(b"host") == req.host
    assert only(b"x-original-host") == req.host
    assert only(b"x-forwarded-proto") == b"https" and only(b"x-forwarded-port") == b"8443"
    assert only(b"x-forwarded-for").endswith(CLIENT_IP)
    assert not (b"content-length" in names and b"transfer-encoding" in names)
    if req.framing == CHUNKED:
        assert only(b"transfer-encoding") == b"chunked"
    elif req.framing == LENGTH:
        assert only(b"content-length") == b"%d" % req.content_length
    else:
        assert b"transfer-encoding" not in names
        assert [v for n, v in lower if n == b"content-length"] in ([], [b"0"])
    # Worked out here from the client's headers, independently of req.drop.
    listed = {token.strip().lower() for n, v in req.headers if n.lower() == b"connection"
              for token in v.split(b",") if token.strip()}
    gateway_made = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade",
                    *GATEWAY_HEADERS}
    assert not (HOP_BY_HOP | listed) - gateway_made & set(names), lower
    if not req.websocket:
        assert b"connection" not in names and b"upgrade" not in names
    # Every other client header arrives unchanged and in order, and nothing
    # else; names with "_" are dropped (allow_underscores_in_headers is off).
    # (h11 reads values without their surrounding whitespace, as RFC 9110 5.5 says.)
    kept = [(n.lower(), v.strip(b" \t")) for n, v in req.headers
            if n.lower() not in HOP_BY_HOP | listed | gateway_made | {b"expect"} and b"_" not in n]
    assert [(n, v) for n, v in lower if n not in gateway_made] == kept

    # The re-serialized head is one the policy accepts again, to the same request.
    again = parse_request(data, MAX_BODY)
    assert (again.method, again.target, again.host, again.framing, again.content_length, again.websocket) == \
        (req.method, req.target, req.host, req.framing, req.content_length, req.websocket)


@FUZZ
@given(built_heads())
def test_built_heads(head):
    check_head(head)


@FUZZ
@given(mutated_heads())
@example(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n")
def test_mutated_heads(head):
    check_head(head)


@settings(max_examples=300, deadline=None)
@given(st.one_of(random_heads, random_printable_heads))
def test_random_heads(head):
    check_head(head)


def test_pri_method_is_not_sent_on_as_the_http2_preface():
    # Found by test_built_heads: llhttp takes "PRI" as a method on HTTP/1.0;
    # re-serialized as HTTP/1.1 it is the start of the HTTP/2 connection preface.
    check_head(b"PRI / HTTP/1.0\r\n\r\n")


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(SEEDS))
def test_seeds_are_accepted(head):
    assert check_head(head) is not None


def accepted(head):
    try:
        return parse_request(head, MAX_BODY)
    except ClientError:
        return None


def test_fuzzers_reach_acceptance():
    """The generators are not all noise: heads with a body framing get
    through, and so do mutated heads that differ from their seed."""
    from hypothesis import find
    find(built_heads(), lambda h: (accepted(h) or parse_request(SEEDS[0])).framing != NONE,
         settings=settings(max_examples=2000, deadline=None))
    find(mutated_heads(), lambda h: accepted(h) is not None and h not in SEEDS,
         settings=settings(max_examples=2000, deadline=None))
