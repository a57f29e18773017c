"""Operations with a real bin/appgw process (issue 5, SPEC 2 and 9):
reload on SIGHUP, graceful stop on SIGTERM, workers, cookie affinity.

Every test starts its own gateway(s) and wsgi backends (tests/backends/
wsgi_backend.py): ``/name`` answers the backend's name, ``/ws/info`` sends
it as the first WebSocket message, so both show which server took a
request. Requests that must land on a fresh client connection use
``requests.get`` without a session (one connection each).
"""
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
import requests
import websocket

from harness import child_pids, free_port, read_http_response, socket_reader, wait_until

TIMEOUT = 5


# --- configs ------------------------------------------------------------------

def gateway_toml(listeners, pools, *, admin="", workers=1, drain_timeout=30, access_log="-",
                 affinity="", interval=30, unhealthy_threshold=3, server_drain=0):
    """A whole config.

    ``listeners``: [(name, port, pool name)], each with its own rule;
    ``pools``: {name: [server address, ...]}; one backend settings "s" with
    probe "p" on /health.
    """
    text = f"""
[gateway]
workers = {workers}
admin_bind = "{admin}"
access_log = "{access_log}"
drain_timeout = {drain_timeout}
client_header_timeout = 5

[[backend_settings]]
name = "s"
request_timeout = 10
connect_timeout = 1
probe = "p"
affinity_cookie = "{affinity}"
drain_timeout = {server_drain}

[[probes]]
name = "p"
path = "/health"
interval = {interval}
timeout = 1
unhealthy_threshold = {unhealthy_threshold}
"""
    for name, servers in pools.items():
        quoted = ", ".join(f'"{s}"' for s in servers)
        text += f'\n[[backend_pools]]\nname = "{name}"\nservers = [{quoted}]\n'
    for name, port, pool in listeners:
        text += f"""
[[listeners]]
name = "{name}"
bind = "127.0.0.1:{port}"
protocol = "http"

[[rules]]
name = "r-{name}"
listener = "{name}"
backend_pool = "{pool}"
backend_settings = "s"
"""
    return text


# --- clients ------------------------------------------------------------------

def url(port, path="/"):
    return f"http://127.0.0.1:{port}{path}"


def get(port, path="/name", **kwargs):
    """One request on its own new connection."""
    return requests.get(url(port, path), timeout=TIMEOUT, **kwargs)


def name_at(port, **kwargs):
    r = get(port, "/name", **kwargs)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.text


def ws_connect(port, path="/ws/echo", **kwargs):
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=TIMEOUT, **kwargs)


def ws_info(port, **kwargs):
    """A session to /ws/info: (the socket, the name of the backend that took it)."""
    ws = ws_connect(port, "/ws/info", **kwargs)
    return ws, json.loads(ws.recv())["name"]


def echo(ws, text):
    ws.send(text)
    assert ws.recv() == text


def keep_talking(ws, seconds, every=0.2, tag="m"):
    """Exchanges a message every ``every`` seconds for ``seconds``; returns how many."""
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        echo(ws, f"{tag}-{count}")
        count += 1
        time.sleep(every)
    return count


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def reload_and_wait(gateway, text, outcome="reload applied"):
    """Rewrites the file, sends SIGHUP and waits for one more ``outcome`` line."""
    before = gateway.stderr_text().count(outcome)
    gateway.reload(text)
    wait_until(lambda: gateway.stderr_text().count(outcome) > before, 10,
               message=f"another {outcome!r} line in appgw's stderr")


def wait_exit(gateway, timeout):
    try:
        return gateway.proc.wait(timeout)
    except Exception:
        pytest.fail(f"appgw still running {timeout}s later:\n{gateway.stderr_text()}", pytrace=False)


def two_backends(backend_factory):
    return backend_factory.wsgi("A"), backend_factory.wsgi("B")


# --- reload -------------------------------------------------------------------

def test_reload_changes_route_for_next_request_and_keeps_websocket(backend_factory, gateway_factory):
    a, b = two_backends(backend_factory)
    port = free_port()
    pools = {"pa": [a.address], "pb": [b.address]}
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], pools))
    assert name_at(port) == "A"

    ws, served_by = ws_info(port)
    assert served_by == "A"
    echo(ws, "before")

    reload_and_wait(gateway, gateway_toml([("web", port, "pb")], pools))
    # The next request (a new connection) follows the new rule ...
    assert name_at(port) == "B"
    assert [name_at(port) for _ in range(5)] == ["B"] * 5
    # ... while the session opened before the reload runs on, on A.
    assert keep_talking(ws, 3, tag="after") >= 10
    ws.close()
    # New sessions follow the new rule too.
    ws2, served_by = ws_info(port)
    assert served_by == "B"
    echo(ws2, "new")
    ws2.close()
    assert "reload refused" not in gateway.stderr_text()


@pytest.mark.parametrize("broken, problem", [
    # a reference that does not resolve: the key path and the problem
    ("rule", re.compile(r"appgw\.toml: rules\[0\]\.backend_pool: .*nope")),
    # a TOML syntax error: line and column
    ("syntax", re.compile(r"appgw\.toml: line \d+, column \d+: ")),
])
def test_reload_with_broken_file_keeps_old_config(backend_factory, gateway_factory, broken, problem):
    a, b = two_backends(backend_factory)
    port = free_port()
    pools = {"pa": [a.address], "pb": [b.address]}
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], pools))
    ws, _ = ws_info(port)

    if broken == "rule":
        text = gateway_toml([("web", port, "nope")], pools)
    else:
        text = gateway_toml([("web", port, "pb")], pools) + "\n[[listeners]\nname = \n"
    before = gateway.stderr_text().count("reload refused")
    # Written directly: Gateway.reload parses the text, which fails on purpose here.
    gateway.config_path.write_text(text)
    gateway.send_signal(signal.SIGHUP)
    wait_until(lambda: gateway.stderr_text().count("reload refused") > before, 10,
               message="'reload refused' in stderr")

    stderr = gateway.stderr_text()
    assert problem.search(stderr), stderr
    assert gateway.proc.poll() is None
    # Still serving, with the old rule.
    assert [name_at(port) for _ in range(5)] == ["A"] * 5
    echo(ws, "still here")
    ws.close()

    # A fixed file is then applied as usual.
    reload_and_wait(gateway, gateway_toml([("web", port, "pb")], pools))
    assert name_at(port) == "B"


def test_reload_adds_and_removes_listeners_and_keeps_health(backend_factory, gateway_factory):
    a = backend_factory.wsgi("A")
    one, two, admin = free_port(), free_port(), free_port()
    pools = {"pa": [a.address]}
    options = dict(admin=f"127.0.0.1:{admin}", interval=0.3)
    gateway = gateway_factory(gateway_toml([("one", one, "pa")], pools, **options))

    def health():
        doc = requests.get(f"http://127.0.0.1:{admin}/backend-health", timeout=TIMEOUT).json()
        return [(pool["name"], s["address"], s["health"])
                for pool in doc["backend_pools"] for s in pool["servers"]]

    wait_until(lambda: health() == [("pa", a.address, "Healthy")], 10, message="A Healthy")
    changes_before = gateway.stderr_text().count("is now")
    assert changes_before == 1, gateway.stderr_text()

    # Add a listener on a new port: it serves; the old one still does.
    assert refused(two)
    reload_and_wait(gateway, gateway_toml([("one", one, "pa"), ("two", two, "pa")], pools, **options))
    assert name_at(two) == "A"
    assert name_at(one) == "A"
    # The server, present before and after, kept its state (no Unknown phase).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert health() == [("pa", a.address, "Healthy")]
        time.sleep(0.05)

    # Remove the first listener: it stops accepting; the second serves on.
    reload_and_wait(gateway, gateway_toml([("two", two, "pa")], pools, **options))
    wait_until(lambda: refused(one), 3, message=f"port {one} refusing connections")
    assert name_at(two) == "A"
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert health() == [("pa", a.address, "Healthy")]
        time.sleep(0.05)
    assert gateway.stderr_text().count("is now") == changes_before, gateway.stderr_text()


def test_reload_removing_server_drains_its_sessions(backend_factory, gateway_factory):
    """A server removed by a reload: its open session runs on for the old
    settings' drain_timeout, then is closed; new requests avoid it."""
    a, b = two_backends(backend_factory)
    port = free_port()
    gateway = gateway_factory(gateway_toml([("web", port, "pool")], {"pool": [a.address]},
                                           server_drain=2))
    ws, served_by = ws_info(port)
    assert served_by == "A"
    reload_and_wait(gateway, gateway_toml([("web", port, "pool")], {"pool": [b.address]},
                                          server_drain=2))
    removed = time.monotonic()
    assert name_at(port) == "B"
    keep_talking(ws, 1.0, every=0.1)
    with pytest.raises((websocket.WebSocketException, OSError)):
        while time.monotonic() - removed < 6:
            echo(ws, "x")
            time.sleep(0.1)
    closed_after = time.monotonic() - removed
    assert 1.5 <= closed_after <= 3.5, closed_after
    assert gateway.proc.poll() is None


# --- graceful stop ------------------------------------------------------------

def test_sigterm_finishes_request_in_flight_and_refuses_new_connections(backend_factory, gateway_factory):
    a = backend_factory.wsgi("A")
    port = free_port()
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], {"pa": [a.address]}, drain_timeout=10))
    assert name_at(port) == "A"

    # An idle keep-alive connection: closed at SIGTERM.
    idle = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    idle.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_http_response(idle)
    assert (status, body) == (200, b"A")

    result = {}

    def slow():
        try:
            r = get(port, "/slow?delay=2")
            result.update(status=r.status_code, body=r.text, connection=r.headers.get("Connection"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)                      # the request is at the backend
    sent = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert refused(port), "a new connection was accepted after SIGTERM"
    idle.settimeout(2)
    assert socket_reader(idle).read() == b"", "idle keep-alive connection not closed"
    idle.close()

    thread.join(10)
    assert result.get("status") == 200, result
    assert result["body"] == "slow ok\n"
    assert (result["connection"] or "").lower() == "close", result
    assert wait_exit(gateway, 8) == 0
    assert time.monotonic() - sent < 4, "did not exit once the request was answered"
    assert "stopped" in gateway.stderr_text()


def test_sigterm_drains_websocket_until_drain_timeout(backend_factory, gateway_factory):
    a = backend_factory.wsgi("A")
    port = free_port()
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], {"pa": [a.address]}, drain_timeout=2))
    ws = ws_connect(port)
    echo(ws, "hello")

    sent = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    # The session keeps working for a while after SIGTERM ...
    assert keep_talking(ws, 1.0, every=0.1) >= 5
    time.sleep(0.2)
    assert refused(port)
    # ... and is closed at drain_timeout.
    with pytest.raises((websocket.WebSocketException, OSError)):
        while time.monotonic() - sent < 6:
            echo(ws, "x")
            time.sleep(0.05)
    closed_after = time.monotonic() - sent
    assert 1.8 <= closed_after <= 2.8, closed_after
    assert wait_exit(gateway, 3.5 - (time.monotonic() - sent)) == 0
    assert time.monotonic() - sent <= 3.5


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGQUIT], ids=["SIGTERM", "SIGQUIT"])
def test_second_signal_stops_at_once(backend_factory, gateway_factory, second):
    a = backend_factory.wsgi("A")
    port = free_port()
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], {"pa": [a.address]}, drain_timeout=30))
    ws = ws_connect(port)
    echo(ws, "hello")
    gateway.send_signal(signal.SIGTERM)
    keep_talking(ws, 0.5, every=0.1)
    assert gateway.proc.poll() is None  # draining: 30 s granted
    sent = time.monotonic()
    gateway.send_signal(second)
    wait_exit(gateway, 2)
    assert time.monotonic() - sent < 1.5
    with pytest.raises((websocket.WebSocketException, OSError)):
        echo(ws, "after")


# --- workers ------------------------------------------------------------------

def pids_in(access_log):
    return [int(p) for p in re.findall(r" pid=(\d+)", access_log)]


def test_workers_share_load_and_are_replaced(backend_factory, gateway_factory):
    a = backend_factory.wsgi("A")
    port = free_port()
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], {"pa": [a.address]}, workers=2))
    master = gateway.proc.pid
    workers = set(wait_until(lambda: len(child_pids(master)) == 2 and child_pids(master), 10,
                             message="two workers"))

    for _ in range(60):
        assert get(port).status_code == 200
    seen = set(pids_in(gateway.stdout_text()))
    if seen != workers:
        # The kernel may keep waking the same worker for sequential
        # connections; concurrent ones, each held open a while, spread.
        def one():
            assert get(port, "/slow?delay=0.3").status_code == 200

        for _ in range(3):
            threads = [threading.Thread(target=one) for _ in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            seen = set(pids_in(gateway.stdout_text()))
            if seen == workers:
                break
    assert seen == workers, f"access log pids {seen}, workers {workers}"
    assert master not in seen

    # Kill one worker: it is logged and replaced, and service goes on.
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    new = wait_until(lambda: (len(child_pids(master)) == 2 and set(child_pids(master)) - workers), 10,
                     message="a replacement worker")
    assert victim not in child_pids(master)
    assert len(new) == 1
    gateway.wait_for_output("died")
    assert str(victim) in [line for line in gateway.stderr_text().splitlines() if "died" in line][0]
    for _ in range(20):
        assert name_at(port) == "A"

    # SIGTERM to the master stops every worker and exits 0.
    current = child_pids(master)
    gateway.send_signal(signal.SIGTERM)
    assert wait_exit(gateway, 10) == 0
    for pid in current:
        wait_until(lambda pid=pid: not _alive(pid), 5, message=f"worker {pid} gone")
    assert refused(port)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_reload_applies_in_every_worker(backend_factory, gateway_factory):
    """SIGHUP to the master reaches every worker: route changes and listener
    removal hold whichever worker takes a connection."""
    a, b = two_backends(backend_factory)
    one, two = free_port(), free_port()
    pools = {"pa": [a.address], "pb": [b.address]}
    gateway = gateway_factory(gateway_toml([("one", one, "pa"), ("two", two, "pa")], pools, workers=2))
    master = gateway.proc.pid
    wait_until(lambda: len(child_pids(master)) == 2, 10, message="two workers")
    ws, served_by = ws_info(two)
    assert served_by == "A"

    new = gateway_toml([("two", two, "pb")], pools, workers=2)
    before = gateway.stderr_text().count("reload applied")
    gateway.reload(new)
    wait_until(lambda: gateway.stderr_text().count("reload applied") >= before + 2, 10,
               message="both workers reloaded")
    assert {name_at(two) for _ in range(30)} == {"B"}
    echo(ws, "still here")
    ws.close()
    wait_until(lambda: refused(one), 3, message=f"removed listener {one} refusing connections")


def test_workers_sigterm_finishes_request_in_flight_and_refuses_new_connections(backend_factory,
                                                                                gateway_factory):
    a = backend_factory.wsgi("A")
    port = free_port()
    gateway = gateway_factory(gateway_toml([("web", port, "pa")], {"pa": [a.address]}, workers=2))
    wait_until(lambda: len(child_pids(gateway.proc.pid)) == 2, 10, message="two workers")
    result = {}

    def slow():
        r = get(port, "/slow?delay=2")
        result.update(status=r.status_code, body=r.text)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    gateway.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    accepted_after_sigterm = not refused(port)
    thread.join(10)
    assert result == {"status": 200, "body": "slow ok\n"}
    assert wait_exit(gateway, 8) == 0
    assert not accepted_after_sigterm, "a new connection was accepted after SIGTERM"


# --- cookie affinity ------------------------------------------------------------

COOKIE = "appgw_aff"


def affinity_toml(port, servers, **kwargs):
    return gateway_toml([("web", port, "pool")], {"pool": servers}, affinity=COOKIE, **kwargs)


def cookie_of(response):
    """The affinity cookie's value set by ``response`` (and its attributes)."""
    header = response.headers.get("Set-Cookie", "")
    match = re.fullmatch(COOKIE + r"=([^;]+); Path=/; HttpOnly", header)
    assert match, f"Set-Cookie: {header!r}"
    return match.group(1)


def cookies_by_server(port):
    """{server name: cookie value}, from requests without a cookie (round robin)."""
    found = {}
    for _ in range(10):
        r = get(port)
        assert r.status_code == 200
        found[r.text] = cookie_of(r)
        if len(found) == 2:
            return found
    pytest.fail(f"requests without a cookie all went to {set(found)}")


def test_affinity_cookie_keeps_client_on_one_server_across_instances(backend_factory, gateway_factory):
    a, b = two_backends(backend_factory)
    servers = [a.address, b.address]
    port1, port2 = free_port(), free_port()
    gateway_factory(affinity_toml(port1, servers))

    first = get(port1)
    assert first.status_code == 200
    value = cookie_of(first)
    owner = first.text
    for _ in range(20):
        r = get(port1, cookies={COOKIE: value})
        assert r.text == owner
        # the cookie is right: nothing to rewrite
        assert "Set-Cookie" not in r.headers

    by_server = cookies_by_server(port1)
    assert by_server[owner] == value
    # A second, separate instance with the same config (another port) agrees.
    gateway_factory(affinity_toml(port2, servers))
    for name, cookie in by_server.items():
        for port in (port1, port2):
            assert [name_at(port, cookies={COOKIE: cookie}) for _ in range(5)] == [name] * 5
    assert cookies_by_server(port2) == by_server

    # WebSocket handshakes honour the cookie too.
    for name, cookie in by_server.items():
        for port in (port1, port2):
            for _ in range(3):
                ws, served_by = ws_info(port, cookie=f"{COOKIE}={cookie}")
                assert served_by == name
                echo(ws, "hi")
                ws.close()


def test_affinity_cookie_of_a_dead_server_moves_the_client(backend_factory, gateway_factory):
    a, b = two_backends(backend_factory)
    port = free_port()
    gateway = gateway_factory(affinity_toml(port, [a.address, b.address], interval=0.3,
                                            unhealthy_threshold=1))
    by_server = cookies_by_server(port)
    assert name_at(port, cookies={COOKIE: by_server["A"]}) == "A"

    a.stop()
    gateway.wait_for_output(f"{a.address} (pool pool) is now Unhealthy")

    r = get(port, cookies={COOKIE: by_server["A"]})
    assert r.status_code == 200
    assert r.text == "B"
    assert cookie_of(r) == by_server["B"]   # rewritten to the server it now uses
    for _ in range(5):
        r = get(port, cookies={COOKIE: by_server["B"]})
        assert r.text == "B"
        assert "Set-Cookie" not in r.headers

    # A WebSocket handshake with the dead server's cookie moves too, and the
    # 101 rewrites the cookie.
    ws, served_by = ws_info(port, cookie=f"{COOKIE}={by_server['A']}")
    assert served_by == "B"
    set_cookie = ws.getheaders().get("set-cookie", "")
    assert set_cookie == f"{COOKIE}={by_server['B']}; Path=/; HttpOnly", ws.getheaders()
    echo(ws, "moved")
    ws.close()
