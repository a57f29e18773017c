"""Rewrite sets, error pages and compression through a running gateway.

One gateway (bin/appgw as a subprocess) in front of two real gevent WSGI
backends serves the whole module; every test asserts what a client or a
backend sees on the wire: the headers and target a backend got (its /echo
describes them), the headers and bytes a client got, decoded with the real
decoders (requests for gzip, brotli.decompress for br).
"""
import hashlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import brotli
import pytest
import requests
import websocket

import importlib.util as _importlib_util

from harness import BACKENDS
from harness import (BackendFactory, GatewayFactory, free_port, raw_request, read_http_response,
                     rss_kb, wait_until)

_spec = _importlib_util.spec_from_file_location("textbody", BACKENDS / "textbody.py")
_textbody = _importlib_util.module_from_spec(_spec)
_spec.loader.exec_module(_textbody)
TEXT_LINE, TEXT_PERIOD, text_bytes = _textbody.TEXT_LINE, _textbody.TEXT_PERIOD, _textbody.text_bytes


PAGES = {
    "gw-400.html": "<h1>gateway 400 page</h1>",
    "gw-404.html": "<h1>gateway 404 page</h1>",
    "gw-504.html": "<h1>gateway 504 page</h1>",
    "own-400.html": "<h1>listener 400 page</h1>",
    "own-502.html": "<h1>listener 502 page \u2014 own</h1>",
    "own-504.html": "<h1>listener 504 page</h1>",
}

VARIABLES = ("var_client_ip", "var_client_port", "var_host", "var_http_method", "var_request_uri",
             "var_uri_path", "var_query_string", "var_request_scheme", "var_server_port", "var_ssl_enabled")

CONFIG = """
[gateway]
admin_bind = ""
access_log = "-"
client_header_timeout = 5
error_pages = { "400" = "pages/gw-400.html", "404" = "pages/gw-404.html", "504" = "pages/gw-504.html" }

[[listeners]]
name = "web"
bind = "127.0.0.1:{web}"

[[listeners]]
name = "own"
bind = "127.0.0.1:{own}"
error_pages = { "400" = "pages/own-400.html", "502" = "pages/own-502.html", "504" = "pages/own-504.html" }

[[listeners]]
name = "tls"
bind = "127.0.0.1:{tls}"
protocol = "https"
certificate = "{cert}"
private_key = "{key}"

[[listeners]]
name = "site-a"
bind = "127.0.0.1:{shared}"
host_names = ["a.test"]

[[backend_pools]]
name = "main"
servers = ["{main}"]

[[backend_pools]]
name = "new"
servers = ["{new}"]

[[backend_pools]]
name = "secret-dead-pool"
servers = ["127.0.0.1:{dead}"]

[[backend_settings]]
name = "settings"
request_timeout = 5
connect_timeout = 2
probe = "probe"

[[backend_settings]]
name = "quick"
request_timeout = 0.5
connect_timeout = 2
probe = "probe"

[[probes]]
name = "probe"
path = "/health"
interval = 30
timeout = 2

[[rules]]
name = "web"
listener = "web"
backend_pool = "main"
backend_settings = "settings"
rewrite_set = "live"
compress = true
  [[rules.paths]]
  paths = ["/any/new/*"]
  backend_pool = "new"
  backend_settings = "settings"
  [[rules.paths]]
  paths = ["/plain/*"]
  backend_pool = "main"
  backend_settings = "settings"
  rewrite_set = "strip"
  compress = false
  [[rules.paths]]
  paths = ["/dead/*"]
  backend_pool = "secret-dead-pool"
  backend_settings = "settings"
  [[rules.paths]]
  paths = ["/slow"]
  backend_pool = "main"
  backend_settings = "quick"

[[rules]]
name = "own"
listener = "own"
backend_pool = "main"
backend_settings = "settings"
  [[rules.paths]]
  paths = ["/dead/*"]
  backend_pool = "secret-dead-pool"
  backend_settings = "settings"
  [[rules.paths]]
  paths = ["/slow"]
  backend_pool = "main"
  backend_settings = "quick"

[[rules]]
name = "tls"
listener = "tls"
backend_pool = "main"
backend_settings = "settings"
rewrite_set = "live"

[[rules]]
name = "site-a"
listener = "site-a"
backend_pool = "main"
backend_settings = "settings"

[[rewrite_sets]]
name = "strip"
  [[rewrite_sets.rules]]
  name = "strip-prefix"
  conditions = [{ variable = "var_uri_path", pattern = "^/plain(/.*)$" }]
  url = { path = "{var_uri_path_1}" }

[[rewrite_sets]]
name = "live"
  [[rewrite_sets.rules]]
  name = "vars"
  conditions = [{ variable = "http_req_X-Want", pattern = "^vars$" }]
  request_headers = { {variables}, "X-V-http_req" = "{http_req_User-Agent}" }

  [[rewrite_sets.rules]]
  name = "positive"
  conditions = [{ variable = "http_req_X-Test", pattern = "^cond$" }]
  request_headers = { "X-Cond" = "true" }
  [[rewrite_sets.rules]]
  name = "ignore-case"
  conditions = [{ variable = "http_req_X-Test", pattern = "^COND$", ignore_case = true }]
  request_headers = { "X-Cond-Icase" = "true" }
  [[rewrite_sets.rules]]
  name = "exact-case"
  conditions = [{ variable = "http_req_X-Test", pattern = "^COND$" }]
  request_headers = { "X-Cond-Exact" = "true" }
  [[rewrite_sets.rules]]
  name = "negated"
  conditions = [{ variable = "http_req_X-Test", pattern = "^cond$", negate = true }]
  request_headers = { "X-Cond-Negated" = "true" }
  [[rewrite_sets.rules]]
  name = "both-must-hold"
  conditions = [{ variable = "http_req_X-Test", pattern = "^cond$" },
                { variable = "var_query_string", pattern = "(^|&)and=1(&|$)" }]
  request_headers = { "X-Cond-And" = "true" }

  [[rewrite_sets.rules]]
  name = "captures"
  conditions = [{ variable = "var_uri_path", pattern = "^/cap/([a-z]+)/([0-9]+)$", ignore_case = true },
                { variable = "http_req_User-Agent", pattern = "^([a-z-]+)/", ignore_case = true }]
  request_headers = { "X-Word"="{var_uri_path_1}", "X-Num"="{var_uri_path_2}", "X-Agent"="{http_req_User-Agent_1}" }
  response_headers = { "X-Word-Back" = "{var_uri_path_1}" }
  url = { path = "/any/cap", query = "n={var_uri_path_2}" }

  [[rewrite_sets.rules]]
  name = "headers"
  conditions = [{ variable = "http_req_X-Test", pattern = "^headers$" }]
  request_headers = { "X-Tag" = "set-by-gw", "X-Debug" = "", "X-Forwarded-Proto" = "rewritten" }
  response_headers = { "X-Backend" = "", "Cache-Control" = "no-store", "X-Added" = "{var_http_method} {var_uri_path}" }

  [[rewrite_sets.rules]]
  name = "answer-condition"
  conditions = [{ variable = "http_resp_X-Colour", pattern = "^(\\\\w+)$" }]
  response_headers = { "X-Colour-Seen" = "{http_resp_X-Colour_1}-{var_http_method}" }

  [[rewrite_sets.rules]]
  name = "hsts-on-html"
  conditions = [{ variable = "http_resp_Content-Type", pattern = "^text/html", ignore_case = true }]
  response_headers = { "Strict-Transport-Security" = "max-age=31536000" }

  [[rewrite_sets.rules]]
  name = "old"
  conditions = [{ variable = "var_uri_path", pattern = "^/old/(.*)$" }]
  url = { path = "/any/new/{var_uri_path_1}", query = "{var_query_string}&src=gw" }
  [[rewrite_sets.rules]]
  name = "move"
  conditions = [{ variable = "var_uri_path", pattern = "^/move/(.*)$" }]
  url = { path = "/any/new/{var_uri_path_1}", reroute = true }

  [[rewrite_sets.rules]]
  name = "websocket"
  conditions = [{ variable = "var_uri_path", pattern = "^/sock/info$" }]
  request_headers = { "X-WS-Rewritten" = "{var_uri_path}" }
  response_headers = { "X-WS" = "yes", "Sec-WebSocket-Accept" = "forged" }
  url = { path = "/ws/info", query = "from=gw" }

  [[rewrite_sets.rules]]
  name = "inject"
  conditions = [{ variable = "var_uri_path", pattern = "^/inject/(.*)$" }]
  request_headers = { "X-Captured" = "{var_uri_path_1}" }
  url = { path = "/echo" }
""".replace("{variables}", ", ".join(f'"X-V-{name}" = "{{{name}}}"' for name in VARIABLES))


class Live:
    """The module's gateway and backends, with their addresses."""

    def __init__(self, gateway, ports, main, new, cert):
        self.gateway, self.ports, self.main, self.new, self.cert = gateway, ports, main, new, cert

    def url(self, path, listener="web"):
        scheme = "https" if listener == "tls" else "http"
        return f"{scheme}://127.0.0.1:{self.ports[listener]}{path}"

    def get(self, path, listener="web", **kwargs):
        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("allow_redirects", False)
        if listener == "tls":
            kwargs.setdefault("verify", self.cert)
        return requests.get(self.url(path, listener), **kwargs)

    def echo(self, path="/echo", headers=None, listener="web"):
        """What the backend saw: its /echo JSON, headers as a list of [name, value]."""
        r = self.get(path, listener, headers=headers)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def logs(self):
        return self.gateway.stdout_text() + self.gateway.stderr_text()


@pytest.fixture(scope="module")
def live(tmp_path_factory, certs):
    backends = BackendFactory()
    gateways = GatewayFactory(tmp_path_factory.mktemp("rules"))
    try:
        main, new = backends.wsgi("main"), backends.wsgi("new")
        pages = gateways.directory / "gw0" / "pages"
        pages.mkdir(parents=True)
        for name, text in PAGES.items():
            (pages / name).write_text(text, encoding="utf-8")
        ports = {name: free_port() for name in ("web", "own", "tls", "shared")}
        gateway = gateways(CONFIG, main=main.address, new=new.address, dead=free_port(),
                           cert=certs.cert, key=certs.key, **ports)
        yield Live(gateway, ports, main, new, certs.cert)
    finally:
        gateways.stop_all()
        backends.stop_all()


def header(echo, name):
    """Every value of header `name` the backend got, in order."""
    return [value for key, value in echo["headers"] if key.lower() == name.lower()]


# --- rewrite: variables ----------------------------------------------------------------

def test_every_variable_reaches_the_backend(live):
    with socket.create_connection(("127.0.0.1", live.ports["web"]), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /echo?a=1&b=2 HTTP/1.1\r\nHost: Shop.Example:8080\r\nX-Want: vars\r\n"
                     b"User-Agent: live-test/1.0\r\n\r\n")
        status, _, body = read_http_response(sock)
    assert status == 200
    echo = json.loads(body)
    expected = {
        "var_client_ip": "127.0.0.1", "var_client_port": str(client_port), "var_host": "shop.example",
        "var_http_method": "GET", "var_request_uri": "/echo?a=1&b=2", "var_uri_path": "/echo",
        "var_query_string": "a=1&b=2", "var_request_scheme": "http",
        "var_server_port": str(live.ports["web"]),
    }
    for name, value in expected.items():
        assert header(echo, f"X-V-{name}") == [value], name
    assert header(echo, "X-V-var_ssl_enabled") == []  # empty: the header is left out
    assert header(echo, "X-V-http_req") == ["live-test/1.0"]


def test_tls_variables(live):
    echo = live.echo("/echo", {"X-Want": "vars"}, listener="tls")
    assert header(echo, "X-V-var_request_scheme") == ["https"]
    assert header(echo, "X-V-var_ssl_enabled") == ["on"]
    assert header(echo, "X-V-var_server_port") == [str(live.ports["tls"])]


def test_a_request_without_matching_rules_goes_on_unchanged(live):
    echo = live.echo("/echo?x=1", {"X-Other": "1"})
    assert echo["target"] == "/echo?x=1"
    assert not [name for name, _ in echo["headers"] if name.lower().startswith(("x-v-", "x-cond-and"))]
    assert header(echo, "X-Other") == ["1"]


# --- rewrite: conditions ---------------------------------------------------------------

def hits(echo):
    return sorted(name for name, _ in echo["headers"] if name.lower().startswith("x-cond"))


def test_conditions_true_false_negated_and_ignore_case(live):
    assert hits(live.echo("/echo", {"X-Test": "cond"})) == ["X-Cond", "X-Cond-Icase"]
    assert hits(live.echo("/echo", {"X-Test": "COND"})) == ["X-Cond-Exact", "X-Cond-Icase", "X-Cond-Negated"]
    assert hits(live.echo("/echo")) == ["X-Cond-Negated"]


def test_every_condition_must_hold(live):
    assert "X-Cond-And" in hits(live.echo("/echo?and=1", {"X-Test": "cond"}))
    assert "X-Cond-And" not in hits(live.echo("/echo?and=2", {"X-Test": "cond"}))


def test_capture_groups_in_request_response_and_url(live):
    r = live.get("/cap/Blue/42", headers={"User-Agent": "Live-Test/2.0"})
    assert r.status_code == 200
    echo = r.json()
    assert (echo["path"], echo["query"]) == ("/any/cap", "n=42")
    assert header(echo, "X-Word") == ["Blue"] and header(echo, "X-Num") == ["42"]
    assert header(echo, "X-Agent") == ["Live-Test"]
    assert r.headers["X-Word-Back"] == "Blue"


# --- rewrite: headers ------------------------------------------------------------------

def test_request_headers_set_replace_and_remove(live):
    with socket.create_connection(("127.0.0.1", live.ports["web"]), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Test: headers\r\nX-Tag: one\r\nx-tag: two\r\n"
                     b"X-Debug: 1\r\nX-Kept: 1\r\n\r\n")
        status, _, body = read_http_response(sock)
    echo = json.loads(body)
    assert header(echo, "X-Tag") == ["set-by-gw"]
    assert header(echo, "X-Debug") == []
    assert header(echo, "X-Kept") == ["1"]
    assert header(echo, "X-Forwarded-Proto") == ["rewritten"]   # X-Forwarded-* can be rewritten
    assert header(echo, "X-Forwarded-For") == ["127.0.0.1"]


def test_response_headers_set_replace_and_remove(live):
    r = live.get("/text?n=10&type=image/png&header=X-Backend:gevent&header=Cache-Control:max-age=60"
                 "&header=X-Other:1", headers={"X-Test": "headers"})
    assert r.status_code == 200 and r.content == text_bytes(0, 10)
    assert "X-Backend" not in r.headers
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Added"] == "GET /text"
    assert r.headers["X-Other"] == "1"
    plain = live.get("/text?n=10&type=image/png&header=X-Backend:gevent")
    assert plain.headers["X-Backend"] == "gevent" and "X-Added" not in plain.headers


def test_response_conditions_on_the_answer(live):
    r = live.get("/text?n=10&type=image/png&header=X-Colour:teal")
    assert r.headers["X-Colour-Seen"] == "teal-GET"
    assert "Strict-Transport-Security" not in r.headers
    html = live.get("/text?n=10&type=TEXT/HTML")
    assert html.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "X-Colour-Seen" not in html.headers


# --- rewrite: URL ----------------------------------------------------------------------

def test_url_rewrite_without_reroute_keeps_the_route(live):
    echo = live.echo("/old/page?a=1")
    assert echo["name"] == "main"          # routed by the path the client sent
    assert (echo["path"], echo["query"]) == ("/any/new/page", "a=1&src=gw")


def test_url_rewrite_with_reroute_routes_the_new_path(live):
    echo = live.echo("/move/page?a=1")
    assert echo["name"] == "new"           # /any/new/* goes to the "new" pool
    assert (echo["path"], echo["query"]) == ("/any/new/page", "a=1")


def test_a_path_entry_s_own_set_replaces_the_rule_s(live):
    echo = live.echo("/plain/echo", {"X-Want": "vars"})
    assert echo["path"] == "/echo"
    assert not [name for name, _ in echo["headers"] if name.lower().startswith("x-v-")]


# --- rewrite: WebSocket, injection -----------------------------------------------------

def test_websocket_handshake_is_rewritten(live):
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.ports['web']}/sock/info?x=1", timeout=10)
    try:
        # the handshake succeeded: Sec-WebSocket-Accept was not "forged"
        assert ws.getstatus() == 101
        assert ws.getheaders()["x-ws"] == "yes"
        info = json.loads(ws.recv())
        assert (info["path"], info["query"]) == ("/ws/info", "from=gw")
        assert header(info, "X-WS-Rewritten") == ["/sock/info"]
        ws.send("still a WebSocket")
        assert ws.recv() == "still a WebSocket"
    finally:
        ws.close()


def test_injected_cr_lf_never_makes_a_header(live):
    # Percent-encoded CR LF stays encoded: the captured value is one header.
    answer = raw_request(live.ports["web"], b"GET /inject/a%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: x\r\n"
                                            b"Connection: close\r\n\r\n")
    echo = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert header(echo, "X-Captured") == ["a%0d%0aX-Injected:%201"]
    assert header(echo, "X-Injected") == []
    # A raw CR LF inside a value is refused before any rule runs, never forwarded.
    answer = raw_request(live.ports["web"], b"GET /inject/x HTTP/1.1\r\nHost: x\r\n"
                                            b"X-In: a\rX-Injected: 1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


# --- error pages -----------------------------------------------------------------------

def test_gateway_page_for_a_malformed_request(live):
    answer = raw_request(live.ports["web"], b"GET / HTTP/1.1\r\n\r\n")  # no Host
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nContent-Type: text/html; charset=utf-8" in head
    assert body == PAGES["gw-400.html"].encode()


def test_a_bind_s_only_listener_gives_its_page_before_the_host_is_known(live):
    answer = raw_request(live.ports["own"], b"GET / HTTP/1.1\r\n\r\n")  # no Host
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body == PAGES["own-400.html"].encode()


def test_gateway_page_when_no_listener_takes_the_host(live):
    r = requests.get(f"http://127.0.0.1:{live.ports['shared']}/", headers={"Host": "b.test"}, timeout=10)
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.text == PAGES["gw-404.html"]


def test_listener_page_wins_over_the_gateway_s(live):
    web = live.get("/slow?delay=3")
    own = live.get("/slow?delay=3", listener="own")
    assert (web.status_code, own.status_code) == (504, 504)
    assert web.text == PAGES["gw-504.html"]
    assert own.text == PAGES["own-504.html"]
    assert own.headers["Content-Type"] == "text/html; charset=utf-8"


def test_listener_page_for_502(live):
    r = live.get("/dead/x", listener="own")
    assert r.status_code == 502
    assert r.content == PAGES["own-502.html"].encode("utf-8")
    assert r.headers["Content-Length"] == str(len(r.content))


def test_without_a_page_the_body_is_generic_and_internal_names_go_to_the_log(live):
    r = live.get("/dead/x")
    assert r.status_code == 502
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.text == "502 Bad Gateway\nThe service could not be reached.\n"
    wait_until(lambda: "secret-dead-pool" in live.logs(), message="the pool's name in the gateway's log")


def test_a_backend_s_own_502_passes_unchanged(live):
    r = live.get("/status?code=502", listener="own")
    assert r.status_code == 502
    assert r.text == "status 502\n" and r.headers["Content-Type"] == "text/plain"


# --- compression -----------------------------------------------------------------------

def raw_get(live, path, accept, listener="web", method="GET", **headers):
    """The answer as sent: (response, undecoded body). `accept` None sends no
    Accept-Encoding (requests would send its own)."""
    headers["Accept-Encoding"] = accept
    r = requests.request(method, live.url(path, listener), headers=headers, stream=True, timeout=10)
    body = r.raw.read(decode_content=False)
    r.close()
    return r, body


def test_brotli_when_accepted(live):
    n = 100_000
    r, body = raw_get(live, f"/text?n={n}&header=ETag:%22v1%22", "gzip, deflate, br")
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "br"
    assert "Content-Length" not in r.headers and r.headers["Transfer-Encoding"] == "chunked"
    assert r.headers["Vary"] == "Accept-Encoding"
    assert r.headers["ETag"] == 'W/"v1"'
    assert brotli.decompress(body) == text_bytes(0, n)
    assert len(body) < n / 5


def test_gzip_when_br_is_not_accepted(live):
    n = 100_000
    r = requests.get(live.url(f"/text?n={n}&chunked=1&header=Vary:Origin"),
                     headers={"Accept-Encoding": "gzip, br;q=0"}, timeout=10)
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Vary"] == "Origin, Accept-Encoding"
    assert r.content == text_bytes(0, n)   # requests undid the gzip


def test_br_wins_a_tie_and_q_values_count(live):
    assert raw_get(live, "/text?n=5000", "gzip;q=0.5, br;q=0.5")[0].headers["Content-Encoding"] == "br"
    assert raw_get(live, "/text?n=5000", "gzip;q=0.9, br;q=0.5")[0].headers["Content-Encoding"] == "gzip"
    assert raw_get(live, "/text?n=5000", "*")[0].headers["Content-Encoding"] == "br"


@pytest.mark.parametrize("path, accept, method, extra", [
    ("/text?n=5000", "br", "HEAD", {}),
    ("/text?n=5000&status=204", "br", "GET", {}),
    ("/text?n=5000&status=304", "br", "GET", {}),
    ("/text?n=5000&status=206", "br", "GET", {}),
    ("/text?n=5000", "br", "GET", {"Range": "bytes=0-99"}),
    ("/text?n=5000&header=Content-Encoding:x-custom", "br", "GET", {}),
    ("/text?n=5000&header=Cache-Control:public,%20no-transform", "br", "GET", {}),
    ("/text?n=5000&type=image/png", "br", "GET", {}),
    ("/text?n=5000&type=application/octet-stream", "br", "GET", {}),
    ("/text?n=1023", "br", "GET", {}),
    ("/plain/text?n=5000", "br", "GET", {}),            # compress = false on the path entry
    ("/text?n=5000", None, "GET", {}),                  # the client accepts no coding
    ("/text?n=5000", "br;q=0, gzip;q=0", "GET", {}),
], ids=["HEAD", "204", "304", "206", "Range", "encoded", "no-transform", "png", "octet-stream",
        "below-minimum", "compress-off", "no-accept", "refused"])
def test_not_compressed(live, path, accept, method, extra):
    r, body = raw_get(live, path, accept, method=method, **extra)
    assert r.headers.get("Content-Encoding") == ("x-custom" if "x-custom" in path else None)
    if method == "GET" and r.status_code not in (204, 304):
        assert body == text_bytes(0, len(body)) and len(body) in (5000, 1023)
        assert r.headers["Content-Length"] == str(len(body))


def test_vary_is_sent_when_the_answer_could_be_compressed(live):
    r, _ = raw_get(live, "/text?n=5000", None)
    assert r.headers["Vary"] == "Accept-Encoding"
    r, _ = raw_get(live, "/text?n=5000&type=image/png", None)
    assert "Vary" not in r.headers


def test_an_answer_of_unknown_length_below_the_minimum_is_compressed(live):
    r, body = raw_get(live, "/text?n=100&chunked=1", "br")
    assert r.headers["Content-Encoding"] == "br" and brotli.decompress(body) == text_bytes(0, 100)


def test_an_http10_client_gets_the_answer_plain(live):
    with socket.create_connection(("127.0.0.1", live.ports["web"]), timeout=10) as sock:
        sock.sendall(b"GET /text?n=5000 HTTP/1.0\r\nHost: x\r\nAccept-Encoding: br, gzip\r\n\r\n")
        status, headers, body = read_http_response(sock)
    assert status == 200 and "Content-Encoding" not in headers and body == text_bytes(0, 5000)


# --- a large answer: flat memory, and other connections keep their latency ------------

BIG = 50 * 1024 * 1024


def digest_of_text(n, step=8 * 1024 * 1024):
    digest = hashlib.sha256()
    for offset in range(0, n, step):
        digest.update(text_bytes(offset, min(step, n - offset)))
    return digest.hexdigest()


# Another client, in its own process (this one's GIL is busy decoding): it asks
# the gateway for an answer the gateway makes itself (404: no site for the
# host), over and over on one keep-alive connection, until its stdin closes,
# then prints each round trip's seconds. What it measures is how soon the
# gateway's loop serves this connection, not a backend.
LATENCY_CLIENT = r"""
import json, select, socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
request = b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n"
print("READY", flush=True)
times = []
while not select.select([sys.stdin], [], [], 0)[0]:
    start = time.perf_counter()
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 404 ")
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def test_a_50_mb_answer_streams_with_flat_memory_and_others_keep_their_latency(live):
    pid = live.gateway.proc.pid
    expected = digest_of_text(BIG)
    raw_get(live, "/text?n=200000", "br")            # warm the code paths and pools
    baseline = rss_kb(pid)
    peak, done = [baseline], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak.append(rss_kb(pid))

    sampler = threading.Thread(target=sample)
    other = subprocess.Popen([sys.executable, "-c", LATENCY_CLIENT, str(live.ports["shared"])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    got, decoder, received, size = hashlib.sha256(), brotli.Decompressor(), 0, 0
    try:
        assert other.stdout.readline() == b"READY\n"
        sampler.start()
        began = time.perf_counter()
        r = requests.get(live.url(f"/text?n={BIG}&chunked=1&piece=1048576"),
                         headers={"Accept-Encoding": "br"}, stream=True, timeout=30)
        assert r.headers["Content-Encoding"] == "br"
        for piece in r.raw.stream(64 * 1024, decode_content=False):
            received += len(piece)
            plain = decoder.process(piece)
            got.update(plain)
            size += len(plain)
        took = time.perf_counter() - began
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join()
        latencies = json.loads(other.communicate(b"stop", timeout=30)[0])
    assert size == BIG and got.hexdigest() == expected and decoder.is_finished()
    assert received < BIG / 10
    grown = (max(peak) - baseline) / 1024
    assert grown < 20, f"the gateway grew by {grown:.1f} MiB while streaming 50 MiB"
    # Served between the pieces of the big answer: every round trip short
    # next to the time the big answer took. A gateway that compressed
    # without serving its loop in between held one round trip for about the
    # whole transfer (measured: 215-230 ms of 224-238 ms; paced, at most a
    # third of it, median 0.1-0.3 ms). Only that ratio is asserted: on a
    # loaded machine the other client's own process waits for a CPU too.
    figures = (f"transfer {took * 1000:.0f} ms; {len(latencies)} round trips, median "
               f"{statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.1f} ms")
    assert len(latencies) >= 3, figures
    assert max(latencies) < max(took / 2, 0.05), figures
