"""Automatic HTTPS without a CA: the ClientHello reader, the challenge
answers, the renewal and retry schedule, the storage, the config checks and
what --check prints. Socket-free (marked sansio) except a run of the real
command and a client facing a CA that is not there."""
import datetime
import hashlib
import os
import ssl
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appgw.acme import challenges as ch
from appgw.acme.schedule import next_action, parse_retry_after, renewal_time, retry_delay
from appgw.acme.store import CertInfo, CertStore, new_private_key, slot_name, write_private
from appgw.config import ConfigError, parse_config
from appgw.http.tlshello import NotClientHello, parse_client_hello
from harness import run_appgw


# --- the ClientHello -------------------------------------------------------------------

def client_hello(server_name, alpn):
    """The bytes Python's own TLS client sends first."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.sansio
def test_client_hello_gives_sni_and_alpn():
    hello = parse_client_hello(client_hello("Alpn.Test", ["acme-tls/1"]))
    assert hello.server_name == "alpn.test" and hello.alpn == (b"acme-tls/1",)
    assert ch.offers_only_acme_tls(hello.alpn)
    hello = parse_client_hello(client_hello("a.test", ["h2", "http/1.1"]))
    assert hello.alpn == (b"h2", b"http/1.1") and not ch.offers_only_acme_tls(hello.alpn)
    assert parse_client_hello(client_hello("a.test", None)).alpn == ()


@pytest.mark.sansio
def test_client_hello_incomplete_split_or_not_tls():
    data = client_hello("a.test", ["acme-tls/1"])
    for cut in (0, 3, 5, 40, len(data) - 1):
        assert parse_client_hello(data[:cut]) is None
    # The same handshake message carried by two records.
    body = data[5:]
    split = data[:3] + (20).to_bytes(2, "big") + body[:20] + data[:3] + (len(body) - 20).to_bytes(2, "big") + body[20:]
    assert parse_client_hello(split) == parse_client_hello(data)
    with pytest.raises(NotClientHello):
        parse_client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(NotClientHello):     # a handshake record that is no ClientHello
        parse_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00")


# --- HTTP-01 ------------------------------------------------------------------------------

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


@pytest.mark.sansio
def test_http01_answer_only_for_pending_well_formed_tokens():
    pending = {TOKEN: TOKEN + ".thumbprint"}
    assert ch.http01_answer(b"/.well-known/acme-challenge/" + TOKEN.encode(), pending.get) == \
        (TOKEN + ".thumbprint").encode()
    for path in (b"/.well-known/acme-challenge/" + b"x" * 43,          # not pending
                 b"/.well-known/acme-challenge/../../account.key",    # not a token: never a file name
                 b"/.well-known/acme-challenge/short",
                 b"/.well-known/acme-challenge/",
                 b"/" + TOKEN.encode()):
        assert ch.http01_answer(path, pending.get) is None


# --- TLS-ALPN-01 --------------------------------------------------------------------------

@pytest.mark.sansio
def test_tls_alpn_certificate_carries_the_key_authorization_digest():
    cert_pem, key_pem = ch.tls_alpn_certificate("a.test", "token.thumb")
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.test"]
    ext = cert.extensions.get_extension_for_oid(ch.ID_PE_ACME_IDENTIFIER)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"token.thumb").digest()
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


@pytest.mark.sansio
def test_challenge_preference():
    both = [ch.HTTP01, ch.TLS_ALPN01]
    assert ch.preferred_challenges(both) == [ch.HTTP01, ch.TLS_ALPN01]
    assert ch.preferred_challenges(both, [ch.HTTP01]) == [ch.TLS_ALPN01, ch.HTTP01]
    assert ch.preferred_challenges([ch.TLS_ALPN01], [None]) == [ch.TLS_ALPN01]


# --- the schedule -------------------------------------------------------------------------

@pytest.mark.sansio
def test_renewal_at_a_third_of_the_lifetime_left():
    day = 86400
    assert renewal_time(0, 90 * day) == 60 * day
    info = CertInfo((), "", "1", 1000.0, 1090.0)
    assert next_action(1050.0, info, {}) == ("wait", pytest.approx(10.0))
    assert next_action(1060.0, info, {}) == ("order", 0.0)
    assert next_action(5.0, None, {}) == ("order", 0.0)


@pytest.mark.sansio
def test_failures_back_off_and_honour_retry_after():
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert retry_delay(30) == 4 * 3600
    assert retry_delay(1, retry_after=3600) == 3600
    assert retry_delay(3, retry_after=5) == 240
    info = CertInfo((), "", "1", 0.0, 90.0)
    failed = {"ok": False, "retry_at": 200.0}
    assert next_action(100.0, info, failed) == ("wait", pytest.approx(100.0))
    assert next_action(100.0, None, failed) == ("wait", pytest.approx(100.0))
    assert next_action(200.0, info, failed) == ("order", 0.0)
    assert next_action(100.0, info, {"ok": True, "retry_at": 200.0}) == ("order", 0.0)


@pytest.mark.sansio
def test_parse_retry_after():
    now = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.timezone.utc).timestamp()
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now) == 3600
    assert parse_retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now) == 0
    for value in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(value, now) is None


# --- storage ------------------------------------------------------------------------------

def self_signed(names, days=30):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(0xABC).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.sansio
def test_store_writes_private_files_atomically(tmp_path):
    store = CertStore(str(tmp_path / "acme"))
    key = store.account_key()
    assert store.account_key() == key       # made once
    slot = slot_name(("a.test", "b.test"), "https://ca/dir")
    key_pem, chain = self_signed(["a.test", "b.test"])
    store.save(slot, key_pem, chain)
    stored = store.load(slot)
    assert stored.pem == key_pem + chain
    assert stored.info.names == ("a.test", "b.test") and stored.info.serial == "abc"
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(stored.path)    # one file: key and chain
    for path in (tmp_path / "acme").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
        assert not path.name.startswith(".tmp-")
    write_private(stored.path, b"replaced")
    assert open(stored.path, "rb").read() == b"replaced"


@pytest.mark.sansio
def test_slot_names_differ_per_name_set_and_ca():
    a = slot_name(("a.test", "b.test"), "https://ca/dir")
    assert a == slot_name(("b.test", "a.test"), "https://ca/dir").replace("b.test-", "a.test-")
    assert a.startswith("a.test-")
    assert a != slot_name(("a.test",), "https://ca/dir")
    assert a != slot_name(("a.test", "b.test"), "https://staging/dir")


@pytest.mark.sansio
def test_order_lock_is_exclusive(tmp_path):
    store = CertStore(str(tmp_path))
    held = store.try_lock("s")
    assert held is not None and store.try_lock("s") is None
    held.close()
    again = store.try_lock("s")
    assert again is not None
    again.close()


# --- config -------------------------------------------------------------------------------

POOL_RULES = """
[[backend_pools]]
name = "app"
servers = ["10.0.0.4"]
[[rules]]
name = "web"
listener = "web"
backend_pool = "app"
[[rules]]
name = "secure"
listener = "secure"
backend_pool = "app"
"""


def acme_config(gateway='acme_directory = "https://acme.example/dir"', secure='host_names = ["a.example"]',
                web_bind="0.0.0.0:80", secure_bind="0.0.0.0:443", web=""):
    return f"""
[gateway]
{gateway}
[[listeners]]
name = "web"
bind = "{web_bind}"
{web}
[[listeners]]
name = "secure"
bind = "{secure_bind}"
protocol = "https"
acme = true
{secure}
""" + POOL_RULES


def problems(text):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "appgw.toml", base_dir="/srv/gw")
    return info.value.problems


@pytest.mark.sansio
def test_acme_config_defaults_and_paths():
    config = parse_config(acme_config(), "appgw.toml", base_dir="/srv/gw")
    gateway = config.gateway
    assert (gateway.acme_storage, gateway.acme_email, gateway.acme_trusted_root) == ("/srv/gw/acme", "", "")
    assert (gateway.acme_http_port, gateway.acme_tls_port) == (80, 443)
    assert config.listener_by_name["secure"].acme and not config.listener_by_name["web"].acme
    other = parse_config(acme_config('acme_directory = "https://acme.example/dir"\nacme_storage = "/var/lib/x"'),
                         "appgw.toml", base_dir="/srv/gw")
    assert other.gateway.acme_storage == "/var/lib/x"


@pytest.mark.sansio
def test_acme_config_errors_name_their_keys(tmp_path):
    assert problems(acme_config(secure='host_names = ["a.example"]\ncertificate = "c.pem"\nprivate_key = "k.pem"')) == [
        "appgw.toml: listeners[1].certificate: not used with acme = true (the certificate comes from the ACME CA)",
        "appgw.toml: listeners[1].private_key: not used with acme = true (the certificate comes from the ACME CA)"]
    assert problems(acme_config(web="acme = true")) == ["appgw.toml: listeners[0].acme: only for https listeners"]
    assert problems(acme_config(secure="")) == [
        "appgw.toml: listeners[1].host_names: required with acme = true: the names to obtain a certificate for"]
    assert problems(acme_config(secure='host_names = ["a.example", "*.example.com"]')) == [
        'appgw.toml: listeners[1].host_names[1]: "*.example.com": a wildcard needs the DNS-01 challenge, '
        'which appgw does not answer; list each name with acme = true']
    assert problems(acme_config(gateway="")) == [
        'appgw.toml: gateway.acme_directory: required: listener "secure" has acme = true']
    assert problems(acme_config(gateway='acme_directory = "http://acme.example/dir"\nacme_email = "me"')) == [
        'appgw.toml: gateway.acme_directory: must be an https:// URL (the ACME directory), '
        'got "http://acme.example/dir"',
        'appgw.toml: gateway.acme_email: must be an e-mail address like "admin@example.com", got "me"']
    assert problems(acme_config(web_bind="0.0.0.0:8080", secure_bind="0.0.0.0:8443")) == [
        "appgw.toml: listeners[1].acme: no challenge can reach this listener: HTTP-01 needs an http listener "
        "on port 80 (gateway.acme_http_port), TLS-ALPN-01 this listener on port 443 (gateway.acme_tls_port); "
        "it is on 8443"]
    (tmp_path / "bad.pem").write_text("nothing\n")
    assert problems(acme_config(
        f'acme_directory = "https://acme.example/dir"\nacme_trusted_root = "{tmp_path}/bad.pem"')) == [
        "appgw.toml: gateway.acme_trusted_root: not a valid PEM CA bundle: [X509: NO_CERTIFICATE_OR_CRL_FOUND] "
        "no certificate or crl found"]


@pytest.mark.sansio
def test_either_challenge_is_enough():
    only_alpn = parse_config(acme_config(web_bind="0.0.0.0:8080"), "appgw.toml", base_dir="/srv")
    assert ch.available_challenges(only_alpn, only_alpn.listener_by_name["secure"]) == [ch.TLS_ALPN01]
    only_http = parse_config(acme_config(secure_bind="0.0.0.0:8443"), "appgw.toml", base_dir="/srv")
    assert ch.available_challenges(only_http, only_http.listener_by_name["secure"]) == [ch.HTTP01]
    forwarded = parse_config(acme_config('acme_directory = "https://acme.example/dir"\nacme_http_port = 8080',
                                         web_bind="0.0.0.0:8080", secure_bind="0.0.0.0:8443"), "appgw.toml",
                             base_dir="/srv")
    assert ch.available_challenges(forwarded, forwarded.listener_by_name["secure"]) == [ch.HTTP01]


def test_check_says_what_is_stored(tmp_path):
    path = tmp_path / "appgw.toml"
    path.write_text(acme_config(secure='host_names = ["a.example", "b.example"]'))
    result = run_appgw("-c", path, "--check")
    assert result.returncode == 0, result.stderr
    assert "  certificate: ACME from https://acme.example/dir (http-01 then tls-alpn-01), stored in " \
           f"{tmp_path}/acme/certificates/a.example-" in result.stdout
    assert "    stored: nothing yet (ordered at start)" in result.stdout
    store = CertStore(str(tmp_path / "acme"))
    slot = slot_name(("a.example", "b.example"), "https://acme.example/dir")
    store.save(slot, *self_signed(["a.example", "b.example"]))
    store.save_status(slot, {"time": time.time(), "ok": False, "result": "urn:x:rateLimited: slow down"})
    result = run_appgw("-c", path, "--check")
    assert "    stored: serial abc from CN=a.example, valid until " in result.stdout
    assert "failed: urn:x:rateLimited: slow down" in result.stdout
    assert not os.path.exists(tmp_path / "acme" / "account.key")    # --check creates nothing


def test_an_unreachable_ca_is_a_connection_failure_with_the_reason(tmp_path):
    """A directory nobody listens on: AcmeError("connection", ...) naming it
    and the socket's reason, and the challenge files are withdrawn."""
    from appgw.acme.client import AcmeClient, AcmeError
    from harness import free_port

    url = f"https://127.0.0.1:{free_port()}/dir"
    client = AcmeClient(url, CertStore(str(tmp_path)).account_key(), timeout=5)

    class Solver:
        withdrawn = False

        def publish(self, *args):
            raise AssertionError("nothing to publish without a CA")

        def withdraw(self):
            Solver.withdrawn = True

    with pytest.raises(AcmeError) as info:
        client.obtain(("a.test",), new_private_key(), {ch.HTTP01: Solver()})
    assert info.value.kind == "connection"
    assert str(info.value) == f"connection: cannot reach {url}: Connection refused"
    assert Solver.withdrawn


@pytest.mark.sansio
def test_certificate_warnings_within_14_days(tmp_path):
    """File certificates too: 10 days left is flagged, 30 days is not; an
    ACME listener with nothing stored says so."""
    from appgw.acme.report import listener_certificate

    config = parse_config(acme_config(), "appgw.toml", base_dir=str(tmp_path))
    entry = listener_certificate(config.listener_by_name["secure"], config.gateway)
    assert (entry["source"], entry["problem"], entry["warning"]) == ("acme", "no certificate yet", "no certificate yet")
    for days, warned in ((10, True), (30, False)):
        key_pem, cert_pem = self_signed(["files.test"], days=days)
        (tmp_path / "c.pem").write_bytes(cert_pem)
        (tmp_path / "k.pem").write_bytes(key_pem)
        files = parse_config(acme_config(secure='host_names = ["a.example"]') + """
[[listeners]]
name = "files"
bind = "0.0.0.0:443"
protocol = "https"
host_names = ["files.test"]
certificate = "c.pem"
private_key = "k.pem"
[[rules]]
name = "files"
listener = "files"
backend_pool = "app"
""", "appgw.toml", base_dir=str(tmp_path))
        entry = listener_certificate(files.listener_by_name["files"], files.gateway)
        assert entry["source"] == "file" and entry["signed_by"] == "CN=files.test"
        if warned:
            assert entry["warning"].startswith("expires within 14 days (9.9") or \
                entry["warning"].startswith("expires within 14 days (10.0")
        else:
            assert entry["warning"] is None


@pytest.mark.sansio
def test_exchange_answers_a_pending_http01_token_before_routing(tmp_path):
    """On an http bind of the CA's port, a GET of a pending token is the
    gateway's own 200 with the key authorization, whatever the rule says;
    any other token, method or bind is routed as usual."""
    from types import SimpleNamespace

    from appgw.control.accesslog import AccessLog
    from appgw.acme.manager import AcmeManager
    from appgw.upstream.balancer import Backend
    from appgw.exchange.exchange import Exchange
    from appgw.routing.router import Redirector
    from appgw.routing.snapshot import build_snapshot
    from appgw.control.stats import Stats

    config = parse_config(acme_config(gateway=f'acme_directory = "https://acme.example/dir"\n'
                                              f'acme_storage = "{tmp_path}"\nadmin_bind = ""\naccess_log = ""')
                          .replace('listener = "web"\nbackend_pool = "app"',
                                   'listener = "web"\nredirect = { listener = "secure" }'), "appgw.toml")
    acme = AcmeManager()
    acme.store = CertStore(str(tmp_path))      # what update() sets, without its greenlets
    acme.http01_binds = frozenset({("0.0.0.0", 80)})
    acme.store.put_challenge(ch.HTTP01, TOKEN, b"TOKEN.thumbprint")
    snapshot = build_snapshot(config, lambda spec: "/nonexistent")

    def take(method, path, bind=("0.0.0.0", 80)):
        down = SimpleNamespace(client_ip="192.0.2.7", client_port=1, site=snapshot.sites[bind],
                               gateway=config.gateway, log=lambda entry: None,
                               runtime=SimpleNamespace(stopping=False, stats=Stats(), acme=acme,
                                                       access_log=AccessLog("", "combined")))
        ex = Exchange(down, b"%s %s HTTP/1.1\r\nHost: a.example\r\n\r\n" % (method, path))
        return ex, ex.take()

    ex, target = take(b"GET", b"/.well-known/acme-challenge/" + TOKEN.encode())
    assert type(target) is ch.ChallengeAnswer
    answer = ex.challenge_answer()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nTOKEN.thumbprint")
    assert b"Content-Length: 16\r\n" in answer and ex.keep and ex.entry.status == 200
    assert type(take(b"GET", b"/.well-known/acme-challenge/" + b"y" * 43)[1]) is Redirector
    assert type(take(b"POST", b"/.well-known/acme-challenge/" + TOKEN.encode())[1]) is Redirector
    assert type(take(b"GET", b"/.well-known/acme-challenge/" + TOKEN.encode(), ("0.0.0.0", 443))[1]) is Backend


@pytest.mark.sansio
def test_an_sni_name_names_no_file_outside_the_challenges():
    from appgw.acme.manager import alpn_challenge_file

    assert alpn_challenge_file("alpn.test") == "alpn.test.pem"
    for name in ("", "../account.key", "../../certificates/a.test-1/certificate", "a/b", ".hidden", "a..b"):
        assert alpn_challenge_file(name) is None, name


def test_a_rate_limit_answer_carries_its_retry_after(tmp_path, certs):
    """A CA (a small real HTTPS server here) that answers newAccount with a
    rateLimited problem and Retry-After: the error has the CA's type and
    detail, its retry_after, and the next try waits that long."""
    import http.server
    import json
    import threading

    from appgw.acme.client import AcmeClient, AcmeError

    class RateLimitedCA(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=b"", headers=()):
            self.send_response(status)
            for name, value in (("Replay-Nonce", "bm9uY2U"), ("Content-Length", str(len(body))), *headers):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            base = "https://127.0.0.1:%d" % self.server.server_port
            self.answer(200, json.dumps({"newNonce": base + "/nonce", "newAccount": base + "/account",
                                         "newOrder": base + "/order"}).encode(),
                        [("Content-Type", "application/json")])

        def do_HEAD(self):
            self.answer(200)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            problem = {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many new accounts"}
            self.answer(429, json.dumps(problem).encode(),
                        [("Content-Type", "application/problem+json"), ("Retry-After", "3600")])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RateLimitedCA)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AcmeClient("https://127.0.0.1:%d/dir" % server.server_port, CertStore(str(tmp_path)).account_key(),
                            trusted_root=certs.cert, timeout=5)
        with pytest.raises(AcmeError) as info:
            client.obtain(("a.test",), new_private_key(), {})
    finally:
        server.shutdown()
        server.server_close()
    assert (info.value.kind, info.value.detail) == ("urn:ietf:params:acme:error:rateLimited", "too many new accounts")
    assert info.value.retry_after == 3600
    assert retry_delay(1, info.value.retry_after) == 3600
