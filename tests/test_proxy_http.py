"""The HTTP reverse proxy end to end (SPEC 4, issue 2 item 5, 8, 9).

Real gateway, real backends, real clients: `requests` where a client
library is what users have, raw sockets where the bytes on the wire matter.
"""
import hashlib
import json
import os
import re
import socket
import threading
import time

import pytest
import requests

from harness import (GatewayFactory, connect, free_port, gateway_config, pattern_bytes, raw_request,
                     read_http_response, rss_kb, wait_until)

MB = 1024 * 1024


def start(gateway_factory, servers=(), **kwargs):
    return gateway_factory(gateway_config(servers, **kwargs), port=free_port())


def unanswered_probes(backend_factory):
    """Settings that keep every server Unknown for the whole test (their probes
    wait on a backend that never answers), so that all of them take traffic
    (SPEC 6) and the order in which first probes answer cannot skew balancing."""
    silent = backend_factory.raw("never-answer")
    return {"probe_port": silent.port, "probe_timeout": 30}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, wsgi_backend):
    """A gateway in front of the session's wsgi backend, shared by the tests
    that only send it requests (start-up is the slow part)."""
    factory = GatewayFactory(tmp_path_factory.mktemp("shared-gw"))
    yield start(factory, [wsgi_backend.address])
    factory.stop_all()


def header_values(info, name):
    """Values of header ``name`` (any case) as the backend received them."""
    return [v for k, v in info["headers"] if k.lower() == name.lower()]


def read_until_close(sock, limit=5):
    """Everything ``sock`` delivers until EOF; fails if EOF has not come in ``limit`` s."""
    sock.settimeout(limit)
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except socket.timeout:
        pytest.fail(f"connection still open after {limit}s; got {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data


def is_closed(sock, wait=0.3):
    """True when ``sock`` reads EOF (or a reset) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


# --- passing requests through ------------------------------------------------------

def test_get_and_post_reach_the_backend(gw):
    r = requests.get(gw.url("/echo?a=1&b=two"))
    assert r.status_code == 200
    info = r.json()
    assert (info["name"], info["method"], info["path"], info["query"]) == \
        ("session", "GET", "/echo", "a=1&b=two")

    body = os.urandom(100_000)
    r = requests.post(gw.url("/echo"), data=body)
    info = r.json()
    assert (info["method"], info["body_length"]) == ("POST", len(body))
    assert info["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_request_headers_forwarded_stripped_and_added(gw):
    sock = connect(gw)
    head = (
        "GET /echo HTTP/1.1\r\n"
        "Host: shop.example.test:8080\r\n"
        "Connection: keep-alive, X-Drop-Me, X-Forwarded-For\r\n"
        "X-Drop-Me: secret\r\n"
        "Keep-Alive: timeout=5\r\n"
        "TE: trailers\r\n"
        "Trailer: X-Checksum\r\n"
        "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        "Proxy-Authenticate: Basic\r\n"
        "Upgrade: h2c\r\n"
        "X-Forwarded-For: 203.0.113.7\r\n"
        "X-Keep-Me: yes\r\n"
        "\r\n")
    with sock:
        sock.sendall(head.encode())
        status, _, body = read_http_response(sock)
    assert status == 200
    info = json.loads(body)
    names = {k.lower() for k, _ in info["headers"]}
    for hop in ("x-drop-me", "keep-alive", "te", "trailer", "proxy-authorization",
                "proxy-authenticate", "upgrade"):
        assert hop not in names, f"hop-by-hop {hop} forwarded: {info['headers']}"
    assert header_values(info, "X-Keep-Me") == ["yes"]
    # Host passes through; the X-* set after stripping, so Connection cannot remove them.
    assert header_values(info, "Host") == ["shop.example.test:8080"]
    assert header_values(info, "X-Original-Host") == ["shop.example.test:8080"]
    xff = header_values(info, "X-Forwarded-For")
    assert len(xff) == 1 and [p.strip() for p in xff[0].split(",")] == \
        ["203.0.113.7", "127.0.0.1"], xff
    assert header_values(info, "X-Forwarded-Proto") == ["http"]
    assert header_values(info, "X-Forwarded-Port") == [str(gw.port())]
    # Connection itself is the gateway's business with the backend, never the client's list.
    for value in header_values(info, "Connection"):
        assert "x-drop-me" not in value.lower() and "forwarded" not in value.lower()


def test_x_forwarded_for_is_set_without_a_client_value(gw):
    info = requests.get(gw.url("/echo")).json()
    assert header_values(info, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(info, "X-Original-Host") == [f"127.0.0.1:{gw.port()}"]


# --- HTTP/1.0, keep-alive, pipelining ------------------------------------------

def test_http10_client_without_keepalive_is_closed_after_the_response(gw):
    with connect(gw) as sock:
        sock.sendall(b"GET /name HTTP/1.0\r\nHost: x\r\n\r\n")
        data = read_until_close(sock, limit=3)
    assert data.startswith(b"HTTP/1."), data[:100]
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200"
    assert body == b"session"


def test_http10_client_with_keepalive_keeps_the_connection(gw):
    with connect(gw) as sock:
        for _ in range(2):
            sock.sendall(b"GET /name HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = read_http_response(sock)
            assert (status, body) == (200, b"session")
            assert headers.get("Connection", "").lower() == "keep-alive"
        assert not is_closed(sock)


def test_http10_client_gets_no_chunked_framing(gw):
    """A chunked backend answer to an HTTP/1.0 client is delimited by close."""
    n = 100_000
    with connect(gw) as sock:
        sock.sendall(f"GET /bytes?n={n}&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = read_until_close(sock, limit=3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == pattern_bytes(n)


def test_pipelined_requests_are_answered_in_order(gw):
    requests_ = (b"GET /slow?delay=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /echo?third HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    with connect(gw) as sock:
        sock.sendall(requests_)
        first = read_http_response(sock)
        second = read_http_response(sock)
        third = read_http_response(sock)
        assert not is_closed(sock)
    assert (first[0], first[2]) == (200, b"slow ok\n")
    assert (second[0], second[2]) == (200, b"session")
    info = json.loads(third[2])
    assert (third[0], info["query"], info["body_length"]) == (200, "third", 5)


def test_keepalive_connections_to_the_backend_are_reused(gw):
    with requests.Session() as session:
        ports = [session.get(gw.url("/echo")).json()["remote_port"] for _ in range(5)]
    # Separate client connections one after another reuse the same pooled connection.
    ports += [requests.get(gw.url("/echo")).json()["remote_port"] for _ in range(3)]
    assert len(set(ports)) == 1, ports


def test_stale_pooled_connection_is_retried_transparently(gateway_factory, backend_factory,
                                                         wsgi_backend):
    backend = backend_factory.raw("close-after-response")
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    for _ in range(3):
        r = requests.get(gw.url("/anything"))
        assert (r.status_code, r.text) == (200, "ok")
        time.sleep(0.4)  # the backend closes the pooled connection after 0.2 s


def test_backend_restarted_on_the_same_port(gateway_factory, backend_factory, wsgi_backend):
    first = backend_factory.wsgi("first")
    # Probes go elsewhere: a probe meeting the restart would take the server out.
    gw = start(gateway_factory, [first.address], probe_port=wsgi_backend.port)
    assert requests.get(gw.url("/name")).text == "first"
    first.stop()
    backend_factory.started.remove(first)
    second = backend_factory("wsgi_backend.py", "--name", "second", "--port", first.port)
    for _ in range(3):
        r = requests.get(gw.url("/name"))
        assert (r.status_code, r.text) == (200, "second")
    assert second.port == first.port


# --- bodies ------------------------------------------------------------------------

def test_5mb_chunked_upload_is_echoed_intact(gw):
    data = os.urandom(5 * MB)
    pieces = (data[i:i + 100_000] for i in range(0, len(data), 100_000))
    r = requests.post(gw.url("/upload-echo"), data=pieces)  # a generator: sent chunked
    assert r.status_code == 200
    assert len(r.content) == len(data)
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_5mb_content_length_upload_arrives_intact(gw):
    data = os.urandom(5 * MB)
    info = requests.post(gw.url("/echo"), data=data).json()
    assert info["body_length"] == len(data)
    assert info["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert header_values(info, "Content-Length") == [str(len(data))]


def test_50mb_response_is_streamed_with_flat_memory(gw):
    n = 50 * MB
    _ = requests.get(gw.url("/bytes?n=1000000")).content  # warm up pools and buffers
    baseline = rss_kb(gw.proc.pid)
    peak = baseline
    offset = 0
    with requests.get(gw.url(f"/bytes?n={n}"), stream=True) as r:
        assert r.headers["Content-Length"] == str(n)
        # A gateway without backpressure would read ahead into memory while we wait.
        time.sleep(1.0)
        peak = max(peak, rss_kb(gw.proc.pid))
        for i, piece in enumerate(r.iter_content(256 * 1024)):
            assert piece == pattern_bytes(len(piece), offset), f"wrong bytes at {offset}"
            offset += len(piece)
            if i % 8 == 0:
                peak = max(peak, rss_kb(gw.proc.pid))
    assert offset == n
    assert peak - baseline < 10 * 1024, f"RSS grew {peak - baseline} KiB (from {baseline})"


def test_chunked_response_passes_through(gw):
    n = 300_000
    r = requests.get(gw.url(f"/bytes?n={n}&chunked=1"))
    assert r.status_code == 200
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.headers
    assert r.content == pattern_bytes(n)


@pytest.mark.parametrize("method,target,status", [
    ("HEAD", "/bytes?n=1000", 200),
    ("GET", "/status?code=204", 204),
    ("GET", "/status?code=304", 304),
])
def test_responses_without_body(gw, method, target, status):
    """The next response on the connection starts right after the head."""
    with connect(gw) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /name HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got_status, headers, body = read_http_response(sock, method=method)
        assert (got_status, body) == (status, b"")
        if method == "HEAD":
            assert headers["Content-Length"] == "1000"
        assert read_http_response(sock)[::2] == (200, b"session")
        assert not is_closed(sock)


def test_head_response_has_no_body_bytes_on_the_wire(gw):
    data = raw_request(gw.port(), b"HEAD /bytes?n=5000 HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n", timeout=3)
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200")
    assert rest == b""


def test_expect_100_continue(gw):
    body = b"x" * 1000
    with connect(gw) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        interim = b""
        sock.settimeout(3)
        while b"\r\n\r\n" not in interim:
            piece = sock.recv(4096)
            assert piece, f"closed before 100 Continue: {interim!r}"
            interim += piece
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        assert interim.endswith(b"\r\n\r\n"), "nothing may follow the 100 before the body"
        sock.sendall(body)
        status, _, answer = read_http_response(sock)
    assert status == 200
    assert json.loads(answer)["body_sha256"] == hashlib.sha256(body).hexdigest()


# --- limits and errors ---------------------------------------------------------

def test_body_over_max_body_size_is_413(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], gateway="max_body_size = 1000")
    assert requests.post(gw.url("/echo"), data=b"a" * 1000).json()["body_length"] == 1000
    data = raw_request(gw.port(), b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 2000\r\n\r\n" + b"a" * 2000, timeout=3)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b'"name"' not in data  # never reached the backend's /echo


def test_head_over_max_header_size_is_431(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], gateway="max_header_size = 2048")
    assert requests.get(gw.url("/echo"), headers={"X-Small": "a" * 500}).status_code == 200
    data = raw_request(gw.port(), b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 +
                       b"\r\n\r\n", timeout=3)
    assert data.startswith(b"HTTP/1.1 431"), data[:200]


def test_connect_is_405(gw):
    data = raw_request(gw.port(), b"CONNECT example.com:443 HTTP/1.1\r\n"
                                  b"Host: example.com:443\r\n\r\n", timeout=3)
    assert data.startswith(b"HTTP/1.1 405"), data[:200]


def test_closed_port_is_502(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [f"127.0.0.1:{free_port()}"], probe_port=wsgi_backend.port)
    started = time.monotonic()
    r = requests.get(gw.url("/echo"))
    assert r.status_code == 502
    assert time.monotonic() - started < 3


def test_failed_connect_moves_to_the_next_server(gateway_factory, backend_factory,
                                                wsgi_backend):
    """Both servers stay in the pool (probes unanswered), so the closed one gets picked."""
    gw = start(gateway_factory, [f"127.0.0.1:{free_port()}", wsgi_backend.address],
               **unanswered_probes(backend_factory))
    for _ in range(4):
        r = requests.post(gw.url("/echo"), data=b"payload")
        assert r.status_code == 200
        assert r.json()["body_length"] == 7


def test_slow_backend_is_504(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], request_timeout=0.5)
    started = time.monotonic()
    r = requests.get(gw.url("/slow?delay=3"))
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert 0.4 < elapsed < 2.5, elapsed


def test_garbage_from_the_backend_is_502(gateway_factory, backend_factory, wsgi_backend):
    backend = backend_factory.raw("garbage")
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    assert requests.get(gw.url("/x")).status_code == 502


@pytest.mark.parametrize("mode", ["reset-mid-body", "reset-mid-chunked"])
def test_backend_reset_mid_body_gives_an_incomplete_response(gateway_factory,
                                                            backend_factory, wsgi_backend,
                                                            mode):
    backend = backend_factory.raw(mode)
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        _ = requests.get(gw.url("/x")).content
    # On the wire: never a complete-looking response, and the connection closes.
    data = raw_request(gw.port(), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    if mode == "reset-mid-body":
        assert b"content-length: 100000" in head.lower()
        assert len(body) < 100000
    else:
        assert not body.endswith(b"0\r\n\r\n"), body[-50:]


# --- Host header sent to the backend --------------------------------------------

def test_host_name_setting_overrides_host(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address],
               settings='host_name = "backend.internal"')
    info = requests.get(gw.url("/echo"), headers={"Host": "public.example"}).json()
    assert header_values(info, "Host") == ["backend.internal"]
    assert header_values(info, "X-Original-Host") == ["public.example"]


def test_pick_host_name_from_backend(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address],
               settings="pick_host_name_from_backend = true")
    info = requests.get(gw.url("/echo"), headers={"Host": "public.example"}).json()
    assert header_values(info, "Host")[0] in ("127.0.0.1", wsgi_backend.address)
    assert header_values(info, "X-Original-Host") == ["public.example"]


# --- load balancing ---------------------------------------------------------------

def test_round_robin_alternates(gateway_factory, backend_factory):
    a, b = backend_factory.wsgi("A"), backend_factory.wsgi("B")
    gw = start(gateway_factory, [a.address, b.address], **unanswered_probes(backend_factory))
    names = [requests.get(gw.url("/name")).text for _ in range(6)]
    assert set(names) == {"A", "B"}
    assert all(x != y for x, y in zip(names, names[1:])), names


def test_least_connections_prefers_the_idle_server(gateway_factory, backend_factory):
    a, b = backend_factory.wsgi("A"), backend_factory.wsgi("B")
    gw = start(gateway_factory, [a.address, b.address],
               pool='load_balancing = "least_connections"', **unanswered_probes(backend_factory))
    slow = threading.Thread(target=lambda: requests.get(gw.url("/slow?delay=1.5")))
    slow.start()
    try:
        time.sleep(0.3)  # let the slow request reach its server
        names = [requests.get(gw.url("/name")).text for _ in range(4)]
    finally:
        slow.join()
    assert len(set(names)) == 1, f"an idle server should take all of them: {names}"
    busy = {"A": b, "B": a}[names[0]]
    line = gw.wait_for_output("/slow?delay=1.5", stream="stdout")
    slow_line = next(text for text in line.splitlines() if "/slow?delay=1.5" in text)
    assert busy.address in slow_line, slow_line


# --- unix sockets and in-process apps -------------------------------------------

def test_server_on_a_unix_socket(gateway_factory, backend_factory, tmp_path):
    path = tmp_path / "backend.sock"
    backend_factory("tls_backend.py", "--unix", path, "--name", "unix")
    gw = start(gateway_factory, [f"unix:{path}"])
    r = requests.get(gw.url("/name"))
    assert (r.status_code, r.text) == (200, "unix")
    data = os.urandom(200_000)
    assert requests.post(gw.url("/echo"), data=data).json()["body_sha256"] == \
        hashlib.sha256(data).hexdigest()


def test_in_process_app(gateway_factory):
    gw = start(gateway_factory, app="appgw.demo:app")
    r = requests.get(gw.url("/api/info"), headers={"X-Forwarded-For": "198.51.100.1"})
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == "/api/info"
    assert info["headers"]["X-Forwarded-For"].replace(" ", "") == "198.51.100.1,127.0.0.1"
    assert info["headers"]["X-Original-Host"] == f"127.0.0.1:{gw.port()}"
    r = requests.get(gw.url("/health"))
    assert (r.status_code, r.text) == (200, "ok")
    assert "appgw demo" in requests.get(gw.url("/")).text


# --- access log ------------------------------------------------------------------------

def _log_lines(gw, needle, count=1):
    def found():
        lines = [text for text in gw.stdout_text().splitlines() if needle in text]
        return lines if len(lines) >= count else None
    return wait_until(found, timeout=5, message=f"access-log line with {needle!r}")


def test_access_log_combined(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], listener_name="front",
               rule_name="the-rule", gateway='log_format = "combined"')
    assert requests.post(gw.url("/echo?logme"), data=b"u" * 777).status_code == 200
    assert len(requests.get(gw.url("/bytes?n=12345")).content) == 12345
    post_line, = _log_lines(gw, "/echo?logme")
    get_line, = _log_lines(gw, "/bytes?n=12345")
    match = re.match(r'^127\.0\.0\.1 \S+ \S+ \[[^\]]+\] "GET /bytes\?n=12345 HTTP/1\.1" '
                     r'200 (\d+)', get_line)
    assert match, get_line
    assert 12345 <= int(match.group(1)) < 12345 + 2000
    for line in (post_line, get_line):
        assert re.search(r"\bfront\b", line) and re.search(r"\bthe-rule\b", line), line
        assert wsgi_backend.address in line, line
        assert re.search(r"\d+\.\d+", line.split('"')[-1]), f"no duration: {line}"
    assert post_line.startswith("127.0.0.1 ")
    assert '"POST /echo?logme HTTP/1.1" 200 ' in post_line
    # Bytes received: the body, or the body and the head (both are "bytes received").
    assert any(777 <= int(n) < 777 + 2000 for n in re.findall(r"\b\d+\b", post_line)
               if n != "200"), f"bytes received missing: {post_line}"


def test_access_log_json(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], listener_name="front",
               rule_name="the-rule", gateway='log_format = "json"')
    assert requests.post(gw.url("/echo?logme"), data=b"u" * 777).status_code == 200
    assert len(requests.get(gw.url("/bytes?n=12345")).content) == 12345
    post_line, = _log_lines(gw, "logme")
    get_line, = _log_lines(gw, "n=12345")
    for line, received, sent in ((post_line, 777, None), (get_line, None, 12345)):
        record = json.loads(line)
        values = list(record.values())
        strings = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert any(s.startswith("127.0.0.1") for s in strings), record
        assert "front" in strings and "the-rule" in strings, record
        assert wsgi_backend.address in strings, record
        assert 200 in numbers, record
        assert any(isinstance(v, float) and 0 <= v < 5 for v in numbers), \
            f"no duration: {record}"
        if received:  # the body, or body and head
            assert any(received <= v < received + 2000 for v in numbers
                       if isinstance(v, int) and v != 200), f"bytes received missing: {record}"
        if sent:
            assert any(sent <= v < sent + 2000 for v in numbers if isinstance(v, int)), record


# --- client timeouts --------------------------------------------------------------

def test_partial_head_times_out(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], header_timeout=1)
    with connect(gw) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n")
        data = read_until_close(sock, limit=4)
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 3, elapsed
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


def test_slowloris_trickle_does_not_extend_the_header_timeout(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], header_timeout=1)
    with connect(gw) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /name HTTP/1.1\r\n")
        closed_at = None
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"X-A: b\r\n")
            except OSError:
                closed_at = time.monotonic()
                break
            if is_closed(sock, wait=0.25):
                closed_at = time.monotonic()
                break
    assert closed_at is not None, "a trickling head kept the connection open for 4 s"
    assert closed_at - started < 3, closed_at - started


def test_idle_keepalive_connection_is_closed(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], idle_timeout=1)
    with connect(gw) as sock:
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_response(sock)[0] == 200
        time.sleep(0.5)  # idle for less than the timeout: still usable
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_response(sock)[0] == 200
        started = time.monotonic()
        data = read_until_close(sock, limit=4)
        elapsed = time.monotonic() - started
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert 0.8 < elapsed < 3, elapsed


# --- connection limit -----------------------------------------------------------------

def test_max_connections_pauses_accepting(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], gateway="max_connections = 2")
    held = [connect(gw), connect(gw)]
    try:
        for sock in held:  # both connections are open and served
            sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_http_response(sock)[::2] == (200, b"session")
        with connect(gw) as third:  # the kernel may complete the handshake ...
            third.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
            third.settimeout(0.7)
            with pytest.raises(socket.timeout):  # ... but appgw does not serve it
                third.recv(1)
            # A slot frees up: the waiting client is served. (shutdown: the harness's
            # buffered reader keeps the fd open past close().)
            freed = held.pop()
            freed.shutdown(socket.SHUT_RDWR)
            freed.close()
            third.settimeout(5)
            started = time.monotonic()
            assert read_http_response(third)[::2] == (200, b"session")
            assert time.monotonic() - started < 2  # not only when another times out
    finally:
        for sock in held:
            sock.close()
