"""HTTP/2 to clients through the gateway (SPEC 14): real clients (curl,
nghttp, httpx, an h2-library client for exact frames) against an https
listener that offers h2 by ALPN and an http listener taking h2 with prior
knowledge, in front of the session's WSGI backend."""
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import socket
import time

import h2.events
import httpx
import h2.exceptions
import pytest
from h2.errors import ErrorCodes

from h2client import H2Client
from harness import GatewayFactory, free_port, gateway_config, pattern_bytes, wait_until



def need(tool):
    """Real clients: CI installs them (.ci/run), where a missing one is a failure."""
    if shutil.which(tool) is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{tool} is not installed")


@pytest.fixture(scope="module")
def gw(tmp_path_factory, wsgi_backend, certs):
    factory = GatewayFactory(tmp_path_factory.mktemp("h2-gw"))
    text = f"""
[gateway]
admin_bind = "127.0.0.1:{free_port()}"
access_log = "-"
client_header_timeout = 5
client_idle_timeout = 5

[[listeners]]
name = "h2s"
bind = "127.0.0.1:{free_port()}"
protocol = "https"
certificate = "{certs.cert}"
private_key = "{certs.key}"
http2 = true

[[listeners]]
name = "h2c"
bind = "127.0.0.1:{free_port()}"
protocol = "http"
http2 = true
max_concurrent_streams = 100

[[backend_pools]]
name = "pool"
servers = ["{wsgi_backend.address}"]

[[backend_settings]]
name = "settings"
request_timeout = 10
probe = "probe"

[[probes]]
name = "probe"
path = "/health"
interval = 30
timeout = 2

[[rules]]
name = "secure"
listener = "h2s"
backend_pool = "pool"
backend_settings = "settings"

[[rules]]
name = "plain"
listener = "h2c"
backend_pool = "pool"
backend_settings = "settings"
"""
    gateway = factory(text)
    yield gateway
    factory.stop_all()


def tls_port(gw):
    return gw.port(0)


def h2c_port(gw):
    return gw.port(1)


def curl(*args):
    need("curl")
    return subprocess.run(["curl", "-sS", "-k", *args], capture_output=True, timeout=30, check=True).stdout


def test_curl_http2_over_tls_is_proxied(gw):
    out = curl("--http2", "-w", "\n%{http_version}", "https://localhost:%d/echo?x=1" % tls_port(gw))
    body, _, version = out.rpartition(b"\n")
    assert version == b"2"
    echo = json.loads(body)
    assert echo["version"] == "HTTP/1.1" and echo["target"] == "/echo?x=1"
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert headers["host"] == "localhost:%d" % tls_port(gw)
    assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-for"] == "127.0.0.1"
    wait_until(lambda: '"GET /echo?x=1 HTTP/2.0" 200' in gw.stdout_text(), message="an HTTP/2.0 log line")


def test_curl_prior_knowledge_streams_a_large_answer(gw):
    out = curl("--http2-prior-knowledge", "-w", "\n%{http_version}",
               "http://127.0.0.1:%d/bytes?n=3000000&chunked=1" % h2c_port(gw))
    body, _, version = out.rpartition(b"\n")
    assert version == b"2" and body == pattern_bytes(3000000)


def test_http1_still_works_on_an_h2c_listener(gw):
    out = curl("--http1.1", "-w", "\n%{http_version}", "http://127.0.0.1:%d/bytes?n=10" % h2c_port(gw))
    assert out.rpartition(b"\n")[2] == b"1.1"


def test_httpx_uploads_with_and_without_content_length(gw, certs):
    body = os.urandom(300000)
    with httpx.Client(http2=True, verify=False) as client:
        url = "https://localhost:%d/echo" % tls_port(gw)
        sized = client.post(url, content=body)
        assert sized.http_version == "HTTP/2" and sized.status_code == 200
        assert sized.json()["body_sha256"] == hashlib.sha256(body).hexdigest()

        def pieces():
            for i in range(0, len(body), 50000):
                yield body[i:i + 50000]
        streamed = client.post(url, content=pieces())
        echo = streamed.json()
        assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert ["Transfer-Encoding", "chunked"] in echo["headers"]
        # Cookie crumbs arrive as one field.
        got = client.get(url, headers=[("cookie", "a=1"), ("cookie", "b=2")]).json()
        assert [v for k, v in got["headers"] if k.lower() == "cookie"] == ["a=1; b=2"]
        missing = client.get("https://localhost:%d/status?code=404" % tls_port(gw))
        assert missing.status_code == 404 and missing.text == "status 404\n"


def test_metrics_count_requests_and_connections_by_protocol(gw):
    import re
    import requests

    def metric(text, name):
        found = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(found.group(1)) if found else None
    before = metric(requests.get(gw.admin_url("/metrics"), timeout=5).text,
                    'appgw_requests_by_protocol_total{protocol="HTTP/2"}') or 0
    client = H2Client(h2c_port(gw))
    sid = client.get(b"/bytes?n=5")
    client.run_until(lambda: sid in client.ended)
    text = requests.get(gw.admin_url("/metrics"), timeout=5).text
    assert metric(text, 'appgw_requests_by_protocol_total{protocol="HTTP/2"}') == before + 1
    assert metric(text, "appgw_http2_connections_active") >= 1
    # The status page's document says the same (the page shows it as a tile).
    totals = requests.get(gw.admin_url("/status.json"), timeout=5).json()["totals"]
    assert totals["http2_requests"] == before + 1 and totals["http2_connections_open"] >= 1
    client.close()


def test_nghttp_gets_the_answer(gw):
    need("nghttp")
    out = subprocess.run(["nghttp", "http://127.0.0.1:%d/bytes?n=100000" % h2c_port(gw)],
                         capture_output=True, timeout=30, check=True).stdout
    assert out == pattern_bytes(100000)


def ws_frame(payload: bytes, opcode=1):
    """A masked client frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websocket_over_http2_by_hand(gw):
    client = H2Client(h2c_port(gw))
    client.run_until(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [
        (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
        (b":path", b"/ws/info?room=1"), (b":authority", b"localhost"),
        (b"sec-websocket-version", b"13"), (b"sec-websocket-protocol", b"chat"),
        (b"origin", b"http://localhost"), (b"cookie", b"c=1")], end_stream=False)
    client.flush()
    client.run_until(lambda: sid in client.responses)
    assert client.status(sid) == b"200"
    # The backend's first message is the handshake it got, as JSON.
    client.run_until(lambda: len(client.bodies.get(sid, b"")) >= 2)
    frame = bytes(client.bodies[sid])
    length = frame[1] & 0x7f
    start = 2 if length < 126 else 4
    length = length if length < 126 else int.from_bytes(frame[2:4], "big")
    client.run_until(lambda: len(client.bodies[sid]) >= start + length)
    info = json.loads(bytes(client.bodies[sid])[start:start + length])
    headers = {k.lower(): v for k, v in info["headers"]}
    assert info["path"] == "/ws/info" and info["query"] == "room=1"
    assert headers["upgrade"].lower() == "websocket" and len(base64.b64decode(headers["sec-websocket-key"])) == 16
    assert headers["origin"] == "http://localhost" and headers["cookie"] == "c=1"
    del client.bodies[sid]
    client.conn.send_data(sid, ws_frame(b"hello over h2"))
    client.flush()
    client.run_until(lambda: bytes(client.bodies.get(sid, b"")).endswith(b"hello over h2"))
    assert bytes(client.bodies[sid])[:2] == bytes([0x81, len(b"hello over h2")])
    client.conn.reset_stream(sid, ErrorCodes.CANCEL)
    client.flush()
    wait_until(lambda: "/ws/info?room=1 HTTP/2.0\" 200" in gw.stdout_text(), message="the session's log line")
    client.close()


def test_a_refused_websocket_handshake_is_the_streams_answer(gateway_factory, backend_factory):
    backend = backend_factory("ws_raw_backend.py", "--mode", "refuse", "--status", "403")
    text = gateway_config([backend.address]).replace('protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    client.run_until(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [
        (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
        (b":path", b"/chat"), (b":authority", b"localhost"), (b"sec-websocket-version", b"13")])
    client.flush()
    client.run_until(lambda: sid in client.ended)
    assert client.status(sid) == b"403" and bytes(client.bodies[sid]) == b"refused"
    client.close()


def test_a_malformed_request_resets_only_its_stream(gw):
    client = H2Client(h2c_port(gw), validate=False)
    bad = client.get(b"/echo", extra=[(b"connection", b"keep-alive")])
    client.run_until(lambda: bad in client.resets)
    assert client.resets[bad] == ErrorCodes.PROTOCOL_ERROR
    good = client.get(b"/bytes?n=5")
    client.run_until(lambda: good in client.ended)
    assert client.status(good) == b"200"
    client.close()


def test_rapid_reset_is_cut_while_another_client_is_served(gw):
    client = H2Client(h2c_port(gw))
    started = time.monotonic()
    try:
        for _ in range(3000):
            sid = client.get(b"/slow?delay=5")
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.flush()
    except OSError:
        pass
    client.run_until(lambda: client.terminated is not None or client.closed, timeout=15)
    assert client.terminated is not None and client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert client.terminated.last_stream_id <= 2 * (200 + 10 * (time.monotonic() - started) + 1)
    other = H2Client(h2c_port(gw))
    sid = other.get(b"/bytes?n=10")
    other.run_until(lambda: sid in other.ended)
    assert other.status(sid) == b"200"
    client.close()
    other.close()


def test_continuation_flood_is_cut(gw):
    from hyperframe.frame import ContinuationFrame, HeadersFrame
    client = H2Client(h2c_port(gw))
    frame = HeadersFrame(1)
    frame.data = client.conn.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"),
                                             (b":authority", b"localhost"), (b":path", b"/")])
    try:
        client.send_raw(frame.serialize())
        for _ in range(5000):
            cont = ContinuationFrame(1)
            cont.data = b"\x00" * 100
            client.send_raw(cont.serialize())
    except OSError:
        pass
    client.run_until(lambda: client.terminated is not None or client.closed, timeout=10)
    assert client.terminated is not None and client.terminated.error_code == ErrorCodes.PROTOCOL_ERROR
    client.close()


def test_one_stalled_reader_among_100_streams(gw):
    client = H2Client(h2c_port(gw))
    streams = [client.get(b"/bytes?n=200000") for _ in range(100)]
    slow = streams[42]
    client.hold.add(slow)
    others = [s for s in streams if s != slow]
    client.run_until(lambda: all(s in client.ended for s in others), timeout=60)
    assert all(bytes(client.bodies[s]) == pattern_bytes(200000) for s in others)
    assert len(client.bodies.get(slow, b"")) <= 65535 and slow not in client.ended
    client.close()


def test_graceful_stop_sends_goaway_and_finishes_open_streams(tmp_path, wsgi_backend):
    factory = GatewayFactory(tmp_path)
    try:
        port = free_port()
        gateway = factory(f"""
[gateway]
admin_bind = ""
drain_timeout = 10
[[listeners]]
name = "h2c"
bind = "127.0.0.1:{port}"
http2 = true
[[backend_pools]]
name = "pool"
servers = ["{wsgi_backend.address}"]
[[backend_settings]]
name = "settings"
probe = "probe"
[[probes]]
name = "probe"
path = "/health"
[[rules]]
name = "plain"
listener = "h2c"
backend_pool = "pool"
backend_settings = "settings"
""")
        client = H2Client(port)
        sid = client.get(b"/slow?delay=1.5")
        # Frames are handled in order: the PING's ACK says the HEADERS were taken.
        client.conn.ping(b"in-order")
        client.flush()
        client.run_until(lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events))
        gateway.send_signal(15)
        client.run_until(lambda: client.terminated is not None, timeout=10)
        assert client.terminated.error_code == ErrorCodes.NO_ERROR and client.terminated.last_stream_id == sid
        assert client.read_after_goaway(sid) == (b"200", b"slow ok\n")
        client.close()
    finally:
        factory.stop_all()


# -- 1 GiB each way over one stream, with flat memory ----------------------------------

GIB = 1 << 30


def h2c_gateway(gateway_factory, backend):
    text = gateway_config([backend.address], request_timeout=60, idle_timeout=30).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    return gateway_factory(text, port=free_port())


def test_1gib_download_over_one_stream_with_flat_memory(gateway_factory, wsgi_backend):
    from test_hardening import RSS_SLACK_KB, RssSampler
    need("curl")
    gateway = h2c_gateway(gateway_factory, wsgi_backend)
    url = "http://127.0.0.1:%d/bytes?n=%d" % (gateway.port(), GIB)
    with RssSampler(gateway.proc.pid) as rss:
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                              "-w", "%{size_download} %{http_version}", url],
                             capture_output=True, timeout=300, check=True).stdout
    assert out == b"%d 2" % GIB
    assert len(rss.samples) > 10
    assert rss.growth < RSS_SLACK_KB, f"RSS grew {rss.growth} KiB during the download"


def test_1gib_upload_over_one_stream_with_flat_memory(gateway_factory, backend_factory):
    from test_hardening import RSS_SLACK_KB, RssSampler
    need("curl")
    sink = backend_factory("sink_backend.py")
    gateway = h2c_gateway(gateway_factory, sink)
    piece = os.urandom(1 << 20)
    expected = hashlib.sha256()
    for _ in range(GIB >> 20):
        expected.update(piece)
    with RssSampler(gateway.proc.pid) as rss:
        # From a pipe: curl sends it without a content-length, so the backend gets it chunked.
        curl_proc = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "-T", "-", "-X", "POST",
                                      "-H", "content-type: application/octet-stream",
                                      "http://127.0.0.1:%d/sink" % gateway.port()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(GIB >> 20):
            curl_proc.stdin.write(piece)
        curl_proc.stdin.close()
        out = curl_proc.stdout.read()
        assert curl_proc.wait(timeout=300) == 0
    assert json.loads(out) == {"length": GIB, "sha256": expected.hexdigest()}
    assert len(rss.samples) > 10
    assert rss.growth < RSS_SLACK_KB, f"RSS grew {rss.growth} KiB during the upload"


def test_a_reload_sends_goaway_so_clients_reconnect_to_the_new_config(gateway_factory, wsgi_backend):
    gateway = h2c_gateway(gateway_factory, wsgi_backend)
    client = H2Client(gateway.port())
    sid = client.get(b"/bytes?n=5")
    client.run_until(lambda: sid in client.ended)
    gateway.reload(gateway.config_path.read_text())
    client.run_until(lambda: client.terminated is not None, timeout=10)
    assert (client.terminated.error_code, client.terminated.last_stream_id) == (ErrorCodes.NO_ERROR, sid)
    client.run_until(lambda: client.closed, timeout=10)
    # A new connection is served.
    again = H2Client(gateway.port())
    sid = again.get(b"/bytes?n=5")
    again.run_until(lambda: sid in again.ended)
    assert again.status(sid) == b"200"
    again.close()


def test_without_http2_the_preface_is_answered_400(gateway_factory, wsgi_backend):
    import socket
    gateway = gateway_factory(gateway_config([wsgi_backend.address]), port=free_port())
    with socket.create_connection(("127.0.0.1", gateway.port()), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")


def test_compression_works_over_http2(gateway_factory, wsgi_backend):
    import gzip
    text = gateway_config([wsgi_backend.address]).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1) + "compress = true\n"
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    sid = client.get(b"/echo?pad=" + b"x" * 3000, extra=[(b"accept-encoding", b"gzip")])
    client.run_until(lambda: sid in client.ended)
    headers = dict(client.responses[sid])
    assert headers[b"content-encoding"] == b"gzip" and b"content-length" not in headers
    echo = json.loads(gzip.decompress(bytes(client.bodies[sid])))
    assert echo["query"] == "pad=" + "x" * 3000
    client.close()


def _ping_flood(client):
    for i in range(3000):
        client.conn.ping(b"%08d" % i)
        client.flush()


def _settings_flood(client):
    from hyperframe.frame import SettingsFrame
    for _ in range(3000):
        frame = SettingsFrame(0)
        frame.settings = {SettingsFrame.HEADER_TABLE_SIZE: 4096}
        client.send_raw(frame.serialize())


def _window_overflow(client):
    from hyperframe.frame import WindowUpdateFrame
    frame = WindowUpdateFrame(0)
    frame.window_increment = 2 ** 31 - 1
    client.send_raw(frame.serialize())


def _length_mismatch(client):
    sid = client.get(b"/echo", method=b"POST", extra=[(b"content-length", b"3")], end=False)
    client.conn.send_data(sid, b"more than three", end_stream=True)
    client.flush()


def _empty_data_flood(client):
    sid = client.get(b"/echo", method=b"POST", end=False)
    for _ in range(3000):
        client.conn.send_data(sid, b"")
        client.flush()


@pytest.mark.parametrize("attack, code", [
    (_ping_flood, ErrorCodes.ENHANCE_YOUR_CALM),
    (_settings_flood, ErrorCodes.ENHANCE_YOUR_CALM),
    (_empty_data_flood, ErrorCodes.ENHANCE_YOUR_CALM),
    (_window_overflow, ErrorCodes.FLOW_CONTROL_ERROR),
    (_length_mismatch, ErrorCodes.PROTOCOL_ERROR),
])
def test_hostile_input_cuts_that_connection_only(gw, attack, code):
    bystander = H2Client(h2c_port(gw))
    client = H2Client(h2c_port(gw), validate=False)
    client.run_until(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    try:
        attack(client)
    except OSError:
        pass   # cut while we wrote
    try:
        client.run_until(lambda: client.terminated is not None or client.closed, timeout=10)
    except Exception:   # h2 refuses what follows the GOAWAY: the connection is over anyway
        pass
    assert client.terminated is not None and client.terminated.error_code == code
    sid = bystander.get(b"/bytes?n=10")
    bystander.run_until(lambda: sid in bystander.ended)
    assert bystander.status(sid) == b"200"
    client.close()
    bystander.close()


def test_chromium_loads_the_demo_over_h2_and_its_websocket_echoes(gateway_factory, certs, tmp_path):
    from test_websocket import CONFIG, run_chromium
    tls = f'certificate = "{certs.cert}"\nprivate_key = "{certs.key}"\nhttp2 = true'
    gateway = gateway_factory(CONFIG, port=free_port(), protocol="https", tls=tls,
                              pool='app = "backends.ws_browser_app:app"', settings="request_timeout = 20",
                              log_format="combined")
    text = "hello over h2"
    dom = run_chromium(gateway.url("/drive?text=hello%20over%20h2"), tmp_path, "--ignore-certificate-errors")
    assert f'<p id="result">echoed:{text}</p>' in dom, dom[:500]
    out = gateway.wait_for_output("GET /report?echo=hello%20over%20h2", stream="stdout")
    assert '"GET / HTTP/2.0" 200' in out     # the demo page came over HTTP/2
    # Which WebSocket Chromium chose: RFC 8441 on the h2 connection (a 200
    # on HTTP/2.0), or a separate HTTP/1.1 connection (a 101).
    wait_until(lambda: '"GET /ws/echo HTTP/' in gateway.stdout_text(), message="the WebSocket's log line")
    line = next(entry for entry in gateway.stdout_text().splitlines() if '"GET /ws/echo HTTP/' in entry)
    print("Chromium's WebSocket:", line)
    assert '"GET /ws/echo HTTP/2.0" 200' in line or '"GET /ws/echo HTTP/1.1" 101' in line


def ws_over_h2(gateway_factory, backend_factory, mode):
    backend = backend_factory("ws_raw_backend.py", "--mode", mode)
    gateway = h2c_gateway(gateway_factory, backend)
    client = H2Client(gateway.port())
    client.run_until(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [
        (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
        (b":path", b"/chat"), (b":authority", b"localhost"), (b"sec-websocket-version", b"13")])
    client.flush()
    client.run_until(lambda: sid in client.responses)
    assert client.status(sid) == b"200"
    return backend, gateway, client, sid


def test_websocket_end_stream_is_a_half_close_to_the_backend(gateway_factory, backend_factory):
    backend, gateway, client, sid = ws_over_h2(gateway_factory, backend_factory, "eof-then-send")
    client.conn.send_data(sid, ws_frame(b"one") + ws_frame(b"two"), end_stream=True)
    client.flush()
    # The backend saw EOF after both frames and still got to answer.
    client.run_until(lambda: sid in client.ended)
    assert bytes(client.bodies[sid]).endswith(b"after EOF: one|two")
    client.close()


def test_websocket_backend_half_close_leaves_the_client_direction_open(gateway_factory, backend_factory):
    backend, gateway, client, sid = ws_over_h2(gateway_factory, backend_factory, "shut-then-read")
    client.run_until(lambda: sid in client.ended)     # the backend's FIN: END_STREAM
    assert bytes(client.bodies[sid]).endswith(b"backend done writing")
    client.conn.send_data(sid, ws_frame(b"still sending"), end_stream=True)
    client.flush()
    wait_until(lambda: "RECEIVED still sending" in backend.stderr_text(), message="the backend to get it")
    client.close()


def test_a_websocket_over_http2_counts_as_a_session(gateway_factory, backend_factory):
    import requests
    backend = backend_factory("ws_raw_backend.py", "--mode", "eof-then-send")
    text = gateway_config([backend.address], admin=True).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    client.run_until(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [
        (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
        (b":path", b"/chat"), (b":authority", b"localhost"), (b"sec-websocket-version", b"13")])
    client.flush()
    client.run_until(lambda: sid in client.responses)
    totals = requests.get(gateway.admin_url("/status.json"), timeout=5).json()["totals"]
    assert totals["websocket_sessions_open"] == 1
    client.conn.send_data(sid, ws_frame(b"x"), end_stream=True)
    client.flush()
    client.run_until(lambda: sid in client.ended)
    wait_until(lambda: "ended=client_close" in gateway.stdout_text(), message="the session's log line")
    totals = requests.get(gateway.admin_url("/status.json"), timeout=5).json()["totals"]
    assert (totals["websocket_sessions_open"], totals["websocket_sessions_ended"]) == (0, 1)
    client.close()


def test_a_chunked_answers_trailers_reach_the_client_as_headers(gateway_factory, backend_factory):
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
              b"5\r\nhello\r\n0\r\nX-Checksum: abc123\r\nContent-Length: 5\r\n\r\n")
    backend = backend_factory("canned_backend.py", "--hex", answer.hex())
    text = gateway_config([backend.address], probe_port=backend.port).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    sid = client.get(b"/with-trailers")
    client.run_until(lambda: sid in client.ended)
    assert client.status(sid) == b"200" and bytes(client.bodies[sid]) == b"hello"
    trailers = [e.headers for e in client.events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers == [[(b"x-checksum", b"abc123")]]   # no framing field among them
    client.close()


# -- a bridged WebSocket's idle timeout and drain ------------------------------------

def open_websocket(client, path):
    """An extended CONNECT (RFC 8441) for `path`; its stream id once answered 200."""
    client.run_until(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [
        (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
        (b":path", path), (b":authority", b"localhost"), (b"sec-websocket-version", b"13")])
    client.flush()
    client.run_until(lambda: sid in client.responses)
    assert client.status(sid) == b"200"
    return sid


def echoed(client, sid, text):
    """`text` sent as a WebSocket message and the backend's echo of it received."""
    client.conn.send_data(sid, ws_frame(text))
    client.flush()
    client.run_until(lambda: bytes(client.bodies.get(sid, b"")).endswith(bytes([0x81, len(text)]) + text))


def h2_websocket_line(gateway):
    return wait_until(lambda: next((line for line in gateway.stdout_text().splitlines()
                                    if '"GET /ws/echo HTTP/2.0" 200' in line), None),
                      message="the WebSocket's log line")


def test_an_idle_websocket_over_http2_is_closed_after_the_settings_idle_timeout(gateway_factory, wsgi_backend):
    text = gateway_config([wsgi_backend.address], settings="websocket_idle_timeout = 1",
                          request_timeout=20, idle_timeout=20).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    sid = open_websocket(client, b"/ws/echo")
    echoed(client, sid, b"hello")
    quiet_since = time.monotonic()
    client.run_until(lambda: sid in client.resets or sid in client.ended, timeout=5)
    elapsed = time.monotonic() - quiet_since
    assert 0.8 <= elapsed <= 3, f"closed after {elapsed:.2f}s"
    assert client.resets.get(sid) == ErrorCodes.CANCEL
    assert "ended=idle_timeout" in h2_websocket_line(gateway)
    # The idle timeout ended the stream, not the connection.
    other = client.get(b"/bytes?n=5")
    client.run_until(lambda: other in client.ended)
    assert client.status(other) == b"200" and bytes(client.bodies[other]) == pattern_bytes(5)
    client.close()


def test_a_websocket_over_http2_runs_until_drain_timeout_then_is_cut_and_the_gateway_exits(
        gateway_factory, wsgi_backend):
    from hyperframe.frame import DataFrame, GoAwayFrame, RstStreamFrame
    text = gateway_config([wsgi_backend.address], gateway="drain_timeout = 2",
                          request_timeout=30, idle_timeout=30).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    sid = open_websocket(client, b"/ws/echo")
    echoed(client, sid, b"before")
    stopped = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    goaway = client.raw_frame()
    while not isinstance(goaway, GoAwayFrame):   # a WINDOW_UPDATE may come first
        goaway = client.raw_frame()
    assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, sid)
    # The session goes on after the GOAWAY (h2 refuses frames past it: by hand) ...
    count, cut = 0, None
    while cut is None:
        message = b"draining %d" % count
        try:
            client.send_raw_data(sid, ws_frame(message))
        except OSError:
            cut = "socket closed"
            break
        reply = bytearray()
        while cut is None and not reply.endswith(message):
            frame = client.raw_frame(5)
            if frame is None:
                cut = "socket closed"
            elif isinstance(frame, GoAwayFrame):
                cut = "final GOAWAY"
            elif frame.stream_id == sid and (isinstance(frame, RstStreamFrame) or "END_STREAM" in frame.flags):
                cut = "stream ended"
            elif isinstance(frame, DataFrame) and frame.stream_id == sid:
                reply += frame.data
        if cut is None:
            count += 1
            time.sleep(0.05)   # a client talking now and then, not a flood
    # ... until drain_timeout, when it is cut and the process exits.
    cut_after = time.monotonic() - stopped
    assert 1.8 <= cut_after <= 2.8, f"{cut} after {cut_after:.2f}s"
    assert count >= 10, f"only {count} messages echoed while draining"
    assert gateway.proc.wait(timeout=max(0.1, 3.5 - (time.monotonic() - stopped))) == 0
    assert time.monotonic() - stopped <= 3.5
    assert "ended=stopped" in h2_websocket_line(gateway)
    client.close()


def test_pings_do_not_keep_an_idle_connection_open(gateway_factory, wsgi_backend):
    """Frames that are not requests (a PING every half second) do not reset
    the idle clock: a connection with no stream open is let go once
    client_idle_timeout has passed since its last stream ended."""
    text = gateway_config([wsgi_backend.address], idle_timeout=1.5).replace(
        'protocol = "http"\n', 'protocol = "http"\nhttp2 = true\n', 1)
    gateway = gateway_factory(text, port=free_port())
    client = H2Client(gateway.port())
    try:
        sid = client.get(b"/name")
        client.run_until(lambda: sid in client.ended)
        answered = time.monotonic()
        next_ping = answered
        while client.terminated is None and time.monotonic() - answered < 6:
            if time.monotonic() >= next_ping:
                client.conn.ping(b"still-up")
                client.flush()
                next_ping += 0.5
            try:
                client.receive_once(timeout=max(0.01, next_ping - time.monotonic()))
            except socket.timeout:
                pass
        idle_for = time.monotonic() - answered
        assert client.terminated is not None, "still open after 6 s of PINGs"
        assert client.terminated.error_code == 0
        assert 1.4 < idle_for < 2.6, idle_for
    finally:
        client.close()


def _client_goaway(client, last=0):
    """The client says it is done (GOAWAY NO_ERROR), as Node's session.close()
    does after its last request; h2's own close_connection would stop the
    client's side too, so the frame is made by hand."""
    from hyperframe.frame import GoAwayFrame

    frame = GoAwayFrame(0)
    frame.error_code, frame.last_stream_id = ErrorCodes.NO_ERROR, last
    client.send_raw(frame.serialize())


def test_a_clients_goaway_lets_its_open_streams_finish(gateway_factory, wsgi_backend):
    """RFC 9113 6.8: after the client's GOAWAY(NO_ERROR) the streams it
    opened are still answered, a slow GET and an upload whose body is still
    coming; then the gateway ends the connection."""
    gateway = h2c_gateway(gateway_factory, wsgi_backend)
    client = H2Client(gateway.port())
    try:
        slow = client.get(b"/slow?delay=0.5")
        upload = client.get(b"/upload-echo", method=b"POST", end=False)
        client.conn.send_data(upload, b"first half, ")
        client.flush()
        _client_goaway(client)
        client.conn.send_data(upload, b"second half", end_stream=True)
        client.flush()
        client.run_until(lambda: {slow, upload} <= client.ended, timeout=10)
        assert client.status(slow) == b"200" and bytes(client.bodies[slow]) == b"slow ok\n"
        assert client.status(upload) == b"200" and bytes(client.bodies[upload]) == b"first half, second half"
        client.run_until(lambda: client.closed or client.terminated is not None, timeout=10)
    finally:
        client.close()
    log = gateway.stdout_text()
    assert '"GET /slow?delay=0.5 HTTP/2.0" 200' in log and '"POST /upload-echo HTTP/2.0" 200' in log, log
