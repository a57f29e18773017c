"""The event-loop fast path (appgw/downstream/h1_fast.py) end to end.

A plain-HTTP keep-alive connection with nothing buffered parks its greenlet;
a body-less request whose server has an idle pooled connection is then sent
and answered from libev callbacks, and anything else goes back to the
connection's greenlet (proxy.Connection.exchange / complete / complete_body /
give_up). The first request of a connection nearly always needs a new
backend connection and runs on the greenlet, so every test here first warms
a keep-alive connection with one request, then tries its case on the next
ones. Where the backend shows it (/echo's remote_port, ScriptedBackend's
connection numbers), a test also checks that the pooled backend connection
was reused, which is the fast path's condition, rather than assuming it.

Backends: the harness's wsgi backend, and ScriptedBackend below, a threaded
raw-socket server whose answer to each request a test decides (chunked,
close-delimited, interim 1xx, malformed heads, connections it closes).
"""
import hashlib
import http.client
import json
import select
import signal
import socket
import struct
import threading
import time
from collections import Counter, namedtuple

import pytest

from harness import connect, pattern_bytes, read_http_response, socket_reader
from test_proxy_http import is_closed, start

MB = 1024 * 1024


# --- helpers --------------------------------------------------------------------------

def get(path, headers="", version="1.1"):
    return f"GET {path} HTTP/{version}\r\nHost: x\r\n{headers}\r\n".encode()


def warm(sock, path="/echo"):
    """One request on ``sock``: the gateway opens a backend connection and
    pools it, so that the next request can take the fast path. Returns the
    answer's body."""
    sock.sendall(get(path))
    status, _, body = read_http_response(sock)
    assert status == 200, body[:200]
    return body


def remote_port(body):
    """The backend connection an /echo answer of the wsgi backend came on."""
    return json.loads(body)["remote_port"]


def read_status_and_headers(sock):
    """The status line and headers of the next answer on ``sock`` (its body,
    if any, is left to read from socket_reader(sock))."""
    reader = socket_reader(sock)
    line = reader.readline()
    assert line.startswith(b"HTTP/1."), f"not a status line: {line!r}"
    return int(line.split()[1]), http.client.parse_headers(reader)


def small_window_client(gw):
    """A client socket with a small receive window, set before connecting:
    the gateway's sends to it soon find a full buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", gw.port()))
    return sock


def eof_within(sock, limit):
    """What ``sock`` still delivers up to EOF; fails when EOF has not come
    within ``limit`` seconds."""
    sock.settimeout(limit)
    try:
        return socket_reader(sock).read()
    except TimeoutError:
        pytest.fail(f"connection still open after {limit}s", pytrace=False)
    except ConnectionResetError:
        return b""


@pytest.fixture(autouse=True)
def no_internal_error(gateway_factory):
    """The fast path logs and drops the connection on an exception in a
    callback (FastPath.crash): a test's client may not see it, so look."""
    yield
    for gw in gateway_factory.started:
        text = gw.stderr_text()
        assert "internal error" not in text and "Traceback" not in text, text[-3000:]


# --- a scripted backend -----------------------------------------------------------------

# conn: the backend connection's number, from 1; nth: the request's number on it, from 1.
Request = namedtuple("Request", "method path conn nth")
KEEP, CLOSE, RESET = "keep", "close", "reset"
PAUSE = 0.1   # between the parts of a split answer


def ok(body, head=b""):
    """A keep-alive 200 framed by Content-Length (no Connection header)."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), head, body)


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def reset_on_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ScriptedBackend:
    """A raw-socket HTTP/1.1 server, one thread per connection, in the test
    process. ``answer(request)`` returns what to send: bytes, or a list of
    byte strings sent PAUSE seconds apart, optionally paired with CLOSE (a
    FIN right after them, without a Connection: close header) or RESET (an
    RST instead). ``idle``:
    seconds an idle keep-alive connection is kept, then closed with a FIN
    (or an RST with ``idle_reset``). /health is answered "200 ok" and not
    recorded; every other request head is recorded in ``requests``."""

    def __init__(self, answer, idle=None, idle_reset=False):
        self.answer, self.idle, self.idle_reset = answer, idle, idle_reset
        self.requests = []
        self.conns = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(sock)
                number = len(self.conns)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock, number):
        buf, nth = b"", 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    if self.idle is not None and not buf and \
                            not select.select([sock], [], [], self.idle)[0]:
                        if self.idle_reset:
                            reset_on_close(sock)
                        return
                    piece = sock.recv(65536)
                    if not piece:
                        return
                    buf += piece
                head, _, buf = buf.partition(b"\r\n\r\n")
                method, path = head.split(b" ", 2)[:2]
                if path == b"/health":
                    sock.sendall(ok(b"ok"))
                    continue
                nth += 1
                request = Request(method.decode(), path.decode(), number, nth)
                with self.lock:
                    self.requests.append(request)
                reply = self.answer(request)
                parts, then = reply if isinstance(reply, tuple) else (reply, KEEP)
                for i, part in enumerate([parts] if isinstance(parts, bytes) else parts):
                    if i:
                        time.sleep(PAUSE)
                    sock.sendall(part)
                if then == RESET:
                    reset_on_close(sock)
                if then != KEEP:
                    return
        except OSError:
            pass
        finally:
            sock.close()

    def paths(self):
        with self.lock:
            return [r.path for r in self.requests]

    def stop(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def scripted():
    """``scripted(answer, idle=None, idle_reset=False)``: a ScriptedBackend,
    stopped at the end of the test."""
    started = []

    def make(answer, **kwargs):
        backend = ScriptedBackend(answer, **kwargs)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.stop()


def tagged(request):
    """Names the request and the backend connection that answered it."""
    return ok(f"{request.path} conn={request.conn}".encode())


# --- 1. pipelining ---------------------------------------------------------------------

def test_three_pipelined_gets_on_a_warm_connection_come_back_in_order(gateway_factory,
                                                                       wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:
        pooled = remote_port(warm(sock))
        sock.sendall(get("/echo?n=1") + get("/echo?n=2") + get("/echo?n=3"))
        answers = [read_http_response(sock) for _ in range(3)]
        assert [status for status, _, _ in answers] == [200, 200, 200]
        infos = [json.loads(body) for _, _, body in answers]
        assert [(i["path"], i["query"]) for i in infos] == \
            [("/echo", "n=1"), ("/echo", "n=2"), ("/echo", "n=3")]
        # All on the warm pooled backend connection (the fast path's case).
        assert [i["remote_port"] for i in infos] == [pooled] * 3
        # The connection goes on.
        sock.sendall(get("/echo?n=4"))
        status, _, body = read_http_response(sock)
        assert (status, json.loads(body)["query"]) == (200, "n=4")
        assert not is_closed(sock)


def test_pipelined_mix_of_fast_and_greenlet_requests_come_back_in_order(gateway_factory,
                                                                        wsgi_backend):
    """A chunked answer, a HEAD and a POST between fast-path GETs."""
    gw = start(gateway_factory, [wsgi_backend.address])
    n = 200_000
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(get("/echo?n=1") + get(f"/bytes?n={n}&chunked=1") +
                     b"HEAD /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n" +
                     b"POST /echo?n=4 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
                     get("/echo?n=5"))
        first = read_http_response(sock)
        second = read_http_response(sock)
        third = read_http_response(sock, method="HEAD")
        fourth = read_http_response(sock)
        fifth = read_http_response(sock)
        assert (first[0], json.loads(first[2])["query"]) == (200, "n=1")
        assert (second[0], second[1]["Transfer-Encoding"]) == (200, "chunked")
        assert second[2] == pattern_bytes(n)
        assert (third[0], third[1]["Content-Length"], third[2]) == (200, "1000", b"")
        info = json.loads(fourth[2])
        assert (fourth[0], info["method"], info["query"], info["body_length"]) == \
            (200, "POST", "n=4", 5)
        assert (fifth[0], json.loads(fifth[2])["query"]) == (200, "n=5")
        assert not is_closed(sock)


# --- 2. half-close -----------------------------------------------------------------------

@pytest.mark.parametrize("paths", [
    ["/name"],
    ["/name", "/echo?second"],
    ["/bytes?n=100000&chunked=1"],
], ids=["one-get", "two-pipelined", "chunked-answer"])
def test_request_then_half_close_gets_whole_answers_then_eof(gateway_factory, wsgi_backend,
                                                            paths):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(b"".join(get(p) for p in paths))
        sock.shutdown(socket.SHUT_WR)
        answers = [read_http_response(sock) for _ in paths]
        assert eof_within(sock, 3) == b""
    for path, (status, _, body) in zip(paths, answers):
        assert status == 200, (path, body[:200])
        if path == "/name":
            assert body == b"session"
        elif path.startswith("/echo"):
            assert json.loads(body)["query"] == "second"
        else:
            assert body == pattern_bytes(100_000)


# --- 3. request_timeout ---------------------------------------------------------------

def test_request_timeout_on_a_warm_connection_is_504_and_others_are_served(gateway_factory,
                                                                         wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], request_timeout=1)
    with connect(gw) as sock, connect(gw) as other:
        # Warmed together, so that each has a pooled backend connection to
        # take when its next request comes.
        sock.sendall(get("/slow?delay=0.2"))
        other.sendall(get("/slow?delay=0.2"))
        assert read_http_response(sock)[0] == read_http_response(other)[0] == 200
        started = time.monotonic()
        sock.sendall(get("/slow?delay=4"))
        # While that request waits in the loop, another client is served at once.
        other.sendall(get("/name"))
        assert read_http_response(other)[::2] == (200, b"session")
        assert time.monotonic() - started < 0.5
        status, headers, body = read_http_response(sock)
        elapsed = time.monotonic() - started
        assert status == 504, body
        assert 0.8 < elapsed < 3, elapsed
        assert headers.get("Connection", "").lower() == "close"
        assert eof_within(sock, 2) == b""
        # The other warm connection, and a new one, are still served.
        other.sendall(get("/name"))
        assert read_http_response(other)[::2] == (200, b"session")
    with connect(gw) as fresh:
        fresh.sendall(get("/name"))
        assert read_http_response(fresh)[::2] == (200, b"session")


def test_answer_slower_than_the_idle_timeout_but_within_request_timeout_is_served(
        gateway_factory, wsgi_backend):
    """A parked connection has one timer for both of its waits: waiting for
    the backend must be bounded by request_timeout, not client_idle_timeout."""
    gw = start(gateway_factory, [wsgi_backend.address], header_timeout=1, idle_timeout=1,
               request_timeout=4)
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(get("/slow?delay=1.8"))
        assert read_http_response(sock)[::2] == (200, b"slow ok\n")
        sock.sendall(get("/name"))
        assert read_http_response(sock)[::2] == (200, b"session")


# --- 4. client timeouts on a parked connection -----------------------------------------

@pytest.mark.parametrize("header_timeout,idle_timeout", [(5, 1), (0.5, 1.5)],
                         ids=["idle-shorter", "header-shorter"])
def test_parked_connection_is_closed_after_client_idle_timeout(gateway_factory, wsgi_backend,
                                                               header_timeout, idle_timeout):
    gw = start(gateway_factory, [wsgi_backend.address], header_timeout=header_timeout,
               idle_timeout=idle_timeout)
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(get("/name"))   # served on the fast path; then parked
        assert read_http_response(sock)[::2] == (200, b"session")
        started = time.monotonic()
        data = eof_within(sock, idle_timeout + 3)
        elapsed = time.monotonic() - started
    assert data == b"", data[:200]
    assert idle_timeout * 0.8 < elapsed < idle_timeout + 1, elapsed


def test_partial_head_on_a_parked_connection_is_cut_at_client_header_timeout(gateway_factory,
                                                                            wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], header_timeout=1, idle_timeout=5)
    with connect(gw) as sock:
        warm(sock)
        started = time.monotonic()
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n")
        data = eof_within(sock, 4)
        elapsed = time.monotonic() - started
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert 0.8 < elapsed < 2, elapsed


# --- 5. a slow reader ----------------------------------------------------------------------

def test_slow_reader_gets_a_4mib_body_intact_and_the_connection_goes_on(gateway_factory,
                                                                      wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address])
    n = 4 * MB
    with small_window_client(gw) as sock:
        pooled = remote_port(warm(sock))
        sock.sendall(get(f"/bytes?n={n}"))
        status, headers = read_status_and_headers(sock)
        assert (status, headers["Content-Length"]) == (200, str(n))
        reader = socket_reader(sock)
        digest, got = hashlib.sha256(), 0
        for _ in range(40):   # 160 KiB over about a second ...
            piece = reader.read(4096)
            digest.update(piece)
            got += len(piece)
            time.sleep(0.025)
        rest = reader.read(n - got)   # ... then the rest at full speed
        digest.update(rest)
        got += len(rest)
        assert got == n
        assert digest.hexdigest() == hashlib.sha256(pattern_bytes(n)).hexdigest()
        # The connection goes on, and the backend connection was pooled clean.
        sock.sendall(get("/echo?after"))
        status, _, body = read_http_response(sock)
        info = json.loads(body)
        assert (status, info["query"]) == (200, "after")
        assert info["remote_port"] == pooled
        assert not is_closed(sock)


def test_a_client_that_stops_reading_is_cut_off_after_client_idle_timeout(gateway_factory, wsgi_backend):
    # nginx's send_timeout: a client that takes nothing more of an answer for
    # client_idle_timeout loses the connection instead of holding it (and a
    # backend connection) for ever.
    gw = start(gateway_factory, [wsgi_backend.address], idle_timeout=1)
    n = 8 * MB
    with small_window_client(gw) as sock:
        warm(sock)
        sock.sendall(get(f"/bytes?n={n}"))
        gw.wait_for_output(f"GET /bytes?n={n} HTTP/1.1", stream="stdout", timeout=10)   # it gave up, logged
        got = 0
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            got += len(piece)
        assert got < n     # cut off, not delivered late
    # The gateway goes on serving.
    with connect(gw) as other:
        assert warm(other, "/echo?again").startswith(b"{")


# --- 6. answers the fast path hands to the greenlet --------------------------------------

BIG = b"x" * 70_000


def varied(request):
    tag = f"{request.path} conn={request.conn}".encode()
    if request.path == "/chunked":
        return [CHUNKED_HEAD + chunk(tag), chunk(BIG) + b"0\r\n\r\n"]
    if request.path == "/until-close":   # no Content-Length, not chunked: ends at the FIN
        return [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + tag, BIG], CLOSE
    if request.path == "/early-hints":
        return [b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", ok(tag)]
    return ok(tag)


@pytest.mark.parametrize("kind", ["chunked", "until-close", "early-hints"])
def test_answer_the_fast_path_cannot_frame_is_relayed_and_the_connection_goes_on(
        gateway_factory, scripted, wsgi_backend, kind):
    backend = scripted(varied)
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    with connect(gw) as sock:
        assert warm(sock, "/plain") == b"/plain conn=1"
        sock.sendall(get(f"/{kind}"))
        if kind == "early-hints":
            status, headers = read_status_and_headers(sock)
            assert (status, headers["Link"]) == (103, "</style.css>; rel=preload")
        status, headers, body = read_http_response(sock)
        assert status == 200
        if kind == "early-hints":
            assert body == b"/early-hints conn=1"
        else:
            # Both reach an HTTP/1.1 client chunked, on a connection that stays.
            assert headers["Transfer-Encoding"] == "chunked"
            assert "close" not in headers.get("Connection", "").lower()
            assert body == f"/{kind} conn=1".encode() + BIG
        # The next requests: on the same backend connection when it was left
        # clean, else on a new one that the request after reuses.
        conn = 2 if kind == "until-close" else 1
        for i in range(2):
            sock.sendall(get(f"/plain?{i}"))
            assert read_http_response(sock)[::2] == (200, f"/plain?{i} conn={conn}".encode())
        assert not is_closed(sock)
    assert backend.paths() == ["/plain", f"/{kind}", "/plain?0", "/plain?1"]


STALE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"


@pytest.mark.parametrize("split", [False, True], ids=["with-the-head", "with-the-body"])
def test_bytes_past_an_answers_length_never_reach_the_next_request(gateway_factory, scripted,
                                                                  wsgi_backend, split):
    """The backend sends a whole extra answer after a Content-Length body (in
    the head's packet, or with the body's last bytes). The client gets the
    body only, and the connection, out of step with its server, carries no
    other request: the next ones go on a new backend connection."""
    def reply(request):
        if request.path != "/extra":
            return tagged(request)
        answer = ok(b"body of /extra")
        return [answer[:-5], answer[-5:] + STALE] if split else answer + STALE

    backend = scripted(reply)
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    with connect(gw) as sock:
        assert warm(sock, "/plain") == b"/plain conn=1"
        sock.sendall(get("/extra"))
        assert read_http_response(sock)[::2] == (200, b"body of /extra")
        for i in range(2):
            sock.sendall(get(f"/plain?{i}"))
            assert read_http_response(sock)[::2] == (200, f"/plain?{i} conn=2".encode())
        assert not is_closed(sock)


@pytest.mark.parametrize("method,target,status", [
    ("HEAD", "/bytes?n=1000", 200),
    ("GET", "/status?code=204", 204),
    ("GET", "/status?code=304", 304),
])
def test_bodiless_answer_on_a_warm_connection_then_the_next_request(gateway_factory,
                                                                   wsgi_backend, method,
                                                                   target, status):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got_status, headers, body = read_http_response(sock, method=method)
        assert (got_status, body) == (status, b"")
        if method == "HEAD":
            assert headers["Content-Length"] == "1000"
        sock.sendall(get("/name"))
        assert read_http_response(sock)[::2] == (200, b"session")
        assert not is_closed(sock)


@pytest.mark.parametrize("request_bytes", [
    get("/name", headers="Connection: close\r\n"),
    get("/name", version="1.0"),
], ids=["http11-connection-close", "http10-no-keepalive"])
def test_last_request_on_a_warm_connection_is_answered_then_closed(gateway_factory,
                                                                   wsgi_backend, request_bytes):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(request_bytes)
        status, headers, body = read_http_response(sock)
        assert (status, body) == (200, b"session")
        assert headers.get("Connection", "").lower() == "close"
        assert eof_within(sock, 2) == b""


def test_http10_keepalive_client_is_served_on_the_fast_path(gateway_factory, wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:
        for _ in range(3):
            sock.sendall(get("/name", headers="Connection: keep-alive\r\n", version="1.0"))
            status, headers, body = read_http_response(sock)
            assert (status, body) == (200, b"session")
            assert headers["Connection"].lower() == "keep-alive"
        assert not is_closed(sock)


def test_client_leaving_mid_request_does_not_disturb_the_next_client(gateway_factory,
                                                                   wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address])
    with connect(gw) as sock:
        warm(sock)
        sock.sendall(get("/slow?delay=0.5"))
        sock.shutdown(socket.SHUT_RDWR)
    with connect(gw) as other:
        warm(other)
        for i in range(3):
            started = time.monotonic()
            other.sendall(get(f"/echo?n={i}"))
            status, _, body = read_http_response(other)
            assert (status, json.loads(body)["query"]) == (200, f"n={i}")
            assert time.monotonic() - started < 1
    # The abandoned answer comes back (and is logged) ...
    gw.wait_for_output("/slow?delay=0.5", stream="stdout", timeout=5)
    with connect(gw) as late:   # ... and reaches no one else
        warm(late)
        late.sendall(get("/echo?late"))
        status, _, body = read_http_response(late)
        assert (status, json.loads(body)["query"]) == (200, "late")


def test_a_burst_over_many_warm_connections_gives_each_client_its_own_answers(gateway_factory,
                                                                            wsgi_backend):
    """Requests that arrive together are sent on, and answered, together at
    the end of the loop iteration (appgw/downstream/coalesce.py). Each answer must still
    reach its own client, also when a client of the burst resets its
    connection before its answer is out."""
    gw = start(gateway_factory, [wsgi_backend.address])
    clients = [connect(gw) for _ in range(20)]
    try:
        # Warmed together, so that each has a pooled backend connection to take.
        for sock in clients:
            sock.sendall(get("/echo"))
        for sock in clients:
            assert read_http_response(sock)[0] == 200
        for burst in range(5):
            quitter = clients[burst]
            for i, sock in enumerate(clients):
                sock.sendall(get(f"/echo?c={i}&b={burst}"))
            quitter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            quitter.close()     # RST, with its request in flight
            clients[burst] = connect(gw)
            for i, sock in enumerate(clients):
                if i == burst:
                    continue
                status, _, body = read_http_response(sock)
                assert (status, json.loads(body)["query"]) == (200, f"c={i}&b={burst}")
            warm(clients[burst])
    finally:
        for sock in clients:
            sock.close()


# --- 7. backends that close their keep-alive connections ---------------------------------

@pytest.mark.parametrize("mode", ["fin-after-each", "idle-fin-50ms", "idle-rst-50ms"])
def test_backend_closing_pooled_connections_is_invisible_to_the_client(gateway_factory,
                                                                      scripted,
                                                                      wsgi_backend, mode):
    """The backend closes each connection after its answer (fin-after-each),
    or when it has been idle 50 ms, and the client pauses longer than that
    before every other request."""
    if mode == "fin-after-each":
        backend = scripted(lambda r: (tagged(r), CLOSE))
    else:
        backend = scripted(tagged, idle=0.05, idle_reset=mode == "idle-rst-50ms")
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    count = 20
    with connect(gw) as sock:
        assert warm(sock, "/r0") == b"/r0 conn=1"
        for i in range(1, count):
            if mode != "fin-after-each" and i % 2:
                time.sleep(0.1)   # longer than the backend keeps an idle connection
            sock.sendall(get(f"/r{i}"))
            status, _, body = read_http_response(sock)
            assert (status, body.split()[0]) == (200, f"/r{i}".encode()), body
        assert not is_closed(sock)
    # Each request was carried out once: none was sent on a connection the
    # backend had closed and then answered there.
    assert backend.paths() == [f"/r{i}" for i in range(count)]
    if mode == "fin-after-each":
        assert len(backend.conns) == count


@pytest.mark.parametrize("then", [CLOSE, RESET], ids=["fin", "rst"])
def test_request_crossing_the_backends_close_is_replayed_on_a_new_connection(
        gateway_factory, scripted, wsgi_backend, then):
    """The backend answers one request per connection and closes the
    connection when a second one comes, unanswered: a request that crossed
    the close. The pooled connection looked alive when the fast path took it,
    so every GET after the first is replayed on a new connection."""
    backend = scripted(lambda r: tagged(r) if r.nth == 1 else (b"", then))
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    count = 10
    with connect(gw) as sock:
        assert warm(sock, "/r0") == b"/r0 conn=1"
        for i in range(1, count):
            sock.sendall(get(f"/r{i}"))
            status, _, body = read_http_response(sock)
            assert (status, body) == (200, f"/r{i} conn={i + 1}".encode())
        assert not is_closed(sock)
    with backend.lock:
        answered = [r.path for r in backend.requests if r.nth == 1]
        crossed = [r.path for r in backend.requests if r.nth == 2]
    assert answered == [f"/r{i}" for i in range(count)]
    assert crossed == [f"/r{i}" for i in range(1, count)]


# --- 8. malformed answers ---------------------------------------------------------------

MALFORMED = {
    "no-colon": b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n",
    "not-http": b"HELLO NOT HTTP\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "hex-length": b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n" + b"a" * 16,
    "http-2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "unasked-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\n\r\n",
    "head-too-large": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000,   # no end in sight
    "closed-without-answer": b"",
}


@pytest.mark.parametrize("answer", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_answer_on_a_warm_connection_is_502_and_the_gateway_goes_on(
        gateway_factory, scripted, wsgi_backend, answer):
    def reply(request):
        if request.path != "/bad":
            return tagged(request)
        return (answer, CLOSE) if not answer else answer   # stays open after the rest

    backend = scripted(reply)
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    with connect(gw) as sock:
        assert warm(sock, "/ok") == b"/ok conn=1"
        started = time.monotonic()
        sock.sendall(get("/bad"))
        status, headers, body = read_http_response(sock)
        assert status == 502, body[:200]
        assert time.monotonic() - started < 1   # at the bad answer, not at request_timeout
        assert headers.get("Connection", "").lower() == "close"
        assert eof_within(sock, 2) == b""
    # Only a connection that failed before any byte of an answer is replayed
    # (nginx's proxy_next_upstream error); an invalid answer is not.
    assert backend.paths().count("/bad") == (2 if not answer else 1)
    with connect(gw) as sock:
        for path in ("/ok1", "/ok2"):
            sock.sendall(get(path))
            status, _, body = read_http_response(sock)
            assert (status, body.split()[0]) == (200, path.encode())


# --- 9. round robin on one connection ----------------------------------------------------

def test_round_robin_alternates_on_one_keepalive_connection(gateway_factory, backend_factory):
    a, b = backend_factory.wsgi("A"), backend_factory.wsgi("B")
    gw = start(gateway_factory, [a.address, b.address])
    # Both servers Healthy first (while one is Unknown, only the other takes traffic).
    for server in (a, b):
        gw.wait_for_output(f"server {server.address} (pool pool) is now Healthy")
    with connect(gw) as sock:
        names = []
        for _ in range(10):
            sock.sendall(get("/name"))
            status, _, body = read_http_response(sock)
            assert status == 200
            names.append(body.decode())
        assert not is_closed(sock)
    assert Counter(names) == {"A": 5, "B": 5}, names
    assert all(x != y for x, y in zip(names, names[1:])), names


# --- 10. graceful stop ---------------------------------------------------------------------

def test_sigterm_closes_a_parked_connection_at_once_and_finishes_one_in_flight(
        gateway_factory, scripted, wsgi_backend):
    arrived, release = threading.Event(), threading.Event()

    def reply(request):
        if request.path == "/hold":
            arrived.set()
            release.wait(10)
            return ok(b"held ok")
        return tagged(request)

    backend = scripted(reply)
    gw = start(gateway_factory, [backend.address], probe_port=wsgi_backend.port)
    with connect(gw) as idle, connect(gw) as busy:
        warm(idle, "/a")
        warm(idle, "/b")   # on the fast path; then parked
        warm(busy, "/c")
        busy.sendall(get("/hold"))   # in flight on the fast path during the stop
        assert arrived.wait(5), "the request never reached the backend"
        started = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        assert eof_within(idle, 2) == b""
        assert time.monotonic() - started < 1
        # Closed by the graceful stop, not by the end of the process: it
        # still waits for the request in flight.
        assert gw.proc.poll() is None
        release.set()
        status, headers, body = read_http_response(busy)
        assert (status, body) == (200, b"held ok")
        assert headers.get("Connection", "").lower() == "close"
        assert eof_within(busy, 2) == b""
    assert gw.proc.wait(5) == 0
