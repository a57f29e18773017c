"""The test harness on its own: backends, helpers and the demo app, no gateway."""
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import requests
import websocket

from harness import (REPO, free_port, make_cert, open_fds, pattern_bytes, raw_request,
                     read_http_response, rss_kb, start_backend, wait_until)


# --- wsgi_backend.py ----------------------------------------------------------

def test_echo_describes_the_request(wsgi_backend):
    body = b"hello body"
    r = requests.post(wsgi_backend.url("/echo?a=1&b=2"), data=body,
                      headers={"X-First": "1", "x-second": "2"})
    info = r.json()
    assert info["name"] == "session"
    assert (info["method"], info["path"], info["query"]) == ("POST", "/echo", "a=1&b=2")
    assert info["body_length"] == len(body)
    assert info["body_sha256"] == hashlib.sha256(body).hexdigest()
    names = [name for name, _ in info["headers"]]
    # Received order and case are kept.
    assert names.index("X-First") < names.index("x-second")


def test_echo_remote_port_shows_connection_reuse(wsgi_backend):
    with requests.Session() as session:
        ports = {session.get(wsgi_backend.url("/echo")).json()["remote_port"] for _ in range(3)}
    assert len(ports) == 1
    assert requests.get(wsgi_backend.url("/echo")).json()["remote_port"] not in ports


@pytest.mark.parametrize("chunked", [False, True])
def test_bytes_streams_the_pattern(wsgi_backend, chunked):
    n = 200_000
    r = requests.get(wsgi_backend.url(f"/bytes?n={n}" + ("&chunked=1" if chunked else "")))
    assert r.content == pattern_bytes(n)
    if chunked:
        assert r.headers["Transfer-Encoding"] == "chunked"
    else:
        assert r.headers["Content-Length"] == str(n)


def test_upload_echo_streams_the_body_back(wsgi_backend):
    data = os.urandom(300_000)
    pieces = (data[i:i + 50_000] for i in range(0, len(data), 50_000))  # sent chunked
    r = requests.post(wsgi_backend.url("/upload-echo"), data=pieces)
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert r.content == data


def test_status_slow_health_name(wsgi_backend):
    r = requests.get(wsgi_backend.url("/status?code=503"))
    assert (r.status_code, r.text) == (503, "status 503\n")
    r = requests.get(wsgi_backend.url("/status?code=204"))
    assert (r.status_code, r.content) == (204, b"")
    started = time.monotonic()
    assert requests.get(wsgi_backend.url("/slow?delay=0.3")).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert requests.get(wsgi_backend.url("/health")).text == "ok"
    assert requests.get(wsgi_backend.url("/name")).text == "session"
    assert requests.get(wsgi_backend.url("/nope")).status_code == 404


def test_probe_status_is_settable(backend_factory):
    backend = backend_factory.wsgi("probe")
    assert requests.get(backend.url("/probe-status")).status_code == 200
    assert requests.post(backend.url("/set-probe-status?code=500")).status_code == 200
    assert requests.get(backend.url("/probe-status")).status_code == 500
    assert requests.get(backend.url("/set-probe-status?code=200")).status_code == 405


def test_websocket_echo_keeps_text_and_binary(wsgi_backend):
    ws = websocket.create_connection(f"ws://127.0.0.1:{wsgi_backend.port}/ws/echo", timeout=5)
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff"
    finally:
        ws.close()


def test_websocket_info_sends_the_handshake_first(wsgi_backend):
    ws = websocket.create_connection(f"ws://127.0.0.1:{wsgi_backend.port}/ws/info?x=1",
                                     header=["X-Test: yes"], timeout=5)
    try:
        info = json.loads(ws.recv())
        assert info["path"] == "/ws/info" and info["query"] == "x=1"
        assert ["X-Test", "yes"] in info["headers"]
        ws.send("after")
        assert ws.recv() == "after"
    finally:
        ws.close()


def test_read_http_response_handles_pipelining(wsgi_backend):
    with socket.create_connection(("127.0.0.1", wsgi_backend.port), timeout=5) as sock:
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /status?code=404 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_response(sock)[::2] == (200, b"session")
        status, headers, body = read_http_response(sock)
        assert (status, headers["content-length"], body) == (404, "11", b"status 404\n")
        assert read_http_response(sock, method="HEAD")[::2] == (200, b"")
        # HEAD sends no body, not even chunk framing, so the next answer is intact.
        sock.sendall(b"HEAD /bytes?n=10&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_http_response(sock, method="HEAD")
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"")
        assert read_http_response(sock)[::2] == (200, b"session")


# --- raw_backend.py -----------------------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_raw_reset_mid_body(backend_factory):
    backend = backend_factory.raw("reset-mid-body")
    data = raw_request(backend.port, GET)
    assert data.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    assert len(data.split(b"\r\n\r\n", 1)[1]) == 1000


def test_raw_reset_mid_chunked(backend_factory):
    backend = backend_factory.raw("reset-mid-chunked")
    with socket.create_connection(("127.0.0.1", backend.port), timeout=5) as sock:
        sock.sendall(GET)
        data = b""
        with pytest.raises(ConnectionResetError):
            while piece := sock.recv(65536):
                data += piece
    assert b"Transfer-Encoding: chunked" in data and data.endswith(b"6\r\nchunk\n\r\n")


def test_raw_never_answer(backend_factory):
    backend = backend_factory.raw("never-answer")
    started = time.monotonic()
    assert raw_request(backend.port, GET, timeout=0.5) == b""
    assert time.monotonic() - started >= 0.5


def test_raw_garbage(backend_factory):
    backend = backend_factory.raw("garbage")
    assert raw_request(backend.port, GET) == b"HELLO NOT HTTP\r\n\r\n"


def test_raw_close_after_response(backend_factory):
    backend = backend_factory.raw("close-after-response")
    started = time.monotonic()
    data = raw_request(backend.port, GET)
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert 0.2 <= time.monotonic() - started < 3


def test_raw_record(backend_factory, tmp_path):
    record = tmp_path / "record.jsonl"
    backend = backend_factory.raw("record", record=str(record))
    post = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    for request in (GET, post):
        with socket.create_connection(("127.0.0.1", backend.port), timeout=5) as sock:
            sock.sendall(request)
            assert read_http_response(sock)[::2] == (200, b"ok")
            sock.sendall(GET)  # keep-alive: a second request on the same connection
            assert read_http_response(sock)[::2] == (200, b"ok")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    by_conn = {}
    for line in lines:
        by_conn[line["conn"]] = by_conn.get(line["conn"], "") + line["data"]
    assert by_conn == {0: (GET + GET).decode("latin-1"), 1: (post + GET).decode("latin-1")}


def test_backend_lines_land_at_the_end_whatever_the_reader_did(backend_factory):
    """stderr_text() seeks the file it shares with the backend (and so the
    offset the backend writes at) to 0 before it reads. A line the backend
    writes just then must still land at the end, not over the start: here
    that seek is made on purpose before each line."""
    backend = backend_factory("ws_backend.py")
    stderr = backend._stderr

    def size():
        return os.fstat(stderr.fileno()).st_size  # reads nothing, moves no offset

    for path in ("/first", "/second"):
        before = size()
        stderr.seek(0)
        ws = websocket.create_connection(f"ws://127.0.0.1:{backend.port}{path}", timeout=5)
        ws.close()
        wait_until(lambda before=before: size() > before, 5, message=f"the backend's line for {path}")
    text = backend.stderr_text()
    assert "CLOSED path=/first" in text and "CLOSED path=/second" in text, text


def test_backend_start_failure_is_reported():
    with pytest.raises(pytest.fail.Exception, match="did not start"):
        start_backend("raw_backend.py", "--mode", "no-such-mode")


# --- other helpers ------------------------------------------------------------

def test_make_cert_is_usable_for_tls(tmp_path):
    cert, key = make_cert(tmp_path, sans=["localhost", "127.0.0.1", "example.test"],
                          prefix="a-")
    text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:example.test" in text and "IP Address:127.0.0.1" in text
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)  # self-signed: its own root
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hi")

        server = threading.Thread(target=serve)
        server.start()
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        with client_ctx.wrap_socket(raw, server_hostname="example.test") as tls:
            assert tls.recv(2) == b"hi"
        server.join(5)


def test_certs_fixture(certs):
    assert os.path.isfile(certs.cert) and os.path.isfile(certs.key)


def test_free_port_and_proc_helpers():
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass
    assert rss_kb(os.getpid()) > 1000
    before = open_fds(os.getpid())
    with socket.socket():
        assert open_fds(os.getpid()) == before + 1


# --- the demo app -------------------------------------------------------------

def _call(app, method, path, **environ):
    captured = {}

    def start_response(status, headers):
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(dict(REQUEST_METHOD=method, PATH_INFO=path, **environ),
                        start_response))
    return captured["status"], captured["headers"], body


def test_demo_pages():
    from appgw.demo import app
    status, headers, body = _call(app, "GET", "/")
    assert status == "200 OK" and b"<title>appgw demo</title>" in body
    assert all(f'id="{i}"'.encode() in body for i in ("msg", "send", "log", "status"))
    status, _, body = _call(app, "GET", "/api/info", HTTP_X_FORWARDED_FOR="1.2.3.4",
                            HTTP_X_FORWARDED_PROTO="https", HTTP_USER_AGENT="t")
    info = json.loads(body)
    assert info["app"] == "appgw demo" and info["path"] == "/api/info"
    assert info["headers"] == {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}
    assert _call(app, "GET", "/health")[::2] == ("200 OK", b"ok")
    status, headers, body = _call(app, "HEAD", "/health")
    assert (status, headers["Content-Length"], body) == ("200 OK", "2", b"")
    assert _call(app, "GET", "/missing")[0].startswith("404")
    status, headers, _ = _call(app, "POST", "/")
    assert status.startswith("405") and headers["Allow"] == "GET, HEAD"


DEMO_SERVER = """
from gevent import monkey; monkey.patch_all()
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler
from appgw.demo import app
server = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
server.start()
print("READY", server.server_port, flush=True)
server.serve_forever()
"""


def test_demo_websocket_echo():
    proc = subprocess.Popen([sys.executable, "-c", DEMO_SERVER], stdout=subprocess.PIPE,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        port = int(proc.stdout.readline().split()[1])
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/echo", timeout=5)
        ws.send("hi")
        assert ws.recv() == "hi"
        ws.send_binary(b"\x01\x02")
        assert ws.recv() == b"\x01\x02"
        ws.close()
        assert requests.get(f"http://127.0.0.1:{port}/ws/echo").status_code == 400
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
