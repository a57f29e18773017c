"""Routing through a running gateway (SPEC 3 rules, issue 2 item 7).

The backends answer every path with JSON naming themselves
(tests/backends/tls_backend.py --any-path), so any path shows which pool
took it.
"""
import json
import os
import socket

import pytest
import requests

from harness import (SETTINGS_AND_PROBE, BackendFactory, GatewayFactory, free_port, raw_request,
                     read_http_response)


GATEWAY = """
[gateway]
admin_bind = ""
access_log = "-"
client_header_timeout = 5
"""


def pools(**servers):
    """``[[backend_pools]]`` sections: name -> server address."""
    return "".join(f'\n[[backend_pools]]\nname = "{name}"\nservers = ["{address}"]\n'
                   for name, address in servers.items())


def any_path_backend(factory, name):
    return factory("tls_backend.py", "--any-path", "--name", name)


@pytest.fixture
def named(backend_factory):
    """``named("A")`` starts an any-path backend called A."""
    return lambda name: any_path_backend(backend_factory, name)


@pytest.fixture(scope="module")
def module_factories(tmp_path_factory):
    """Backends and gateways shared by a module's parametrized tests (start-up is
    the slow part; the gateways are only read from)."""
    backends, gateways = BackendFactory(), GatewayFactory(tmp_path_factory.mktemp("routing"))
    yield backends, gateways
    gateways.stop_all()
    backends.stop_all()


def get(url, **kwargs):
    return requests.get(url, allow_redirects=False, timeout=5, **kwargs)


def who(url, **kwargs):
    r = get(url, **kwargs)
    assert r.status_code == 200, (url, r.status_code, r.text)
    return r.json()["name"]


# --- path-based rules ---------------------------------------------------------------

PATH_RULES = GATEWAY + """
[[listeners]]
name = "web"
bind = "127.0.0.1:{port}"
protocol = "http"
""" + SETTINGS_AND_PROBE + """
{pools}

[[rules]]
name = "main"
listener = "web"
backend_pool = "default"
backend_settings = "settings"
  [[rules.paths]]
  paths = ["/api/*", "/exact"]
  backend_pool = "api"
  backend_settings = "settings"
  [[rules.paths]]
  paths = ["/api/v2/*"]
  backend_pool = "v2"
  backend_settings = "settings"
"""


@pytest.fixture(scope="module")
def path_gateway(module_factories):
    backend_factory, gateway_factory = module_factories
    backends = {name: any_path_backend(backend_factory, name)
                for name in ("default", "api", "v2")}
    text = PATH_RULES.replace("{pools}", pools(**{n: b.address for n, b in backends.items()}))
    return gateway_factory(text, port=free_port())


@pytest.mark.parametrize("path,pool", [
    ("/", "default"),
    ("/other/thing", "default"),
    ("/exact", "api"),                 # exact path
    ("/exact?x=1&y=/api/v2/", "api"),  # query ignored
    ("/exact/", "default"),            # exact means exact
    ("/exactly", "default"),
    ("/api/", "api"),                  # "/api/*" matches "/api/" and below ...
    ("/api/users/7", "api"),
    ("/api", "default"),               # ... not "/api"
    ("/apix", "default"),
    ("/api/v2/", "v2"),                # longest prefix wins
    ("/api/v2/items?q=/api/", "v2"),
    ("/api/v2", "api"),                # not under "/api/v2/", but under "/api/"
    ("/api/v20", "api"),
])
def test_path_rules(path_gateway, path, pool):
    assert who(path_gateway.url(path)) == pool


def test_path_rule_keeps_path_and_query_for_the_backend(path_gateway):
    info = get(path_gateway.url("/api/v2/items?q=1&r=two")).json()
    assert (info["name"], info["path"], info["query"]) == ("v2", "/api/v2/items", "q=1&r=two")


# --- multi-site listeners ---------------------------------------------------------

def multi_site_config(catch_all):
    listeners = [("exact", '["www.example.com", "shop.example.org"]'),
                 ("wild", '["*.example.com"]')]
    if catch_all:
        listeners.append(("rest", "[]"))
    text = GATEWAY
    for name, hosts in listeners:
        text += (f'\n[[listeners]]\nname = "{name}"\nbind = "127.0.0.1:{{port}}"\n'
                 f'protocol = "http"\nhost_names = {hosts}\n')
    text += SETTINGS_AND_PROBE + "{pools}"
    for name, _ in listeners:
        text += (f'\n[[rules]]\nname = "rule-{name}"\nlistener = "{name}"\n'
                 f'backend_pool = "{name}"\nbackend_settings = "settings"\n')
    return text, [name for name, _ in listeners]


def start_multi_site(backend_factory, gateway_factory, catch_all):
    text, names = multi_site_config(catch_all)
    backends = {name: any_path_backend(backend_factory, name) for name in names}
    return gateway_factory(text.replace("{pools}", pools(
        **{n: b.address for n, b in backends.items()})), port=free_port())


@pytest.fixture(scope="module")
def multi_site(module_factories):
    """The multi-site gateway with a catch-all listener."""
    return start_multi_site(*module_factories, catch_all=True)


@pytest.mark.parametrize("host,site", [
    ("www.example.com", "exact"),
    ("WWW.Example.COM", "exact"),          # host names are case-insensitive
    ("www.example.com:8080", "exact"),     # the port is not part of the name
    ("shop.example.org", "exact"),
    ("api.example.com", "wild"),           # wildcard
    ("deep.api.example.com", "wild"),
    ("example.org", "rest"),               # catch-all takes the rest
    ("www.example.com.evil.test", "rest"),
    ("127.0.0.1", "rest"),
])
def test_host_picks_the_listener(multi_site, host, site):
    gw = multi_site
    assert who(gw.url("/x"), headers={"Host": host}) == site


def test_multi_site_without_catch_all_answers_404(backend_factory, gateway_factory):
    gw = start_multi_site(backend_factory, gateway_factory, catch_all=False)
    assert who(gw.url("/x"), headers={"Host": "www.example.com"}) == "exact"
    assert who(gw.url("/x"), headers={"Host": "a.example.com"}) == "wild"
    r = get(gw.url("/x"), headers={"Host": "unknown.test"})
    assert r.status_code == 404
    assert r.text.startswith("404 Not Found\n") and '"name"' not in r.text   # the gateway's answer, no backend's
    # The connection (and the gateway) go on serving after a 404.
    with requests.Session() as session:
        assert session.get(gw.url("/x"), headers={"Host": "nope.test"}).status_code == 404
        r = session.get(gw.url("/x"), headers={"Host": "www.example.com"})
        assert (r.status_code, r.json()["name"]) == (200, "exact")


def test_multi_site_keeps_the_client_host_for_the_backend(multi_site):
    gw = multi_site
    info = get(gw.url("/x"), headers={"Host": "api.example.com"}).json()
    assert (info["name"], info["host"]) == ("wild", "api.example.com")


# --- redirects -------------------------------------------------------------------------

REDIRECTS = GATEWAY + """
[[listeners]]
name = "front"
bind = "127.0.0.1:{front}"
protocol = "http"

[[listeners]]
name = "other"
bind = "127.0.0.1:{other}"
protocol = "http"

[[listeners]]
name = "secure"
bind = "127.0.0.1:{secure}"
protocol = "https"
certificate = "{cert}"
private_key = "{key}"
""" + SETTINGS_AND_PROBE + """
{pools}

[[rules]]
name = "front-rule"
listener = "front"
redirect = { listener = "other", status = 301, include_path = true, include_query = true }
  [[rules.paths]]
  paths = ["/s302/*"]
  redirect = { listener = "other", status = 302, include_path = true, include_query = true }
  [[rules.paths]]
  paths = ["/s303/*"]
  redirect = { listener = "other", status = 303, include_path = true, include_query = true }
  [[rules.paths]]
  paths = ["/s307/*"]
  redirect = { listener = "other", status = 307, include_path = true, include_query = true }
  [[rules.paths]]
  paths = ["/s308/*"]
  redirect = { listener = "other", status = 308, include_path = true, include_query = true }
  [[rules.paths]]
  paths = ["/nopath/*"]
  redirect = { listener = "other", status = 301, include_path = false, include_query = true }
  [[rules.paths]]
  paths = ["/noquery/*"]
  redirect = { listener = "other", status = 301, include_path = true, include_query = false }
  [[rules.paths]]
  paths = ["/tls/*"]
  redirect = { listener = "secure", status = 308, include_path = true, include_query = true }
  [[rules.paths]]
  paths = ["/away/*"]
  redirect = { url = "https://elsewhere.example/landing", status = 302 }
  [[rules.paths]]
  paths = ["/served"]
  backend_pool = "target"
  backend_settings = "settings"

[[rules]]
name = "other-rule"
listener = "other"
backend_pool = "target"
backend_settings = "settings"

[[rules]]
name = "secure-rule"
listener = "secure"
backend_pool = "target"
backend_settings = "settings"
"""


@pytest.fixture(scope="module")
def redirect_gateway(module_factories, certs):
    backend_factory, gateway_factory = module_factories
    target = any_path_backend(backend_factory, "target")
    gw = gateway_factory(REDIRECTS.replace("{pools}", pools(target=target.address)),
                         front=free_port(), other=free_port(), secure=free_port(),
                         cert=certs.cert, key=certs.key)
    gw.other_port, gw.secure_port = gw.port(1), gw.port(2)
    return gw


@pytest.mark.parametrize("path,status", [
    ("/some/page?a=1&b=2", 301),
    ("/s302/page?a=1&b=2", 302),
    ("/s303/page?a=1&b=2", 303),
    ("/s307/page?a=1&b=2", 307),
    ("/s308/page?a=1&b=2", 308),
])
def test_redirect_to_a_listener(redirect_gateway, path, status):
    gw = redirect_gateway
    r = get(gw.url(path), headers={"Host": f"site.example:{gw.port()}"})
    assert r.status_code == status
    assert r.headers["Location"] == f"http://site.example:{gw.other_port}{path}"
    assert "name" not in r.text  # answered by the gateway, not by the backend


def test_redirect_include_path_and_query_off(redirect_gateway):
    gw = redirect_gateway
    r = get(gw.url("/nopath/deep/page?a=1"), headers={"Host": "site.example"})
    assert (r.status_code, r.headers["Location"]) == \
        (301, f"http://site.example:{gw.other_port}/?a=1")
    r = get(gw.url("/noquery/deep/page?a=1"), headers={"Host": "site.example"})
    assert (r.status_code, r.headers["Location"]) == \
        (301, f"http://site.example:{gw.other_port}/noquery/deep/page")


def test_redirect_to_an_https_listener(redirect_gateway, certs):
    gw = redirect_gateway
    r = get(gw.url("/tls/login?next=/home"), headers={"Host": "localhost"})
    assert r.status_code == 308
    location = r.headers["Location"]
    assert location == f"https://localhost:{gw.secure_port}/tls/login?next=/home"
    # And the Location leads somewhere real: the https listener's backend.
    assert requests.get(location, verify=certs.cert, timeout=5).json()["name"] == "target"


def test_redirect_to_a_url(redirect_gateway):
    r = get(redirect_gateway.url("/away/x"))
    assert r.status_code == 302
    assert r.headers["Location"].startswith("https://elsewhere.example/landing")


def test_redirect_rule_next_to_a_served_path(redirect_gateway):
    assert who(redirect_gateway.url("/served")) == "target"
    assert who(redirect_gateway.url("/anything", listener_index=1)) == "target"


# --- absolute-form request targets ---------------------------------------------------

def test_absolute_form_is_routed_by_rules_never_dialled(gateway_factory, named, backend_factory,
                                                        tmp_path):
    bystander_log = tmp_path / "bystander.jsonl"
    bystander = backend_factory.raw("record", record=str(bystander_log))
    backends = {name: named(name) for name in ("default", "api", "v2")}
    gw = gateway_factory(PATH_RULES.replace(
        "{pools}", pools(**{n: b.address for n, b in backends.items()})), port=free_port())
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=5) as sock:
        for path, pool in (("/api/v2/x?q=1", "v2"), ("/api/y", "api"), ("/z", "default")):
            sock.sendall(f"GET http://{bystander.address}{path} HTTP/1.1\r\n"
                         f"Host: {bystander.address}\r\n\r\n".encode())
            status, _, body = read_http_response(sock)
            info = json.loads(body)
            assert (status, info["name"]) == (200, pool)
            assert info["path"] == path.partition("?")[0]
    assert not os.path.exists(bystander_log) or bystander_log.read_text() == ""
    # An absolute form naming a host that does not resolve is routed the same way.
    data = raw_request(gw.port(), b"GET http://no-such-host.invalid:9/api/q HTTP/1.1\r\n"
                                  b"Host: no-such-host.invalid:9\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b'"name": "api"' in data
