"""The request corpus (tests/corpus/*.http, format in its README.md), run twice.

- Pure: each case through `policy.parse_request` (and `http1.ChunkedDecoder`
  for chunked bodies), exactly as the connection handler strings them
  together, must give the expected status; accepted heads must re-serialize
  (`backend_head`) to one clean request.
- Live: each case sent over a raw socket to one running gateway in front of a
  backend that records every byte it receives. A refused case gets its status,
  its connection closed, nothing at the backend, and the next connection is
  served. An accepted case reaches the backend as exactly the requests it
  holds, re-serialized.
"""
import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest

from appgw.http.early import HeadScanner, early_verdict
from appgw.http.errors import ClientError
from appgw.http.h1 import CHUNKED, LAST_CHUNK, LENGTH, ChunkedDecoder, FramingError, chunk
from appgw.http.policy import backend_head, parse_request
from harness import Gateway, free_port, read_http_response, start_backend

CORPUS = Path(__file__).resolve().parent / "corpus"
# The test gateway's limits; the pure run applies the same ones.
MAX_BODY_SIZE = 1024
MAX_HEADER_SIZE = 8192
CLIENT_IP = b"127.0.0.1"
PROBE_PATH = "/__corpus_probe__"

# Hop-by-hop headers (SPEC 4) that never reach a backend outside a WebSocket handshake.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
              b"te", b"trailer", b"upgrade", b"proxy-connection"}
GATEWAY_ADDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host")
# Names a client may list in Connection that the gateway still sends, set by itself.
SET_BY_GATEWAY = {b"host", b"content-length", b"transfer-encoding", *GATEWAY_ADDED}


# --- the corpus format ----------------------------------------------------------

_TOKENS = {b"CR": b"\r", b"LF": b"\n", b"VT": b"\x0b", b"TAB": b"\t", b"SP": b" ", b"NUL": b"\x00"}
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})|\\\\|<(CR|LF|VT|TAB|SP|NUL)>|<PAD:([0-9]+)>")


def decode(text: bytes) -> bytes:
    """The escapes of the corpus format (`\\xHH`, `\\\\`, `<CR>`..., `<PAD:N>`)."""
    def replace(match):
        if match.group(1):
            return bytes([int(match.group(1), 16)])
        if match.group(2):
            return _TOKENS[match.group(2)]
        if match.group(3):
            return b"a" * int(match.group(3))
        return b"\\"
    return _ESCAPE.sub(replace, text)


@dataclass(repr=False)
class Case:
    name: str
    expect: int
    raw: bytes
    notes: list = field(default_factory=list)
    requests: int = 1
    target: bytes = None
    headers: list = field(default_factory=list)   # [(lower-case name, value)]
    lacks: list = field(default_factory=list)     # [lower-case name]
    body: bytes = None

    @property
    def unfinished(self):
        """The case never ends its (first) head: only an early verdict answers it."""
        return b"\r\n\r\n" not in self.raw

    def __str__(self):
        return self.name

    __repr__ = __str__


def load_case(path: Path) -> Case:
    lines = path.read_bytes().split(b"\n")
    case = Case(name=path.stem, expect=0, raw=b"")
    while lines and lines[0].startswith(b"#"):
        key, _, value = lines.pop(0)[1:].strip().partition(b":")
        key, value = key.strip().decode(), value.strip()
        if key == "expect":
            case.expect = int(value)
        elif key == "note":
            case.notes.append(value.decode())
        elif key == "requests":
            case.requests = int(value)
        elif key == "backend-target":
            case.target = decode(value)
        elif key == "backend-header":
            name, _, header_value = decode(value).partition(b":")
            case.headers.append((name.strip().lower(), header_value.strip()))
        elif key == "backend-lacks":
            case.lacks.append(value.lower())
        elif key == "backend-body":
            case.body = decode(value)
        else:
            raise ValueError(f"{path.name}: unknown key {key!r}")
    if case.expect not in (200, 400, 405, 413, 431, 501):
        raise ValueError(f"{path.name}: missing or unknown '# expect:'")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's final newline ends the last line; it adds no empty line
    raw = []
    for line in lines:
        if line.endswith(b"<NOEOL>"):
            raw.append(decode(line[:-len(b"<NOEOL>")]))
        else:
            raw.append(decode(line) + b"\r\n")
    case.raw = b"".join(raw)
    return case


def load_corpus():
    return [load_case(path) for path in sorted(CORPUS.glob("*.http"))]


CASES = load_corpus()
ACCEPTED = [case for case in CASES if case.expect == 200]
REFUSED = [case for case in CASES if case.expect != 200]


@pytest.mark.sansio
def test_corpus_is_well_formed():
    names = [case.name for case in CASES]
    numbers = [name.split("-", 1)[0] for name in names]
    assert len(CASES) >= 60
    assert len(set(numbers)) == len(numbers), "two files share a number"
    assert all(re.fullmatch(r"[0-9]{3}", n) for n in numbers)
    assert {case.expect for case in CASES} == {200, 400, 405, 413, 431, 501}


# --- the policy alone, as the connection handler strings it together ----------------

def run_policy(raw: bytes):
    """(status, [(Request, body)]): 200 and every message when all are accepted,
    else the status of the first refused one. Mirrors proxy.Connection: empty
    lines before a request are skipped, a head longer than max_header_size is
    431, a Content-Length body is counted, a chunked one decoded."""
    buf, messages = raw, []
    while True:
        buf = buf.lstrip(b"\r\n")
        if not buf:
            return 200, messages
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            # An unfinished head: the gateway judges it as far as it came.
            if len(buf) > MAX_HEADER_SIZE:
                return 431, messages
            error = early_verdict(buf)
            assert error is not None, "corpus case ends inside a head that is not wrong yet: the gateway would wait"
            return error.status, messages
        head, buf = buf[:end + 4], buf[end + 4:]
        if len(head) > MAX_HEADER_SIZE:
            return 431, messages
        try:
            req = parse_request(head, MAX_BODY_SIZE)
        except ClientError as error:
            return error.status, messages
        body = b""
        if req.framing == LENGTH:
            assert len(buf) >= req.content_length, "corpus case ends inside a body"
            body, buf = buf[:req.content_length], buf[req.content_length:]
        elif req.framing == CHUNKED:
            decoder = ChunkedDecoder()
            try:
                body = b"".join(decoder.feed(buf))
            except FramingError:
                return 400, messages
            if decoder.total > MAX_BODY_SIZE:
                return 413, messages
            assert decoder.done, "corpus case ends inside a chunked body"
            buf = decoder.rest
        messages.append((req, body))


def reframed(req, body):
    """What the gateway sends after the head: a Content-Length body as is, a
    chunked one re-chunked (the chunk sizes depend on reads, not the content)."""
    if req.framing == CHUNKED:
        return (chunk(body) if body else b"") + LAST_CHUNK
    return body


# --- forwarded requests, parsed back with h11 ---------------------------------------
# h11 is a second, independent HTTP/1.1 parser (the gateway's is llhttp), and
# it takes any token as a method, as a backend must for extension methods.

class Forwarded:
    """One request as a backend parsed it."""

    def __init__(self, event):
        self.method, self.url = bytes(event.method), bytes(event.target)
        self.headers = [(bytes(n), bytes(v)) for n, v in event.headers.raw_items()]
        self.version = event.http_version.decode()
        self.body = b""

    def values(self, name):
        return [v for n, v in self.headers if n.lower() == name]

    def __repr__(self):
        return f"<{self.method.decode()} {self.url!r} {self.headers!r} body={self.body!r}>"


def parse_forwarded(data: bytes, upgrade_ok=False):
    """Every request in `data`; fails unless it is a clean sequence of whole
    requests (none proposing an upgrade, unless `upgrade_ok`)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")      # the end: a request cut short is an error
    done, current = [], None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            pytest.fail(f"forwarded bytes do not parse ({exc}): {data!r}")
        if type(event) is h11.Request:
            current = Forwarded(event)
        elif type(event) is h11.Data:
            current.body += bytes(event.data)
        elif type(event) is h11.EndOfMessage:
            done.append(current)
            if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                assert upgrade_ok, f"forwarded request announces an upgrade: {data!r}"
                return done
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        else:
            assert type(event) is h11.ConnectionClosed, (event, data)
            return done


def check_reserialized(msg: Forwarded, req, port: bytes):
    """The invariants of every request a backend gets (SPEC 4)."""
    names = [n.lower() for n, _ in msg.headers]
    assert msg.version == "1.1"
    assert names.count(b"host") == 1, msg
    assert not (b"transfer-encoding" in names and b"content-length" in names), msg
    assert names.count(b"content-length") <= 1, msg
    assert msg.values(b"transfer-encoding") in ([], [b"chunked"]), msg
    for name in HOP_BY_HOP:
        assert name not in names, f"hop-by-hop {name!r} forwarded: {msg}"
    for name in req.drop - SET_BY_GATEWAY:
        assert name not in names, f"{name!r} is listed in Connection but was forwarded: {msg}"
    for name in GATEWAY_ADDED:
        assert names.count(name) == 1, f"{name!r} not set exactly once: {msg}"
    assert msg.values(b"x-forwarded-for")[0].endswith(CLIENT_IP)
    assert msg.values(b"x-forwarded-proto") == [b"http"]
    assert msg.values(b"x-forwarded-port") == [port]
    assert msg.values(b"x-original-host") == [req.host]
    assert msg.values(b"host") == [req.host]
    assert msg.method == req.method


def check_case_keys(case: Case, msg: Forwarded):
    """The case's own `backend-*` expectations, on the first forwarded request."""
    if case.target is not None:
        assert msg.url == case.target
    for name, value in case.headers:
        assert msg.values(name) == [value], f"{name!r}: {msg}"
    for name in case.lacks:
        assert name not in [n.lower() for n, _ in msg.headers], f"{name!r} forwarded: {msg}"
    if case.body is not None:
        assert msg.body == case.body


@pytest.mark.sansio
@pytest.mark.parametrize("case", CASES, ids=str)
def test_policy(case):
    status, messages = run_policy(case.raw)
    assert status == case.expect, f"{case.name}: {case.notes}"
    if status != 200:
        return
    assert len(messages) == case.requests
    for index, (req, body) in enumerate(messages):
        data = backend_head(req, req.host, b"http", b"8080", CLIENT_IP) + reframed(req, body)
        forwarded = parse_forwarded(data)
        assert len(forwarded) == 1, forwarded
        check_reserialized(forwarded[0], req, b"8080")
        assert forwarded[0].body == body
        if index == 0:
            check_case_keys(case, forwarded[0])


def first_head_verdict(raw: bytes):
    """(status, reason) of the first request's head alone (200, "" if accepted)."""
    buf = raw.lstrip(b"\r\n")
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        error = early_verdict(buf)
    else:
        try:
            parse_request(buf[:end + 4], MAX_BODY_SIZE)
            error = None
        except ClientError as exc:
            error = exc
    return (200, "") if error is None else (error.status, error.reason)


@pytest.mark.parametrize("case", [c for c in CASES if len(c.raw.lstrip(b"\r\n").split(b"\r\n\r\n")[0]) <= 4096],
                         ids=str)
def test_early_verdict_agrees(case):
    """Cut anywhere before its end, the first head is either not judged yet
    or judged as the whole head is: fresh, and fed byte by byte to one
    scanner as a slow client sends it."""
    buf = case.raw.lstrip(b"\r\n")
    end = buf.find(b"\r\n\r\n")
    whole = first_head_verdict(case.raw)
    scanner, judged = HeadScanner(), None
    for size in range(1, (len(buf) if end < 0 else end + 3) + 1):
        prefix = buf[:size]
        fresh = early_verdict(prefix)
        if judged is None:
            judged = scanner.verdict(prefix)
            assert (judged is None) == (fresh is None), prefix
        for error in (fresh, judged):
            if error is not None:
                assert (error.status, error.reason) == whole, prefix


# --- the running gateway ----------------------------------------------------------

GATEWAY_TOML = """
[gateway]
admin_bind = ""
access_log = ""
max_body_size = {max_body}
max_header_size = {max_header}
client_header_timeout = 5

[[listeners]]
name = "corpus"
bind = "127.0.0.1:{port}"

[[backend_pools]]
name = "recorder"
servers = ["127.0.0.1:{backend_port}"]

[[backend_settings]]
name = "recorder-settings"
probe = "rare"

[[probes]]
name = "rare"
path = "{probe_path}"
interval = 3600

[[rules]]
name = "all"
listener = "corpus"
backend_pool = "recorder"
backend_settings = "recorder-settings"
"""


class Recorded:
    """What the record backend wrote, read incrementally."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def skip(self):
        """Forget everything recorded so far."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def new(self):
        """{conn: bytes} received since the last skip(), probe connections left out."""
        if not self.path.exists():
            return {}
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8")
        by_conn = {}
        for line in text.splitlines():
            item = json.loads(line)
            by_conn[item["conn"]] = by_conn.get(item["conn"], b"") + item["data"].encode("latin-1")
        return {conn: data for conn, data in by_conn.items()
                if not data.startswith(b"GET " + PROBE_PATH.encode())}


@pytest.fixture(scope="module")
def corpus_gateway(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    record = directory / "record.jsonl"
    backend = start_backend("raw_backend.py", "--mode", "record", "--record", str(record))
    port = free_port()
    text = GATEWAY_TOML
    for name, value in dict(max_body=MAX_BODY_SIZE, max_header=MAX_HEADER_SIZE, port=port,
                            backend_port=backend.port, probe_path=PROBE_PATH).items():
        text = text.replace("{" + name + "}", str(value))
    gateway = Gateway(text, directory / "gw")
    try:
        yield gateway, Recorded(record)
    finally:
        gateway.stop()
        backend.stop()
        print(f"--- appgw stderr ---\n{gateway.stderr_text()}")


def read_until_close(sock, timeout=5):
    """Every byte until the peer closes; fails when it keeps the connection open."""
    sock.settimeout(timeout)
    received = b""
    try:
        while piece := sock.recv(65536):
            received += piece
    except socket.timeout:
        pytest.fail(f"connection still open after {timeout}s; received {received!r}", pytrace=False)
    except ConnectionResetError:
        pass  # closed all the same; what arrived before the RST is in `received`
    return received


def served_normally(port, path):
    """A plain GET on a new connection; returns its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        return read_http_response(sock)[0]


def forwarded_requests(recorded, expected=None, timeout=5):
    """The requests the backend got since the last skip(), all connections
    together (each connection's bytes must be whole requests)."""
    deadline = time.monotonic() + timeout
    while True:
        requests = []
        for data in recorded.new().values():
            requests += parse_forwarded(data)
        if expected is None or len(requests) >= expected or time.monotonic() > deadline:
            return requests
        time.sleep(0.02)


@pytest.mark.parametrize("case", REFUSED, ids=str)
def test_refused_live(corpus_gateway, case):
    gateway, recorded = corpus_gateway
    port = gateway.port()
    recorded.skip()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(case.raw)
        # An unfinished head must be answered well before client_header_timeout (5 s).
        answer = read_until_close(sock, timeout=2 if case.unfinished else 5)
    assert answer.startswith(b"HTTP/1."), f"no response before close: {answer!r}"
    status_line = answer.split(b"\r\n", 1)[0]
    assert int(status_line.split()[1]) == case.expect, f"{case.name}: {status_line!r} ({case.notes})"
    # Anything forwarded would have been sent before the answer; give the
    # backend a moment to record it, then a normal request must be all it got.
    time.sleep(0.05)
    marker = "/after-" + case.name
    assert served_normally(port, marker) == 200
    got = forwarded_requests(recorded, expected=1)
    assert [msg.url for msg in got] == [marker.encode()], \
        f"{case.name} reached the backend: {recorded.new()!r}"


@pytest.mark.parametrize("case", ACCEPTED, ids=str)
def test_accepted_live(corpus_gateway, case):
    gateway, recorded = corpus_gateway
    port = gateway.port()
    status, messages = run_policy(case.raw)
    assert status == 200, "the pure test fails too"
    recorded.skip()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(case.raw)
        for _ in range(case.requests):
            status, _, _ = read_http_response(sock)
            assert status == 200, case.name
    got = forwarded_requests(recorded, expected=case.requests)
    assert len(got) == case.requests, got
    port_bytes = str(port).encode()
    for msg, (req, body) in zip(got, messages):
        check_reserialized(msg, req, port_bytes)
        assert msg.body == body
    check_case_keys(case, got[0])
    # Re-serialized, not copied: the backend got exactly the heads policy builds.
    data = b"".join(recorded.new().values())
    for req, _ in messages:
        head = backend_head(req, req.host, b"http", port_bytes, CLIENT_IP)
        assert head in data, f"expected head {head!r} not in {data!r}"


# --- bodies refused after the head went on ---------------------------------------------

def complete_requests(data: bytes) -> int:
    """How many whole requests a backend could have acted on in `data`."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    complete = 0
    try:
        while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if type(event) is h11.EndOfMessage:
                complete += 1
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
    except h11.RemoteProtocolError:
        pass
    return complete


@pytest.mark.parametrize("late, status", [
    (b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n", 400),     # a chunk size int() would take
    (b"5\nhello\r\n0\r\n\r\n", 400),                      # a bare LF
    (b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n", 413),   # past max_body_size
], ids=["bad-size", "bare-lf", "too-large"])
def test_late_chunked_error_never_completes_a_request_at_the_backend(corpus_gateway, late, status):
    """Bodies are streamed, so the head and the chunks before a bad one may
    already be at the backend; the request must never be complete there."""
    gateway, recorded = corpus_gateway
    port = gateway.port()
    recorded.skip()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /late HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.3)
        sock.sendall(late)
        answer = read_until_close(sock)
    assert answer.split(b"\r\n", 1)[0].split()[1] == str(status).encode(), answer
    time.sleep(0.1)
    assert all(complete_requests(data) == 0 for data in recorded.new().values()), recorded.new()
    assert served_normally(port, "/after-late") == 200
