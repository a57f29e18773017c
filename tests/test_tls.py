"""TLS: https listeners, SNI, https backends, stalled handshakes (SPEC 3, 4;
issue 2 items 4 and 5)."""
import json
import socket
import ssl
import time

import pytest
import requests

from harness import SETTINGS_AND_PROBE, BackendFactory, GatewayFactory, free_port, make_cert, read_http_response

GATEWAY = """
[gateway]
admin_bind = ""
access_log = "-"
client_header_timeout = {header_timeout}
"""



def https_listener(name, bind, cert, host_names="[]"):
    return (f'\n[[listeners]]\nname = "{name}"\nbind = "{bind}"\nprotocol = "https"\n'
            f'host_names = {host_names}\ncertificate = "{cert.cert}"\n'
            f'private_key = "{cert.key}"\n')


def rule(name, listener, pool, settings="settings"):
    return (f'\n[[rules]]\nname = "{name}"\nlistener = "{listener}"\n'
            f'backend_pool = "{pool}"\nbackend_settings = "{settings}"\n')


def pool(name, server):
    return f'\n[[backend_pools]]\nname = "{name}"\nservers = ["{server}"]\n'


def client_context(cafile=None, minimum=None, maximum=None):
    context = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if minimum or maximum:
        # Let the client offer old versions, so that a refusal is the server's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = minimum or ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum or ssl.TLSVersion.MAXIMUM_SUPPORTED
    return context


def peer_certificate(port, server_hostname, context=None):
    """The DER certificate the server presents for ``server_hostname``."""
    return handshake(port, server_hostname, context)[0]


def handshake(port, server_hostname, context=None):
    """(DER certificate, decoded certificate or {} when unverified, TLS version)."""
    context = context or client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.getpeercert(binary_form=True), tls.getpeercert(), tls.version()


def pem_to_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# --- an https listener -------------------------------------------------------------

@pytest.fixture(scope="module")
def https_gateway(tmp_path_factory, wsgi_backend, certs):
    """One https listener in front of the session backend, shared by the module."""
    factory = GatewayFactory(tmp_path_factory.mktemp("https-gw"))
    text = (GATEWAY + https_listener("secure", "127.0.0.1:{port}", certs) +
            pool("app", wsgi_backend.address) + SETTINGS_AND_PROBE + rule("main", "secure", "app"))
    yield factory(text, port=free_port(), header_timeout=1.5)
    factory.stop_all()


def test_https_listener_serves_with_its_certificate(https_gateway, certs):
    gw = https_gateway
    r = requests.get(gw.url("/echo"), verify=certs.cert, timeout=5)
    assert r.status_code == 200
    headers = {k.lower(): v for k, v in r.json()["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-port"] == str(gw.port())
    der, _, version = handshake(gw.port(), "localhost", client_context(certs.cert))
    assert der == pem_to_der(certs.cert)
    assert version in ("TLSv1.2", "TLSv1.3")


def test_https_keepalive_and_large_body(https_gateway, certs):
    with requests.Session() as session:
        # verify per request: REQUESTS_CA_BUNDLE in the environment beats session.verify
        def get(path):
            return session.get(https_gateway.url(path), verify=certs.cert, timeout=5)
        ports = {get("/echo").json()["remote_port"] for _ in range(3)}
        body = get("/bytes?n=2000000").content
    assert len(ports) == 1
    assert len(body) == 2_000_000


def test_tls_1_2_is_accepted(https_gateway):
    _, _, version = handshake(https_gateway.port(), "localhost",
                              client_context(maximum=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1],
                         ids=["TLSv1.1", "TLSv1.0"])
def test_tls_older_than_1_2_is_refused(https_gateway, maximum):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        peer_certificate(https_gateway.port(), "localhost", client_context(maximum=maximum))
    # And the listener goes on serving.
    _, _, version = handshake(https_gateway.port(), "localhost")
    assert version in ("TLSv1.2", "TLSv1.3")


def test_plain_http_on_an_https_listener_is_not_served(https_gateway):
    with socket.create_connection(("127.0.0.1", https_gateway.port()), timeout=3) as sock:
        sock.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
    assert b"session" not in data


def test_stalled_handshake_is_dropped_after_client_header_timeout(https_gateway, certs):
    gw = https_gateway
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=5) as stalled:
        started = time.monotonic()
        # Meanwhile other clients are served.
        r = requests.get(gw.url("/name"), verify=certs.cert, timeout=5)
        assert (r.status_code, r.text) == (200, "session")
        assert time.monotonic() - started < 1.2
        try:
            data = stalled.recv(1024)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
    assert data == b""
    assert 1.3 < elapsed < 3.5, elapsed


def test_partial_client_hello_is_dropped(https_gateway):
    """A handshake that starts and then stalls counts the same as one that never starts."""
    hello_start = bytes.fromhex("160301")  # a handshake record header, nothing more
    with socket.create_connection(("127.0.0.1", https_gateway.port()), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(hello_start)
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
    assert data == b""
    assert 1.3 < elapsed < 3.5, elapsed


# --- SNI on a shared bind --------------------------------------------------------

@pytest.fixture(scope="module")
def sni_gateway(tmp_path_factory):
    """Three https listeners on one bind, each with its own certificate."""
    directory = tmp_path_factory.mktemp("sni")
    cert_a = make_cert(directory, cn="a.test", sans=("a.test",), prefix="a-")
    cert_b = make_cert(directory, cn="b.test", sans=("b.test",), prefix="b-")
    cert_w = make_cert(directory, cn="*.wild.test", sans=("*.wild.test",), prefix="w-")
    backend_factory, gateway_factory = BackendFactory(), GatewayFactory(directory)
    backends = {name: backend_factory.wsgi(name) for name in ("A", "B", "W")}
    bind = "127.0.0.1:{port}"
    text = (GATEWAY + https_listener("a", bind, cert_a, '["a.test"]') +
            https_listener("b", bind, cert_b, '["b.test"]') +
            https_listener("w", bind, cert_w, '["*.wild.test"]') + SETTINGS_AND_PROBE +
            "".join(pool(n, b.address) for n, b in backends.items()) +
            rule("ra", "a", "A") + rule("rb", "b", "B") + rule("rw", "w", "W"))
    gw = gateway_factory(text, port=free_port(), header_timeout=2)
    gw.certs = {"a.test": cert_a, "b.test": cert_b, "x.wild.test": cert_w}
    yield gw
    gateway_factory.stop_all()
    backend_factory.stop_all()


def test_sni_picks_the_certificate(sni_gateway):
    gw = sni_gateway
    served_by_der = {pem_to_der(c.cert): n for n, c in gw.certs.items()}
    for name, expected_cn in (("a.test", "a.test"), ("b.test", "b.test"),
                              ("x.wild.test", "*.wild.test")):
        served = served_by_der.get(peer_certificate(gw.port(), name), "another certificate")
        assert served == name, f"SNI {name}: got the certificate for {served}"
        # Verified against that certificate alone: its SAN covers the name.
        _, decoded, _ = handshake(gw.port(), name, client_context(gw.certs[name].cert))
        assert dict(item[0] for item in decoded["subject"])["commonName"] == expected_cn


def test_sni_and_host_route_to_the_listener_rule(sni_gateway):
    gw = sni_gateway
    for name, backend in (("a.test", "A"), ("b.test", "B"), ("x.wild.test", "W")):
        context = client_context(gw.certs[name].cert)
        with socket.create_connection(("127.0.0.1", gw.port()), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:  # verifies the name
                tls.sendall(f"GET /name HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
                status, _, body = read_http_response(tls)
        assert (status, body.decode()) == (200, backend), name


# --- https backends ----------------------------------------------------------------

HTTPS_BACKENDS = GATEWAY + """
[[listeners]]
name = "web"
bind = "127.0.0.1:{port}"
protocol = "http"

[[backend_pools]]
name = "tls"
servers = ["{backend}"]

[[backend_settings]]
name = "trusted"
protocol = "https"
request_timeout = 5
connect_timeout = 2
verify_tls = true
trusted_root = "{root}"
probe = "probe"

[[backend_settings]]
name = "system-store"
protocol = "https"
request_timeout = 5
connect_timeout = 2
verify_tls = true
probe = "probe"

[[backend_settings]]
name = "unverified"
protocol = "https"
request_timeout = 5
connect_timeout = 2
verify_tls = false
probe = "probe"

[[probes]]
name = "probe"
path = "/health"
interval = 30
timeout = 2

[[rules]]
name = "main"
listener = "web"
backend_pool = "tls"
backend_settings = "trusted"
  [[rules.paths]]
  paths = ["/system/*"]
  backend_pool = "tls"
  backend_settings = "system-store"
  [[rules.paths]]
  paths = ["/unverified/*"]
  backend_pool = "tls"
  backend_settings = "unverified"
"""


@pytest.fixture
def tls_backend(backend_factory, tmp_path):
    cert = make_cert(tmp_path, prefix="backend-")
    backend = backend_factory("tls_backend.py", "--any-path", "--name", "tls",
                              "--certfile", cert.cert, "--keyfile", cert.key)
    backend.cert = cert
    return backend


def test_https_backend_verified_with_trusted_root(gateway_factory, tls_backend):
    gw = gateway_factory(HTTPS_BACKENDS, port=free_port(), header_timeout=2,
                         backend=tls_backend.address, root=tls_backend.cert.cert)
    with requests.Session() as session:
        for _ in range(3):
            r = session.get(gw.url("/hello?x=1"), timeout=5)
            assert r.status_code == 200, r.text
            assert r.json() == {"name": "tls", "method": "GET", "path": "/hello",
                                "query": "x=1", "host": f"127.0.0.1:{gw.port()}"}


def test_https_backend_untrusted_certificate_is_502(gateway_factory, tls_backend):
    gw = gateway_factory(HTTPS_BACKENDS, port=free_port(), header_timeout=2,
                         backend=tls_backend.address, root=tls_backend.cert.cert)
    r = requests.get(gw.url("/system/x"), timeout=5)
    assert r.status_code == 502
    assert '"name"' not in r.text  # the backend never answered


def test_https_backend_without_verification(gateway_factory, tls_backend, certs):
    # trusted_root names an unrelated CA: verify_tls = false must not care.
    gw = gateway_factory(HTTPS_BACKENDS, port=free_port(), header_timeout=2,
                         backend=tls_backend.address, root=certs.cert)
    r = requests.get(gw.url("/unverified/y"), timeout=5)
    assert r.status_code == 200, r.text
    assert json.loads(r.text)["path"] == "/unverified/y"
    # The verifying settings with the wrong root refuse the same server.
    assert requests.get(gw.url("/z"), timeout=5).status_code == 502


def test_https_listener_to_https_backend(gateway_factory, tls_backend, certs):
    text = (GATEWAY + https_listener("secure", "127.0.0.1:{port}", certs) +
            pool("tls", tls_backend.address) + """
[[backend_settings]]
name = "settings"
protocol = "https"
trusted_root = "{root}"
request_timeout = 5
probe = "probe"

[[probes]]
name = "probe"
path = "/health"
interval = 30
timeout = 2
""" + rule("main", "secure", "tls"))
    gw = gateway_factory(text, port=free_port(), header_timeout=2, root=tls_backend.cert.cert)
    r = requests.get(gw.url("/through"), verify=certs.cert, timeout=5)
    assert (r.status_code, r.json()["path"]) == (200, "/through")


def test_late_bytes_on_a_pooled_https_backend_connection_never_answer_another_client(
        gateway_factory, backend_factory, tmp_path):
    """The backend answers, then 0.3 s later sends bytes nobody asked for on
    the kept-alive TLS connection. The next client's GET must not get them
    as its answer: the connection is dropped, not reused."""
    cert = make_cert(tmp_path, prefix="backend-")
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfirst\n"
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSMUGGLED\n"
    backend = backend_factory("canned_backend.py", "--hex", answer.hex(), "--later", stray.hex(),
                              "--then", "hold", "--certfile", cert.cert, "--keyfile", cert.key)
    gw = gateway_factory(HTTPS_BACKENDS, port=free_port(), header_timeout=2,
                         backend=backend.address, root=cert.cert)
    first = requests.get(gw.url("/a"), timeout=5)       # a connection each
    assert (first.status_code, first.text) == (200, "first\n")
    time.sleep(0.6)    # the stray bytes arrive at the idle pooled connection meanwhile
    second = requests.get(gw.url("/b"), timeout=5)
    assert (second.status_code, second.text) == (200, "first\n")
