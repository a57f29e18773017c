"""Health probes and the admin endpoint, with real gateways and backends (SPEC 6, 8)."""
import gzip
import json
import re
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port, wait_until

# The admin endpoint and one listener: what every gateway here starts with.
GATEWAY_AND_LISTENER = """
[gateway]
admin_bind = "127.0.0.1:{admin}"
access_log = ""

[[listeners]]
name = "http"
bind = "127.0.0.1:{port}"
"""

FAST_PROBE = GATEWAY_AND_LISTENER + """
[[backend_pools]]
name = "app"
servers = ["{a}", "{b}"]

[[backend_settings]]
name = "fast"
probe = "fast"

[[probes]]
name = "fast"
path = "/probe-status"
interval = 0.5
timeout = 1
unhealthy_threshold = 2

[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
backend_settings = "fast"
"""


def ports():
    return {"port": free_port(), "admin": free_port()}


def servers(gateway, pool=None):
    """address -> server entry of GET /backend-health (of one pool, or all)."""
    doc = requests.get(gateway.admin_url("/backend-health"), timeout=5).json()
    return {server["address"]: server for p in doc["backend_pools"] if pool in (None, p["name"])
            for server in p["servers"]}


def wait_health(gateway, address, health, timeout=10):
    def seen():
        server = servers(gateway).get(address)
        return server if server and server["health"] == health else None
    return wait_until(seen, timeout, interval=0.05, message=f"{address} {health}")


def names(gateway, n):
    return [requests.get(gateway.url("/name"), timeout=5).text for _ in range(n)]


def metrics(gateway):
    text = requests.get(gateway.admin_url("/metrics"), timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# --- probes ----------------------------------------------------------------------

def test_failing_server_leaves_rotation_and_returns(backend_factory, gateway_factory):
    a, b = backend_factory.wsgi("a"), backend_factory.wsgi("b")
    gw = gateway_factory(FAST_PROBE, a=a.address, b=b.address, **ports())
    wait_health(gw, a.address, "Healthy")
    wait_health(gw, b.address, "Healthy")
    assert set(names(gw, 4)) == {"a", "b"}
    assert metrics(gw)[("appgw_healthy_servers", (("pool", "app"),))] == 2

    requests.post(a.url("/set-probe-status?code=500"), timeout=5)
    started = time.monotonic()
    server = wait_health(gw, a.address, "Unhealthy")
    # two failed probes: at most 2 intervals (+10% jitter) after the change, plus a little
    assert time.monotonic() - started < 2 * 0.55 + 0.8
    assert server["last_probe"]["ok"] is False and server["last_probe"]["status"] == 500
    assert server["last_probe"]["reason"] == "status 500 not in 200-399"
    assert names(gw, 6) == ["b"] * 6
    m = metrics(gw)
    assert m[("appgw_healthy_servers", (("pool", "app"),))] == 1
    assert m[("appgw_unhealthy_servers", (("pool", "app"),))] == 1
    assert m[("appgw_probes_total", (("pool", "app"), ("result", "fail")))] >= 2

    requests.post(a.url("/set-probe-status?code=200"), timeout=5)
    wait_health(gw, a.address, "Healthy", timeout=3)
    assert set(names(gw, 4)) == {"a", "b"}
    assert metrics(gw)[("appgw_healthy_servers", (("pool", "app"),))] == 2
    log = gw.stderr_text()
    assert log.count(f"server {a.address} (pool app) is now Unhealthy (was Healthy): "
                     "status 500 not in 200-399") == 1
    assert log.count(f"server {a.address} (pool app) is now Healthy (was Unhealthy)") == 1


REASONS = GATEWAY_AND_LISTENER + """
[[backend_pools]]
name = "body"
servers = ["{body}"]
[[backend_pools]]
name = "slow"
servers = ["{slow}"]
[[backend_pools]]
name = "refused"
servers = ["{refused}"]
[[backend_pools]]
name = "down"
servers = ["{record}"]

[[backend_settings]]
name = "body"
probe = "body"
[[backend_settings]]
name = "slow"
probe = "slow"
[[backend_settings]]
name = "down"
probe = "elsewhere"

[[probes]]
name = "body"
path = "/probe-status"
match_body = "xyz"
interval = 0.5
[[probes]]
name = "slow"
interval = 0.5
timeout = 0.3
[[probes]]
name = "elsewhere"
port = {refused_port}
interval = 0.5

[[rules]]
name = "main"
listener = "http"
backend_pool = "body"
backend_settings = "body"
  [[rules.paths]]
  paths = ["/slow/*"]
  backend_pool = "slow"
  backend_settings = "slow"
  [[rules.paths]]
  paths = ["/refused/*"]
  backend_pool = "refused"
  [[rules.paths]]
  paths = ["/down/*"]
  backend_pool = "down"
  backend_settings = "down"
"""


def test_failure_reasons_and_502_without_connecting(backend_factory, gateway_factory, tmp_path):
    body = backend_factory.wsgi("body")
    slow = backend_factory.raw("never-answer")
    record = tmp_path / "record.jsonl"
    down = backend_factory.raw("record", record=str(record))
    refused_port = free_port()
    gw = gateway_factory(REASONS, body=body.address, slow=slow.address, refused=f"127.0.0.1:{refused_port}",
                         record=down.address, refused_port=refused_port, **ports())
    expected = {
        body.address: (200, "body does not contain 'xyz'"),
        slow.address: (None, "timeout"),
        f"127.0.0.1:{refused_port}": (None, "connection refused"),
        down.address: (None, "connection refused"),   # probed on the probe's port
    }
    for address, (status, reason) in expected.items():
        server = wait_health(gw, address, "Unhealthy", timeout=5)
        assert (server["last_probe"]["status"], server["last_probe"]["reason"]) == (status, reason)

    for path in ("/", "/slow/x", "/refused/x", "/down/x"):
        started = time.monotonic()
        r = requests.get(gw.url(path), timeout=5)
        assert r.status_code == 502, path
        assert time.monotonic() - started < 0.5, path
    # The "down" server listens and would answer, but it is Unhealthy: no connection at all.
    assert not record.exists() or record.read_text() == ""


QUICK_PROBES = GATEWAY_AND_LISTENER + """
[[backend_pools]]
name = "kept"
servers = ["{record}"]
[[backend_pools]]
name = "early"
servers = ["{big}"]
[[backend_pools]]
name = "late"
servers = ["{big}"]

[[backend_settings]]
name = "kept"
probe = "kept"
[[backend_settings]]
name = "early"
probe = "early"
[[backend_settings]]
name = "late"
probe = "late"

[[probes]]
name = "kept"
interval = 0.1
[[probes]]
name = "early"
path = "/big"
match_body = "early"
interval = 0.2
[[probes]]
name = "late"
path = "/big"
match_body = "late"
interval = 0.2

[[rules]]
name = "main"
listener = "http"
backend_pool = "kept"
backend_settings = "kept"
  [[rules.paths]]
  paths = ["/early/*"]
  backend_pool = "early"
  backend_settings = "early"
  [[rules.paths]]
  paths = ["/late/*"]
  backend_pool = "late"
  backend_settings = "late"
"""


def test_probes_keep_one_connection_and_match_the_first_64_kib_decoded(
        backend_factory, gateway_factory, tmp_path):
    record = tmp_path / "record.jsonl"
    kept = backend_factory.raw("record", record=str(record))
    # gzip-encoded: "early", 70,000 bytes, then "late", past the 64 KiB looked at.
    body = gzip.compress(b"early" + b"x" * 70000 + b"late")
    big = backend_factory("canned_backend.py", "--hex", (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body).hex())
    gw = gateway_factory(QUICK_PROBES, record=kept.address, big=big.address, **ports())

    def five_probes():
        heads = record.read_text().splitlines() if record.exists() else []
        return [json.loads(line) for line in heads] if len(heads) >= 5 else None

    probes = wait_until(five_probes, 10, message="five probes of the record backend")
    assert all(p["data"].startswith("GET / HTTP/1.1\r\n") for p in probes)
    assert {p["conn"] for p in probes} == {probes[0]["conn"]}, "one kept-alive connection"

    def health(pool):
        return servers(gw, pool)[big.address]["health"]

    wait_until(lambda: health("early") == "Healthy" and health("late") == "Unhealthy", 10,
               message="early Healthy, late Unhealthy")
    assert servers(gw, "late")[big.address]["last_probe"]["reason"] == "body does not contain 'late'"


def test_probes_ignore_proxies_from_the_environment(backend_factory, gateway_factory, tmp_path):
    records = tmp_path / "server.jsonl", tmp_path / "proxy.jsonl"
    server = backend_factory.raw("record", record=str(records[0]))
    proxy = backend_factory.raw("record", record=str(records[1]))
    env = {name: proxy.url() for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY")}
    gw = gateway_factory(QUICK_PROBES, record=server.address, big=server.address, env=env, **ports())
    wait_until(lambda: records[0].exists() and len(records[0].read_text().splitlines()) >= 3, 10,
               message="three probes at the server")
    assert servers(gw, "kept")[server.address]["health"] == "Healthy"
    assert not records[1].exists(), records[1].read_text()


UNKNOWN_AT_START = GATEWAY_AND_LISTENER + """
[[backend_pools]]
name = "app"
servers = ["{a}"]

[[backend_settings]]
name = "s"
probe = "hangs"

[[probes]]
name = "hangs"
path = "/slow?delay=30"

[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
backend_settings = "s"
"""


def test_unknown_servers_serve_at_start(backend_factory, gateway_factory):
    a = backend_factory.wsgi("a")
    gw = gateway_factory(UNKNOWN_AT_START, a=a.address, **ports())
    assert servers(gw)[a.address] == {"address": a.address, "backend_settings": "s",
                                      "health": "Unknown", "last_probe": None, "state_change": None,
                                      "last_passive_failure": None}
    assert names(gw, 3) == ["a"] * 3
    m = metrics(gw)
    assert m[("appgw_healthy_servers", (("pool", "app"),))] == 0
    assert m[("appgw_unhealthy_servers", (("pool", "app"),))] == 0


DEFAULT_PROBE = GATEWAY_AND_LISTENER + """
[[backend_pools]]
name = "plain"
servers = ["{record}"]
[[backend_pools]]
name = "named"
servers = ["{record2}"]

[[backend_settings]]
name = "named"
port = {record2_port}
host_name = "app.example"

[[rules]]
name = "main"
listener = "http"
backend_pool = "plain"
  [[rules.paths]]
  paths = ["/named/*"]
  backend_pool = "named"
  backend_settings = "named"
"""


def test_default_probe_as_the_backend_sees_it(backend_factory, gateway_factory, tmp_path):
    records = tmp_path / "plain.jsonl", tmp_path / "named.jsonl"
    plain = backend_factory.raw("record", record=str(records[0]))
    named = backend_factory.raw("record", record=str(records[1]))
    gw = gateway_factory(DEFAULT_PROBE, record=plain.address, record2="127.0.0.1",
                         record2_port=named.port, **ports())
    wait_health(gw, plain.address, "Healthy")
    wait_health(gw, f"127.0.0.1:{named.port}", "Healthy")
    for path, expected_host in ((records[0], plain.address), (records[1], "app.example")):
        head = json.loads(path.read_text().splitlines()[0])["data"]
        lines = head.split("\r\n")
        assert lines[0] == "GET / HTTP/1.1"
        assert f"Host: {expected_host}" in lines
        assert "User-Agent: appgw-probe" in lines


def test_in_process_app_is_probed_and_named(gateway_factory):
    gw = gateway_factory("""
[gateway]
admin_bind = "127.0.0.1:{admin}"
access_log = ""
[[listeners]]
name = "http"
bind = "127.0.0.1:{port}"
[[backend_pools]]
name = "demo"
app = "appgw.demo:app"
[[rules]]
name = "main"
listener = "http"
backend_pool = "demo"
""", **ports())
    server = wait_health(gw, "app:appgw.demo:app", "Healthy")
    assert server["last_probe"]["status"] == 200 and server["backend_settings"] == ""


HTTPS_BACKENDS = GATEWAY_AND_LISTENER + """[[listeners]]
name = "tls"
bind = "127.0.0.1:{tls_port}"
protocol = "https"
certificate = "{cert}"
private_key = "{key}"

[[backend_pools]]
name = "app"
servers = ["{a}"]
[[backend_pools]]
name = "trusted"
servers = ["localhost:{tls_port}"]
[[backend_pools]]
name = "untrusted"
servers = ["127.0.0.1:{tls_port}"]

[[backend_settings]]
name = "app"
probe = "p"
[[backend_settings]]
name = "trusted"
protocol = "https"
trusted_root = "{cert}"
probe = "p"
[[backend_settings]]
name = "untrusted"
protocol = "https"
probe = "p"

[[probes]]
name = "p"
path = "/health"
interval = 0.5

[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
backend_settings = "app"
  [[rules.paths]]
  paths = ["/trusted/*"]
  backend_pool = "trusted"
  backend_settings = "trusted"
  [[rules.paths]]
  paths = ["/untrusted/*"]
  backend_pool = "untrusted"
  backend_settings = "untrusted"
[[rules]]
name = "tls"
listener = "tls"
backend_pool = "app"
backend_settings = "app"
"""


def test_https_probes_verify_against_trusted_root(backend_factory, gateway_factory, certs):
    # The gateway's own https listener is the https backend of two pools.
    a = backend_factory.wsgi("a")
    gw = gateway_factory(HTTPS_BACKENDS, a=a.address, tls_port=free_port(), cert=certs.cert,
                         key=certs.key, **ports())
    tls_port = gw.port(1)
    ok = wait_health(gw, f"localhost:{tls_port}", "Healthy")
    assert ok["last_probe"]["status"] == 200
    bad = wait_health(gw, f"127.0.0.1:{tls_port}", "Unhealthy")
    assert bad["last_probe"]["reason"].startswith("TLS error: ")
    assert "certificate" in bad["last_probe"]["reason"]


# --- the admin endpoint ---------------------------------------------------------------

def test_admin_paths_and_methods(backend_factory, gateway_factory):
    a, b = backend_factory.wsgi("a"), backend_factory.wsgi("b")
    gw = gateway_factory(FAST_PROBE, a=a.address, b=b.address, **ports())
    r = requests.get(gw.admin_url("/healthz"), timeout=5)
    assert (r.status_code, r.text) == (200, "ok")
    r = requests.head(gw.admin_url("/healthz"), timeout=5)
    assert (r.status_code, r.content, r.headers["Content-Length"]) == (200, b"", "2")
    assert requests.get(gw.admin_url("/nope"), timeout=5).status_code == 404
    r = requests.post(gw.admin_url("/healthz"), timeout=5)
    assert (r.status_code, r.headers["Allow"]) == (405, "GET, HEAD")
    assert requests.delete(gw.admin_url("/metrics"), timeout=5).status_code == 405

    wait_health(gw, a.address, "Healthy")
    wait_health(gw, b.address, "Healthy")
    doc = requests.get(gw.admin_url("/backend-health"), timeout=5).json()
    assert [p["name"] for p in doc["backend_pools"]] == ["app"]
    entry = doc["backend_pools"][0]["servers"][0]
    assert set(entry) == {"address", "backend_settings", "health", "last_probe", "state_change",
                          "last_passive_failure"}
    assert entry["backend_settings"] == "fast"
    assert set(entry["last_probe"]) == {"time", "ok", "status", "reason"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["last_probe"]["time"])


def test_metrics_parse_and_count_traffic(backend_factory, gateway_factory):
    a, b = backend_factory.wsgi("a"), backend_factory.wsgi("b")
    gw = gateway_factory(FAST_PROBE, a=a.address, b=b.address, **ports())
    wait_health(gw, a.address, "Healthy")
    names(gw, 3)
    assert requests.get(gw.url("/status?code=404"), timeout=5).status_code == 404
    r = requests.get(gw.admin_url("/metrics"), timeout=5)
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name, kind in (("appgw_requests", "counter"), ("appgw_connections_active", "gauge"),
                       ("appgw_websocket_sessions_active", "gauge"), ("appgw_websocket_sessions", "counter"),
                       ("appgw_bytes_received", "counter"), ("appgw_bytes_sent", "counter"),
                       ("appgw_healthy_servers", "gauge"), ("appgw_unhealthy_servers", "gauge"),
                       ("appgw_backend_response_seconds", "histogram"), ("appgw_probes", "counter")):
        assert families[name].type == kind, name
    m = metrics(gw)
    assert m[("appgw_requests_total", (("code_class", "2xx"), ("listener", "http"), ("rule", "main")))] == 3
    assert m[("appgw_requests_total", (("code_class", "4xx"), ("listener", "http"), ("rule", "main")))] == 1
    assert m[("appgw_backend_response_seconds_count", (("pool", "app"),))] == 4
    assert m[("appgw_backend_response_seconds_bucket", (("le", "+Inf"), ("pool", "app")))] == 4
    assert m[("appgw_bytes_sent_total", ())] > 0 and m[("appgw_bytes_received_total", ())] > 0
    assert m[("appgw_probes_total", (("pool", "app"), ("result", "ok")))] >= 2


def test_admin_off_and_non_loopback_warning(backend_factory, gateway_factory):
    a, b = backend_factory.wsgi("a"), backend_factory.wsgi("b")
    config = FAST_PROBE.replace('admin_bind = "127.0.0.1:{admin}"', 'admin_bind = "0.0.0.0:{admin}"')
    gw = gateway_factory(config, a=a.address, b=b.address, **ports())
    assert requests.get(gw.admin_url("/healthz"), timeout=5).text == "ok"
    assert "WARNING appgw.admin: the admin endpoint listens on 0.0.0.0:" in gw.stderr_text()

    admin = free_port()
    config = FAST_PROBE.replace('admin_bind = "127.0.0.1:{admin}"', 'admin_bind = ""')
    gw = gateway_factory(config, a=a.address, b=b.address, port=free_port())
    assert requests.get(gw.url("/name"), timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{admin}/healthz", timeout=5)
