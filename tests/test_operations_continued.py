"""The first hour and the long run (issue 14, SPEC 17): the drop-in from the
app's own directory, bin/appgw from a checkout, --check meeting what a
start meets, SIGUSR1 and logrotate, health kept across a reload that
changes a probe, a stop that does not lag, workers that cannot boot, and
/backend-health saying why a server is in its state.

Every test runs bin/appgw (or its copy) as a real process, with real
backends and clients.
"""
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
import websocket

from harness import APPGW, REPO, child_pids, free_port, gateway_config, run_appgw, wait_until

TIMEOUT = 5

# A WSGI app as a user writes it in their own directory; it imports a
# helper module next to it, as real apps do.
MYAPP = '''
import helper


def app(environ, start_response):
    body = helper.greeting(environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
HELPER = '''
def greeting(path):
    return "hello from myapp at " + path
'''


def app_config(port, app, app_path="", access_log=""):
    text = gateway_config(app=app, access_log=access_log, pool=f"app_path = [{app_path}]" if app_path else "")
    return text.replace('path = "/health"', 'path = "/"').replace("{port}", str(port))


def write_app(directory, module="myapp"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(MYAPP)
    (directory / "helper.py").write_text(HELPER)


def run_bare(args, cwd):
    """bin/appgw with no PYTHONPATH at all, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(APPGW), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=30)


# --- 1. app_path and the config file's directory --------------------------------

def test_check_imports_an_app_next_to_the_config_from_another_directory(tmp_path):
    """`cd myapp && appgw -c appgw.toml --check` and the same from elsewhere."""
    project = tmp_path / "myapp"
    write_app(project)
    (project / "appgw.toml").write_text(app_config(free_port(), "myapp:app"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, config in ((project, "appgw.toml"), (elsewhere, project / "appgw.toml")):
        result = run_bare(["-c", config, "--check"], cwd)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr


def test_app_path_directories_relative_to_the_config_serve_the_app(tmp_path, gateway_factory):
    """app_path = ["src"] (relative to the config file) is on sys.path for
    the import, for --check and for the start; a missing directory is a
    config problem."""
    project = tmp_path / "project"
    write_app(project / "src", "srcapp")
    port = free_port()
    config = project / "appgw.toml"
    config.write_text(app_config(port, "srcapp:app", app_path='"src"'))
    result = run_bare(["-c", config, "--check"], tmp_path)
    assert result.returncode == 0, result.stderr

    # Without app_path the module is not found.
    config.write_text(app_config(port, "srcapp:app"))
    result = run_bare(["-c", config, "--check"], tmp_path)
    assert result.returncode == 1
    assert "backend_pools[0].app: cannot import 'srcapp'" in result.stderr, result.stderr

    config.write_text(app_config(port, "srcapp:app", app_path='"src", "nowhere"'))
    result = run_bare(["-c", config, "--check"], tmp_path)
    assert result.returncode == 1
    assert 'backend_pools[0].app_path[1]: "nowhere" is not a directory' in result.stderr, result.stderr

    gateway = gateway_factory(app_config(port, "srcapp:app", app_path=f'"{project / "src"}"'))
    r = requests.get(f"http://127.0.0.1:{port}/there", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "hello from myapp at /there")
    assert gateway.proc.poll() is None


# --- 2. bin/appgw from a checkout ------------------------------------------------

def checkout_copy(tmp_path, venv=True):
    """A checkout layout in tmp_path: bin/appgw (a copy, so that it finds
    this directory as its checkout), the package, and a .venv that is this
    test run's virtualenv."""
    root = tmp_path / "checkout"
    (root / "bin").mkdir(parents=True)
    shutil.copy(APPGW, root / "bin" / "appgw")
    (root / "appgw").symlink_to(REPO / "appgw")
    if venv:
        (root / ".venv").symlink_to(sys.prefix)
    return root


def bare_python(tmp_path):
    """A Python without gevent: a new virtualenv with nothing installed."""
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True, capture_output=True)
    python = tmp_path / "bare" / "bin" / "python"
    probe = subprocess.run([python, "-c", "import gevent"], capture_output=True)
    assert probe.returncode != 0, "the bare virtualenv can import gevent"
    return python


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="needs the tests to run in a virtualenv")
def test_bin_appgw_from_a_checkout_runs_with_the_checkouts_venv(tmp_path):
    root = checkout_copy(tmp_path)
    python = bare_python(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([python, root / "bin" / "appgw", "-c", REPO / "appgw.toml", "--check"],
                            capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'listener "http"' in result.stdout


def test_bin_appgw_without_venv_says_in_one_line_what_to_run(tmp_path):
    root = checkout_copy(tmp_path, venv=False)
    python = bare_python(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([python, root / "bin" / "appgw", "--version"],
                            capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "gevent" in lines[0] and "./dev run" in lines[0] and ".venv" in lines[0], lines[0]


# --- 3. --check meets what a start meets ------------------------------------------

def test_access_log_in_a_missing_directory_fails_check_and_start_in_one_line(tmp_path):
    text = app_config(free_port(), "appgw.demo:app", access_log="logs/access.log")
    (tmp_path / "appgw.toml").write_text(text)
    expected = (f'appgw.toml: gateway.access_log: cannot write "logs/access.log": '
                f'directory "{tmp_path / "logs"}" does not exist')
    for args in (["--check"], []):
        result = run_appgw("-c", "appgw.toml", *args, cwd=tmp_path, timeout=10)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines() == [expected], result.stderr
    assert not (tmp_path / "logs").exists()

    # A directory where the file should be is refused too.
    (tmp_path / "logs" / "access.log").mkdir(parents=True)
    result = run_appgw("-c", "appgw.toml", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert 'gateway.access_log: cannot write "logs/access.log": it is a directory' in result.stderr


def test_check_reports_admin_and_listener_on_one_address_and_unreadable_certificates(tmp_path, certs):
    port = free_port()
    text = app_config(port, "appgw.demo:app").replace('admin_bind = ""', f'admin_bind = "127.0.0.1:{port}"')
    text = text.replace('protocol = "http"\n', 'protocol = "https"\ncertificate = "nocert.pem"\n'
                        f'private_key = "{certs.key}"\n', 1)
    (tmp_path / "appgw.toml").write_text(text)
    result = run_appgw("-c", "appgw.toml", "--check", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert f'appgw.toml: gateway.admin_bind: 127.0.0.1:{port} conflicts with listener "web" on 127.0.0.1:{port}' \
        in lines, lines
    assert 'appgw.toml: listeners[0].certificate: cannot read "nocert.pem": No such file or directory' in lines, lines


# --- 4. SIGUSR1 and SIGHUP reopen the access log ----------------------------------

@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP], ids=["SIGUSR1", "SIGHUP"])
def test_access_log_is_reopened_after_logrotate_moved_it(tmp_path, gateway_factory, wsgi_backend, sig, workers):
    log_path = tmp_path / "access.log"
    port = free_port()
    text = gateway_config([wsgi_backend.address], access_log=str(log_path), gateway=f"workers = {workers}")
    gateway = gateway_factory(text, port=port)
    if workers > 1:
        # Started, not just forked: a signal before a worker's handlers are in
        # place finds a process that has not opened its log yet.
        wait_until(lambda: gateway.stderr_text().count("appgw started") == workers, 10, message="the workers")
    assert requests.get(f"http://127.0.0.1:{port}/name?before", timeout=TIMEOUT).status_code == 200
    wait_until(lambda: log_path.exists() and "/name?before" in log_path.read_text(), message="the first line")

    rotated = tmp_path / "access.log.1"
    os.rename(log_path, rotated)        # what logrotate does, then it signals
    gateway.send_signal(sig)
    wait_until(lambda: log_path.exists() and all(
        _fd_points_at(pid, log_path) for pid in (child_pids(gateway.proc.pid) or [gateway.proc.pid])),
        10, message="every process writing the new access.log")
    assert requests.get(f"http://127.0.0.1:{port}/name?after", timeout=TIMEOUT).status_code == 200

    wait_until(lambda: "/name?after" in log_path.read_text(), message="the next line in the new file")
    assert "/name?after" not in rotated.read_text()
    assert "/name?before" in rotated.read_text()
    assert gateway.proc.poll() is None


def _fd_points_at(pid, path):
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) == str(path):
                return True
        except OSError:
            pass
    return False


# --- 7. a worker that cannot start stops the master -------------------------------

def test_workers_that_cannot_start_stop_the_master_with_a_clear_message(tmp_path, wsgi_backend):
    """The admin port is taken: worker 0 cannot start. The master says so
    and exits 1 instead of starting it again and again."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    admin = holder.getsockname()[1]
    text = gateway_config([wsgi_backend.address], gateway="workers = 2").replace(
        'admin_bind = ""', f'admin_bind = "127.0.0.1:{admin}"').replace("{port}", str(free_port()))
    (tmp_path / "appgw.toml").write_text(text)
    started = time.monotonic()
    # Its own process group: should the master run on, its workers go too.
    proc = subprocess.Popen([sys.executable, str(APPGW), "-c", "appgw.toml"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    with holder:
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail("appgw still running after 10 s:\n" + stderr[-3000:], pytrace=False)
    took = time.monotonic() - started
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert result.returncode == 1, result.stderr
    assert took < 5, took
    assert "starting a new one" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"worker 0: cannot listen on 127.0.0.1:{admin}: address already in use" in result.stderr, result.stderr
    assert "worker 0 (pid " in result.stderr and "could not start" in result.stderr, result.stderr


def test_master_replaces_a_killed_worker_at_once(backend_factory, gateway_factory, wsgi_backend):
    """The master acts on SIGCHLD outside its handler, without waiting for
    its idle wake-up."""
    port = free_port()
    gateway = gateway_factory(gateway_config([wsgi_backend.address], gateway="workers = 2"), port=port)
    master = gateway.proc.pid
    workers = set(wait_until(lambda: len(child_pids(master)) == 2 and child_pids(master), 10, message="workers"))
    victim = min(workers)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(set(child_pids(master)) - workers) == 1, 5, interval=0.005, message="a new worker")
    assert time.monotonic() - killed < 0.5
    assert requests.get(f"http://127.0.0.1:{port}/name", timeout=TIMEOUT).status_code == 200


# --- 8. /backend-health says why a server is in its state ----------------------------

def test_backend_health_shows_the_passive_failure_that_made_a_server_unhealthy(gateway_factory, wsgi_backend):
    """The server refuses connections while its probe (sent to another
    port) passes: three refused connects while proxying make it Unhealthy
    next to a successful last probe, and the document says so."""
    dead = free_port()
    port = free_port()
    text = gateway_config([f"127.0.0.1:{dead}"], probe_port=wsgi_backend.port, admin=True)
    gateway = gateway_factory(text, port=port)
    address = f"127.0.0.1:{dead}"

    def server():
        doc = requests.get(gateway.admin_url("/backend-health"), timeout=TIMEOUT).json()
        return doc["backend_pools"][0]["servers"][0]

    healthy = wait_until(lambda: server()["health"] == "Healthy" and server(), message="the probe passing")
    assert healthy["state_change"]["source"] == "probe"
    assert healthy["state_change"]["reason"] == "status 200"
    assert healthy["last_passive_failure"] is None

    for _ in range(3):
        assert requests.get(f"http://127.0.0.1:{port}/name", timeout=TIMEOUT).status_code == 502
    entry = server()
    assert entry["address"] == address
    assert entry["health"] == "Unhealthy"
    assert entry["last_probe"]["ok"] is True and entry["last_probe"]["status"] == 200
    assert entry["state_change"]["source"] == "passive"
    assert entry["state_change"]["reason"] == "connection refused (while proxying)"
    assert entry["last_passive_failure"]["reason"] == "connection refused"
    assert entry["state_change"]["time"] == entry["last_passive_failure"]["time"]
    assert set(entry) == {"address", "backend_settings", "health", "last_probe", "state_change",
                          "last_passive_failure"}


# --- 5. a reload that changes a probe keeps the servers' state ----------------------

def test_reload_that_changes_the_probe_keeps_the_servers_health(gateway_factory, wsgi_backend):
    """The new probe takes 3 s to answer: meanwhile the server is still
    Healthy with its last probe and the time it became Healthy (not Unknown
    as a new server would be). Its answer then fails the new match_body:
    one failure of three, so the server stays Healthy (a new server's
    first result would decide at once)."""
    port = free_port()
    text = gateway_config([wsgi_backend.address], admin=True, probe_timeout=10).replace("{port}", str(port))
    gateway = gateway_factory(text)

    def server():
        doc = requests.get(gateway.admin_url("/backend-health"), timeout=TIMEOUT).json()
        return doc["backend_pools"][0]["servers"][0]

    before = wait_until(lambda: server()["health"] == "Healthy" and server(), message="Healthy")
    slow_probe = text.replace('path = "/health"', 'path = "/slow?delay=3"\nmatch_body = "nope"')
    count = gateway.stderr_text().count("reload applied")
    gateway.reload(slow_probe)
    wait_until(lambda: gateway.stderr_text().count("reload applied") > count, message="the reload")
    during = server()
    assert during["health"] == "Healthy", during
    assert during["last_probe"] == before["last_probe"]
    assert during["state_change"] == before["state_change"]
    assert requests.get(f"http://127.0.0.1:{port}/name", timeout=TIMEOUT).text == "session"
    # The new probe was sent, with the new path, from the kept state.
    after = wait_until(lambda: server()["last_probe"] != before["last_probe"] and server(), 10,
                       message="the new probe's result")
    assert after["health"] == "Healthy"
    assert after["last_probe"]["ok"] is False
    assert after["last_probe"]["reason"] == "body does not contain 'nope'"
    assert after["state_change"] == before["state_change"]
    assert "is now" not in gateway.stderr_text().split("reload applied")[-1]


# --- 6. a stop returns as soon as nothing is left to drain ---------------------------

def test_stop_after_clients_returns_at_once(gateway_factory):
    """An idle keep-alive connection (closed by the stop), a WebSocket that
    was closed, a keep-alive connection to the admin endpoint, and the
    in-process app's connections: SIGTERM exits within half a second."""
    port = free_port()
    text = app_config(port, "appgw.demo:app", access_log="-")
    text = text.replace('admin_bind = ""', f'admin_bind = "127.0.0.1:{free_port()}"')
    gateway = gateway_factory(text.replace('path = "/"', 'path = "/health"'))
    session, admin = requests.Session(), requests.Session()
    for path in ("/", "/api/info", "/health"):
        assert session.get(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT).status_code == 200
    assert admin.get(gateway.admin_url("/"), timeout=TIMEOUT).status_code == 200
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/echo", timeout=TIMEOUT)
    ws.send("hi")
    assert ws.recv() == "hi"
    ws.close()
    wait_until(lambda: "ended=" in gateway.stdout_text(), message="the WebSocket's log line")
    sent = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(5) == 0
    took = time.monotonic() - sent
    assert took < 0.5, took
    session.close()
    admin.close()


def test_stop_after_a_browser_left_the_demo_page_returns_at_once(gateway_factory, tmp_path):
    """The walk-through: a Chromium tab uses the demo page's WebSocket echo,
    then goes elsewhere. Chromium keeps the page in its back/forward cache,
    and with it the page's WebSocket, open: a stop then waited drain_timeout
    for a session the user believed closed. The page closes it on pagehide,
    and opens a new one when it is shown again."""
    from test_status_page import Browser, chromium_or_skip

    chromium = chromium_or_skip()
    port = free_port()
    text = app_config(port, "appgw.demo:app", access_log="-").replace('path = "/"', 'path = "/health"')
    # Sessions may idle as long as the sample's: only the page closes them.
    gateway = gateway_factory(text.replace("connect_timeout = 2", "connect_timeout = 2\nwebsocket_idle_timeout = 300"))
    browser = Browser(chromium, tmp_path / "profile")

    def status():
        return browser.evaluate("(document.getElementById('status') || {}).textContent")

    def sessions_ended():
        return gateway.stdout_text().count('"GET /ws/echo HTTP/1.1" 101')

    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        wait_until(lambda: status() == "connected", message="the demo page's WebSocket open")
        browser.evaluate("document.getElementById('msg').value = 'hello'; document.getElementById('send').click()")
        wait_until(lambda: browser.evaluate("(document.querySelector('#log li') || {}).textContent") == "hello",
                   message="the echo")
        browser.evaluate("window.testMarker = 'the same page'")

        browser.call("Page.navigate", url="about:blank")
        wait_until(lambda: sessions_ended() == 1, message="the WebSocket closed when the page was left")

        # Back: the page comes out of the cache (the marker is still there)
        # and opens a new WebSocket.
        browser.evaluate("history.back()")
        wait_until(lambda: status() == "connected", message="a new WebSocket after coming back")
        assert browser.evaluate("window.testMarker || null") == "the same page"
        browser.call("Page.navigate", url="about:blank")
        wait_until(lambda: sessions_ended() == 2, message="the second WebSocket closed")

        assert "ended=idle_timeout" not in gateway.stdout_text()
        sent = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(5) == 0
        took = time.monotonic() - sent
        assert took < 1, took
        assert "stopping: closed " in gateway.stderr_text()
        assert "WebSocket session(s)" not in gateway.stderr_text()    # nothing was left to wait for
    finally:
        browser.close()


def test_stop_says_what_it_waits_for(gateway_factory):
    """A WebSocket still open at SIGTERM: the log says the stop waits for it
    and how to stop at once; a second SIGTERM does."""
    port = free_port()
    gateway = gateway_factory(app_config(port, "appgw.demo:app").replace('path = "/"', 'path = "/health"'))
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/echo", timeout=TIMEOUT)
    ws.send("hi")
    assert ws.recv() == "hi"
    gateway.send_signal(signal.SIGTERM)
    wait_until(lambda: "waiting up to 30s for 0 other connection(s) and 1 WebSocket session(s) "
               "(SIGTERM again stops at once)" in gateway.stderr_text(), message="the stop saying what it waits for")
    assert gateway.proc.poll() is None
    gateway.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(5) == 0
    ws.close()


# --- workers = N: the admin endpoint counts every worker --------------------------

def test_admin_endpoint_of_two_workers_counts_both(gateway_factory, wsgi_backend):
    """Requests and WebSocket sessions served by either worker are in
    /status.json and /metrics, not only worker 0's."""
    port = free_port()
    text = gateway_config([wsgi_backend.address], gateway="workers = 2", admin=True,
                          settings="websocket_idle_timeout = 60")
    gateway = gateway_factory(text, port=port)
    wait_until(lambda: gateway.stderr_text().count("appgw started") == 2, 10, message="the workers")
    def served_by():
        return {line.rsplit("pid=", 1)[1].split()[0] for line in gateway.stdout_text().splitlines()
                if "/name" in line}

    # Both workers accept from the one listening socket: batches of
    # concurrent connections until each worker has served some.
    sent = 0
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        while len(served_by()) < 2 and sent < 400:
            statuses = pool.map(lambda _: requests.get(f"http://127.0.0.1:{port}/name", timeout=TIMEOUT,
                                                       headers={"Connection": "close"}).status_code, range(20))
            assert set(statuses) == {200}
            sent += 20
            wait_until(lambda n=sent: gateway.stdout_text().count("/name") == n, message="the access log lines")
    assert len(served_by()) == 2, "one worker served every request: the test proves nothing"
    sockets = [websocket.create_connection(f"ws://127.0.0.1:{port}/ws/echo", timeout=TIMEOUT) for _ in range(8)]
    try:
        for ws in sockets:
            ws.send("hi")
            assert ws.recv() == "hi"

        doc = requests.get(gateway.admin_url("/status.json"), timeout=TIMEOUT).json()
        assert doc["totals"]["requests"] == sent
        assert doc["totals"]["websocket_sessions_open"] == 8
        assert (doc["workers"], doc["workers_reporting"]) == (2, 2)
        row, = doc["backend_pools"][0]["servers"]
        assert row["requests"] == sent and row["websocket_open"] == 8 and row["p50"] is not None

        metrics = requests.get(gateway.admin_url("/metrics"), timeout=TIMEOUT).text
        answered = [line for line in metrics.splitlines() if line.startswith("appgw_requests_total{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in answered) == sent, answered
        assert "appgw_websocket_sessions_active 8.0" in metrics
        assert "appgw_workers_reporting 2.0" in metrics
    finally:
        for ws in sockets:
            ws.close()
    wait_until(lambda: requests.get(gateway.admin_url("/status.json"), timeout=TIMEOUT).json()
               ["totals"]["websocket_sessions_ended"] == 8, message="the sessions counted when they ended")

    def answered():
        doc = requests.get(gateway.admin_url("/status.json"), timeout=TIMEOUT).json()
        return doc["totals"]["requests"], doc["workers_reporting"]

    # Worker 1 stopped (as a busy one would not answer): its counts stay in
    # the sums, which never go down (Prometheus would read a reset).
    other, = set(child_pids(gateway.proc.pid)) - {_admin_worker(gateway)}
    os.kill(other, signal.SIGSTOP)
    try:
        assert answered() == (sent, 1)
    finally:
        os.kill(other, signal.SIGCONT)
    assert answered() == (sent, 2)
    # Worker 1 killed and replaced: what it counted stays counted.
    os.kill(other, signal.SIGKILL)
    wait_until(lambda: answered()[1] == 2 and other not in child_pids(gateway.proc.pid), 10,
               message="the replaced worker reporting")
    assert answered() == (sent, 2)


def _admin_worker(gateway):
    """The pid of the worker serving the admin endpoint (worker 0)."""
    return requests.get(gateway.admin_url("/status.json"), timeout=TIMEOUT).json()["pid"]
