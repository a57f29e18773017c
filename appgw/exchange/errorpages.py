"""The bodies of answers the gateway makes itself (never a backend's answers).

A configured page (a listener's beats the gateway's) is served as HTML.
Without one the body is plain text: the status line's words and a short
generic reason. The precise cause ("no healthy server in pool app", an
address that refused) is for the log and the access-log line only: a client
never learns the names of pools, servers or addresses.
"""

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK",   # 200: the answer to an ACME HTTP-01 check
    301: "Moved Permanently", 302: "Found", 303: "See Other",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}

# What a client is told when no page is configured: about its request or
# the service, never about the gateway's insides.
GENERIC = {
    400: "The request is malformed.",
    403: "The request is not allowed.",
    404: "No site is served for this host name.",
    405: "The request method is not supported.",
    408: "The request did not arrive in time.",
    413: "The request body is too large.",
    431: "The request head is too large.",
    500: "The gateway failed to handle the request.",
    501: "The request uses a feature that is not supported.",
    502: "The service could not be reached.",
    503: "The service is not available right now.",
    504: "The service did not answer in time.",
}

PAGE_STATUSES = tuple(sorted(GENERIC))
"""The statuses a page can be configured for: those the gateway makes."""

MAX_PAGE_SIZE = 1 << 20

HTML = b"text/html; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"


def reason(status: int) -> bytes:
    """The reason phrase of a status line the gateway writes."""
    return REASONS.get(status, "").encode()


def generic_body(status: int) -> bytes:
    """"502 Bad Gateway\\nThe service could not be reached.\\n"."""
    lines = [("%d %s" % (status, REASONS.get(status, ""))).rstrip()]
    if status in GENERIC:
        lines.append(GENERIC[status])
    return ("\n".join(lines) + "\n").encode()


_GENERIC_BODIES = {status: generic_body(status) for status in GENERIC}


class ErrorPages:
    """The answers' bodies for one listener (or the gateway alone)."""

    __slots__ = ("pages",)

    def __init__(self, gateway_pages=(), listener_pages=()):
        self.pages = dict(gateway_pages)
        self.pages.update(listener_pages)

    def body(self, status: int) -> tuple[bytes, bytes]:
        """(Content-Type, body) of an answer the gateway makes with `status`."""
        page = self.pages.get(status)
        if page is not None:
            return HTML, page
        generic = _GENERIC_BODIES.get(status)
        return TEXT, generic if generic is not None else generic_body(status)


def pages_for(gateway, listener=None) -> ErrorPages:
    """The pages of `listener` over the gateway's; the gateway's alone for None
    (an answer made before a listener is known, e.g. a bind shared by Host)."""
    return ErrorPages(gateway.error_pages, listener.error_pages if listener is not None else ())
