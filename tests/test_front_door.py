"""The front door, live: a running bin/appgw in front of real backends.

- Extension methods reach the backend with their method and get its answer,
  on new and on keep-alive connections; they are not replayed when a pooled
  backend connection dies under them (an idempotent GET is: the control).
- Heads that are already wrong are answered at once, not at
  client_header_timeout (5 s here): each within 1 s, read with a 2 s socket
  timeout, then the connection is closed; the access log counts the bytes.
- Header names with "_" do not reach the backend, unless
  `allow_underscores_in_headers = true`.
- A "#fragment" in the request-target is refused.
"""
import json
import socket
import time

import pytest

from harness import connect, free_port, gateway_config, read_http_response, wait_until

HEADER_TIMEOUT = 5      # client_header_timeout of every gateway here
EXTENSION_METHODS = [b"FOO", b"BREW", b"X-CUSTOM", b"PATCHX", b"ANNOUNCE", b"MKCOLA", b"-BLARGH"]


def start(gateway_factory, servers, tmp_path=None, gateway="", **kwargs):
    access_log = str(tmp_path / "access.log") if tmp_path is not None else ""
    text = gateway_config(servers, access_log=access_log, gateway=gateway,
                          header_timeout=HEADER_TIMEOUT, **kwargs)
    return gateway_factory(text, port=free_port())


def echo(sock, method=b"GET", path=b"/echo", headers=b"", body=b""):
    """One request on `sock`, answered by wsgi_backend's /echo: (status, what it saw)."""
    sock.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\n%s%s\r\n%s" % (
        method, path, headers, b"Content-Length: %d\r\n" % len(body) if body else b"", body))
    status, _, answer = read_http_response(sock)
    return status, json.loads(answer) if status == 200 else answer


# --- extension methods ------------------------------------------------------------------

def test_extension_methods_reach_the_backend_and_get_its_answer(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:   # the first request on the greenlet path, the rest on the fast path
        for method in EXTENSION_METHODS:
            status, seen = echo(sock, method, b"/echo?m=" + method)
            assert status == 200 and seen["method"] == method.decode(), seen
            assert seen["target"] == "/echo?m=" + method.decode() and seen["body_length"] == 0
        status, seen = echo(sock, b"BREW", body=b"hello")
        assert (status, seen["method"], seen["body_length"]) == (200, "BREW", 5)
    for method in (b"PURGE", b"FOO"):       # and each on a new connection
        with connect(gw) as sock:
            status, seen = echo(sock, method)
            assert status == 200 and seen["method"] == method.decode()


def recorded_targets(record):
    """The request lines the drop-second backend received, in order."""
    lines = []
    with open(record, encoding="utf-8") as f:
        for line in f:
            data = json.loads(line)["data"]
            lines += [part.split("\r\n", 1)[0] for part in data.split("\r\n\r\n") if " HTTP/1.1" in part]
    return lines


@pytest.mark.parametrize("method, replayed", [(b"BREW", False), (b"GET", True)])
def test_extension_method_is_not_replayed_on_a_dead_pooled_connection(
        gateway_factory, backend_factory, wsgi_backend, tmp_path, method, replayed):
    """The backend answers a connection's first request and closes the
    connection under its second: a GET is sent again on a new connection
    (and answered), an unknown method is not (502)."""
    record = tmp_path / "record.jsonl"
    backend = backend_factory.raw("drop-second", str(record))
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    with connect(gw) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_response(sock)[0] == 200
        sock.sendall(b"%s /second HTTP/1.1\r\nHost: x\r\n\r\n" % method)
        status = read_http_response(sock)[0]
    second = "%s /second HTTP/1.1" % method.decode()
    wait_until(lambda: second in recorded_targets(record), message="the second request at the backend")
    if replayed:
        assert status == 200
        assert recorded_targets(record) == ["GET /first HTTP/1.1", second, second]
    else:
        assert status == 502
        assert recorded_targets(record) == ["GET /first HTTP/1.1", second]


# --- early verdicts ------------------------------------------------------------------------

UNFINISHED = {
    "http-5.6": (b"GET / HTTP/5.6\r\n", 400),
    "proxy-protocol-line": (b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 80\r\n", 400),
    "duplicate-content-length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n", 400),
    "bare-lf-head": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n", 400),
    "second-host": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n", 400),
    "fragment": (b"GET /a#b HTTP/1.1\r\n", 400),
    "long-method": (b"A" * 40, 501),
}


def answered_quickly(sock, data):
    """Send `data`; (status line, seconds until the answer and the close)."""
    sock.settimeout(2)      # well before client_header_timeout would fire
    started = time.monotonic()
    sock.sendall(data)
    answer = b""
    while piece := sock.recv(65536):
        answer += piece
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def log_lines(tmp_path):
    path = tmp_path / "access.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def early_gateway(tmp_path_factory, wsgi_backend):
    from harness import GatewayFactory
    directory = tmp_path_factory.mktemp("front-door")
    factory = GatewayFactory(directory)
    gw = start(factory, [wsgi_backend.address], tmp_path=directory)
    yield gw, directory
    factory.stop_all()


@pytest.mark.parametrize("name", sorted(UNFINISHED))
def test_wrong_unfinished_head_is_answered_at_once(early_gateway, name):
    gw, directory = early_gateway
    data, status = UNFINISHED[name]
    before = len(log_lines(directory))
    with connect(gw) as sock:
        status_line, seconds = answered_quickly(sock, data)   # recv() returned b"": closed
    assert status_line.split()[1] == str(status).encode(), status_line
    assert seconds < 1, f"answered after {seconds:.2f}s"
    wait_until(lambda: len(log_lines(directory)) > before, message="the access-log line")
    line = log_lines(directory)[before]
    assert f" {status} " in line and f" rx={len(data)} " in line, line


def test_wrong_head_after_a_keep_alive_request_is_answered_at_once(early_gateway):
    """The second head arrives while the connection is parked on the fast path."""
    gw, _ = early_gateway
    with connect(gw) as sock:
        assert echo(sock)[0] == 200
        status_line, seconds = answered_quickly(sock, b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 80\r\n")
    assert status_line.split()[1] == b"400" and seconds < 1, (status_line, seconds)


def test_unfinished_head_that_is_not_wrong_waits_for_the_rest(early_gateway):
    """The control: a head that is fine so far is not answered early."""
    gw, _ = early_gateway
    with connect(gw) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)
        sock.settimeout(5)
        sock.sendall(b"\r\n")
        assert read_http_response(sock)[0] == 200


# --- underscores in header names ------------------------------------------------------------

UNDERSCORED = b"X_Custom: 1\r\nContent_Length: 4\r\nTransfer_Encoding: chunked\r\nX-Plain: 2\r\n"


def backend_header_names(gw):
    with connect(gw) as sock:
        status, seen = echo(sock, b"POST", headers=UNDERSCORED, body=b"hello")
    assert status == 200 and seen["body_length"] == 5     # framed by Content-Length only
    return [name for name, _ in seen["headers"]]


def test_underscore_names_do_not_reach_the_backend_by_default(gateway_factory, wsgi_backend):
    names = backend_header_names(start(gateway_factory, [wsgi_backend.address]))
    assert "X-Plain" in names
    assert not [n for n in names if "_" in n], names


def test_underscore_names_reach_the_backend_when_allowed(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], gateway="allow_underscores_in_headers = true")
    names = backend_header_names(gw)
    assert [n for n in names if "_" in n] == ["X_Custom", "Content_Length", "Transfer_Encoding"], names


# --- fragments --------------------------------------------------------------------------------

def test_fragment_in_target_is_refused(early_gateway):
    gw, directory = early_gateway
    before = len(log_lines(directory))
    with connect(gw) as sock:
        sock.sendall(b"GET /echo#frag HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_http_response(sock)
        assert status == 400 and body.startswith(b"400 Bad Request\n")
        assert sock.recv(1) == b""
    # The client gets the generic body; why is the access log's to say.
    wait_until(lambda: len(log_lines(directory)) > before, message="the access-log line")
    assert "fragment" in log_lines(directory)[before]
