"""The bodies of answers the gateway makes: pages from the config, else generic text."""
import pytest

from appgw.config import parse_config
from appgw.exchange.errorpages import GENERIC, PAGE_STATUSES, REASONS, ErrorPages, generic_body, pages_for, reason


def config(tmp_path, gateway_pages, listener_pages):
    for name in ("gw.html", "own.html"):
        (tmp_path / name).write_text(f"<h1>{name}</h1>")
    return parse_config(f"""
[gateway]
error_pages = {gateway_pages}
[[listeners]]
name = "a"
bind = "0.0.0.0:80"
error_pages = {listener_pages}
[[listeners]]
name = "b"
bind = "0.0.0.0:81"
[[backend_pools]]
name = "app"
servers = ["10.0.0.4"]
[[rules]]
name = "a"
listener = "a"
backend_pool = "app"
[[rules]]
name = "b"
listener = "b"
backend_pool = "app"
""", "appgw.toml", base_dir=str(tmp_path))


def test_listener_page_wins_over_the_gateway_s(tmp_path):
    c = config(tmp_path, '{ "502" = "gw.html", "504" = "gw.html" }', '{ "504" = "own.html" }')
    a = pages_for(c.gateway, c.listener_by_name["a"])
    b = pages_for(c.gateway, c.listener_by_name["b"])
    html = b"text/html; charset=utf-8"
    assert a.body(504) == (html, b"<h1>own.html</h1>")
    assert a.body(502) == (html, b"<h1>gw.html</h1>")
    assert b.body(504) == (html, b"<h1>gw.html</h1>")
    assert pages_for(c.gateway).body(504) == (html, b"<h1>gw.html</h1>")
    assert a.body(503) == (b"text/plain; charset=utf-8", b"503 Service Unavailable\nThe service is not "
                                                          b"available right now.\n")


@pytest.mark.parametrize("status", PAGE_STATUSES)
def test_generic_body_is_the_status_line_and_a_reason(status):
    content_type, body = ErrorPages().body(status)
    assert content_type == b"text/plain; charset=utf-8"
    first, second = body.decode().splitlines()
    assert first == f"{status} {REASONS[status]}" and second == GENERIC[status]


def test_generic_bodies_name_nothing_internal():
    # the words a pool, server or address would show up as, in the reason
    # line (the status line's own words are RFC 9110's: "Internal Server Error")
    for status in PAGE_STATUSES:
        text = generic_body(status).decode().lower().splitlines()[1]
        assert not any(word in text for word in ("pool", "server", "address", "backend", "127.", ":80"))


def test_the_statuses_and_their_phrases():
    assert PAGE_STATUSES == (400, 403, 404, 405, 408, 413, 431, 500, 501, 502, 503, 504)
    assert [reason(s) for s in (301, 302, 303, 307, 308)] == [
        b"Moved Permanently", b"Found", b"See Other", b"Temporary Redirect", b"Permanent Redirect"]
    assert (reason(413), reason(431), reason(504)) == (
        b"Content Too Large", b"Request Header Fields Too Large", b"Gateway Timeout")
    assert generic_body(599) == b"599\n" and reason(599) == b""
