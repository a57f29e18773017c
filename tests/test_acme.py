"""Automatic HTTPS against a real ACME CA: Pebble, Let's Encrypt's test server.

Each test starts pebble-challtestsrv as the DNS server (answering 127.0.0.1
for the test's names only) and Pebble with its httpPort/tlsPort set to the
gateway's listener ports, so Pebble's validation connections reach appgw.
Pebble's own HTTPS certificate is a self-signed one made here; it is the
gateway's acme_trusted_root. Clients trust Pebble's root and intermediate,
fetched from its management API.
"""
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import time

import pytest
import requests
import websocket
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from requests.adapters import HTTPAdapter

from harness import child_pids, free_port, make_cert, wait_until
from test_status_page import Browser, chromium_or_skip

HAVE_PEBBLE = shutil.which("pebble") is not None and shutil.which("pebble-challtestsrv") is not None
# .ci/run installs Pebble: there a missing one is a failure; elsewhere these tests are left out.
if not HAVE_PEBBLE and os.environ.get("CI"):
    pytest.fail("the pebble package (pebble, pebble-challtestsrv) is not installed", pytrace=False)
pytestmark = pytest.mark.skipif(not HAVE_PEBBLE, reason="the pebble package (pebble, pebble-challtestsrv) "
                                "is not installed; .ci/run installs it")


class Pebble:
    """pebble-challtestsrv plus pebble, as subprocesses logging to files."""

    def __init__(self, directory, http_port, tls_port, names, validity=None, blocklist=(), acme_port=None):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.tls = make_cert(directory, prefix="pebble-")
        self.acme_port = acme_port or free_port()
        self.management_port = free_port()
        self.dns_port, dns_management = free_port(), free_port()
        self.chall_log = open(directory / "challtestsrv.log", "wb")
        self.challtestsrv = subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{dns_management}"],
            stdout=self.chall_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.dns_api = f"http://127.0.0.1:{dns_management}"
        wait_until(lambda: _accepts(dns_management), message="pebble-challtestsrv")
        for name in names:
            requests.post(self.dns_api + "/add-a", json={"host": name, "addresses": ["127.0.0.1"]},
                          timeout=5).raise_for_status()
        self.config = {"listenAddress": f"127.0.0.1:{self.acme_port}",
                       "managementListenAddress": f"127.0.0.1:{self.management_port}",
                       "certificate": self.tls.cert, "privateKey": self.tls.key,
                       "httpPort": http_port, "tlsPort": tls_port,
                       "ocspResponderURL": "", "externalAccountBindingRequired": False,
                       "domainBlocklist": list(blocklist)}
        if validity:
            self.config["certificateValidityPeriod"] = validity
        self.proc = None
        self.start()

    def start(self):
        (self.directory / "pebble.json").write_text(json.dumps({"pebble": self.config}))
        self.log_path = self.directory / f"pebble-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(self.directory / "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        wait_until(lambda: self.proc.poll() is not None or b"ACME directory available" in self.log_path.read_bytes(),
                   message="pebble to start")
        assert self.proc.poll() is None, self.log_path.read_text()

    def restart(self, **changes):
        """A new Pebble on the same ports (new CA keys, no memory of orders)."""
        self.stop_pebble()
        self.config.update(changes)
        self.start()

    @property
    def directory_url(self):
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def orders(self):
        """How many orders this Pebble run accepted, from its own log."""
        return self.log_path.read_text().count("Added order")

    def trust_bundle(self, path):
        """Pebble's root and intermediate (regenerated every run), for clients."""
        api = f"https://127.0.0.1:{self.management_port}"
        pems = [requests.get(api + part, verify=self.tls.cert, timeout=5).text
                for part in ("/roots/0", "/intermediates/0")]
        path.write_text("\n".join(pems))
        return str(path)

    def stop_pebble(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()

    def stop(self):
        self.stop_pebble()
        if self.challtestsrv.poll() is None:
            self.challtestsrv.terminate()
            self.challtestsrv.wait(10)
        self.chall_log.close()


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def pebble_factory(tmp_path):
    started = []

    def start(**kwargs):
        pebble = Pebble(tmp_path / f"pebble{len(started)}", **kwargs)
        started.append(pebble)
        return pebble

    yield start
    for pebble in started:
        pebble.stop()
        print(f"--- pebble log ---\n{pebble.log_path.read_text()}")


# --- the gateway --------------------------------------------------------------------

def gateway_text(pebble, backend, tls_port, names, http_port=None, storage="", workers=1, extra_https=""):
    """An ACME https listener for `names` on tls_port; an http listener on
    http_port (redirecting to https) when given; the admin endpoint."""
    http = f"""
[[listeners]]
name = "web"
bind = "127.0.0.1:{http_port}"

[[rules]]
name = "to-https"
listener = "web"
redirect = {{ listener = "secure" }}
""" if http_port else ""
    return f"""
[gateway]
workers = {workers}
admin_bind = "127.0.0.1:{free_port()}"
access_log = "-"
acme_directory = "{pebble.directory_url}"
acme_email = "admin@example.com"
acme_trusted_root = "{pebble.tls.cert}"
acme_http_port = {http_port or 80}
acme_tls_port = {tls_port}
{f'acme_storage = "{storage}"' if storage else ""}

[[listeners]]
name = "secure"
bind = "127.0.0.1:{tls_port}"
protocol = "https"
host_names = {json.dumps(names)}
acme = true
{extra_https}
[[backend_pools]]
name = "app"
servers = ["{backend.address}"]

[[rules]]
name = "main"
listener = "secure"
backend_pool = "app"
{http}"""


def served(port, name, cafile=None):
    """The leaf certificate a handshake for `name` gets (verified against
    cafile when given), or None when the handshake fails."""
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    except (ssl.SSLError, OSError):
        return None


def get_as(name, port, cafile, path="/"):
    """`requests` GET https://name:port/path, connecting to 127.0.0.1 (the
    test names are in no resolver) with SNI and verification for `name`."""
    session = requests.Session()
    adapter = HTTPAdapter()
    session.mount("https://", adapter)
    adapter.poolmanager.connection_pool_kw.update(server_hostname=name, assert_hostname=name)
    return session.get(f"https://127.0.0.1:{port}{path}", headers={"Host": name}, verify=cafile, timeout=5)


def certificates(gw):
    return requests.get(gw.admin_url("/certificates"), timeout=5).json()["certificates"]


def san(cert):
    return sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.DNSName))


def issued(port, name, bundle, timeout=30):
    return wait_until(lambda: served(port, name, bundle), timeout=timeout, interval=0.1,
                      message=f"a certificate for {name}")


# --- issuance -----------------------------------------------------------------------

def test_first_certificate_over_http01(pebble_factory, gateway_factory, backend_factory, tmp_path):
    """Both challenges possible: HTTP-01 is used, answered on the http
    listener before its rule (a redirect) sees the request; one SAN
    certificate (ECDSA P-256) covers both names; a requests client that
    trusts Pebble's chain gets the backend through it; the files are 0600."""
    backend = backend_factory("ws_backend.py")
    http_port, tls_port = free_port(), free_port()
    pebble = pebble_factory(http_port=http_port, tls_port=tls_port, names=["a.test", "b.test"])
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["a.test", "b.test"], http_port=http_port))
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")

    cert = issued(tls_port, "a.test", bundle)
    assert san(cert) == ["a.test", "b.test"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    for name in ("a.test", "b.test"):
        response = get_as(name, tls_port, bundle)
        assert (response.status_code, response.text) == (200, "ok\n")
    assert "answering http-01 for a.test" in gw.stderr_text()
    assert "tls-alpn-01" not in gw.stderr_text()
    challenge_lines = [line for line in gw.stdout_text().splitlines() if "/.well-known/acme-challenge/" in line]
    assert challenge_lines and all('" 200 ' in line and "listener=web" in line for line in challenge_lines)
    # Any other path on that listener still gets its rule: the redirect.
    assert requests.get(f"http://127.0.0.1:{http_port}/x", allow_redirects=False, timeout=5).status_code == 301
    assert pebble.orders() == 1

    storage = gw.directory / "acme"
    files = [p for p in storage.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"account.key", "certificate.pem", "status.json"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in storage.rglob("*") if p.is_dir())
    stored = next(p for p in files if p.name == "certificate.pem").read_bytes()
    key = load_pem_private_key(stored, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()

    entry, = certificates(gw)
    assert entry["source"] == "acme" and entry["names"] == ["a.test", "b.test"]
    assert entry["signed_by"].startswith("CN=Pebble Intermediate CA")
    assert entry["serial"] == format(cert.serial_number, "x")
    assert entry["last_renewal"]["ok"] is True
    metrics = requests.get(gw.admin_url("/metrics"), timeout=5).text
    gauge = 'appgw_certificate_expiry_seconds{listener="secure"}'
    sample = next(line for line in metrics.splitlines() if line.startswith(gauge))
    assert float(sample.split()[-1]) > 3600


def test_tls_alpn01_alone(pebble_factory, gateway_factory, backend_factory, tmp_path):
    """No http listener on the CA's HTTP port (nothing listens there): the
    certificate comes over TLS-ALPN-01 on the https listener itself."""
    backend = backend_factory("ws_backend.py")
    tls_port = free_port()
    pebble = pebble_factory(http_port=free_port(), tls_port=tls_port, names=["alpn.test"])
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["alpn.test"]))
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")

    cert = issued(tls_port, "alpn.test", bundle)
    assert san(cert) == ["alpn.test"]
    assert get_as("alpn.test", tls_port, bundle).text == "ok\n"
    log = gw.stderr_text()
    assert "answering tls-alpn-01 for alpn.test" in log and "TLS-ALPN-01 validation handshake for alpn.test" in log
    assert "http-01" not in log
    assert pebble.orders() == 1


def test_restart_reuses_the_stored_certificate(pebble_factory, gateway_factory, backend_factory, tmp_path):
    """A second gateway on the same storage serves the stored certificate
    from its first handshake and orders nothing (Pebble counts 1 order)."""
    backend = backend_factory("ws_backend.py")
    tls_port = free_port()
    storage = tmp_path / "acme-storage"
    pebble = pebble_factory(http_port=free_port(), tls_port=tls_port, names=["keep.test"])
    text = gateway_text(pebble, backend, tls_port, ["keep.test"], storage=storage)
    first = gateway_factory(text)
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")
    serial = issued(tls_port, "keep.test", bundle).serial_number
    first.stop()

    second = gateway_factory(text)
    assert served(tls_port, "keep.test", bundle).serial_number == serial
    assert get_as("keep.test", tls_port, bundle).text == "ok\n"
    assert "using the stored certificate" in second.stderr_text()
    assert "ordering" not in second.stderr_text()
    assert certificates(second)[0]["serial"] == format(serial, "x")
    assert pebble.orders() == 1


def test_reload_with_a_new_name_orders_it(pebble_factory, gateway_factory, backend_factory, tmp_path):
    """SIGHUP with host_names grown by one: a new certificate covering both
    is ordered and served, without a restart."""
    backend = backend_factory("ws_backend.py")
    tls_port = free_port()
    pebble = pebble_factory(http_port=free_port(), tls_port=tls_port, names=["one.test", "two.test"])
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["one.test"]))
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")
    issued(tls_port, "one.test", bundle)
    assert served(tls_port, "two.test", bundle) is None

    pid = gw.proc.pid
    gw.reload(gateway_text(pebble, backend, tls_port, ["one.test", "two.test"]))
    cert = issued(tls_port, "two.test", bundle)
    assert san(cert) == ["one.test", "two.test"]
    assert gw.proc.pid == pid and gw.proc.poll() is None
    assert pebble.orders() == 2


# --- renewal --------------------------------------------------------------------------

def test_renewal_swaps_the_certificate_under_an_open_websocket(pebble_factory, gateway_factory,
                                                               backend_factory, tmp_path):
    """Pebble issues 15-second certificates, so renewal (a third of the
    lifetime left) comes 10 s after issuance: new handshakes get the new
    certificate while a WebSocket opened before it keeps its own and goes
    on carrying messages."""
    backend = backend_factory("ws_backend.py")
    tls_port = free_port()
    pebble = pebble_factory(http_port=free_port(), tls_port=tls_port, names=["renew.test"], validity=15)
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["renew.test"]))
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")
    first = issued(tls_port, "renew.test", bundle)

    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
    tls = ssl.create_default_context(cafile=bundle).wrap_socket(raw, server_hostname="renew.test")
    ws = websocket.create_connection(f"wss://renew.test:{tls_port}/echo", socket=tls, timeout=10)
    ws.send("before")
    assert ws.recv() == "before"

    second = wait_until(lambda: (c := served(tls_port, "renew.test", bundle)) is not None
                        and c.serial_number != first.serial_number and c, timeout=30, interval=0.2,
                        message="the renewed certificate")
    assert second.not_valid_after_utc > first.not_valid_after_utc
    ws.send("after")
    assert ws.recv() == "after"
    assert x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number == first.serial_number
    ws.close()
    assert "new certificate in use, serial %x" % second.serial_number in gw.stderr_text()
    assert pebble.orders() >= 2


def test_rejected_renewal_keeps_the_old_certificate(pebble_factory, gateway_factory, backend_factory, tmp_path):
    """The CA (a new Pebble that blocks the name) rejects the renewal order:
    the old certificate stays in use, and the log and /certificates carry
    the CA's problem type and detail."""
    backend = backend_factory("ws_backend.py")
    tls_port = free_port()
    pebble = pebble_factory(http_port=free_port(), tls_port=tls_port, names=["refused.test"], validity=15)
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["refused.test"]))
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")
    serial = issued(tls_port, "refused.test", bundle).serial_number

    pebble.restart(domainBlocklist=["refused.test"])
    gw.wait_for_output("the order failed: urn:ietf:params:acme:error:rejectedIdentifier", timeout=30)
    assert served(tls_port, "refused.test").serial_number == serial
    entry, = certificates(gw)
    assert entry["serial"] == format(serial, "x")
    assert entry["last_renewal"]["ok"] is False
    assert "rejectedIdentifier" in entry["last_renewal"]["result"]
    assert "refused.test" in entry["last_renewal"]["result"]     # Pebble's detail names it
    assert entry["next_attempt"] is not None
    assert "keeping the certificate valid until" in gw.stderr_text()


def test_without_a_certificate_yet_the_handshake_fails(pebble_factory, gateway_factory, backend_factory,
                                                      tmp_path, certs):
    """An order the CA rejects from the start: handshakes for that name fail
    (with a log line saying why), never with another listener's certificate,
    while a file-certificate listener on the same bind serves on."""
    backend = backend_factory("ws_backend.py")
    tls_port = free_port()
    pebble = pebble_factory(http_port=free_port(), tls_port=tls_port, names=["never.test"],
                            blocklist=["never.test"])
    other = f"""
[[listeners]]
name = "files"
bind = "127.0.0.1:{tls_port}"
protocol = "https"
host_names = ["localhost"]
certificate = "{certs.cert}"
private_key = "{certs.key}"

[[rules]]
name = "files"
listener = "files"
backend_pool = "app"
"""
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["never.test"], extra_https=other))
    gw.wait_for_output("the order failed: urn:ietf:params:acme:error:rejectedIdentifier")
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
            ssl._create_unverified_context().wrap_socket(raw, server_hostname="never.test")
    gw.wait_for_output('listener "secure" (never.test): TLS handshake for never.test refused: '
                       'no certificate yet (the last order failed: urn:ietf:params:acme:error:rejectedIdentifier')
    assert served(tls_port, "localhost", certs.cert) is not None
    by_listener = {e["listener"]: e for e in certificates(gw)}
    assert by_listener["secure"]["problem"] == "no certificate yet"
    assert "rejectedIdentifier" in by_listener["secure"]["last_renewal"]["result"]
    assert by_listener["files"]["source"] == "file" and by_listener["files"]["file"] == certs.cert
    metrics = requests.get(gw.admin_url("/metrics"), timeout=5).text
    assert 'appgw_certificate_expiry_seconds{listener="files"}' in metrics
    assert 'appgw_certificate_expiry_seconds{listener="secure"}' not in metrics
    status = requests.get(gw.admin_url("/status.json"), timeout=5).json()
    shown = {e["listener"]: e["warning"] for e in status["certificates"]}
    assert shown == {"secure": "no certificate yet", "files": None}

    # The status page, as a browser draws it: the ACME row flagged, the file one not.
    browser = Browser(chromium_or_skip(), tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=gw.admin_url("/"))
        rows = wait_until(lambda: json.loads(browser.evaluate(READ_CERTIFICATES)), timeout=15, interval=0.2,
                          message="the certificate table on the status page")
    finally:
        browser.close()
    assert rows == {"secure": {"warning": "no certificate yet", "flagged": True},
                    "files": {"warning": "", "flagged": False}}


READ_CERTIFICATES = """JSON.stringify(Object.fromEntries([...document.querySelectorAll("tr[data-certificate]")]
  .map(tr => [tr.dataset.certificate, {warning: tr.querySelector("[data-warning]").dataset.warning,
              flagged: tr.querySelector("[data-warning]").classList.contains("err")}])))"""


# --- workers --------------------------------------------------------------------------

def test_two_workers_make_one_order(pebble_factory, gateway_factory, backend_factory, tmp_path):
    """workers = 2: one process orders (the storage lock), the other picks
    the stored result up; Pebble sees one order and every handshake, on
    whichever worker, gets the certificate."""
    backend = backend_factory("ws_backend.py")
    http_port, tls_port = free_port(), free_port()
    pebble = pebble_factory(http_port=http_port, tls_port=tls_port, names=["pair.test"])
    gw = gateway_factory(gateway_text(pebble, backend, tls_port, ["pair.test"], http_port=http_port, workers=2))
    bundle = pebble.trust_bundle(tmp_path / "pebble-roots.pem")
    issued(tls_port, "pair.test", bundle)
    workers = set(child_pids(gw.proc.pid))
    in_use = re.compile(r'listener "secure" \(pair\.test\): (?:new certificate in use|picked up the certificate '
                        r'another worker obtained|using the stored certificate), .* \(pid (\d+)\)')
    serving = wait_until(lambda: len(pids := {int(p) for p in in_use.findall(gw.stderr_text())}) == 2 and pids,
                         message="both workers serving the certificate")
    assert serving == workers
    log = gw.stderr_text()
    assert log.count("ordering a certificate") == 1
    serials = {served(tls_port, "pair.test", bundle).serial_number for _ in range(20)}
    assert len(serials) == 1
    assert pebble.orders() == 1
