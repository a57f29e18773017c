"""Judge a request head while it arrives, sans-io: a line that is already
wrong is refused at once, not when the head ends or its timeout fires.

The verdict is the one the policy gives the whole head (appgw/http/policy.py),
because both apply the same checks line by line in order (appgw/http/headlines.py):
the request line, then llhttp and the field judges on each header line. The
policy asks this scanner which line is wrong first whenever llhttp refuses a
whole head, so a refusal never depends on how the head was cut into reads.

Incremental: each call judges only the lines completed since the last one,
so a client sending a byte at a time costs linear work, not quadratic.
"""
import httptools

from appgw.http import headlines
from appgw.http.errors import ClientError
from appgw.http.h1 import FramingError

_HOST, _LENGTH, _CODING = range(3)
_JUDGED = {b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _CODING}


class _Silent:
    """httptools callbacks: none; only llhttp's refusals matter here."""


class HeadScanner:
    """The early judge of one unfinished head. `verdict(buf)` takes the head's
    bytes so far, from its first byte (leading empty lines already skipped),
    each call with the bytes of the call before and more."""

    __slots__ = ("judged", "line", "parser", "hosts", "lengths")

    def __init__(self):
        self.judged = 0         # bytes of complete lines judged so far
        self.line = None        # (method, target, minor, authority) once the request line is in
        self.parser = None
        self.hosts, self.lengths = [], []

    def verdict(self, buf: bytes):
        """The ClientError to answer now, or None: nothing wrong yet, wait."""
        try:
            start = self.judged
            end = buf.find(b"\n", start)
            while end >= 0:
                self._judge(buf[start:end + 1])
                start = self.judged = end + 1
                end = buf.find(b"\n", start)
            if self.line is None:
                headlines.long_method(buf)
        except ClientError as error:
            return error
        return None

    def _judge(self, line):
        if self.line is None:
            # A line end that is a bare LF fails the request line's grammar.
            self.line = headlines.request_line(line)
            self.parser = httptools.HttpRequestParser(_Silent())
            self._feed(headlines.for_llhttp(line, self.line[0]))
            return
        self._feed(line)
        # llhttp took the line, so it is "name:value CRLF" with a token name.
        colon = line.find(b":")
        field = _JUDGED.get(line[:colon].lower())
        if field is None:
            return
        value = line[colon + 1:-2]
        if field == _HOST:
            headlines.judge_host(self.hosts, value, self.line[3])
            self.hosts.append(value)
        elif field == _LENGTH:
            headlines.judge_length(self.lengths, value)
            self.lengths.append(value)
        else:
            headlines.judge_coding(self.line[2])

    def _feed(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass    # only at the end of a head, which is not judged here
        except httptools.HttpParserError as exc:
            raise headlines.framing_error(FramingError(str(exc) or type(exc).__name__)) from None


def early_verdict(buf: bytes):
    """The verdict on an unfinished head, judged from scratch (see HeadScanner)."""
    return HeadScanner().verdict(buf)


def first_wrong_line(head: bytes):
    """The verdict on the first wrong line of a whole head (ending in
    CRLFCRLF), or None when only the end of the head is wrong."""
    return HeadScanner().verdict(head[:-2])
