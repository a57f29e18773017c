"""HTTP/1.x framing, sans-io: heads in, values out; bodies as a small state machine.

Heads are parsed by httptools (llhttp), fed exactly one head at a time, so the
gateway always knows where a head ends and a body or the next request begins.
Body framing (Content-Length counting, chunked decoding) is decided here from
the parsed headers rather than left to the parser, which keeps pipelining,
HEAD responses and upgrades unambiguous.
"""
import httptools

from appgw.http import grammar

HEAD_END = b"\r\n\r\n"
MAX_RESPONSE_HEAD = 65536   # a backend's answer head, like nginx's proxy_buffer_size, but larger

# Body framings of one message.
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = "none", "length", "chunked", "close"


class FramingError(ValueError):
    """The bytes do not follow HTTP/1.1 framing; callers map it to 400 or 502."""


class _HeadCollector:
    """httptools callbacks: keep the target and the header list in order,
    and whether the message ended with its head (no body follows)."""

    __slots__ = ("url", "headers", "complete")
    # httptools looks every callback up when a parser is made; a missing one
    # costs an AttributeError each time, a None is skipped cheaply.
    on_message_begin = on_status = on_headers_complete = on_body = None
    on_chunk_header = on_chunk_complete = None

    def __init__(self):
        self.url = b""
        self.headers = []
        self.complete = False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_message_complete(self):
        self.complete = True


def _feed(parser_class, head):
    """Run one complete head (ending in CRLFCRLF) through llhttp; returns the
    collector and the parser, or raises FramingError with llhttp's reason."""
    collector = _HeadCollector()
    parser = parser_class(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade and CONNECT stop llhttp after the head: that is all we fed.
    except httptools.HttpParserError as exc:
        raise FramingError(str(exc) or type(exc).__name__) from None
    return collector, parser


class _RequestHeads:
    """One llhttp request parser, kept while the heads it is fed end their
    messages: after a message with no body llhttp is back at the start of
    the next one, as on a keep-alive connection, and making a parser (with
    its callback lookups) costs more than feeding it a head."""

    def __init__(self):
        self.collector = self.parser = None

    def parse(self, head):
        collector, parser = self.collector, self.parser
        if parser is not None:
            self.parser = None      # taken; given back below when reusable
            collector.url, collector.headers = b"", []
            try:
                parser.feed_data(head)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                # llhttp may refuse what follows a message it was told ends
                # the connection: only a fresh parser's verdict counts.
                parser = None
        if parser is None:
            collector, parser = _feed(httptools.HttpRequestParser, head)
        if collector.complete:
            collector.complete = False
            self.collector, self.parser = collector, parser
        return collector.url, collector.headers


# parse_head(head) -> (target, headers) of one complete request head.
parse_head = _RequestHeads().parse


def parse_response_head(head: bytes):
    """(minor version, status, headers) of one complete response head.
    llhttp checks the status line; only HTTP/1.0 and 1.1 pass."""
    collector, parser = _feed(httptools.HttpResponseParser, head)
    version = head[5:8]   # llhttp checked "HTTP/d.d "
    if version != b"1.1" and version != b"1.0":
        raise FramingError("unsupported HTTP version %s" % version.decode())
    return (1 if version == b"1.1" else 0), parser.get_status_code(), collector.headers


class ChunkedDecoder:
    """Decode a chunked body incrementally.

    `feed(data)` returns the data pieces found so far; once the last chunk and
    its trailer section have been read, `done` is True and `rest` holds the
    bytes that followed the body (the next pipelined message). Trailer
    fields are kept in `trailers` ("Name: value" lines, for an HTTP/2 client;
    HTTP/1 drops them). Raises FramingError on anything outside the grammar.
    """

    __slots__ = ("_buf", "_remaining", "_state", "done", "rest", "total", "trailers", "_trailer_size")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)
    MAX_LINE = 4096

    def __init__(self):
        self._buf = b""
        self._remaining = 0
        self._state = self._SIZE
        self.done = False
        self.rest = b""
        self.total = 0
        self.trailers = []
        self._trailer_size = 0

    def feed(self, data: bytes) -> list:
        out = []
        buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
            elif state == self._DATA_END:
                if end - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise FramingError("chunk data not followed by CRLF")
                pos += 2
                self._state = self._SIZE
            else:
                eol = buf.find(b"\r\n", pos, pos + self.MAX_LINE)
                if eol < 0:
                    if end - pos >= self.MAX_LINE:
                        raise FramingError("chunk line too long")
                    self._check_partial_line(buf, pos)
                    break
                line = buf[pos:eol + 2]
                pos = eol + 2
                if state == self._SIZE:
                    self._start_chunk(line)
                elif line == b"\r\n":
                    self.done = True
                    self.rest = buf[pos:]
                    self._buf = b""
                    return out
                elif grammar.FIELD_LINE.fullmatch(line) is None:
                    raise FramingError("malformed trailer field")
                else:
                    self._trailer_size += len(line)
                    if self._trailer_size > MAX_RESPONSE_HEAD:
                        raise FramingError("trailer section too large")
                    self.trailers.append(line[:-2])
        self._buf = buf[pos:]
        return out

    def _check_partial_line(self, buf, pos):
        # A bare LF inside a line would otherwise wait forever for its CRLF.
        tail = buf[pos:]
        if b"\n" in tail or b"\r" in tail[:-1]:
            raise FramingError("bare CR or LF in chunk line")

    def _start_chunk(self, line):
        match = grammar.CHUNK_LINE.fullmatch(line)
        if match is None:
            raise FramingError("invalid chunk size line")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = self._TRAILER
        else:
            self.total += size
            self._remaining = size
            self._state = self._DATA


def chunk(data) -> bytes:
    """Frame one piece of body as a chunk (never call with empty data)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def header_tokens(value: bytes):
    """The lower-cased members of a comma-separated header value."""
    return [t.strip().lower() for t in value.split(b",") if t.strip()]
