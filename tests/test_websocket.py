"""WebSocket through appgw (SPEC section 5): real clients and backends on loopback.

Backends: wsgi_backend.py (gevent-websocket), ws_backend.py (the `websockets`
library: subprotocols, permessage-deflate, refusals, silent and ticking
sessions), ws_raw_backend.py (raw sockets: a frame in the 101's packet,
half-closes, resets) and in-process apps (the demo app, a browser test page).
Clients: websocket-client, the `websockets` library, raw sockets, Chromium.
wss:// and https backends are in test_websocket_tls.py.
"""
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import pytest
import websocket
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect as sync_connect

from harness import free_port, open_fds, read_http_response, rss_kb, wait_until

CHROMIUM = "/usr/bin/chromium"

# --- configuration ------------------------------------------------------------

CONFIG = """
[gateway]
admin_bind = ""
access_log = "-"
log_format = "{log_format}"

[[listeners]]
name = "front"
bind = "127.0.0.1:{port}"
protocol = "{protocol}"
{tls}

[[backend_pools]]
name = "pool"
{pool}

[[probes]]
name = "health"
path = "/health"
interval = 5

[[backend_settings]]
name = "settings"
probe = "health"
{settings}

[[rules]]
name = "main"
listener = "front"
backend_pool = "pool"
backend_settings = "settings"
"""


def start_gateway(gateway_factory, backend=None, app=None, settings="request_timeout = 20",
                  log_format="combined", certs=None, server_host="127.0.0.1"):
    """A gateway with one listener (https when ``certs`` is given) whose only
    rule sends everything to ``backend`` (a harness Backend, its server address
    written with ``server_host``) or ``app``."""
    pool = f'app = "{app}"' if app else f'servers = ["{server_host}:{backend.port}"]'
    tls = f'certificate = "{certs.cert}"\nprivate_key = "{certs.key}"' if certs else ""
    return gateway_factory(CONFIG, port=free_port(), protocol="https" if certs else "http",
                           tls=tls, pool=pool, settings=settings, log_format=log_format)


def ws_url(gateway, path):
    return re.sub(r"^http", "ws", gateway.url(path))


def ws_backend(backend_factory, *args):
    return backend_factory("ws_backend.py", *args)


def raw_ws_backend(backend_factory, mode, *args):
    return backend_factory("ws_raw_backend.py", "--mode", mode, *args)


# --- raw WebSocket bits (a client that controls every byte) -------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key
ACCEPT = base64.b64encode(hashlib.sha1(
    KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


def handshake(path="/ws/echo", host="127.0.0.1", extra=(), upgrade="websocket",
              connection="Upgrade"):
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Upgrade: {upgrade}",
             f"Connection: {connection}", f"Sec-WebSocket-Key: {KEY}",
             "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def masked_frame(opcode, payload, mask=b"\x11\x22\x33\x44"):
    """One client-to-server frame (masked, FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


class RawClient:
    """A socket (plain or TLS) with a read buffer: HTTP heads, then frames."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""
        self.received = 0  # every byte read from the socket

    @classmethod
    def connect(cls, port, timeout=5):
        return cls(socket.create_connection(("127.0.0.1", port), timeout=timeout))

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.received += len(data)
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response_head(self):
        """(status, {lowercase name: value}, raw head bytes)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, head + b"\r\n\r\n"

    def upgrade(self, request, early=b""):
        """Sends the handshake (and ``early`` bytes in the same sendall);
        returns the raw 101 head after checking it."""
        self.sock.sendall(request + early)
        status, headers, head = self.response_head()
        assert status == 101, head
        assert headers["sec-websocket-accept"] == ACCEPT
        return head

    def frame(self):
        """(opcode, payload) of the next server-to-client frame."""
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "server frames are not masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return b0 & 0x0F, self._take(n)

    def send(self, opcode, payload):
        data = masked_frame(opcode, payload)
        self.sock.sendall(data)
        return len(data)

    def read_eof(self, timeout=5):
        """Waits for the end of the byte stream; fails if more bytes come."""
        self.sock.settimeout(timeout)
        assert self.buf == b""
        data = self.sock.recv(65536)
        assert data == b"", f"expected EOF, got {data[:100]!r}"

    def close(self):
        self.sock.close()


# --- the access log -----------------------------------------------------------

LOG_LINE = re.compile(r'"(?P<request>[^"]*)" (?P<status>\d+) (?P<sent>\d+) .* '
                      r'rx=(?P<rx>\d+) duration=(?P<duration>[\d.]+) pid=\d+'
                      r'(?: ended=(?P<ended>\S+))?$')


def session_lines(gateway):
    """Parsed access-log lines of WebSocket sessions (status 101)."""
    found = []
    for line in gateway.stdout_text().splitlines():
        match = LOG_LINE.search(line)
        if match and match["status"] == "101":
            found.append(match.groupdict())
    return found


def wait_session_line(gateway, timeout=10):
    """The last session's log line, once written; no exception may have
    escaped from the proxy or the relay into appgw's stderr."""
    line = wait_until(lambda: session_lines(gateway), timeout,
                      message="a status 101 line in the access log")[-1]
    escaped = [block for block in gateway.stderr_text().split("Traceback")[1:]
               if "relay.py" in block or "h1.py" in block]
    assert not escaped, "Traceback" + escaped[0]
    return line


# --- exchanging messages --------------------------------------------------------

def exchange_everything(ws):
    """Text, binary, a 1 MB binary frame and 1000 small messages in order."""
    ws.send("hello, wörld")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, "hello, wörld".encode())
    ws.send_binary(b"\x00\x01\xfe\xff")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x00\x01\xfe\xff")
    big = os.urandom(1 << 20)
    ws.send_binary(big)
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and len(data) == len(big) and data == big
    for i in range(1000):
        ws.send(f"message {i}")
    got = [ws.recv() for _ in range(1000)]
    assert got == [f"message {i}" for i in range(1000)]


@pytest.fixture(params=["gevent-websocket", "websockets"])
def echo_backend(request, backend_factory):
    """(backend, echo path) for each WebSocket server implementation."""
    if request.param == "gevent-websocket":
        return backend_factory.wsgi("ws"), "/ws/echo"
    return ws_backend(backend_factory), "/echo"


def test_text_binary_1mb_and_1000_messages_in_order(gateway_factory, echo_backend):
    backend, path = echo_backend
    gateway = start_gateway(gateway_factory, backend)
    ws = websocket.create_connection(ws_url(gateway, path), timeout=10)
    try:
        exchange_everything(ws)
    finally:
        ws.close()


def test_in_process_demo_app_echo(gateway_factory):
    gateway = start_gateway(gateway_factory, app="appgw.demo:app")
    ws = websocket.create_connection(ws_url(gateway, "/ws/echo"), timeout=10)
    try:
        exchange_everything(ws)
    finally:
        ws.close()
    # After a close handshake either side may end the TCP stream first.
    assert wait_session_line(gateway)["ended"] in ("client_close", "backend_close")


# --- the handshake ------------------------------------------------------------

def test_subprotocol_negotiation(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory, "--subprotocols", "chat,superchat")
    gateway = start_gateway(gateway_factory, backend)
    ws = websocket.create_connection(ws_url(gateway, "/info"), timeout=5,
                                     subprotocols=["chat", "superchat"])
    try:
        assert ws.getsubprotocol() == "chat"
        assert ws.getheaders()["sec-websocket-protocol"] == "chat"
        info = json.loads(ws.recv())
        assert info["subprotocol"] == "chat"
        offered = [value for name, value in info["headers"] if name == "Sec-WebSocket-Protocol"]
        assert [p.strip() for p in offered[0].split(",")] == ["chat", "superchat"]
        ws.send("in chat")
        assert ws.recv() == "in chat"
    finally:
        ws.close()


def test_origin_and_cookies_arrive_unchanged(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("ws"))
    ws = websocket.create_connection(ws_url(gateway, "/ws/info?room=1"), timeout=5,
                                     origin="https://app.example.test",
                                     cookie="session=abc123; theme=dark",
                                     header=["X-Custom: kept as is"])
    try:
        info = json.loads(ws.recv())
    finally:
        ws.close()
    headers = {name.lower(): value for name, value in info["headers"]}
    assert info["path"] == "/ws/info" and info["query"] == "room=1"
    assert headers["origin"] == "https://app.example.test"
    assert headers["cookie"] == "session=abc123; theme=dark"
    assert headers["x-custom"] == "kept as is"
    assert headers["upgrade"].lower() == "websocket"
    assert "x-forwarded-for" in headers


def test_handshake_headers_forwarded_byte_for_byte(gateway_factory, backend_factory):
    """Every Sec-WebSocket-* header, Origin and Cookie keep their values."""
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("ws"))
    sent = ["Origin: http://Example.TEST:8080", "Cookie: a=1; b=\"two words\"",
            "Sec-WebSocket-Protocol: p1, p2", "Sec-WebSocket-Extensions: x-test; level=3",
            "User-Agent: raw-client/1"]
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake("/ws/info", extra=sent))
        opcode, payload = client.frame()
    finally:
        client.close()
    assert opcode == TEXT
    received = {name.lower(): value for name, value in json.loads(payload)["headers"]}
    assert received["sec-websocket-key"] == KEY
    assert received["sec-websocket-version"] == "13"
    for line in sent:
        name, _, value = line.partition(": ")
        assert received[name.lower()] == value, name


@pytest.mark.parametrize("upgrade,connection", [
    ("websocket", "keep-alive, Upgrade"),
    ("WebSocket", "UPGRADE"),
    ("websocket", "upgrade,keep-alive"),
    ("websocket", "keep-alive\r\nConnection: Upgrade"),  # repeated header
])
def test_upgrade_and_connection_token_forms(gateway_factory, backend_factory, upgrade,
                                            connection):
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("ws"))
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake(upgrade=upgrade, connection=connection))
        client.send(TEXT, b"token forms")
        assert client.frame() == (TEXT, b"token forms")
    finally:
        client.close()


def test_permessage_deflate_negotiated_end_to_end(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory, "--compression", "deflate")
    gateway = start_gateway(gateway_factory, backend)
    text = "compress me " * 10_000  # 120 kB, very compressible
    with sync_connect(ws_url(gateway, "/info"), compression="deflate", proxy=None,
                      open_timeout=5, ping_interval=None, max_size=None) as ws:
        answered = ws.response.headers["Sec-WebSocket-Extensions"]
        offered = ws.request.headers["Sec-WebSocket-Extensions"]
        assert answered.startswith("permessage-deflate")
        info = json.loads(ws.recv(timeout=5))
        assert info["extensions"] == answered  # the backend's answer reached the client as is
        assert ["Sec-WebSocket-Extensions", offered] in info["headers"]
        ws.send(text)
        assert ws.recv(timeout=5) == text
    line = wait_session_line(gateway)
    # The gateway relayed compressed frames, unchanged: far fewer bytes than the text.
    assert int(line["rx"]) < len(text) // 10 and int(line["sent"]) < len(text) // 10


# --- control frames and closing -------------------------------------------------

def close_received(ws):
    """(code, reason) of the close frame a `websockets` client received."""
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd else None


def test_ping_pong_both_ways(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, ws_backend(backend_factory))
    ws = websocket.create_connection(ws_url(gateway, "/echo"), timeout=5)
    try:
        ws.ping(b"client ping")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"client ping")
        # The backend pings; websocket-client answers the pong inside recv().
        ws.send("ping:backend ping")
        assert ws.recv() == "pong:backend ping"
    finally:
        ws.close()


def test_close_from_client_passes_code_and_reason(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory)
    gateway = start_gateway(gateway_factory, backend)
    with sync_connect(ws_url(gateway, "/echo"), proxy=None, open_timeout=5,
                      ping_interval=None, compression=None) as ws:
        ws.send("before close")
        assert ws.recv(timeout=5) == "before close"
        ws.close(1000, "client says bye")
    assert close_received(ws) == (1000, "client says bye")
    # The backend logs when its connection is fully closed; the websockets
    # library may spend up to its close_timeout (10 s) on the TCP close under
    # load, after the gateway has already ended the session.
    wait_until(lambda: "CLOSED path=/echo rcvd=1000 reason=client says bye"
               in backend.stderr_text(), 15, message="the backend to see the close frame")
    assert wait_session_line(gateway)["ended"] in ("client_close", "backend_close")


def test_close_from_backend_passes_code_and_reason(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory, "--mode", "close-after", "--count", "2")
    gateway = start_gateway(gateway_factory, backend)
    with sync_connect(ws_url(gateway, "/"), proxy=None, open_timeout=5,
                      ping_interval=None, compression=None) as ws:
        for text in ("one", "two"):
            ws.send(text)
            assert ws.recv(timeout=5) == text
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)
        assert close_received(ws) == (1000, "done")
    assert wait_until(lambda: "rcvd=1000" in backend.stderr_text(), 15,
                      message="the backend to get the client's close reply")
    assert wait_session_line(gateway)["ended"] in ("backend_close", "client_close")


# --- bytes that come with the handshake ------------------------------------------

def test_backend_frame_in_the_101_packet_is_delivered(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, raw_ws_backend(backend_factory, "frame-with-101"))
    ws = websocket.create_connection(ws_url(gateway, "/"), timeout=5)
    try:
        assert ws.recv() == "sent with the 101"
        ws.send("and then")
        assert ws.recv() == "and then"
    finally:
        ws.close()


def test_backend_frame_in_the_101_packet_raw(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, raw_ws_backend(backend_factory, "frame-with-101"))
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake("/"))
        assert client.frame() == (TEXT, b"sent with the 101")
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["gevent-websocket", "websockets", "raw"])
def test_client_frame_right_after_the_request_head_is_delivered(gateway_factory,
                                                                backend_factory, kind):
    backend, path = {
        "gevent-websocket": lambda: (backend_factory.wsgi("ws"), "/ws/echo"),
        "websockets": lambda: (ws_backend(backend_factory), "/echo"),
        "raw": lambda: (raw_ws_backend(backend_factory, "frame-with-101"), "/"),
    }[kind]()
    gateway = start_gateway(gateway_factory, backend)
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake(path), early=masked_frame(TEXT, b"early bird"))
        if kind == "raw":
            assert client.frame() == (TEXT, b"sent with the 101")
        assert client.frame() == (TEXT, b"early bird")
        client.send(BINARY, b"\x00second")
        assert client.frame() == (BINARY, b"\x00second")
    finally:
        client.close()


# --- half-close --------------------------------------------------------------

def test_client_half_close_reaches_backend_which_can_still_send(gateway_factory,
                                                                 backend_factory):
    gateway = start_gateway(gateway_factory, raw_ws_backend(backend_factory, "eof-then-send"))
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake("/"))
        client.send(TEXT, b"one")
        client.send(TEXT, b"two")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.frame() == (TEXT, b"after EOF: one|two")
        client.read_eof()
    finally:
        client.close()
    assert wait_session_line(gateway)["ended"] == "client_close"


def test_backend_half_close_reaches_client_which_can_still_send(gateway_factory,
                                                                 backend_factory):
    backend = raw_ws_backend(backend_factory, "shut-then-read")
    gateway = start_gateway(gateway_factory, backend)
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake("/"))
        assert client.frame() == (TEXT, b"backend done writing")
        client.read_eof()
        client.send(TEXT, b"still")
        client.send(TEXT, b"here")
        client.sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: "RECEIVED still|here" in backend.stderr_text(), 5,
                   message="the backend to get the client's frames after its FIN")
    finally:
        client.close()
    assert wait_session_line(gateway)["ended"] == "backend_close"


# --- idle timeout ---------------------------------------------------------------

def closes_within(ws, low, high):
    """Waits for the gateway to close ``ws`` (websocket-client); the elapsed time
    must be in [low, high]."""
    started = time.monotonic()
    ws.settimeout(high + 2)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv()
    elapsed = time.monotonic() - started
    assert low <= elapsed <= high, f"closed after {elapsed:.2f}s"


@pytest.mark.parametrize("settings", [
    "request_timeout = 1",
    "request_timeout = 20\nwebsocket_idle_timeout = 1",
])
def test_idle_session_is_closed(gateway_factory, backend_factory, settings):
    backend = ws_backend(backend_factory, "--mode", "hold")
    gateway = start_gateway(gateway_factory, backend, settings=settings)
    ws = websocket.create_connection(ws_url(gateway, "/held"), timeout=5)
    try:
        closes_within(ws, 0.8, 3)
    finally:
        ws.close()
    wait_until(lambda: "CLOSED path=/held" in backend.stderr_text(), 5,
               message="the backend to see its side closed")
    assert wait_session_line(gateway)["ended"] == "idle_timeout"


def test_websocket_idle_timeout_replaces_request_timeout(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, ws_backend(backend_factory),
                            settings="request_timeout = 1\nwebsocket_idle_timeout = 3")
    ws = websocket.create_connection(ws_url(gateway, "/echo"), timeout=5)
    try:
        time.sleep(1.8)  # idle longer than request_timeout: still open
        ws.send("alive")
        assert ws.recv() == "alive"
        closes_within(ws, 2.5, 5)
    finally:
        ws.close()


def test_busy_session_outlives_the_idle_timeout(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, ws_backend(backend_factory),
                            settings="request_timeout = 1")
    ws = websocket.create_connection(ws_url(gateway, "/echo"), timeout=5)
    try:
        for i in range(10):  # 3 s in all, three times the idle timeout
            ws.send(f"busy {i}")
            assert ws.recv() == f"busy {i}"
            time.sleep(0.3)
    finally:
        ws.close()


def test_traffic_client_to_backend_only_keeps_session_alive(gateway_factory, backend_factory):
    """One clock for both directions: a backend that only listens is not idle."""
    gateway = start_gateway(gateway_factory, raw_ws_backend(backend_factory, "eof-then-send"),
                            settings="request_timeout = 1")
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake("/"))
        for i in range(10):
            client.send(TEXT, b"m%d" % i)
            time.sleep(0.3)
        client.sock.shutdown(socket.SHUT_WR)
        expected = "after EOF: " + "|".join(f"m{i}" for i in range(10))
        assert client.frame() == (TEXT, expected.encode())
    finally:
        client.close()


def test_traffic_backend_to_client_only_keeps_session_alive(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory, "--mode", "tick", "--count", "10",
                         "--interval", "0.3")
    gateway = start_gateway(gateway_factory, backend, settings="request_timeout = 1")
    with sync_connect(ws_url(gateway, "/"), proxy=None, open_timeout=5, ping_interval=None,
                      compression=None) as ws:
        got = [ws.recv(timeout=5) for _ in range(10)]
        assert got == [f"tick {i}" for i in range(10)]
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)
        assert close_received(ws) == (1000, "ticked")


# --- answers other than 101 -------------------------------------------------------

def test_refusal_403_reaches_websocket_client(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory, "--mode", "refuse", "--status", "403")
    gateway = start_gateway(gateway_factory, backend)
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        websocket.create_connection(ws_url(gateway, "/"), timeout=5)
    assert caught.value.status_code == 403
    assert caught.value.resp_body == b"refused 403\n"


@pytest.mark.parametrize("status", [403, 404, 426, 200])
def test_non_101_answer_is_relayed_as_http_and_connection_goes_on(gateway_factory,
                                                                  backend_factory, status):
    backend = raw_ws_backend(backend_factory, "refuse", "--status", str(status))
    gateway = start_gateway(gateway_factory, backend)
    with socket.create_connection(("127.0.0.1", gateway.port()), timeout=5) as sock:
        sock.sendall(handshake("/chat"))
        answer, headers, body = read_http_response(sock)
        assert (answer, body) == (status, b"refused")
        assert "close" not in headers.get("connection", "").lower()
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_http_response(sock)[::2] == (200, b"plain ok")


def test_h2c_upgrade_goes_on_as_plain_http(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("plain"))
    with socket.create_connection(("127.0.0.1", gateway.port()), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\n"
                     b"Connection: Upgrade, HTTP2-Settings\r\n"
                     b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        status, headers, body = read_http_response(sock)
        assert status == 200
        seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
        assert "upgrade" not in seen
        assert "upgrade" not in seen.get("connection", "").lower()
        # Still an HTTP connection: a second request on it.
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_http_response(sock)[::2] == (200, b"plain")


@pytest.mark.parametrize("body_headers,body", [
    ("Content-Length: 5", b"hello"),
    ("Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
])
def test_upgrade_with_a_body_is_400(gateway_factory, backend_factory, body_headers, body):
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("ws"))
    with socket.create_connection(("127.0.0.1", gateway.port()), timeout=5) as sock:
        sock.sendall(handshake(extra=[body_headers]) + body)
        assert read_http_response(sock)[0] == 400


def test_upgrade_with_content_length_zero_is_accepted(gateway_factory, backend_factory):
    """SPEC: a body is Content-Length > 0 or Transfer-Encoding."""
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("ws"))
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake(extra=["Content-Length: 0"]))
        client.send(TEXT, b"zero")
        assert client.frame() == (TEXT, b"zero")
    finally:
        client.close()


# --- failures ------------------------------------------------------------------

def test_backend_dying_mid_session_closes_the_client_promptly(gateway_factory,
                                                               backend_factory):
    backend = ws_backend(backend_factory)
    gateway = start_gateway(gateway_factory, backend)  # idle timeout 20 s: not the cause
    ws = websocket.create_connection(ws_url(gateway, "/echo"), timeout=5)
    try:
        ws.send("alive")
        assert ws.recv() == "alive"
        backend.proc.kill()
        closes_within(ws, 0, 3)
    finally:
        ws.close()
    assert wait_session_line(gateway)["ended"] in ("backend_close", "error")


def test_backend_reset_closes_the_client_promptly(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory,
                            raw_ws_backend(backend_factory, "reset-after-101"))
    client = RawClient.connect(gateway.port())
    try:
        client.upgrade(handshake("/"))
        client.send(TEXT, b"trigger")
        started = time.monotonic()
        with pytest.raises((EOFError, ConnectionResetError)):
            client.frame()
        assert time.monotonic() - started < 3
    finally:
        client.close()
    assert wait_session_line(gateway)["ended"] == "error"


def test_client_reset_closes_the_backend_side_promptly(gateway_factory, backend_factory):
    backend = ws_backend(backend_factory)
    gateway = start_gateway(gateway_factory, backend)
    client = RawClient.connect(gateway.port())
    client.upgrade(handshake("/gone"))
    client.send(TEXT, b"hi")
    assert client.frame() == (TEXT, b"hi")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    wait_until(lambda: "CLOSED path=/gone" in backend.stderr_text(), 3,
               message="the backend to see the session end")
    assert wait_session_line(gateway)["ended"] in ("error", "client_close")


# --- accounting -------------------------------------------------------------------

def test_access_log_line_written_when_the_session_ends(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("ws"))
    client = RawClient.connect(gateway.port())
    request = handshake("/ws/echo", extra=["User-Agent: logged-client"])
    sent_by_client = len(request)
    try:
        client.upgrade(request)
        for i in range(5):
            sent_by_client += client.send(BINARY, bytes(1000 + i))
            assert client.frame() == (BINARY, bytes(1000 + i))
        time.sleep(0.5)
        assert session_lines(gateway) == [], "logged before the session ended"
        sent_by_client += client.send(CLOSE, struct.pack("!H", 1000) + b"log me")
        assert client.frame()[0] == CLOSE
        client.sock.shutdown(socket.SHUT_WR)
        client.read_eof()
    finally:
        client.close()
    line = wait_session_line(gateway)
    assert line["request"] == "GET /ws/echo HTTP/1.1"
    assert int(line["rx"]) == sent_by_client
    assert int(line["sent"]) == client.received
    assert line["ended"] in ("client_close", "backend_close")
    assert float(line["duration"]) >= 0.5
    assert "logged-client" in gateway.stdout_text()


def test_access_log_json_has_the_session_end(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, ws_backend(backend_factory, "--mode", "hold"),
                            settings="request_timeout = 1", log_format="json")
    ws = websocket.create_connection(ws_url(gateway, "/quiet"), timeout=5)
    try:
        closes_within(ws, 0.8, 3)
    finally:
        ws.close()

    def record():
        for line in gateway.stdout_text().splitlines():
            entry = json.loads(line)
            if entry["status"] == 101:
                return entry
    entry = wait_until(record, 5, message="a JSON session record")
    assert entry["ended"] == "idle_timeout"
    assert entry["target"] == "/quiet" and entry["sent"] > 0
    assert entry["rx"] > 0 and entry["duration"] >= 0.8


# --- scale -------------------------------------------------------------------------

SESSIONS = 500


def test_500_concurrent_sessions(gateway_factory, backend_factory):
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("many"))
    url = ws_url(gateway, "/ws/echo")
    fds_before = open_fds(gateway.proc.pid)

    async def run():
        connecting = asyncio.Semaphore(100)  # handshakes in flight; all stay open
        all_open = asyncio.Event()
        opened = 0

        async def session(n):
            nonlocal opened
            async with connecting:
                ws = await async_connect(url, proxy=None, open_timeout=15,
                                         ping_interval=None, compression=None)
            try:
                opened += 1
                if opened == SESSIONS:
                    all_open.set()
                await asyncio.wait_for(all_open.wait(), 20)
                for i in range(10):
                    await ws.send(f"{n}:{i}")
                    assert await asyncio.wait_for(ws.recv(), 10) == f"{n}:{i}"
            finally:
                await ws.close()

        started = time.monotonic()
        await asyncio.gather(*(session(n) for n in range(SESSIONS)))
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert elapsed < 20
    # Every session ended: the gateway holds no sockets for them any more.
    wait_until(lambda: open_fds(gateway.proc.pid) <= fds_before + 5, 10,
               message="the gateway to release the sessions' sockets")
    wait_until(lambda: len(session_lines(gateway)) == SESSIONS, 10,
               message="one access-log line per session")


def test_idle_sessions_cost_little_memory(gateway_factory, backend_factory):
    """No buffer per idle session: 1000 idle sessions fit in a few tens of MB."""
    count = 1000
    gateway = start_gateway(gateway_factory, backend_factory.wsgi("idle"),
                            settings="request_timeout = 60")
    url = ws_url(gateway, "/ws/echo")

    async def run():
        connecting = asyncio.Semaphore(100)

        async def open_one():
            async with connecting:
                return await async_connect(url, proxy=None, open_timeout=15,
                                           ping_interval=None, compression=None)

        # Warm up (greenlet pools, allocator arenas), then measure.
        warm = [await open_one() for _ in range(20)]
        await asyncio.sleep(0.5)
        before = rss_kb(gateway.proc.pid)
        sessions = await asyncio.gather(*(open_one() for _ in range(count)))
        await sessions[-1].send("all open")
        assert await asyncio.wait_for(sessions[-1].recv(), 10) == "all open"
        await asyncio.sleep(0.5)
        after = rss_kb(gateway.proc.pid)
        await asyncio.gather(*(ws.close() for ws in sessions + warm))
        return (after - before) / count

    per_session_kb = asyncio.run(run())
    print(f"gateway memory per idle WebSocket: {per_session_kb:.1f} KiB")
    assert per_session_kb < 48, f"{per_session_kb:.1f} KiB per idle session"


# --- a real browser ------------------------------------------------------------------

def run_chromium(url, tmp_path, *extra):
    if not os.path.exists(CHROMIUM):
        # CI installs it (.ci/run): there a missing browser is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{CHROMIUM} is not installed")
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         *extra, "--dump-dom", url],
        capture_output=True, text=True, timeout=60)
    shutil.rmtree(profile, ignore_errors=True)
    return result.stdout


def browser_echo(gateway, tmp_path, *chromium_args):
    """Chromium opens the demo page (in the driver page's iframe) through
    ``gateway``, sends a message from the demo's form and sees its echo."""
    text = "hello from chromium"
    dom = run_chromium(gateway.url("/drive?text=hello%20from%20chromium"), tmp_path,
                       *chromium_args)
    assert f'<p id="result">echoed:{text}</p>' in dom, dom[:500]
    out = gateway.wait_for_output("GET /report?echo=hello%20from%20chromium", stream="stdout")
    assert '"GET / HTTP/1.1" 200' in out  # the demo page itself came through appgw
    line = wait_session_line(gateway)
    assert line["request"] == "GET /ws/echo HTTP/1.1"
    assert line["ended"] in ("client_close", "backend_close")


def test_browser_demo_page_echo(gateway_factory, tmp_path):
    browser_echo(start_gateway(gateway_factory, app="backends.ws_browser_app:app"), tmp_path)
