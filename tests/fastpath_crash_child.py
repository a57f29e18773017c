"""A gateway in a box with a bug in it, run by tests/test_fastpath_crash.py.

`python fastpath_crash_child.py CASE` serves one HTTP bind through the real
listener (control.listener.BindServer -> downstream.h1.Connection) over a
real Config and Snapshot, in front of a tiny keep-alive backend, all on
127.0.0.1 in this one gevent process, patched as appgw patches itself. A
client connection warms a pooled backend connection with a first request;
its second request, which the fast path takes from libev callbacks, meets
a bug (an exception that is neither a ClientError nor a BackendError) put
there through what the gateway is handed, not by patching its code:

  routing   the site's Host look-up raises (FastPath.begin, in on_client);
            no backend connection is bound yet
  rules     the target's response rules raise (Exchange.respond, in
            on_backend), with the request out on the pooled connection
  counting  the counters raise when the request is logged (Exchange.finish,
            in the held send of the answer, from coalesce's flush), after
            the whole answer went out and the connection was pooled

Then a second client asks on a new connection. The last line on stdout is
the JSON verdict; the test asserts on it.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import gevent  # noqa: E402
from gevent import get_hub, getcurrent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from appgw.acme.manager import AcmeManager  # noqa: E402
from appgw.config import parse_config  # noqa: E402
from appgw.control.accesslog import AccessLog  # noqa: E402
from appgw.control.listener import BindServer, bind_socket  # noqa: E402
from appgw.control.stats import Stats  # noqa: E402
from appgw.routing.router import ListenerRoutes, Site  # noqa: E402
from appgw.routing.snapshot import build_snapshot  # noqa: E402
from appgw.upstream.balancer import Backend  # noqa: E402

WAIT = 5    # seconds any one expected event may take

CONFIG = """
[gateway]
access_log = ""
client_header_timeout = 10
client_idle_timeout = 10

[[listeners]]
name = "web"
bind = "127.0.0.1:{port}"
protocol = "http"
host_names = ["good.test", "take.bug", "rules.bug"]

[[listeners]]
name = "counted"
bind = "127.0.0.1:{port}"
protocol = "http"
host_names = ["count.bug"]

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{backend}"]

[[backend_settings]]
name = "settings"
request_timeout = 10
connect_timeout = 2
probe = "probe"

[[probes]]
name = "probe"
path = "/health"
interval = 30
timeout = 2

[[rules]]
name = "main"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"

[[rules]]
name = "counted"
listener = "counted"
backend_pool = "pool"
backend_settings = "settings"
"""


class InjectedBug(RuntimeError):
    pass


# --- the backend --------------------------------------------------------------

class KeepAliveBackend:
    """Answers every request `200 ok` (Content-Length) and keeps the
    connection; notes, by the gateway's source port, how many requests each
    connection carried and when the gateway closed it."""

    def __init__(self):
        self.requests = {}      # gateway-side port -> requests answered
        self.ended = {}         # gateway-side port -> Event set at EOF
        self.server = StreamServer(("127.0.0.1", 0), self.serve)
        self.server.start()
        self.port = self.server.server_port

    def serve(self, sock, address):
        port = address[1]
        self.requests[port] = 0
        self.ended[port] = Event()
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")
                self.requests[port] += 1
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            self.ended[port].set()
            sock.close()

    def is_open(self, port):
        return port in self.ended and not self.ended[port].is_set()


# --- what the gateway is handed: the bugs --------------------------------------

class RaisingResponseRules:
    """A rewrite set whose response phase has a bug."""
    has_request = False
    has_response = True

    def request(self, view):
        return None

    def response(self, view, lines, status=200, headers=None):
        raise InjectedBug("a bug in the response rules")


class BuggySite(Site):
    """The config's site, with a bug for two Host names: take.bug's look-up
    raises; rules.bug routes to the pool's own servers under rules that
    raise."""

    def __init__(self, site):
        super().__init__(site.bind, site.listeners, site.pages)
        web = site.listener_for(b"rules.bug")
        real = web.default
        self.rules_bug = ListenerRoutes(web.listener, web.rule,
                                        Backend(real.pool, real.settings, real.endpoints, RaisingResponseRules()),
                                        {}, [])
        self.rules_bug.pages = web.pages

    def listener_for(self, host):
        name = host.partition(b":")[0]
        if name == b"take.bug":
            raise InjectedBug("a bug in the Host look-up")
        if name == b"rules.bug":
            return self.rules_bug
        return super().listener_for(host)


class BuggyStats(Stats):
    """Counters with a bug for one listener's requests."""

    def finished(self, entry, now=None):
        if entry.listener == "counted":
            raise InjectedBug("a bug in the counters")
        super().finished(entry, now)


class Runtime:
    """What Connection, Exchange and BindServer ask of the process."""

    def __init__(self, config, snapshot):
        self.config = config
        self.snapshot = snapshot
        self.stats = BuggyStats()
        self.access_log = AccessLog("", "combined")
        self.acme = AcmeManager()     # the real one, with no ACME listener: it answers nothing
        self.stopping = False
        self.stop_requested = Event()
        self.connections = set()
        self.sessions = set()


# --- the log ------------------------------------------------------------------

class Recorder(logging.Handler):
    """Every record of the "appgw" logger, with where it was logged from."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        frames = [f.name for f in traceback.extract_tb(record.exc_info[2])] if record.exc_info else []
        self.records.append({
            "message": record.getMessage(),
            "level": record.levelname,
            "error": type(record.exc_info[1]).__name__ if record.exc_info else None,
            "frames": frames,
            "callers": [f.name for f in traceback.extract_stack()][:-2],   # how the loop got there
            "in_hub": getcurrent() is get_hub(),   # a libev callback, not a connection's greenlet
        })


# --- the client ---------------------------------------------------------------

def get(host):
    return b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()


def read_answer(sock):
    """One Content-Length answer's bytes, or what came before EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


def until_eof(sock):
    """(bytes, closed): what the gateway still sends, and whether it closed
    the connection within WAIT seconds."""
    data = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                return data, True
            data += piece
    except socket.timeout:
        return data, False


def status_of(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def main(case):
    recorder = Recorder()
    appgw_log = logging.getLogger("appgw")
    appgw_log.addHandler(recorder)
    appgw_log.setLevel(logging.DEBUG)
    appgw_log.propagate = False

    backend = KeepAliveBackend()
    listening = bind_socket("127.0.0.1", 0)
    port = listening.getsockname()[1]
    config = parse_config(CONFIG.format(port=port, backend=backend.port), "crash.toml")
    snapshot = build_snapshot(config, lambda *_: None)
    bind = ("127.0.0.1", port)
    snapshot.sites[bind] = BuggySite(snapshot.sites[bind])
    runtime = Runtime(config, snapshot)
    server = BindServer(bind, listening, runtime)
    server.start()
    (endpoint,) = snapshot.endpoints.values()

    verdict = {"case": case}
    client = socket.create_connection(bind, timeout=WAIT)
    client.sendall(get("good.test"))
    verdict["first_status"] = status_of(read_answer(client))
    pooled = [s.getsockname()[1] for s in endpoint.idle]
    verdict["pooled_before"] = len(pooled)

    client.sendall(get({"routing": "take.bug", "rules": "rules.bug", "counting": "count.bug"}[case]))
    data, closed = until_eof(client)
    client.close()
    verdict["bug_answer_status"] = status_of(data)
    verdict["bug_answer_bytes"] = len(data)
    verdict["bug_connection_closed"] = closed

    # The backend connection the second request was given: closed by the
    # gateway (the backend sees its EOF), or still open.
    warm = pooled[0] if pooled else None
    if case == "rules" and warm in backend.ended:
        backend.ended[warm].wait(WAIT)
    verdict["warm_connection_requests"] = backend.requests.get(warm)
    verdict["warm_connection_open"] = backend.is_open(warm)
    verdict["active_after_bug"] = endpoint.active
    verdict["idle_after_bug"] = [{"open_here": s.fileno() >= 0, "open_at_backend": backend.is_open(s.getsockname()[1]),
                                  "port": s.getsockname()[1]} for s in endpoint.idle]

    other = socket.create_connection(bind, timeout=WAIT)
    other.sendall(get("good.test"))
    answer = read_answer(other)
    other.close()
    verdict["other_status"] = status_of(answer)
    verdict["other_body"] = answer.partition(b"\r\n\r\n")[2].decode("latin-1")
    verdict["active_at_end"] = endpoint.active

    crashes = [r for r in recorder.records if r["message"].startswith("internal error")]
    verdict["internal_errors"] = crashes
    verdict["errors_logged"] = [r["message"] for r in recorder.records if r["level"] in ("ERROR", "CRITICAL")]
    server.stop_accepting()
    backend.server.stop()
    print(json.dumps(verdict), flush=True)


if __name__ == "__main__":
    gevent.spawn(main, sys.argv[1]).get()
