"""The exchange in each phase, without sockets: bytes in, decisions out.

A real config is compiled into a real snapshot; the client connection is a
plain record of what the exchange reads from it (`Down`), and a backend
connection is an object the exchange may only pool or close (`Upstream`).
"""
from types import SimpleNamespace

import pytest

from appgw.control.accesslog import AccessLog
from appgw.acme.manager import AcmeManager
from appgw.upstream.balancer import Backend
from appgw.config import parse_config
from appgw.http.errors import BackendError, ClientError
from appgw.exchange.exchange import ANSWERED, AWAITING, DONE, NEW, SENDING, Exchange
from appgw.http.h1 import UNTIL_CLOSE
from appgw.routing.router import Redirector
from appgw.routing.snapshot import build_snapshot
from appgw.control.stats import Stats

pytestmark = pytest.mark.sansio

CONFIG = """
[gateway]
admin_bind = ""
access_log = ""

[[listeners]]
name = "web"
bind = "127.0.0.1:8080"

[[backend_pools]]
name = "pool"
servers = ["10.0.0.1:8000", "10.0.0.2:8000"]

[[backend_settings]]
name = "s"
affinity_cookie = "aff"
request_timeout = 7

[[rules]]
name = "main"
listener = "web"
backend_pool = "pool"
backend_settings = "s"
  [[rules.paths]]
  paths = ["/old/*"]
  redirect = { url = "https://example.com/new", status = 301, include_path = true }
"""

CONFIG_PARSED = parse_config(CONFIG)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: b\r\n\r\n"


class Down:
    """What an exchange reads of its client connection, and what it logs."""

    def __init__(self, stopping=False):
        # A snapshot of its own: endpoints count what each test leaves active.
        snapshot = build_snapshot(CONFIG_PARSED, lambda spec: "/nonexistent")
        self.client_ip = "192.0.2.7"
        self.site = snapshot.sites[("127.0.0.1", 8080)]
        self.runtime = SimpleNamespace(stopping=stopping, stats=Stats(), access_log=AccessLog("", "combined"),
                                       acme=AcmeManager())
        self.gateway = snapshot.config.gateway
        self.logged = []

    def log(self, entry):
        self.logged.append(entry)


class Upstream:
    closed = False

    def close(self):
        self.closed = True


def head(target="/x", *lines, method="GET", version="1.1"):
    fields = "".join(line + "\r\n" for line in lines)
    text = "%s %s HTTP/%s\r\nHost: gw.test\r\n%s\r\n" % (method, target, version, fields)
    return text.encode()


def bound(raw=None, down=None):
    """An exchange bound to a backend connection: (exchange, endpoint, upstream)."""
    ex = Exchange(down or Down(), raw or head())
    assert type(ex.take()) is Backend
    endpoint = ex.choose()
    upstream = Upstream()
    ex.bind(endpoint, upstream)
    return ex, endpoint, upstream


def answered(raw_answer=OK, raw=None, down=None):
    ex, endpoint, upstream = bound(raw, down)
    ex.request_sent()
    resp, rest = ex.take_answer_head(raw_answer)
    ex.respond(resp, rest)
    return ex, endpoint, upstream


def test_a_request_is_taken_routed_and_bound():
    ex = Exchange(Down(), head("/x?q=1", "X-Forwarded-For: 203.0.113.1"))
    assert ex.phase is NEW
    assert type(ex.take()) is Backend
    endpoint = ex.choose()
    ex.bind(endpoint, Upstream())
    assert ex.phase is SENDING and endpoint.active == 1
    assert ex.up_head.startswith(b"GET /x?q=1 HTTP/1.1\r\nHost: gw.test\r\n")
    assert b"X-Forwarded-For: 203.0.113.1, 192.0.2.7\r\n" in ex.up_head
    assert b"X-Forwarded-Port: 8080\r\n" in ex.up_head
    assert ex.entry.server == endpoint.label and ex.entry.rule == "main"


def test_an_affinity_cookie_picks_its_server_and_is_not_set_again():
    first, endpoint, _ = bound()
    assert first.set_cookie == b"Set-Cookie: aff=%s; Path=/; HttpOnly" % endpoint.cookie
    for _ in range(4):   # round robin would move on; the cookie holds
        again, chosen, _ = bound(head("/x", "Cookie: a=1; aff=%s" % endpoint.cookie.decode()), first.down)
        assert chosen is endpoint and again.set_cookie is None


def test_a_redirect_is_answered_by_the_gateway_and_keeps_the_connection():
    ex = Exchange(Down(), head("/old/page"))
    assert type(ex.take()) is Redirector
    answer = ex.redirect()
    assert answer.startswith(b"HTTP/1.1 301 Moved Permanently\r\n")
    assert b"Location: https://example.com/new/old/page\r\n" in answer and b"Content-Length: 0\r\n" in answer
    assert ex.finish() is True and ex.entry.status == 301


def test_the_answer_head_may_come_in_pieces():
    ex, _, _ = bound()
    ex.request_sent()
    assert ex.phase is AWAITING
    assert ex.take_answer_head(OK[:20]) is None
    resp, rest = ex.take_answer_head(OK + b"ok")
    assert resp.status == 200 and bytes(rest) == b"ok"


def test_the_client_head_is_made_once_with_the_cookie_and_framing():
    ex, endpoint, upstream = answered()
    assert ex.phase is ANSWERED and ex.keep and ex.reusable
    assert ex.unsent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 2\r\n" in ex.unsent and b"Set-Cookie: aff=" in ex.unsent
    assert ex.body(b"ok") == b"ok" and ex.remaining == 0
    assert ex.finish() is True
    assert ex.phase is DONE and endpoint.idle[-1] is upstream and endpoint.active == 0
    assert ex.down.logged == [ex.entry] and ex.entry.status == 200


def test_bytes_past_the_content_length_are_not_relayed_and_the_connection_is_not_pooled():
    ex, endpoint, upstream = answered()
    assert ex.body(b"ok and more") == b"ok"
    ex.finish()
    assert upstream.closed and upstream not in endpoint.idle


def test_a_head_answer_is_never_pooled():
    ex, endpoint, upstream = answered(raw=head(method="HEAD"))
    ex.finish()
    assert upstream.closed


def test_an_http10_client_gets_a_chunked_answer_until_close():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    ex, _, _ = answered(chunked, raw=head(version="1.0"))
    assert ex.framing == UNTIL_CLOSE and ex.keep is False
    assert b"Transfer-Encoding" not in ex.unsent and b"Connection: close\r\n" in ex.unsent


def test_a_stop_ends_keep_alive():
    ex, _, _ = answered(down=Down(stopping=True))
    assert ex.keep is False and b"Connection: close\r\n" in ex.unsent


@pytest.mark.parametrize("answer, reason", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "invalid response"),
    (b"NOT HTTP\r\n\r\n", "invalid response"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000, "too large"),
])
def test_a_bad_answer_head_is_a_502(answer, reason):
    ex, _, _ = bound()
    ex.request_sent()
    with pytest.raises(BackendError) as caught:
        ex.take_answer_head(answer)
    assert caught.value.status == 502 and reason in caught.value.reason


def test_interim_answers():
    ex, _, _ = bound()
    early_hints = ex.take_answer_head(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")[0]
    assert ex.interim(early_hints) == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    assert ex.interim(ex.take_answer_head(b"HTTP/1.1 100 Continue\r\n\r\n")[0]) == b""
    with pytest.raises(BackendError, match="switched protocols unasked"):
        ex.interim(ex.take_answer_head(b"HTTP/1.1 101 Switching Protocols\r\n"
                                       b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")[0])
    assert ex.continue_head() == b"HTTP/1.1 100 Continue\r\n\r\n"
    # A 1xx never carries Content-Length (RFC 9110 8.6), whatever the backend sent.
    with_length = ex.take_answer_head(b"HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\nLink: </a.css>\r\n\r\n")[0]
    assert ex.interim(with_length) == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"


def test_only_a_bodyless_idempotent_request_is_replayed_and_never_after_a_timeout():
    get, _, _ = bound()
    post, _, _ = bound(head("/x", "Content-Length: 3", method="POST"))
    brew, _, _ = bound(head("/x", method="PATCH"))
    failed = BackendError(502, "backend closed the connection without answering", True)
    assert get.may_replay(failed) and not post.may_replay(failed) and not brew.may_replay(failed)
    assert not get.may_replay(get.timed_out())
    assert get.timed_out().status == 504 and "7s" in get.timed_out().reason
    assert get.stale_check is False and post.stale_check is True


def test_a_replay_rebinds_and_sends_the_head_again():
    ex, endpoint, first = bound()
    ex.request_sent()
    second = Upstream()
    ex.rebind(second)
    assert ex.phase is SENDING and ex.sent == 0 and ex.upstream is second and endpoint.active == 1


def test_a_failure_before_the_answer_is_answered_and_closes_the_backend_connection():
    ex, endpoint, upstream = bound()
    ex.sent = 10            # part of the head out: the fast path handed it over here
    payload, keep = ex.fail(BackendError(502, "backend connection failed: reset"))
    assert payload.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"Connection: close\r\n" in payload
    assert keep is False and upstream.closed and endpoint.active == 0 and ex.entry.status == 502


def test_a_failure_after_the_answer_began_says_nothing_more():
    ex, _, upstream = answered()
    ex.response_started = True
    assert ex.fail(BackendError(502, "backend connection failed")) == (b"", False)
    assert upstream.closed and ex.entry.status == 200


def test_a_404_keeps_the_connection_only_when_nothing_of_the_request_is_left():
    down = Down()
    unknown = SimpleNamespace(**{**vars(down), "site": SimpleNamespace(
        bind=down.site.bind, listeners=down.site.listeners, pages=down.site.pages, listener_for=lambda host: None)})
    unknown.log = lambda entry: None
    get = Exchange(unknown, head())
    with pytest.raises(ClientError) as caught:
        get.take()
    payload, keep = get.fail(caught.value)
    assert keep is True and payload.startswith(b"HTTP/1.1 404 Not Found\r\n")
    post = Exchange(unknown, head("/x", "Content-Length: 5", method="POST"))
    with pytest.raises(ClientError) as caught:
        post.take()
    assert post.fail(caught.value)[1] is False


def test_a_refused_head_is_answered_with_connection_close():
    ex = Exchange(Down(), b"")
    payload, keep = ex.fail(ClientError(431, "request head larger than 32768 bytes"))
    assert keep is False and payload.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close\r\n" in payload
