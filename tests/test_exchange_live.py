"""Where an exchange is handed from the fast path to the greenlet, end to end.

Each case reaches one resume point that only a misbehaving backend reaches:
the answer's body cut short on a pooled connection (phase RELAYING), and a
replay whose new connection is refused (phase AWAITING, then a failed
reconnect). And the connections gauge of WebSocket sessions on a bind that
Host splits between two listeners.
"""
import socket

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from harness import SETTINGS_AND_PROBE, free_port, gateway_config, wait_until


def keepalive_get(sock, path="/"):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: gw.test\r\n\r\n" % path.encode())


def read_answer(sock, length):
    """Head and up to `length` body bytes; the body stops short at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return head, body


def test_backend_closing_mid_body_on_a_pooled_connection_closes_the_client(gateway_factory, backend_factory):
    backend = backend_factory.raw("short-second")
    probe = backend_factory.wsgi("probe")
    gw = gateway_factory(gateway_config([backend.address], probe_port=probe.port), port=free_port())
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=5) as sock:
        keepalive_get(sock)                 # opens the backend connection, which is then pooled
        head, body = read_answer(sock, 2)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        keepalive_get(sock, "/second")      # the fast path takes it on the pooled connection
        head, body = read_answer(sock, 100000)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in head
        assert body == b"x" * 1000          # short: the client can tell it is not whole
        assert sock.recv(1) == b""          # and the connection is closed, not left hanging
    line = wait_until(lambda: next((x for x in gw.stdout_text().splitlines() if "/second" in x), None), 5)
    assert '"GET /second HTTP/1.1" 200 ' in line
    assert requests.get(gw.url("/"), timeout=5).status_code == 200   # the gateway serves on


def test_a_replay_whose_reconnect_is_refused_answers_502(gateway_factory, backend_factory):
    backend = backend_factory.raw("vanish-after-one")
    probe = backend_factory.wsgi("probe")
    gw = gateway_factory(gateway_config([backend.address], probe_port=probe.port), port=free_port())
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=5) as sock:
        keepalive_get(sock)
        head, body = read_answer(sock, 2)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        # The backend has closed the pooled connection and stopped listening:
        # the GET goes on the stale connection, fails before any answer, and
        # its replay cannot connect.
        keepalive_get(sock, "/again")
        head, body = read_answer(sock, 1)
        assert head.startswith(b"HTTP/1.1 502"), head
        assert b"Connection: close" in head
    line = wait_until(lambda: next((x for x in gw.stdout_text().splitlines() if "/again" in x), None), 5)
    assert '"GET /again HTTP/1.1" 502 ' in line


def shared_bind_config(ws_port, admin_port):
    return f"""
[gateway]
admin_bind = "127.0.0.1:{admin_port}"
access_log = ""
client_header_timeout = 5

[[listeners]]
name = "a"
bind = "127.0.0.1:{{port}}"
host_names = ["a.test"]

[[listeners]]
name = "b"
bind = "127.0.0.1:{{port}}"
host_names = ["b.test"]

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{ws_port}"]
{SETTINGS_AND_PROBE}
[[rules]]
name = "ra"
listener = "a"
backend_pool = "pool"
backend_settings = "settings"

[[rules]]
name = "rb"
listener = "b"
backend_pool = "pool"
backend_settings = "settings"
"""


def connections_active(gw):
    text = requests.get(gw.admin_url("/metrics"), timeout=5).text
    return {s.labels["listener"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "appgw_connections_active"}


def test_connections_gauge_of_websocket_sessions_on_a_shared_bind_returns_to_zero(gateway_factory,
                                                                                 backend_factory):
    backend = backend_factory("ws_backend.py")
    gw = gateway_factory(shared_bind_config(backend.port, free_port()), port=free_port())
    sessions = [websocket.create_connection(f"ws://127.0.0.1:{gw.port()}/ws", host="b.test", timeout=5)
                for _ in range(3)]
    for ws in sessions:
        ws.send("hi")
        assert ws.recv() == "hi"
    assert sum(connections_active(gw).values()) == 3
    for ws in sessions:
        ws.close()
    gauges = wait_until(lambda: (lambda g: g if sum(abs(v) for v in g.values()) == 0 else None)(
        connections_active(gw)), 5, message="every gauge back at 0")
    assert all(value == 0 for value in gauges.values()), gauges


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
