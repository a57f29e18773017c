"""Hardening (issue 6, items 3, 4 and 5): slow and abusive clients, backend
faults and resource bounds, each tried against a running bin/appgw.

What other files already prove is not repeated here: the hostile-request
corpus and the open-proxy cases (test_corpus.py), a trickled head, an idle
keep-alive connection, max_connections = 2, a slow backend's 504, garbage
from a backend, resets mid-body (test_proxy_http.py), a WebSocket backend
killed mid-session within 3 s, 1000 idle sessions (test_websocket.py), a
stalled TLS handshake (test_tls.py), the policy fuzzer (test_fuzz_policy.py).

Backends used besides the harness ones: tests/backends/sink_backend.py
(swallows bodies, answers their length and sha256), canned_backend.py
(answers fixed bytes) and ws_many_clients.py (a gevent client holding
thousands of idle WebSocket sessions).
"""
import hashlib
import json
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from harness import (BACKENDS, PATTERN, connect, free_port, gateway_config, open_fds,
                     read_http_response, rss_kb, wait_until)

MB = 1024 * 1024


# --- configuration ------------------------------------------------------------------

def start(gateway_factory, servers, **kwargs):
    return gateway_factory(gateway_config(servers, access_log="", **kwargs), port=free_port())


def metrics(gw):
    """{(name, ((label, value), ...)): value} of GET /metrics."""
    text = requests.get(gw.admin_url("/metrics"), timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def active_connections(gw):
    return metrics(gw).get(("appgw_connections_active", (("listener", "web"),)), 0)


def active_sessions(gw):
    return metrics(gw)[("appgw_websocket_sessions_active", ())]


def raise_nofile(needed):
    """Raises this process's soft RLIMIT_NOFILE to ``needed`` (subprocesses
    started afterwards, the gateway and backends, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {needed}", pytrace=False)
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def readable(sock, timeout):
    """True when ``sock`` has a byte or EOF (or an error) within ``timeout`` s.
    poll, not select: the 2000-connection test has fds beyond FD_SETSIZE."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(timeout * 1000))


def wait_cut(sock, limit):
    """Waits for ``sock`` to deliver an answer or EOF: (seconds waited, bytes
    read until EOF). Fails when nothing happened in ``limit`` seconds."""
    started = time.monotonic()
    ready = readable(sock, limit)
    waited = time.monotonic() - started
    if not ready:
        pytest.fail(f"connection neither answered nor closed after {limit}s", pytrace=False)
    return waited, read_to_eof(sock)


def read_to_eof(sock, limit=3):
    sock.settimeout(limit)
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except socket.timeout:
        pytest.fail(f"no EOF {limit}s after {data[:200]!r}", pytrace=False)
    except ConnectionResetError:
        pass
    return data


def first_line(data):
    return data.split(b"\r\n")[0].decode("latin-1") if data else "closed without an answer"


def silent_for(sock, seconds):
    """True when ``sock`` delivers nothing (no byte, no EOF) for ``seconds``."""
    return not readable(sock, seconds)


def close_hard(sock):
    """Closes ``sock`` for real (the harness's buffered reader keeps the fd)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


GET_NAME = b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n"


# --- 3. slow and abusive clients -------------------------------------------------------

def test_head_sent_one_byte_every_300ms_is_cut_at_the_header_timeout(gateway_factory,
                                                                      wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], header_timeout=1)
    head = b"GET /name HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 100 + b"\r\n\r\n"
    with connect(gw) as sock:
        started = time.monotonic()
        cut_at, data = None, b""
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # reset by the gateway
                cut_at = time.monotonic()
                break
            if not silent_for(sock, 0.3):
                cut_at = time.monotonic()
                data = read_to_eof(sock)
                break
    assert cut_at is not None, "a head trickled for 40 s was never cut"
    elapsed = cut_at - started
    print(f"byte-a-0.3s head cut after {elapsed:.2f}s (client_header_timeout = 1): "
          f"{first_line(data)}")
    assert 0.8 < elapsed < 1.6, elapsed
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


@pytest.fixture
def sink(backend_factory):
    return backend_factory("sink_backend.py")


def test_body_trickled_slower_than_the_idle_timeout_is_cut(gateway_factory, sink):
    gw = start(gateway_factory, [sink.address], idle_timeout=1, header_timeout=10,
               request_timeout=10)
    with connect(gw) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" +
                     b"a" * 10)
        # The next byte would come after 1.5 s: the gateway must not wait that long.
        waited, data = wait_cut(sock, 1.5)
    print(f"body stalled for 1.5 s per byte: cut after {waited:.2f}s (client_idle_timeout = 1): "
          f"{first_line(data)}")
    assert 0.8 < waited < 1.5, waited
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b'"length"' not in data  # the sink never answered an incomplete body


def test_body_trickled_within_the_idle_timeout_is_not_cut(gateway_factory, sink):
    """The idle timeout bounds each gap, not the whole body: 2.4 s of body
    in 0.4 s gaps passes a 1 s client_idle_timeout."""
    gw = start(gateway_factory, [sink.address], idle_timeout=1, header_timeout=10,
               request_timeout=10)
    body = os.urandom(60)
    with connect(gw) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
        for i in range(0, 60, 10):
            time.sleep(0.4)
            sock.sendall(body[i:i + 10])
        status, _, answer = read_http_response(sock)
    assert status == 200
    assert json.loads(answer) == {"length": 60, "sha256": hashlib.sha256(body).hexdigest()}


def test_max_connections_50_is_enforced_and_the_held_ones_are_served(gateway_factory,
                                                                     wsgi_backend):
    gw = start(gateway_factory, [wsgi_backend.address], admin=True,
               gateway="max_connections = 50")
    held = [connect(gw) for _ in range(50)]
    extra = None
    try:
        for sock in held:
            sock.sendall(GET_NAME)
        assert [read_http_response(s)[0] for s in held] == [200] * 50
        extra = connect(gw)  # the kernel completes the handshake ...
        extra.sendall(GET_NAME)
        assert silent_for(extra, 0.7), "the 51st connection was served"  # ... appgw waits
        # The 50 it holds are still served, all at once, while the 51st waits.
        for sock in held:
            sock.sendall(GET_NAME)
        answers = [read_http_response(s)[::2] for s in held]
        assert answers == [(200, b"session")] * 50
        assert active_connections(gw) == 50
        assert silent_for(extra, 0.3), "the 51st connection was served"
        close_hard(held.pop())
        extra.settimeout(5)
        started = time.monotonic()
        assert read_http_response(extra)[::2] == (200, b"session")
        assert time.monotonic() - started < 2
    finally:
        for sock in held + [extra]:
            if sock is not None:
                close_hard(sock)


SLOW_CONNECTIONS = 2000


def test_2000_slow_connections_do_not_stop_a_normal_client(gateway_factory, wsgi_backend):
    raise_nofile(SLOW_CONNECTIONS + 1000)
    gw = start(gateway_factory, [wsgi_backend.address], admin=True, header_timeout=60)
    assert requests.get(gw.url("/name"), timeout=5).status_code == 200  # warm up
    slow = []
    try:
        opened = time.monotonic()
        for _ in range(SLOW_CONNECTIONS):
            sock = connect(gw)
            sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\nX-Half: ")  # half a head
            slow.append(sock)
        # The gateway holds every one of them (it did not just refuse or drop them).
        wait_until(lambda: active_connections(gw) >= SLOW_CONNECTIONS, 10,
                   message=f"{SLOW_CONNECTIONS} connections held by the gateway")
        opened = time.monotonic() - opened
        times = []
        keepalive = connect(gw)  # one client on a keep-alive connection ...
        try:
            for i in range(10):  # ... and one opening a new connection each time
                started = time.monotonic()
                sock = keepalive if i % 2 else connect(gw)
                sock.sendall(GET_NAME)
                answer = read_http_response(sock)[::2]
                times.append(time.monotonic() - started)
                assert answer == (200, b"session")
                if sock is not keepalive:
                    close_hard(sock)
        finally:
            close_hard(keepalive)
        print(f"{SLOW_CONNECTIONS} slow connections held after {opened:.2f}s; normal "
              f"requests meanwhile: max {max(times) * 1000:.0f} ms, "
              f"mean {sum(times) / len(times) * 1000:.0f} ms")
        assert max(times) < 1, times
        assert silent_for(slow[0], 0) and silent_for(slow[-1], 0)  # still held, unanswered
    finally:
        for sock in slow:
            sock.close()
    closed = time.monotonic()
    wait_until(lambda: active_connections(gw) == 0, 10,
               message="the gateway to let the slow connections go")
    print(f"gateway let them go {time.monotonic() - closed:.2f}s after they closed")


# --- 4. backend faults ----------------------------------------------------------------

def test_backend_that_never_answers_is_504_at_request_timeout(gateway_factory, backend_factory,
                                                              wsgi_backend):
    silent = backend_factory.raw("never-answer")
    gw = start(gateway_factory, [silent.address], request_timeout=1,
               probe_port=wsgi_backend.port)
    for method, body in (("GET", None), ("POST", b"payload")):
        started = time.monotonic()
        r = requests.request(method, gw.url("/anything"), data=body, timeout=10)
        elapsed = time.monotonic() - started
        assert r.status_code == 504, (method, r.status_code, r.text)
        # Once, not once per retry: the backend took the request and stayed silent.
        assert 0.9 < elapsed < 1.8, (method, elapsed)


def canned(backend_factory, answer, then="close", later=b""):
    return backend_factory("canned_backend.py", "--hex", answer.hex(), "--then", then,
                           *(("--later", later.hex()) if later else ()))


@pytest.mark.parametrize("answer", [
    b"",                                                             # closes at once
    b"\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n" + b"a" * 16,
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + b"\xff" * 20000,  # extra bytes fine
], ids=["close", "blank", "status-2000", "no-status", "no-colon", "two-lengths",
        "negative-length", "hex-length", "length-then-more"])
def test_invalid_answers_from_the_backend_are_502(gateway_factory, backend_factory, answer):
    backend = canned(backend_factory, answer)
    gw = start(gateway_factory, [backend.address])
    r = requests.get(gw.url("/x"), timeout=10)
    if answer.endswith(b"\xff" * 20000):  # a valid 2-byte answer, and junk after it
        assert (r.status_code, r.content) == (200, b"\xff\xff")
    else:
        assert r.status_code == 502, (r.status_code, r.content[:200])
    # The gateway goes on serving.
    assert requests.get(gw.url("/health"), timeout=5).status_code == 200


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_bad_chunk_in_the_answers_first_packet_is_502(gateway_factory, backend_factory):
    """Head and a malformed first chunk arrive together: nothing has reached
    the client yet, so the invalid answer is a 502 (README, Errors)."""
    backend = canned(backend_factory, CHUNKED_HEAD + b"zz\r\nworld\r\n0\r\n\r\n")
    gw = start(gateway_factory, [backend.address])
    with connect(gw) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_to_eof(sock, limit=3)
    assert data.startswith(b"HTTP/1.1 502"), \
        f"expected a 502 answer, got {data[:200]!r} (b'' = closed without a byte)"


@pytest.mark.parametrize("then", ["close", "hold"])
def test_bad_chunk_after_the_head_closes_the_client_without_a_terminator(gateway_factory,
                                                                        backend_factory,
                                                                        then):
    backend = canned(backend_factory, CHUNKED_HEAD + b"5\r\nhello\r\n", then,
                     later=b"zz\r\nworld\r\n0\r\n\r\n")
    gw = start(gateway_factory, [backend.address])
    with connect(gw) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = read_to_eof(sock, limit=3)
        elapsed = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert body == b"5\r\nhello\r\n", body  # the good chunk, then no terminator
    assert elapsed < 1, elapsed  # at the bad chunk (0.3 s), not at some timeout


def test_short_content_length_body_then_fin_closes_the_client_short(gateway_factory,
                                                                    backend_factory):
    backend = canned(backend_factory, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    gw = start(gateway_factory, [backend.address])
    with connect(gw) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_to_eof(sock, limit=3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 100" in head.lower(), data
    assert body == b"short"


def test_unresolvable_server_is_502_with_a_probe_reason(gateway_factory):
    gw = start(gateway_factory, ["no-such-host.invalid:80"], admin=True, probe_interval=0.5)
    for _ in range(2):
        started = time.monotonic()
        r = requests.get(gw.url("/x"), timeout=10)
        assert r.status_code == 502, (r.status_code, r.text)
        assert time.monotonic() - started < 3

    def probed():
        doc = requests.get(gw.admin_url("/backend-health"), timeout=5).json()
        found = [s for p in doc["backend_pools"] for s in p["servers"]
                 if "no-such-host.invalid" in s["address"]]
        return found[0] if found and found[0]["last_probe"] else None

    server = wait_until(probed, 5, message="a probe of no-such-host.invalid")
    assert server["health"] == "Unhealthy", server
    assert server["last_probe"]["ok"] is False
    assert "cannot resolve" in server["last_probe"]["reason"], server


WS_HANDSHAKE = (b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")


def masked_text(payload, mask=b"\x01\x02\x03\x04"):
    return (bytes([0x81, 0x80 | len(payload)]) + mask +
            bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))


def test_websocket_backend_killed_mid_session_closes_the_client_within_1s(gateway_factory,
                                                                          backend_factory):
    backend = backend_factory.wsgi("dies")
    gw = start(gateway_factory, [backend.address], admin=True, request_timeout=30)
    with connect(gw) as sock:
        sock.sendall(WS_HANDSHAKE)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 101"), reply
        sock.sendall(masked_text(b"alive"))
        assert sock.recv(100) == b"\x81\x05alive"
        assert active_sessions(gw) == 1
        backend.proc.kill()
        started = time.monotonic()
        waited, rest = wait_cut(sock, 3)
    print(f"client closed {waited * 1000:.0f} ms after the WebSocket backend was killed")
    assert waited < 1, waited
    assert rest in (b"", b"\x88\x00") or rest.startswith(b"\x88"), rest  # EOF (or a close)
    wait_until(lambda: active_sessions(gw) == 0, 3, message="the session gauge back to 0")
    assert time.monotonic() - started < 3


# --- 5. resource bounds -----------------------------------------------------------------

# 1 GiB each way: about 5-10 s per direction on a 2-CPU test machine.
BIG = 1024 * MB
RSS_SLACK_KB = 20 * 1024


class RssSampler:
    """Samples the RSS of ``pid`` every 50 ms in a thread while in a with block."""

    def __init__(self, pid):
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.samples.append(rss_kb(self.pid))

    def __enter__(self):
        self.start = rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth(self):
        return max(self.samples, default=self.start) - self.start


def test_1gib_upload_streams_with_flat_memory(gateway_factory, sink):
    gw = start(gateway_factory, [sink.address], request_timeout=60)
    piece = os.urandom(MB)
    warm = requests.post(gw.url("/sink"), data=iter([piece] * 16), timeout=30).json()
    assert warm["length"] == 16 * MB
    expected = hashlib.sha256()
    for _ in range(BIG // MB):
        expected.update(piece)

    started = time.monotonic()
    with RssSampler(gw.proc.pid) as rss:
        # A generator: requests sends it chunked, 1 MiB at a time.
        r = requests.post(gw.url("/sink"), data=(piece for _ in range(BIG // MB)), timeout=120)
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json() == {"length": BIG, "sha256": expected.hexdigest()}
    print(f"1 GiB chunked upload in {elapsed:.1f}s ({BIG / MB / elapsed:.0f} MiB/s); gateway "
          f"RSS {rss.start} KiB at start, +{rss.growth} KiB at most over "
          f"{len(rss.samples)} samples")
    assert len(rss.samples) > 10
    assert rss.growth < RSS_SLACK_KB, f"RSS grew {rss.growth} KiB during the upload"


def test_1gib_download_streams_with_flat_memory(gateway_factory, backend_factory):
    backend = backend_factory.wsgi("download")
    gw = start(gateway_factory, [backend.address], request_timeout=60)
    assert len(requests.get(gw.url(f"/bytes?n={16 * MB}"), timeout=30).content) == 16 * MB
    # Any piece of the pattern is a slice of this (the pattern's period is 251).
    reference = PATTERN * (2 * MB // len(PATTERN) + 2)
    started = time.monotonic()
    offset = 0
    with RssSampler(gw.proc.pid) as rss:
        with requests.get(gw.url(f"/bytes?n={BIG}"), stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers["Content-Length"] == str(BIG)
            time.sleep(0.5)  # a gateway without backpressure would read ahead meanwhile
            for piece in r.iter_content(MB):
                at = offset % len(PATTERN)
                assert piece == reference[at:at + len(piece)], f"wrong bytes at {offset}"
                offset += len(piece)
    elapsed = time.monotonic() - started
    assert offset == BIG
    print(f"1 GiB download in {elapsed:.1f}s ({BIG / MB / elapsed:.0f} MiB/s); gateway RSS "
          f"{rss.start} KiB at start, +{rss.growth} KiB at most over {len(rss.samples)} samples")
    assert rss.growth < RSS_SLACK_KB, f"RSS grew {rss.growth} KiB during the download"


class ManyClients:
    """tests/backends/ws_many_clients.py: ``count`` idle sessions held open."""

    def __init__(self, port, count, path="/ws/echo"):
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKENDS / "ws_many_clients.py"), "--port", str(port),
             "--count", str(count), "--path", path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(self, timeout=60):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            pytest.fail(f"ws_many_clients.py said nothing in {timeout}s", pytrace=False)
        return self.proc.stdout.readline().strip()

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


IDLE_SESSIONS = 5000


def test_5000_idle_websocket_sessions_on_one_worker(gateway_factory, backend_factory):
    raise_nofile(3 * IDLE_SESSIONS + 1000)
    backend = backend_factory.wsgi("idle")  # after raise_nofile: it holds 5000 sockets too
    gw = start(gateway_factory, [backend.address], admin=True, request_timeout=120,
               gateway="workers = 1")
    clients = []
    try:
        warm = ManyClients(gw.port(), 100)  # greenlet pools, allocator arenas
        clients.append(warm)
        assert warm.line().startswith("OPEN 100"), "warm-up sessions not opened"
        time.sleep(0.5)
        before = rss_kb(gw.proc.pid)
        fds_before = open_fds(gw.proc.pid)
        many = ManyClients(gw.port(), IDLE_SESSIONS)
        clients.append(many)
        opened = many.line(timeout=90)
        assert opened.startswith(f"OPEN {IDLE_SESSIONS} "), opened
        assert many.command("ECHO").startswith("ECHOED"), "sessions do not echo"
        assert active_sessions(gw) == IDLE_SESSIONS + 100
        time.sleep(0.5)
        after = rss_kb(gw.proc.pid)
        fds_after = open_fds(gw.proc.pid)
        per_session = (after - before) / IDLE_SESSIONS
        print(f"{IDLE_SESSIONS} idle WebSocket sessions opened in {opened.split()[2]}s; gateway "
              f"RSS {before} -> {after} KiB = {per_session:.1f} KiB per session; "
              f"{(fds_after - fds_before) / IDLE_SESSIONS:.2f} fds per session")
        assert per_session < 64, f"{per_session:.1f} KiB per idle session"
        assert fds_after - fds_before <= 2 * IDLE_SESSIONS + 10
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: active_sessions(gw) == 0, 20, message="every session ended")


def backend_sockets(pid, backend_port):
    """How many of ``pid``'s open sockets are TCP connections to ``backend_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    remote = Counter()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    remote[int(fields[2].rsplit(":", 1)[1], 16)] += 1
    return remote[backend_port]


def burst(gw, requests_count=200, ws_sessions=50):
    """200 requests (some abandoned mid-download) and 50 WebSocket sessions
    (some reset by the client), 20 at a time."""
    url = gw.url("/echo")

    def request(i):
        if i % 20 == 0:  # abandoned mid-body
            with socket.create_connection(("127.0.0.1", gw.port()), timeout=5) as sock:
                sock.sendall(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.recv(65536)
            return
        r = requests.post(url, data=b"x" * i, timeout=10)
        assert r.status_code == 200 and r.json()["body_length"] == i

    def session(i):
        ws = websocket.create_connection(gw.url("/ws/echo").replace("http", "ws", 1),
                                         timeout=10)
        ws.send(f"burst {i}")
        assert ws.recv() == f"burst {i}"
        if i % 10 == 0:  # reset, no close frame
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            ws.sock.close()
        else:
            ws.close()

    with ThreadPoolExecutor(20) as pool:
        jobs = [pool.submit(request, i) for i in range(requests_count)]
        jobs += [pool.submit(session, i) for i in range(ws_sessions)]
        for job in jobs:
            job.result()


def test_fds_and_gauges_return_to_their_start_after_a_burst(gateway_factory, backend_factory):
    backend = backend_factory.wsgi("burst")
    gw = start(gateway_factory, [backend.address], admin=True)
    pid = gw.proc.pid

    def settled():
        m = metrics(gw)
        return (m.get(("appgw_connections_active", (("listener", "web"),)), 0) == 0 and
                m[("appgw_websocket_sessions_active", ())] == 0)

    burst(gw)  # warm up: pools, the admin server, lazily opened files
    wait_until(settled, 10, message="gauges back to 0 after the warm-up")
    time.sleep(0.3)
    fds_start = open_fds(pid)
    others_start = fds_start - backend_sockets(pid, backend.port)

    burst(gw)
    wait_until(settled, 10, message="gauges back to 0 after the burst")
    # Pooled keep-alive connections to the backend may stay (at most one per
    # request that was in flight at once); every other fd must be released.
    wait_until(lambda: open_fds(pid) - backend_sockets(pid, backend.port) == others_start,
               10, message=f"fds other than pooled backend ones back to {others_start}")
    pooled = backend_sockets(pid, backend.port)
    print(f"fds: {fds_start} before the burst, {open_fds(pid)} after "
          f"({pooled} pooled backend connections)")
    assert pooled <= 20, pooled
    stats = metrics(gw)
    assert stats[("appgw_websocket_sessions_total", ())] == 100


# --- a backend that answers before it read the body -------------------------------

TOO_LARGE = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 10\r\nConnection: close\r\n\r\ntoo large\n"


def upload_head(size, path=b"/upload"):
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, size)


def read_until(sock, end):
    """What the socket sends until it ends with `end` (failing at EOF first)."""
    answer = b""
    while not answer.endswith(end):
        data = sock.recv(65536)
        assert data, answer
        answer += data
    return answer


def send_in_background(sock, *pieces):
    """Sends the pieces from a thread; returns it and the list its OSError
    (a reset, a broken pipe) goes to."""
    failed = []

    def send():
        try:
            for piece in pieces:
                sock.sendall(piece)
        except OSError as exc:
            failed.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    return sender, failed


def test_an_answer_the_backend_sent_before_reading_the_body_is_relayed(gateway_factory, backend_factory):
    """The backend answers 413 as soon as it has the head, then closes with
    the body unread (its kernel resets the connection). The client gets
    that 413, not a 502, and gets it whole although it was still sending:
    the gateway reads and drops the rest of the body before closing."""
    backend = canned(backend_factory, TOO_LARGE)
    gw = gateway_factory(gateway_config([backend.address], access_log="-"), port=free_port())
    for _ in range(2):
        r = requests.post(gw.url("/upload"), data=b"x" * (4 << 20), timeout=10)
        assert (r.status_code, r.text) == (413, "too large\n")
        assert r.headers["Connection"] == "close"
    assert gw.stdout_text().count('"POST /upload HTTP/1.1" 413') == 2


def test_an_early_answer_reaches_an_http2_client_too(gateway_factory, backend_factory, certs, tmp_path):
    """Over HTTP/2 the answer ends the stream, then RST_STREAM(NO_ERROR)
    tells the client to stop sending the body (RFC 9113 8.1), as nginx
    does for its own 413. (nghttp: curl 7.88 reports a stream error for a
    reset that comes while it is still uploading, against nginx too.)"""
    if shutil.which("nghttp") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("nghttp is not installed")
    backend = canned(backend_factory, TOO_LARGE)
    text = gateway_config([backend.address], access_log="-").replace(
        'protocol = "http"\n', f'protocol = "https"\ncertificate = "{certs.cert}"\n'
                                f'private_key = "{certs.key}"\nhttp2 = true\n', 1)
    gw = gateway_factory(text, port=free_port())
    body = tmp_path / "body"
    body.write_bytes(b"x" * (4 << 20))
    out = subprocess.run(["nghttp", "-v", "-d", str(body), "https://localhost:%d/upload" % gw.port()],
                         capture_output=True, text=True, timeout=20).stdout
    assert re.search(r"recv \(stream_id=\d+\) :status: 413", out), out[-3000:]
    assert "too large" in out and re.search(r"recv RST_STREAM .*\n\s+\(error_code=NO_ERROR", out), out[-3000:]
    wait_until(lambda: '"POST /upload HTTP/2.0" 413' in gw.stdout_text(), message="the access log line")


def test_a_client_still_sending_after_an_early_answer_is_not_reset(gateway_factory, backend_factory):
    """The staged close of RFC 9112 9.6 (nginx's lingering_close): after the
    early answer the gateway shuts its side and reads what the client still
    sends, so the client reads the answer and an orderly end, and its own
    sending never meets a reset (which on many systems discards an answer
    not yet read)."""
    backend = canned(backend_factory, TOO_LARGE)
    gw = gateway_factory(gateway_config([backend.address], access_log=""), port=free_port())
    size = 3 << 20       # more than socket buffers hold, less than a lingering close reads
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as sock:
        sender, failed = send_in_background(sock, upload_head(size), *[b"x" * 65536] * (size // 65536))
        answer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break                   # our side is shut: an orderly end
            answer += data
        sender.join(10)
        assert answer.startswith(b"HTTP/1.1 413 ") and answer.endswith(b"too large\n"), answer
        assert not failed, failed       # the whole body went, nothing was reset


def test_an_early_answer_is_heard_while_the_client_pauses(gateway_factory, backend_factory):
    """The client sends part of its body, then waits (as some do, for an
    answer to come before the rest): the backend's 413, sent at once, is
    relayed at once, not after the client's idle timeout as a 408."""
    backend = canned(backend_factory, TOO_LARGE, then="hold")
    gw = gateway_factory(gateway_config([backend.address], access_log="", idle_timeout=5), port=free_port())
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(upload_head(8 << 20) + b"x" * 65536)
        answer = read_until(sock, b"too large\n")
        assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
        assert time.monotonic() - started < 2


@pytest.mark.parametrize("pause", [0, 1.2], ids=["streaming", "pausing"])
def test_an_interim_answer_during_an_upload_lets_the_body_go_on(gateway_factory, backend_factory, pause):
    """A backend that sends 103 Early Hints as soon as it has the head, then
    reads the whole body: the 103 reaches the client and the body goes on
    to the backend's 200, whether the client streams or pauses."""
    backend = backend_factory("raw_backend.py", "--mode", "hints-then-body")
    gw = gateway_factory(gateway_config([backend.address], access_log="", idle_timeout=5,
                                        probe_port=backend_factory.wsgi().port), port=free_port())
    size = 2 << 20
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as sock:
        sock.sendall(upload_head(size) + b"x" * 65536)
        time.sleep(pause)       # the client holding back the rest (the 103 is on its way meanwhile)
        sock.sendall(b"x" * (size - 65536))
        answer = read_until(sock, b"%d bytes\n" % size)
    assert answer.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"), answer
    assert b"HTTP/1.1 200 OK\r\n" in answer, answer


def test_the_gateways_own_413_reaches_a_client_that_sends_its_body_first(gateway_factory, wsgi_backend):
    """A Content-Length over max_body_size is refused from the head; the
    client (as requests does) sends its whole body before reading. The
    lingering close lets it read the 413 instead of a reset."""
    gw = gateway_factory(gateway_config([wsgi_backend.address], access_log="", gateway="max_body_size = 1000"),
                         port=free_port())
    size = 2 << 20
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as sock:
        sender, failed = send_in_background(sock, upload_head(size, b"/echo"), b"x" * size)
        sender.join(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert not failed, failed       # taken and dropped, not reset
