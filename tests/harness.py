"""Helpers for tests that run appgw and its backends as real processes.

Everything here talks over real loopback sockets: backends and the gateway
run as subprocesses (never mocked), so half-closes, resets and timeouts in
the tests are the real ones.
"""
import fcntl
import http.client
import ipaddress
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import weakref
from collections import namedtuple
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BACKENDS = REPO / "tests" / "backends"
APPGW = REPO / "bin" / "appgw"
STARTUP_TIMEOUT = 10
POLL_INTERVAL = 0.02

# Same pattern as tests/backends/wsgi_backend.py serves on /bytes.
PATTERN = bytes(range(251))


def pattern_bytes(n, offset=0):
    """What ``/bytes?n=N`` of the wsgi backend returns (from ``offset``)."""
    start = offset % len(PATTERN)
    return (PATTERN * ((start + n) // len(PATTERN) + 1))[start:start + n]


_HANDED_OUT = set()


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago, and not handed out before in this
    run: the kernel may offer a port again once it is closed, and two
    servers a test starts would then race for it."""
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(predicate, timeout=10, interval=POLL_INTERVAL, message="condition"):
    """Polls ``predicate`` until it returns a truthy value, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}", pytrace=False)
        time.sleep(interval)


# --- certificates -----------------------------------------------------------

CertPair = namedtuple("CertPair", "cert key")


def make_cert(directory, cn="localhost", sans=("localhost", "127.0.0.1", "::1"), prefix=""):
    """A self-signed certificate (also usable as its own trusted root).

    Writes ``{prefix}cert.pem`` and ``{prefix}key.pem`` in ``directory`` and
    returns their paths as strings (ready to paste into a TOML file).
    """
    directory = Path(directory)
    cert, key = directory / f"{prefix}cert.pem", directory / f"{prefix}key.pem"
    alt = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in sans)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", f"/CN={cn}", "-addext", f"subjectAltName={alt}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return CertPair(str(cert), str(key))


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


# --- backends ---------------------------------------------------------------

class Backend:
    """A backend subprocess that printed ``READY <port>``."""

    def __init__(self, proc, port, stderr_file):
        self.proc, self.port, self._stderr = proc, port, stderr_file

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stderr_text(self):
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()


def start_backend(script, *args, timeout=STARTUP_TIMEOUT):
    """Starts ``tests/backends/<script>`` with ``args`` and waits for READY.

    ``--port 0`` is added unless ``args`` name a port.
    """
    if "--port" not in args:
        args = ("--port", "0") + args
    # stderr goes to a file: a pipe nobody reads would block the backend.
    # The backend writes through this same open file, so the two share one
    # offset, which stderr_text() seeks to 0 to read: in append mode every
    # write of the backend lands at the end wherever that offset stands.
    # Without it, a write made between the seek and the read went over the
    # start of the file ("\nLOSED path=/held": print() writes the line and
    # its newline separately when unbuffered) and a test waited in vain.
    stderr = tempfile.TemporaryFile()
    fcntl.fcntl(stderr.fileno(), fcntl.F_SETFL, fcntl.fcntl(stderr.fileno(), fcntl.F_GETFL) | os.O_APPEND)
    proc = subprocess.Popen([sys.executable, str(BACKENDS / script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        stderr.seek(0)
        pytest.fail(f"{script} {' '.join(map(str, args))} did not start: {line!r}\n"
                    f"{stderr.read().decode('utf-8', 'replace')}", pytrace=False)
    return Backend(proc, int(line.split()[1]), stderr)


class BackendFactory:
    """Starts backends for one test and stops them all at its end."""

    def __init__(self):
        self.started = []

    def __call__(self, script, *args):
        backend = start_backend(script, *args)
        self.started.append(backend)
        return backend

    def wsgi(self, name="backend"):
        return self("wsgi_backend.py", "--name", name)

    def raw(self, mode, record=None):
        return self("raw_backend.py", "--mode", mode, *(("--record", record) if record else ()))

    def stop_all(self):
        for backend in self.started:
            backend.stop()
        self.started.clear()


# --- the gateway ------------------------------------------------------------

def _connect_address(bind):
    """``host:port`` / ``[v6]:port`` of a bind -> an address to connect to."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return host, int(port)


def _accepts(address):
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


class Gateway:
    """``bin/appgw -c FILE`` as a subprocess, with its output in files.

    The config is written to ``directory/appgw.toml``; stdout (the access
    log) and stderr go to ``stdout.log`` / ``stderr.log`` next to it.
    """

    def __init__(self, toml_text, directory, args=(), wait=True, env=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "appgw.toml"
        self._write(toml_text)
        self.stdout_path = self.directory / "stdout.log"
        self.stderr_path = self.directory / "stderr.log"
        full_env = dict(os.environ, **(env or {}))
        # Unbuffered so access-log lines reach stdout.log as they are written;
        # tests/ on the path so in-process test apps can be named in configs.
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(APPGW), "-c", str(self.config_path), *args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                cwd=self.directory, env=full_env)
        if wait:
            self.wait_ready()

    def _write(self, toml_text):
        self.config_path.write_text(toml_text)
        self.config = tomllib.loads(toml_text)

    @property
    def listeners(self):
        return self.config.get("listeners", [])

    def bind_addresses(self):
        """Addresses to connect to for every listener bind and a configured admin_bind."""
        binds = [listener["bind"] for listener in self.listeners]
        admin = self.config.get("gateway", {}).get("admin_bind")
        if admin:
            binds.append(admin)
        return [_connect_address(b) for b in dict.fromkeys(binds)]

    def wait_ready(self, timeout=STARTUP_TIMEOUT):
        """Waits until every bind accepts TCP; fails with stderr if appgw exits."""
        deadline = time.monotonic() + timeout
        for address in self.bind_addresses():
            while not _accepts(address):
                if self.proc.poll() is not None:
                    pytest.fail(f"appgw exited with {self.proc.returncode} before "
                                f"listening on {address}:\n{self.stderr_text()}", pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"appgw not listening on {address} after {timeout}s:\n"
                                f"{self.stderr_text()}", pytrace=False)
                time.sleep(POLL_INTERVAL)
        if self.proc.poll() is not None:  # something else held the port?
            pytest.fail(f"appgw exited with {self.proc.returncode}:\n{self.stderr_text()}",
                        pytrace=False)

    def port(self, listener_index=0):
        return _connect_address(self.listeners[listener_index]["bind"])[1]

    def url(self, path="/", listener_index=0, host=None):
        listener = self.listeners[listener_index]
        scheme = "https" if listener.get("protocol") == "https" else "http"
        bind_host, port = _connect_address(listener["bind"])
        host = host or (f"[{bind_host}]" if ":" in bind_host else bind_host)
        return f"{scheme}://{host}:{port}{path}"

    def admin_url(self, path="/"):
        host, port = _connect_address(self.config["gateway"]["admin_bind"])
        return f"http://{host}:{port}{path}"

    def stdout_text(self):
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self):
        return self.stderr_path.read_text(errors="replace")

    def wait_for_output(self, text, stream="stderr", timeout=10):
        """Waits until ``text`` appears in stdout or stderr; returns the whole text."""
        read = self.stderr_text if stream == "stderr" else self.stdout_text

        def seen():
            output = read()
            return output if text in output else None

        return wait_until(seen, timeout, message=f"{text!r} in appgw's {stream}")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, new_text):
        """Rewrites the config and sends SIGHUP (does not wait for the outcome)."""
        self._write(new_text)
        self.send_signal(signal.SIGHUP)

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class GatewayFactory:
    """Starts gateways for one test; stops them and shows their stderr at its end."""

    def __init__(self, directory):
        self.directory, self.started = Path(directory), []

    def __call__(self, toml_text, args=(), wait=True, env=None, **values):
        """``{name}`` in ``toml_text`` is replaced by ``values[name]``.

        Plain replacement, not str.format: TOML inline tables use braces.
        """
        for name, value in values.items():
            toml_text = toml_text.replace("{" + name + "}", str(value))
        gateway = Gateway(toml_text, self.directory / f"gw{len(self.started)}",
                          args=args, wait=wait, env=env)
        self.started.append(gateway)
        return gateway

    def stop_all(self):
        for gateway in self.started:
            gateway.stop()
            # Shown by pytest only when the test failed.
            print(f"--- appgw stderr ({gateway.directory}) ---\n{gateway.stderr_text()}")
        self.started.clear()


# Backend settings "settings" with probe "probe" (GET /health every 30 s),
# for configs written out in full.
SETTINGS_AND_PROBE = """
[[backend_settings]]
name = "settings"
request_timeout = 5
connect_timeout = 2
probe = "probe"

[[probes]]
name = "probe"
path = "/health"
interval = 30
timeout = 2
"""


def gateway_config(servers=(), app="", gateway="", settings="", pool="",
                   listener_name="web", rule_name="main", header_timeout=5,
                   idle_timeout=5, request_timeout=5, probe_port=0, probe_timeout=2,
                   probe_interval=30, admin=False, access_log="-"):
    """One http listener -> one rule -> one pool of ``servers``, on ``{port}``
    (start it with ``gateway_factory(text, port=free_port())``).

    The probe asks /health (the test backends answer 404 on /), so the
    servers are healthy as soon as the first probe answers. Faulty backends
    would fail their probe: ``probe_port`` sends it to a healthy backend
    instead, so that the fault under test is met by real traffic.
    ``admin``: the admin endpoint on a free port (for /metrics and
    /backend-health), else none.
    """
    server_list = ", ".join(f'"{s}"' for s in servers)
    admin_bind = f"127.0.0.1:{free_port()}" if admin else ""
    return f"""
[gateway]
admin_bind = "{admin_bind}"
access_log = "{access_log}"
client_header_timeout = {header_timeout}
client_idle_timeout = {idle_timeout}
{gateway}

[[listeners]]
name = "{listener_name}"
bind = "127.0.0.1:{{port}}"
protocol = "http"

[[backend_pools]]
name = "pool"
servers = [{server_list}]
{f'app = "{app}"' if app else ""}
{pool}

[[backend_settings]]
name = "settings"
request_timeout = {request_timeout}
connect_timeout = 2
probe = "probe"
{settings}

[[probes]]
name = "probe"
path = "/health"
port = {probe_port}
interval = {probe_interval}
timeout = {probe_timeout}

[[rules]]
name = "{rule_name}"
listener = "{listener_name}"
backend_pool = "pool"
backend_settings = "settings"
"""


def connect(gw, timeout=5):
    """A client socket to the gateway's first listener."""
    return socket.create_connection(("127.0.0.1", gw.port()), timeout=timeout)


def run_appgw(*args, timeout=30, cwd=None):
    """Runs ``bin/appgw ARGS`` to completion (``--check``, ``--version``, bad configs)."""
    return subprocess.run([sys.executable, str(APPGW), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


# --- raw sockets ------------------------------------------------------------

def raw_request(port, data, timeout=5, host="127.0.0.1", ssl_context=None,
                server_hostname="localhost"):
    """Sends ``data`` as-is and returns every byte read until close or timeout."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if ssl_context is not None:
        sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
    received = []
    with sock:
        sock.sendall(data)
        try:
            while piece := sock.recv(65536):
                received.append(piece)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(received)


class _KeepOpen:
    """A file that ignores close(): http.client closes its file after each
    response, but the buffered reader must survive for the next (pipelined)
    one, since it may already hold that response's bytes."""

    def __init__(self, f):
        self._f = f

    def __getattr__(self, name):
        return getattr(self._f, name)

    def close(self):
        pass


class _FileAsSocket:
    def __init__(self, f):
        self._f = f

    def makefile(self, mode):
        return self._f


_readers = weakref.WeakKeyDictionary()


def socket_reader(sock):
    """The one buffered reader of ``sock`` shared by read_http_response calls
    (read leftovers, e.g. WebSocket frames after a 101, from it)."""
    if sock not in _readers:
        _readers[sock] = sock.makefile("rb")
    return _readers[sock]


def read_http_response(sock, method="GET"):
    """Reads one response from ``sock``: ``(status, headers, body)``.

    ``headers`` is an http.client.HTTPMessage (case-insensitive, ordered
    ``.items()``). Responses can be read one after another from the same
    socket (pipelining). Note: http.client skips ``100 Continue`` answers.
    """
    response = http.client.HTTPResponse(_FileAsSocket(_KeepOpen(socket_reader(sock))),
                                        method=method)
    response.begin()
    return response.status, response.headers, response.read()


# --- process facts ----------------------------------------------------------

def rss_kb(pid):
    """Resident memory of ``pid`` in KiB (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def open_fds(pid):
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def child_pids(pid):
    """Direct children of ``pid`` (the workers when ``workers > 1``)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    return children
