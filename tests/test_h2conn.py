"""The HTTP/2 connection layer over real sockets: appgw's h2 Session in a
server process (tests/backends/h2_session_server.py) with a small stream
handler, spoken to by curl, nghttp and an h2-library client."""
import os
import shutil
import subprocess
import time

import pytest
from h2.errors import ErrorCodes

from h2client import H2Client

from harness import wait_until

PATTERN = bytes(range(251))


def pattern(offset, length):
    start = offset % len(PATTERN)
    return (PATTERN * ((start + length) // len(PATTERN) + 1))[start:start + length]



def need(tool):
    """Real clients: CI installs them (.ci/run), where a missing one is a failure."""
    if shutil.which(tool) is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{tool} is not installed")


@pytest.fixture
def server(backend_factory):
    return backend_factory("h2_session_server.py", "--max-streams", "100", "--idle", "2")


def test_curl_prior_knowledge_gets_the_bytes(server):
    need("curl")
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version}",
                          "http://127.0.0.1:%d/bytes?n=300000" % server.port],
                         capture_output=True, timeout=30, check=True).stdout
    body, _, version = out.rpartition(b"\n")
    assert version == b"2" and body == pattern(0, 300000)


def test_nghttp_uploads_and_gets_its_body_back(server, tmp_path):
    need("nghttp")
    upload = tmp_path / "up.bin"
    upload.write_bytes(pattern(7, 1 << 20))
    out = subprocess.run(["nghttp", "-d", str(upload), "http://127.0.0.1:%d/echo" % server.port],
                         capture_output=True, timeout=30, check=True).stdout
    assert out == pattern(7, 1 << 20)


def test_a_stream_whose_reader_stalls_does_not_stall_the_others(server):
    client = H2Client(server.port)
    streams = [client.get(b"/bytes?n=200000") for _ in range(100)]
    slow = streams[17]
    client.hold.add(slow)        # its window is never opened again
    others = [s for s in streams if s != slow]
    client.run_until(lambda: all(s in client.ended for s in others), timeout=30)
    assert all(bytes(client.bodies[s]) == pattern(0, 200000) for s in others)
    # The slow stream got its first window's worth and waits, unbuffered.
    assert len(client.bodies.get(slow, b"")) == 65535 and slow not in client.ended
    client.hold.discard(slow)
    client.conn.increment_flow_control_window(200000, slow)
    client.flush()
    client.run_until(lambda: slow in client.ended, timeout=10)
    assert bytes(client.bodies[slow]) == pattern(0, 200000)
    client.close()


def test_rapid_reset_is_cut_and_the_held_streams_let_go(server):
    client = H2Client(server.port)
    opened, started = 0, time.monotonic()
    try:
        for _ in range(2000):
            stream_id = client.get(b"/hold")
            client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            client.flush()
            opened += 1
    except OSError:
        pass   # the server cut the connection while we wrote
    client.run_until(lambda: client.terminated is not None or client.closed, timeout=10)
    assert client.terminated is not None and client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    # A burst of twice max_concurrent_streams, refilled at 10 a second.
    allowed = 2 * 100 + 10 * (time.monotonic() - started) + 1
    assert client.terminated.last_stream_id <= 2 * allowed
    # Every handler that started was woken and ended; none is left holding on.
    wait_until(lambda: server.stderr_text().count("HELD") == server.stderr_text().count("RELEASED"),
               message="every held stream released")
    assert server.stderr_text().count("HELD") <= allowed
    # Another client is served meanwhile.
    other = H2Client(server.port)
    sid = other.get(b"/bytes?n=10")
    other.run_until(lambda: sid in other.ended)
    assert other.status(sid) == b"200"
    client.close()
    other.close()


def test_ping_flood_without_reading_is_cut(server):
    client = H2Client(server.port)
    try:
        for i in range(5000):
            client.conn.ping(b"%08d" % i)
            client.flush()
    except OSError:
        pass
    client.run_until(lambda: client.terminated is not None or client.closed, timeout=10)
    assert client.terminated is not None and client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    client.close()


def test_an_idle_connection_gets_goaway_and_is_closed(server):
    client = H2Client(server.port)
    sid = client.get(b"/bytes?n=5")
    client.run_until(lambda: sid in client.ended)
    client.run_until(lambda: client.closed, timeout=10)    # --idle 2
    assert client.terminated is not None and client.terminated.error_code == ErrorCodes.NO_ERROR
    assert client.terminated.last_stream_id == sid
