"""Early verdicts, extension methods and dropped names, without sockets.

- appgw/http/early.py judges a head while it arrives; its verdict on any cut of a
  head must be "not yet" or the one `policy.parse_request` gives the whole
  head (checked byte by byte on request lines and on the fuzzers' heads).
- Extension methods: any token is a method; llhttp is given a placeholder in
  its place, which must change no verdict on the rest of the head.
- Header names with "_" are dropped unless allowed.
"""
import httptools
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appgw.http import headlines
from appgw.http.early import HeadScanner, early_verdict
from appgw.http.errors import ClientError
from appgw.http.policy import IDEMPOTENT, backend_head, parse_request
from test_corpus import CASES, parse_forwarded
from test_fuzz_policy import built_heads, mutated_heads

MAX_BODY = 4096
HOST_LINE = b"Host: x\r\n\r\n"


def whole_verdict(head: bytes):
    """(status, reason) of a whole head, (200, "") when it is accepted."""
    try:
        parse_request(head, MAX_BODY)
    except ClientError as error:
        return error.status, error.reason
    return 200, ""


def cut(data: bytes) -> bytes:
    """Up to the first CRLFCRLF, as the gateway's reader cuts a head."""
    end = data.find(b"\r\n\r\n")
    return data + b"\r\n\r\n" if end < 0 else data[:end + 4]


def judged_prefixes(head: bytes):
    """Feed `head` (a whole one) byte by byte, as a slow client sends it, to
    one scanner and to a fresh one at each cut; yield (prefix, verdict)
    until the first verdict. Both must agree at every cut."""
    scanner = HeadScanner()
    for size in range(1, len(head) - 3):     # never the head's own end
        prefix = head[:size]
        fresh, kept = early_verdict(prefix), scanner.verdict(prefix)
        assert (fresh is None) == (kept is None), prefix
        if fresh is not None:
            assert (fresh.status, fresh.reason) == (kept.status, kept.reason), prefix
        yield prefix, fresh
        if fresh is not None:
            return


def check_agrees(head: bytes):
    """Every early verdict on a cut of `head` is the whole head's verdict;
    returns the first one (or None)."""
    whole = whole_verdict(head)
    for prefix, verdict in judged_prefixes(head):
        if verdict is not None:
            assert (verdict.status, verdict.reason) == whole, (prefix, head)
            return verdict
    return None


# --- request lines, byte by byte ----------------------------------------------------

METHODS = [b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"PRI", b"M-SEARCH", b"FOO", b"BREW", b"-BLARGH",
           b"ANNOUNCE", b"X_CUSTOM", b"get", b"Head", b"connect", b"A" * 32, b"A" * 33, b"A" * 40, b"G(T", b"",
           b"GET\x00", b"PROXY"]
TARGETS = [b"/", b"/a?b=c", b"*", b"/a#b", b"/#", b"http://x/a", b"http://x", b"https://x:1/p?q#f",
           b"http://u@x/", b"http://b%20/", b"http://[::1]:80/", b"x:443", b"", b"/\x7f", b"/a\x00", b"TCP4"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/5.6", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1", b"",
            b"192.0.2.1 192.0.2.2 56324 80"]
SPACES = [b" "] * 6 + [b"  ", b"\t", b""]
LINE_ENDS = [b"\r\n"] * 4 + [b"\n", b"\r", b"\r\r\n", b" \r\n"]
TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@st.composite
def request_lines(draw):
    method = draw(st.one_of(st.sampled_from(METHODS),
                            st.binary(min_size=1, max_size=40).map(lambda b: bytes(TCHARS[c % len(TCHARS)]
                                                                                   for c in b))))
    target = draw(st.one_of(st.sampled_from(TARGETS),
                            st.binary(max_size=8).map(lambda b: b"/" + b)))
    return (method + draw(st.sampled_from(SPACES)) + target + draw(st.sampled_from(SPACES))
            + draw(st.sampled_from(VERSIONS)) + draw(st.sampled_from(LINE_ENDS)))


@settings(max_examples=600, deadline=None)
@given(request_lines())
@example(b"GET / HTTP/5.6\r\n")
@example(b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 80\r\n")
@example(b"GET / HTTP/1.1\n")
@example(b"A" * 33 + b" / HTTP/5.6\r\n")
@example(b"GET /a#b HTTP/1.1\r\n")
def test_request_line_early_verdict_is_the_whole_heads(line):
    head = cut(line + HOST_LINE)
    whole = whole_verdict(head)
    first = check_agrees(head)
    if line.endswith(b"\n") and len(line) < len(head) - 3:
        # Its line end has arrived: a request line that is wrong is judged by now.
        at_line_end = early_verdict(line)
        assert (200, "") if at_line_end is None else (at_line_end.status, at_line_end.reason) == whole
        assert first is not None or whole == (200, "")


# --- whole heads from the policy fuzzers, byte by byte ----------------------------------

@settings(max_examples=300, deadline=None)
@given(st.one_of(built_heads(), mutated_heads()))
@example(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nTransfer-Encoding: gzip\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n folded\r\n\r\n")
def test_head_early_verdict_is_the_whole_heads(head):
    check_agrees(head)


# --- the cases the issue names, and what must not be judged early -------------------------

@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/5.6\r\n", 400),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 80\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\nX: y\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", 400),
    (b"GET /a#b HTTP/1.1\r\n", 400),
    (b"A" * 33, 501),
    (b"connect x:443 HTTP/1.1\r\n", 400),
    (b"CONNECT x:443 HTTP/1.1\r\n", 405),
], ids=["http-5.6", "proxy-line", "duplicate-cl", "bare-lf", "bare-lf-header", "two-hosts", "fragment",
        "long-method", "lowercase-connect", "connect"])
def test_judged_before_the_end_of_the_head(data, status):
    verdict = early_verdict(data)
    assert verdict is not None and verdict.status == status


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1",                                  # no line end yet
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b",             # a header line still arriving
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n",   # with the whole head: 501 or 400
    b"GET / HTTP/1.1\r\nHost: x\r\n\r",                 # the head's end arriving
    b"GET / HTTP/1.1\r\n",                              # Host may still come
    b"A" * 32,                                          # a 32-byte method may still be followed by a space
    b"BREW /pot HTTP/1.1\r\nHost: x\r\n",
])
def test_not_judged_while_nothing_is_wrong_yet(data):
    assert early_verdict(data) is None


def test_scanner_work_is_linear_in_the_head():
    """A client sending one byte at a time: each call judges only new lines."""
    scanner = HeadScanner()
    head = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000
    for size in range(1, len(head) + 1, 7):
        assert scanner.verdict(head[:size]) is None
        # Everything up to the last line end is judged, nothing after it.
        assert scanner.judged == head.rfind(b"\n", 0, size) + 1
    assert scanner.verdict(head) is None and scanner.judged == len(head)


# --- extension methods ---------------------------------------------------------------------

def test_llhttp_knows_exactly_the_methods_given_to_it_as_they_are():
    for method in headlines.LLHTTP_METHODS:
        parser = httptools.HttpRequestParser(object())
        try:
            parser.feed_data(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
        except httptools.HttpParserUpgrade:
            assert method == b"CONNECT"
    for method in (b"FOO", b"ANNOUNCE", b"-BLARGH", b"PATCHX"):
        with pytest.raises(httptools.HttpParserError):
            httptools.HttpRequestParser(object()).feed_data(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")


@pytest.mark.parametrize("method", [b"FOO", b"BREW", b"X-CUSTOM", b"PATCHX", b"ANNOUNCE", b"MKCOLA", b"-BLARGH",
                                    b"A" * 32])
def test_extension_methods_are_proxied_and_never_idempotent(method):
    req = parse_request(method + b" /p?q HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n")
    assert (req.method, req.target, req.host, req.content_length) == (method, b"/p?q", b"x", 0)
    assert method not in IDEMPOTENT and not req.idempotent
    forwarded = parse_forwarded(backend_head(req, b"x", b"http", b"80", b"10.0.0.1"))
    assert [(f.method, f.url, f.body) for f in forwarded] == [(method, b"/p?q", b"")]
    assert forwarded[0].values(b"content-length") == []     # no body unless framed


def test_a_method_longer_than_32_bytes_is_501():
    with pytest.raises(ClientError) as info:
        parse_request(b"A" * 33 + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (info.value.status, info.value.reason) == (501, "method longer than 32 bytes")


HOSTILE = [c for c in CASES if c.raw.lstrip(b"\r\n").startswith((b"GET /", b"POST /", b"PUT /", b"DELETE /"))
           and b"upgrade:" not in c.raw.lower()]


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_an_extension_method_changes_no_verdict_on_the_rest_of_the_head(case):
    """The placeholder opens no path: every corpus head, its method swapped
    for an unknown one, gets the verdict it gets with its own method."""
    buf = case.raw.lstrip(b"\r\n")
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        head = buf
        own, swapped = early_verdict(head), early_verdict(b"BREW" + head[head.index(b" "):])
        own = own and own.status
        swapped = swapped and swapped.status
    else:
        head = buf[:end + 4]
        own = whole_verdict(head)[0]
        swapped = whole_verdict(b"BREW" + head[head.index(b" "):])[0]
    assert swapped == own, case.notes


# --- header names with underscores -------------------------------------------------------

HEAD_WITH_UNDERSCORES = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent_Length: 4\r\n"
                         b"Transfer_Encoding: chunked\r\nX_Custom: 1\r\nX-Other: 2\r\n\r\n")


def forwarded_names(req):
    [msg] = parse_forwarded(backend_head(req, b"x", b"http", b"80", b"10.0.0.1") + b"hello")
    return [n.lower() for n, _ in msg.headers]


def test_underscore_names_are_dropped_by_default():
    req = parse_request(HEAD_WITH_UNDERSCORES)
    names = forwarded_names(req)
    assert not [n for n in names if b"_" in n]
    assert b"x-other" in names and req.content_length == 5


def test_underscore_names_pass_when_allowed_but_are_never_acted_on():
    req = parse_request(HEAD_WITH_UNDERSCORES, allow_underscores=True)
    names = forwarded_names(req)
    assert [n for n in names if b"_" in n] == [b"content_length", b"transfer_encoding", b"x_custom"]
    assert req.content_length == 5 and names.count(b"content-length") == 1
