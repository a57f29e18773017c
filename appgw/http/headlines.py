"""The checks of a request head that need one line only, sans-io.

Both readers of a head use them, in the order its lines come: the policy on a
whole head (appgw/http/policy.py) and the early judge on a head still arriving
(appgw/http/early.py). So a line that is wrong gets the same answer whether the
head came in one read or byte by byte.
"""
import re

from appgw.http import grammar
from appgw.http.errors import ClientError
from appgw.http.h1 import FramingError

# llhttp parses these methods itself (its HTTP method list, RTSP's left out:
# llhttp refuses those on an HTTP/1.x request line).
LLHTTP_METHODS = frozenset((
    b"DELETE", b"GET", b"HEAD", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"TRACE", b"COPY", b"LOCK",
    b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK", b"BIND", b"REBIND", b"UNBIND",
    b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE",
    b"UNSUBSCRIBE", b"PATCH", b"PURGE", b"MKCALENDAR", b"LINK", b"UNLINK", b"SOURCE", b"QUERY",
))
# Any other token is an extension method: llhttp is given this one in its
# place, so that it still checks the target, the version and every header
# line with its usual strictness. Only the method is swapped, and the method
# was checked to be a token followed by one space, so llhttp sees the same
# framing headers at the same places as the backend will.
PLACEHOLDER = b"GET"
# A standard method in another case ("get", "Head") is refused: backends
# differ on whether they fold case (werkzeug upper-cases REQUEST_METHOD), and
# a HEAD the gateway did not see as one would desynchronise the answers on a
# pooled connection (its answer has no body).
_CASE_VARIANTS = frozenset(m.lower() for m in LLHTTP_METHODS | {b"PRI"})
METHOD_MAX = 32
_HASH = ord("#")    # a byte as an int: `in` then scans without taking a buffer
_LONG_METHOD = re.compile(rb"%s{%d}" % (grammar.TCHAR.encode(), METHOD_MAX + 1))


def long_method(data: bytes):
    """Raise 501 when `data` (the start of a head) opens with a token longer
    than METHOD_MAX: no request line can fix that."""
    if _LONG_METHOD.match(data) is not None:
        raise ClientError(501, "method longer than %d bytes" % METHOD_MAX)


def request_line(head: bytes):
    """(method, target, minor, authority) of the head's first line, or a
    ClientError. `target` is in origin form (or "*"); `authority` is the host
    an absolute-form target named (it replaces Host), else None."""
    line = grammar.REQUEST_LINE.match(head)
    if line is None:
        long_method(head)
        raise ClientError(400, "malformed request line")
    method, target, minor = line.groups()
    if len(method) > METHOD_MAX:
        long_method(head)
    if method == b"CONNECT":
        raise ClientError(405, "CONNECT is not supported")
    if method == b"PRI":
        raise ClientError(400, "HTTP/2 connection preface on an HTTP/1 listener")
    if method not in LLHTTP_METHODS and method.lower() in _CASE_VARIANTS:
        raise ClientError(400, "method %s is a standard method in another case" % method.decode())
    if _HASH in target:
        # RFC 9112 3.2: a request-target has no fragment; "/a#/../b" would
        # route on one path and reach the backend as another.
        raise ClientError(400, "fragment (#) in request target")
    authority = None
    if target[:1] == b"/" or (target == b"*" and method == b"OPTIONS"):
        pass
    elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        # Absolute form: its authority replaces Host (RFC 9112 3.2.2). It is
        # routed like any request; the gateway never dials what it names.
        rest = target.split(b"://", 1)[1]
        end = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        authority, target = rest[:end], rest[end:]
        if not target.startswith(b"/"):
            target = b"/" + target
        if b"@" in authority:
            raise ClientError(400, "userinfo in request target")
        if grammar.HOST.fullmatch(authority) is None:
            raise ClientError(400, "malformed Host header")
    else:
        raise ClientError(400, "malformed request target")
    return method, target, 1 if minor == b"1" else 0, authority


def for_llhttp(head: bytes, method: bytes) -> bytes:
    """The bytes llhttp is fed: the head itself, or with PLACEHOLDER as its method."""
    return head if method in LLHTTP_METHODS else PLACEHOLDER + head[len(method):]


def framing_error(exc: FramingError) -> ClientError:
    """The answer to llhttp's refusal."""
    reason = str(exc)
    # llhttp refuses a coding list it cannot frame ("chunked, identity",
    # "gzip"): a coding the gateway does not implement, so 501; an empty or
    # conflicting header is plain malformed input.
    if "Transfer-Encoding" in reason and "Content-Length" not in reason and "Empty" not in reason:
        return ClientError(501, "unsupported transfer coding")
    return ClientError(400, "malformed request: " + reason)


# The field lines that can be wrong on their own. Each judge gets the values
# of the same field seen before it, and raises at the first wrong line.

def judge_host(hosts: list, value: bytes, authority):
    if hosts:
        raise ClientError(400, "more than one Host header")
    if authority is None and grammar.HOST.fullmatch(value.strip()) is None:
        raise ClientError(400, "malformed Host header")


def judge_length(lengths: list, value: bytes):
    if lengths:
        raise ClientError(400, "more than one Content-Length")
    value = value.strip()
    if grammar.DIGITS.fullmatch(value) is None or len(value) > 18:
        raise ClientError(400, "invalid Content-Length")


def judge_coding(minor: int):
    # The coding itself is judged with the whole head: with a Content-Length
    # also present, that head is malformed (400) whatever the coding.
    if minor == 0:
        raise ClientError(400, "Transfer-Encoding in an HTTP/1.0 request")
