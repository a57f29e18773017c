"""Pure tests of the HTTP/1 framing (appgw.http1) and the head rewriting of
appgw.policy: bytes in, values out, no sockets."""
import httptools
import pytest

from appgw.http.errors import ClientError
from appgw.http.h1 import (CHUNKED, LAST_CHUNK, LENGTH, NONE, UNTIL_CLOSE, ChunkedDecoder, FramingError,
                         chunk, parse_head, parse_response_head)
from appgw.http.policy import backend_head, client_head, parse_request, parse_response

pytestmark = pytest.mark.sansio

# --- ChunkedDecoder -----------------------------------------------------------------

# (encoded body, decoded content, trailing bytes that belong to the next message)
VALID_CHUNKED = [
    (b"0\r\n\r\n", b"", b""),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello", b""),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", b""),
    (b"A\r\n0123456789\r\nf\r\nabcdefghijklmno\r\n0\r\n\r\n", b"0123456789abcdefghijklmno", b""),
    (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello", b""),          # 16 digits: the maximum
    (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello", b""),
    (b'5 ; q="a \\"b\\" c" ;x\r\nhello\r\n0\r\n\r\n', b"hello", b""),  # BWS, quoted-pair
    (b"5;x=y\t;z\r\nhello\r\n0\r\n\r\n", b"hello", b""),
    (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nX-Other: two words\r\n\r\n", b"hello", b""),
    (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r", b""),                      # CRLF inside data is data
    (b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", b"hello",
     b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    (b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nNEXT", b"hello", b"NEXT"),
    (b"0\r\n\r\n0\r\n\r\n", b"", b"0\r\n\r\n"),                         # a second body is not ours
]

# Each must raise FramingError, however it is split.
MALFORMED_CHUNKED = [
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"\t5\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b"g\r\nhello\r\n0\r\n\r\n",
    b"00000000000000005\r\nhello\r\n0\r\n\r\n",                  # 17 digits
    b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",                  # more than 64 bits
    b"5\nhello\r\n0\r\n\r\n",                                    # bare LF after the size
    b"5\rhello\r\n0\r\n\r\n",                                    # bare CR after the size
    b"5\r\nhello\n0\r\n\r\n",                                    # bare LF after the data
    b"5\r\nhello\r0\r\n\r\n",
    b"5\r\nhelloXY0\r\n\r\n",                                    # data longer than its size
    b"5\r\nhell\r\n0\r\n\r\n",                                   # shorter
    b"5;\r\nhello\r\n0\r\n\r\n",                                 # extension without a name
    b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
    b"5;a\x00\r\nhello\r\n0\r\n\r\n",
    b"5;a\x7f\r\nhello\r\n0\r\n\r\n",
    b"5;a=\"x\x01\"\r\nhello\r\n0\r\n\r\n",
    b"5;a=\"unterminated\r\nhello\r\n0\r\n\r\n",
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    b"5;a b\r\nhello\r\n0\r\n\r\n",
    b"0\n\n",
    b"0\r\n\n",
    b"0\r\nnot a field\r\n\r\n",
    b"0\r\nX-T: a\r\n folded\r\n\r\n",
    b"0\r\nX-T: a\nX-U: b\r\n\r\n",
]

# Trailer field-lines outside the field-line grammar (RFC 9112 7.1.2, 5).
MALFORMED_TRAILERS = [
    b"0\r\nX-T: a\x00b\r\n\r\n",
    b"0\r\n: value\r\n\r\n",
    b"0\r\nX T: a\r\n\r\n",
    b"0\r\nX-T : a\r\n\r\n",
]


def decode_in_pieces(pieces):
    """Feed pieces as the proxy does: stop at `done`; what was not fed then
    belongs to the next message. Returns (content, rest, total)."""
    decoder = ChunkedDecoder()
    out = []
    for index, piece in enumerate(pieces):
        out += decoder.feed(piece)
        if decoder.done:
            return b"".join(out), decoder.rest + b"".join(pieces[index + 1:]), decoder.total
    pytest.fail("decoder never finished")


@pytest.mark.parametrize("encoded, content, rest", VALID_CHUNKED)
def test_chunked_whole(encoded, content, rest):
    assert decode_in_pieces([encoded]) == (content, rest, len(content))


@pytest.mark.parametrize("encoded, content, rest", VALID_CHUNKED)
def test_chunked_split_at_every_byte_boundary(encoded, content, rest):
    for i in range(len(encoded) + 1):
        assert decode_in_pieces([encoded[:i], encoded[i:]])[:2] == (content, rest), i
    for i in range(len(encoded) + 1):
        for j in range(i, len(encoded) + 1, 3):
            assert decode_in_pieces([encoded[:i], encoded[i:j], encoded[j:]])[:2] == (content, rest), (i, j)


@pytest.mark.parametrize("encoded, content, rest", VALID_CHUNKED)
def test_chunked_one_byte_at_a_time(encoded, content, rest):
    pieces = [encoded[i:i + 1] for i in range(len(encoded))]
    assert decode_in_pieces(pieces)[:2] == (content, rest)


def test_chunked_pieces_are_never_empty_and_never_hold_framing():
    decoder = ChunkedDecoder()
    encoded = b"5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    pieces = []
    for i in range(len(encoded)):
        pieces += decoder.feed(encoded[i:i + 1])
    assert all(pieces) and b"".join(pieces) == b"hello"
    assert decoder.done and decoder.total == 5


def test_trailers_are_dropped():
    content, rest, _ = decode_in_pieces([b"3\r\nabc\r\n0\r\nX-Secret: s\r\nSet-Cookie: a=b\r\n\r\n"])
    assert (content, rest) == (b"abc", b"")


def test_total_counts_announced_sizes_before_data_arrives():
    # The proxy checks max_body_size against `total` after each feed, so a
    # huge announced chunk is refused before its data is read.
    decoder = ChunkedDecoder()
    assert decoder.feed(b"ffffffff\r\nab") == [b"ab"]
    assert decoder.total == 0xffffffff and not decoder.done


def test_large_chunk_streams_in_pieces():
    data = bytes(range(256)) * 400
    encoded = chunk(data) + LAST_CHUNK
    decoder = ChunkedDecoder()
    out = []
    for i in range(0, len(encoded), 1000):
        out += decoder.feed(encoded[i:i + 1000])
    assert b"".join(out) == data and decoder.done and decoder.rest == b""
    assert max(map(len, out)) <= 1000


def test_chunk_framing_round_trip():
    pieces = [b"a", b"bc" * 1000, bytes(range(256))]
    encoded = b"".join(chunk(p) for p in pieces) + LAST_CHUNK
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert decode_in_pieces([encoded])[:2] == (b"".join(pieces), b"")


def _raises_when_fed(pieces):
    decoder = ChunkedDecoder()
    try:
        for piece in pieces:
            decoder.feed(piece)
            if decoder.done:
                return False
    except FramingError:
        return True
    return False


@pytest.mark.parametrize("encoded", MALFORMED_CHUNKED)
def test_malformed_chunked_raises(encoded):
    assert _raises_when_fed([encoded])
    for i in range(len(encoded) + 1):
        assert _raises_when_fed([encoded[:i], encoded[i:]]), i
    assert _raises_when_fed([encoded[i:i + 1] for i in range(len(encoded))])


@pytest.mark.parametrize("encoded", MALFORMED_TRAILERS)
def test_malformed_trailer_field_raises(encoded):
    assert _raises_when_fed([encoded])


@pytest.mark.parametrize("partial", [b"5\nhello", b"5;a\nb", b"0\r\nX: 1\nY"])
def test_bare_lf_is_refused_before_the_line_ends(partial):
    # Otherwise a client could hold the decoder waiting for a CRLF that never comes.
    with pytest.raises(FramingError):
        ChunkedDecoder().feed(partial)


def test_endless_chunk_line_is_refused():
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError):
        for _ in range(100):
            decoder.feed(b"5;" + b"a" * 1000)
    decoder = ChunkedDecoder()
    decoder.feed(b"0\r\n")
    with pytest.raises(FramingError):
        for _ in range(100):
            decoder.feed(b"X-Long: " + b"a" * 1000)


# --- parse_head / parse_response_head -------------------------------------------------

def test_parse_head_keeps_order_and_spelling():
    target, headers = parse_head(b"GET /a?b HTTP/1.1\r\nHost: x\r\nx-Mixed-CASE: 1\r\nA: 2\r\n\r\n")
    assert target == b"/a?b"
    assert headers == [(b"Host", b"x"), (b"x-Mixed-CASE", b"1"), (b"A", b"2")]


def test_parse_head_judges_each_head_alone_whatever_came_before():
    """parse_head keeps one llhttp parser while heads end their messages; a
    head must get the same verdict after any other head as on its own."""
    plain = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = b"GET /bad HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"
    # Not a request (no method ABCDGET); it would read as one to a parser
    # still waiting for the 4-byte body of the head before.
    smuggled = b"ABCDGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    before = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",     # llhttp: no message may follow
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n",    # a body would follow
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        bad,
    ]
    for head in before:
        try:
            parse_head(head)
        except FramingError:
            assert head is bad
        with pytest.raises(FramingError):
            parse_head(smuggled)
        assert parse_head(plain) == (b"/next", [(b"Host", b"x")])
        with pytest.raises(FramingError):
            parse_head(bad)
        assert parse_head(plain) == (b"/next", [(b"Host", b"x")])


def test_parse_head_raises_framing_error():
    with pytest.raises(FramingError):
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n")
    with pytest.raises(FramingError):
        parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")


@pytest.mark.parametrize("line, expected", [
    (b"HTTP/1.1 200 OK\r\n", (1, 200)),
    (b"HTTP/1.0 404 Not Found\r\n", (0, 404)),
    (b"HTTP/1.1 204\r\n", (1, 204)),
    (b"HTTP/1.1 599 \r\n", (1, 599)),
])
def test_status_line(line, expected):
    assert parse_response_head(line + b"\r\n")[:2] == expected


@pytest.mark.parametrize("line", [b"HTTP/2 200 OK\r\n", b"HTTP/1.1 20 OK\r\n", b"http/1.1 200 OK\r\n",
                                  b"HELLO NOT HTTP\r\n", b"HTTP/1.1  200 OK\r\n", b"HTTP/1.1 2000 OK\r\n"])
def test_bad_status_line(line):
    with pytest.raises(FramingError):
        parse_response_head(line + b"\r\n")


# --- parse_response: how a backend's answer is framed -----------------------------------

def response(status_line, *headers, method=b"GET"):
    head = status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return parse_response(head, method)


def test_response_content_length():
    resp = response(b"HTTP/1.1 200 OK", b"Content-Length: 5")
    assert (resp.framing, resp.content_length, resp.keep_alive, resp.bodiless) == (LENGTH, 5, True, False)
    assert response(b"HTTP/1.1 200 OK", b"Content-Length: 0").framing == NONE


def test_response_chunked():
    resp = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked")
    assert (resp.framing, resp.content_length, resp.keep_alive) == (CHUNKED, None, True)
    assert response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: Chunked").framing == CHUNKED


def test_response_until_close():
    resp = response(b"HTTP/1.1 200 OK", b"X: y")
    assert (resp.framing, resp.keep_alive) == (UNTIL_CLOSE, False)
    resp = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip")
    assert (resp.framing, resp.keep_alive) == (UNTIL_CLOSE, False)


@pytest.mark.parametrize("status", [204, 304, 100, 103])
def test_response_bodiless_statuses(status):
    resp = response(b"HTTP/1.1 %d X" % status, b"Content-Length: 12")
    assert resp.bodiless and resp.framing == NONE
    if status != 204:
        assert resp.content_length == 12  # it describes the entity, not this message


def test_response_switching_protocols():
    resp = response(b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade")
    assert (resp.status, resp.bodiless, resp.framing) == (101, True, NONE)


def test_response_to_head_has_no_body():
    for framing in (b"Content-Length: 100", b"Transfer-Encoding: chunked"):
        resp = response(b"HTTP/1.1 200 OK", framing, method=b"HEAD")
        assert resp.bodiless and resp.framing == NONE
    assert response(b"HTTP/1.1 200 OK", b"Content-Length: 100", method=b"HEAD").content_length == 100


@pytest.mark.parametrize("headers", [
    (b"Content-Length: 5", b"Content-Length: 6"),
    (b"Content-Length: 5", b"Content-Length: 5, 6"),
    (b"Content-Length: +5",),
    (b"Content-Length: 0x5",),
    (b"Content-Length: -1",),
    (b"Content-Length: 1_0",),
    (b"Content-Length: 99999999999999999999999",),
    (b"X: a\x00b",),
    (b"X: a", b" folded"),
])
def test_response_bad_framing_raises(headers):
    with pytest.raises(FramingError):
        response(b"HTTP/1.1 200 OK", *headers)


def test_response_with_both_framings_is_never_length_framed():
    # RFC 9112 6.3: Transfer-Encoding overrides Content-Length; refusing is fine too.
    try:
        resp = response(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Transfer-Encoding: chunked")
    except FramingError:
        return
    assert resp.framing == CHUNKED


@pytest.mark.parametrize("status_line, headers, keep_alive", [
    (b"HTTP/1.1 200 OK", (b"Content-Length: 1",), True),
    (b"HTTP/1.1 200 OK", (b"Content-Length: 1", b"Connection: close"), False),
    (b"HTTP/1.1 200 OK", (b"Content-Length: 1", b"Connection: foo, CLOSE"), False),
    (b"HTTP/1.0 200 OK", (b"Content-Length: 1",), False),
    (b"HTTP/1.0 200 OK", (b"Content-Length: 1", b"Connection: keep-alive"), True),
])
def test_response_keep_alive(status_line, headers, keep_alive):
    assert response(status_line, *headers).keep_alive is keep_alive


# --- client_head: the backend's answer as the client gets it -----------------------------

def parse_client_head(data, method=b"GET"):
    """(status, [(name, value)]) of exactly one response head."""
    headers = []

    class Collect:
        def on_header(self, name, value):
            headers.append((name.lower(), value))

    parser = httptools.HttpResponseParser(Collect())
    parser.feed_data(data)
    return parser.get_status_code(), headers


def names_of(headers):
    return [name for name, _ in headers]


def test_client_head_strips_hop_by_hop():
    resp = response(b"HTTP/1.1 200 OK", b"Connection: keep-alive", b"Keep-Alive: timeout=5",
                    b"Proxy-Authenticate: Basic", b"Trailer: X-T", b"Upgrade: h2c", b"TE: trailers",
                    b"Proxy-Connection: keep-alive", b"X-App: 1", b"Content-Length: 2")
    status, headers = parse_client_head(client_head(resp, resp.framing, True, 1))
    assert status == 200
    assert names_of(headers) == [b"x-app", b"content-length"]


def test_client_head_strips_names_listed_in_connection():
    # SPEC 4: "Connection and the names it lists" are not forwarded, in either direction.
    resp = response(b"HTTP/1.1 200 OK", b"Connection: X-Internal, x-debug", b"X-Internal: secret",
                    b"X-Debug: 1", b"X-App: 1", b"Content-Length: 2")
    _, headers = parse_client_head(client_head(resp, resp.framing, True, 1))
    assert names_of(headers) == [b"x-app", b"content-length"]


def test_client_head_keeps_names_order_and_values():
    resp = response(b"HTTP/1.1 201 Created", b"Set-Cookie: a=1", b"X-Mixed-Case: v", b"Set-Cookie: b=2",
                    b"Content-Length: 0")
    data = client_head(resp, resp.framing, True, 1)
    assert data.startswith(b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nX-Mixed-Case: v\r\nSet-Cookie: b=2\r\n")
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1


def test_client_head_rechunks():
    resp = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked")
    _, headers = parse_client_head(client_head(resp, CHUNKED, True, 1))
    assert headers == [(b"transfer-encoding", b"chunked")]


def test_client_head_until_close_for_http10_client():
    resp = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked")
    data = client_head(resp, UNTIL_CLOSE, False, 0)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    _, headers = parse_client_head(data)
    assert headers == [(b"connection", b"close")]


def test_client_head_keeps_transfer_codings_it_does_not_decode():
    # The gateway removes only the chunked framing; a gzip transfer coding
    # stays on the bytes it relays, so the client must still be told about it.
    resp = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked")
    _, headers = parse_client_head(client_head(resp, CHUNKED, True, 1))
    codings = b",".join(v for n, v in headers if n == b"transfer-encoding").replace(b" ", b"")
    assert codings.split(b",") == [b"gzip", b"chunked"]


def test_client_head_length():
    resp = response(b"HTTP/1.1 200 OK", b"Content-Length: 7")
    _, headers = parse_client_head(client_head(resp, LENGTH, True, 1))
    assert headers == [(b"content-length", b"7")]


def test_client_head_bodiless():
    resp = response(b"HTTP/1.1 204 No Content", b"Content-Length: 7")
    _, headers = parse_client_head(client_head(resp, resp.framing, True, 1))
    assert headers == []  # RFC 9110 8.6: no Content-Length in a 204
    resp = response(b"HTTP/1.1 304 Not Modified", b"Content-Length: 7")
    assert parse_client_head(client_head(resp, resp.framing, True, 1))[1] == [(b"content-length", b"7")]
    resp = response(b"HTTP/1.1 200 OK", b"Content-Length: 7", method=b"HEAD")
    assert b"Content-Length: 7\r\n" in client_head(resp, resp.framing, True, 1)
    resp = response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", method=b"HEAD")
    assert b"Content-Length: 0" not in client_head(resp, resp.framing, True, 1)


def test_client_head_empty_length_body():
    resp = response(b"HTTP/1.1 200 OK", b"Content-Length: 0")
    assert parse_client_head(client_head(resp, resp.framing, True, 1))[1] == [(b"content-length", b"0")]


def test_client_head_connection_for_this_client():
    resp = response(b"HTTP/1.0 200 OK", b"Content-Length: 1")
    assert b"Connection: close\r\n" in client_head(resp, LENGTH, False, 1)
    assert b"Connection: keep-alive\r\n" in client_head(resp, LENGTH, True, 0)
    assert b"Connection" not in client_head(resp, LENGTH, True, 1)


def test_client_head_extra_lines():
    resp = response(b"HTTP/1.1 200 OK", b"Content-Length: 1")
    data = client_head(resp, LENGTH, True, 1, extra=[b"Set-Cookie: aff=1"])
    assert b"\r\nSet-Cookie: aff=1\r\n" in data and data.endswith(b"\r\n\r\n")


# --- backend_head: the client's request as a backend gets it -----------------------------

def forward(head, host=None, proto=b"http", port=b"80", client_ip=b"10.0.0.9"):
    req = parse_request(head)
    data = backend_head(req, req.host if host is None else host, proto, port, client_ip)
    return req, data


def parse_backend_head(data):
    """(method, target, [(lower name, value)]) of exactly one request head, nothing after it."""
    headers, state = [], {}

    class Collect:
        def on_url(self, url):
            state["url"] = state.get("url", b"") + url

        def on_header(self, name, value):
            headers.append((name.lower(), value))

        def on_message_complete(self):
            state["complete"] = state.get("complete", 0) + 1

    parser = httptools.HttpRequestParser(Collect())
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    return parser.get_method(), state["url"], headers


def values(headers, name):
    return [v for n, v in headers if n == name]


def test_backend_head_strips_hop_by_hop_and_listed_names():
    _, data = forward(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret, x-other\r\n"
                      b"Keep-Alive: 5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
                      b"Proxy-Authorization: Basic Zg==\r\nProxy-Connection: keep-alive\r\n"
                      b"X-Secret: 1\r\nX-Other: 2\r\nX-Kept: 3\r\n\r\n")
    _, _, headers = parse_backend_head(data)
    assert names_of(headers) == [b"host", b"x-kept", b"x-forwarded-for", b"x-forwarded-proto",
                                 b"x-forwarded-port", b"x-original-host"]


def test_backend_head_appends_to_x_forwarded_for():
    _, data = forward(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
    assert values(parse_backend_head(data)[2], b"x-forwarded-for") == [b"1.2.3.4, 10.0.0.9"]
    _, data = forward(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n"
                      b"x-forwarded-for: 3.3.3.3\r\n\r\n")
    assert values(parse_backend_head(data)[2], b"x-forwarded-for") == [b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"]


def test_backend_head_replaces_client_x_forwarded():
    _, data = forward(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"
                      b"X-Original-Host: spoofed\r\nx-forwarded-proto: ftp\r\n\r\n",
                      proto=b"http", port=b"8080")
    headers = parse_backend_head(data)[2]
    assert values(headers, b"x-forwarded-proto") == [b"http"]
    assert values(headers, b"x-forwarded-port") == [b"8080"]
    assert values(headers, b"x-original-host") == [b"x"]


def test_backend_head_connection_cannot_strip_gateway_headers():
    _, data = forward(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Forwarded-For, X-Forwarded-Proto, "
                      b"X-Forwarded-Port, X-Original-Host, Host\r\n\r\n")
    headers = parse_backend_head(data)[2]
    for name in (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host"):
        assert len(values(headers, name)) == 1, name


def test_backend_head_host_from_argument():
    req, data = forward(b"GET /p HTTP/1.1\r\nHost: public.example\r\n\r\n", host=b"internal.example:81")
    headers = parse_backend_head(data)[2]
    assert values(headers, b"host") == [b"internal.example:81"]
    assert values(headers, b"x-original-host") == [b"public.example"]


def test_backend_head_absolute_form_becomes_origin_form():
    _, data = forward(b"GET http://evil.example:8000/a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n")
    method, target, headers = parse_backend_head(data)
    assert (method, target) == (b"GET", b"/a/b?c=d")
    assert values(headers, b"host") == [b"evil.example:8000"]
    assert data.startswith(b"GET /a/b?c=d HTTP/1.1\r\n")


def test_backend_head_is_http11_even_for_http10_clients():
    _, data = forward(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert data.startswith(b"GET / HTTP/1.1\r\nHost: x\r\n")


@pytest.mark.parametrize("head, framing_headers", [
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", [(b"content-length", b"5")]),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", [(b"transfer-encoding", b"chunked")]),
    (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", [(b"content-length", b"0")]),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", [(b"content-length", b"0")]),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", []),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", [(b"content-length", b"3")]),
    (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n", [(b"transfer-encoding", b"chunked")]),
])
def test_backend_head_framing(head, framing_headers):
    _, data = forward(head)
    headers = parse_backend_head(data)[2]
    assert [(n, v) for n, v in headers if n in (b"content-length", b"transfer-encoding")] == framing_headers


def test_backend_head_websocket_keeps_the_upgrade():
    _, data = forward(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      b"X-Forwarded-For: 1.2.3.4\r\n\r\n")
    headers = parse_backend_head(data)[2]
    assert values(headers, b"upgrade") == [b"websocket"]
    assert values(headers, b"connection") == [b"Upgrade"]
    assert values(headers, b"sec-websocket-key") == [b"dGhlIHNhbXBsZSBub25jZQ=="]
    assert values(headers, b"x-forwarded-for") == [b"1.2.3.4, 10.0.0.9"]
    assert b"content-length" not in names_of(headers)


def test_backend_head_drops_expect():
    _, data = forward(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert b"expect" not in names_of(parse_backend_head(data)[2])


def test_backend_head_keeps_spelling_and_order():
    _, data = forward(b"GET / HTTP/1.1\r\nx-lower: 1\r\nHost: x\r\nX-UPPER: 2\r\nCookie: a=b\r\n"
                      b"Cookie: c=d\r\n\r\n")
    assert b"\r\nx-lower: 1\r\nX-UPPER: 2\r\nCookie: a=b\r\nCookie: c=d\r\n" in data


def test_backend_head_is_built_not_copied():
    # The client's spacing around the colon does not survive re-serialization.
    _, data = forward(b"GET / HTTP/1.1\r\nHost:    x   \r\nX-A:\t v\r\nX-B:w\r\n\r\n")
    assert b"\r\nHost: x\r\n" in data
    assert b"\r\nX-A: v\r\n" in data and b"\r\nX-B: w\r\n" in data


def test_parse_request_carries_its_status():
    with pytest.raises(ClientError) as info:
        parse_request(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
    assert info.value.status == 405
