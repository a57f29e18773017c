"""Pure tests of routing (appgw.router), compiled from small configs the way
the runtime does it: parse_config -> build_snapshot -> snapshot.sites."""
import pytest

from appgw.config import parse_config
from appgw.http.policy import parse_request
from appgw.routing.router import Redirector, host_name
from appgw.routing.snapshot import build_snapshot

pytestmark = pytest.mark.sansio

POOLS = "".join(f"""
[[backend_pools]]
name = "{name}"
servers = ["10.0.0.1:80"]
""" for name in ("main", "chat", "chat-admin", "ws", "static", "exact", "root",
                 "www", "wild", "wild-api", "rest", "only", "tls-a", "tls-wild", "tls-rest"))

CONFIG = """
[gateway]
admin_bind = ""

# -- path rules on one basic listener ------------------------------------------
[[listeners]]
name = "paths"
bind = "127.0.0.1:8300"

[[rules]]
name = "paths-rule"
listener = "paths"
backend_pool = "main"
  [[rules.paths]]
  paths = ["/chat/*", "/ws"]
  backend_pool = "chat"
  [[rules.paths]]
  paths = ["/chat/admin/*"]
  backend_pool = "chat-admin"
  [[rules.paths]]
  paths = ["/static/*", "/exact"]
  backend_pool = "static"
  [[rules.paths]]
  paths = ["/static/exact.css"]
  backend_pool = "exact"
  [[rules.paths]]
  paths = ["/old/*"]
  redirect = { url = "https://new.example/base/", status = 308 }
  [[rules.paths]]
  paths = ["/secure/*"]
  redirect = { listener = "tls-alt", status = 301, include_query = false }
  [[rules.paths]]
  paths = ["/home"]
  redirect = { listener = "tls-std", status = 302, include_path = false }

# -- a root prefix catches everything the exact paths do not -------------------
[[listeners]]
name = "root"
bind = "127.0.0.1:8301"

[[rules]]
name = "root-rule"
listener = "root"
backend_pool = "main"
  [[rules.paths]]
  paths = ["/*"]
  backend_pool = "root"
  [[rules.paths]]
  paths = ["/"]
  backend_pool = "exact"

# -- multi-site: one bind, chosen by Host ---------------------------------------
[[listeners]]
name = "www"
bind = "127.0.0.1:8100"
host_names = ["www.example.com", "x.api.example.com", "Mixed.Example.ORG"]

[[listeners]]
name = "wild"
bind = "127.0.0.1:8100"
host_names = ["*.example.com"]

[[listeners]]
name = "wild-api"
bind = "127.0.0.1:8100"
host_names = ["*.api.example.com"]

[[listeners]]
name = "rest"
bind = "127.0.0.1:8100"

[[rules]]
name = "www-rule"
listener = "www"
backend_pool = "www"

[[rules]]
name = "wild-rule"
listener = "wild"
backend_pool = "wild"

[[rules]]
name = "wild-api-rule"
listener = "wild-api"
backend_pool = "wild-api"

[[rules]]
name = "rest-rule"
listener = "rest"
backend_pool = "rest"

# -- multi-site without a catch-all ---------------------------------------------
[[listeners]]
name = "only"
bind = "127.0.0.1:8200"
host_names = ["only.example"]

[[rules]]
name = "only-rule"
listener = "only"
backend_pool = "only"

# -- redirect targets and TLS listeners sharing a bind (SNI) ------------------------
[[listeners]]
name = "http-std"
bind = "127.0.0.1:80"

[[rules]]
name = "http-std-rule"
listener = "http-std"
redirect = { listener = "tls-std" }

[[listeners]]
name = "to-http"
bind = "127.0.0.1:8302"

[[rules]]
name = "to-http-rule"
listener = "to-http"
redirect = { listener = "http-std", status = 307 }

[[listeners]]
name = "tls-std"
bind = "127.0.0.1:443"
protocol = "https"
certificate = "{cert}"
private_key = "{key}"

[[rules]]
name = "tls-std-rule"
listener = "tls-std"
backend_pool = "main"

[[listeners]]
name = "tls-alt"
bind = "127.0.0.1:8443"
protocol = "https"
host_names = ["a.example"]
certificate = "{cert}"
private_key = "{key}"

[[listeners]]
name = "tls-wild"
bind = "127.0.0.1:8443"
protocol = "https"
host_names = ["*.b.example"]
certificate = "{cert}"
private_key = "{key}"

[[listeners]]
name = "tls-rest"
bind = "127.0.0.1:8443"
protocol = "https"
certificate = "{cert}"
private_key = "{key}"

[[rules]]
name = "tls-alt-rule"
listener = "tls-alt"
backend_pool = "tls-a"

[[rules]]
name = "tls-wild-rule"
listener = "tls-wild"
backend_pool = "tls-wild"

[[rules]]
name = "tls-rest-rule"
listener = "tls-rest"
backend_pool = "tls-rest"

# -- URL redirects with every include_* combination ----------------------------------
[[listeners]]
name = "urls"
bind = "127.0.0.1:8400"

[[rules]]
name = "urls-rule"
listener = "urls"
backend_pool = "main"
  [[rules.paths]]
  paths = ["/both/*"]
  redirect = { url = "https://new.example/base", status = 302 }
  [[rules.paths]]
  paths = ["/no-path/*"]
  redirect = { url = "https://new.example/landing", status = 303, include_path = false }
  [[rules.paths]]
  paths = ["/no-query/*"]
  redirect = { url = "https://new.example/", status = 307, include_query = false }
  [[rules.paths]]
  paths = ["/neither/*"]
  redirect = { url = "https://new.example/fixed", include_path = false, include_query = false }
  [[rules.paths]]
  paths = ["/host-only/*"]
  redirect = { url = "https://new.example", status = 301 }
  [[rules.paths]]
  paths = ["/url-query/*"]
  redirect = { url = "https://new.example/base?src=old", status = 302, include_path = false }
  [[rules.paths]]
  paths = ["/url-query-path/*"]
  redirect = { url = "https://new.example/base?src=old", status = 302 }
""" + POOLS


@pytest.fixture(scope="module")
def sites(certs):
    text = CONFIG.replace("{cert}", certs.cert).replace("{key}", certs.key)
    config = parse_config(text, "router-test.toml")
    return build_snapshot(config, app_path=lambda spec: "/nonexistent").sites


def site(sites, port):
    return sites[("127.0.0.1", port)]


def target_name(target):
    """A Backend's pool name, or "redirect"."""
    return "redirect" if isinstance(target, Redirector) else target.pool.name


# --- paths -----------------------------------------------------------------------------

@pytest.mark.parametrize("path, pool", [
    (b"/", "main"),
    (b"/other", "main"),
    (b"/chat", "main"),                 # "/chat/*" is not "/chat" (SPEC 3)
    (b"/chat/", "chat"),
    (b"/chat/room/1", "chat"),
    (b"/chatroom", "main"),
    (b"/chat/admin", "chat"),           # "/chat/admin/*" needs the slash
    (b"/chat/admin/", "chat-admin"),    # the longest prefix wins
    (b"/chat/admin/users", "chat-admin"),
    (b"/ws", "chat"),
    (b"/ws/", "main"),                  # exact means exact
    (b"/wss", "main"),
    (b"/static/a.css", "static"),
    (b"/static/exact.css", "exact"),    # an exact path beats a prefix
    (b"/static/exact.css/x", "static"),
    (b"/exact", "static"),
    (b"/Exact", "main"),                # paths are case-sensitive
    (b"/CHAT/x", "main"),
    (b"/old/x", "redirect"),
    (b"/secure/x", "redirect"),
    (b"/home", "redirect"),
])
def test_path_routing(sites, path, pool):
    routes = site(sites, 8300).listener_for(b"anything")
    assert routes.listener.name == "paths"
    assert target_name(routes.route(path)) == pool


@pytest.mark.parametrize("target, pool", [
    (b"/ws?x=1", "chat"),
    (b"/chat?room=1", "main"),
    (b"/chat/?room=1", "chat"),
    (b"/static/exact.css?v=2", "exact"),
    (b"/other?/chat/x", "main"),
    (b"http://evil.example/chat/x?y", "chat"),
])
def test_the_query_is_ignored(sites, target, pool):
    req = parse_request(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
    routes = site(sites, 8300).listener_for(req.host)
    assert target_name(routes.route(req.path)) == pool


@pytest.mark.parametrize("path, pool", [
    (b"/", "exact"),
    (b"/a", "root"),
    (b"/a/b/c", "root"),
    (b"//", "root"),
])
def test_root_prefix(sites, path, pool):
    routes = site(sites, 8301).listener_for(b"x")
    assert target_name(routes.route(path)) == pool


def test_rule_without_paths_has_its_own_target_only(sites):
    routes = site(sites, 8100).listener_for(b"www.example.com")
    assert routes.rule.name == "www-rule"
    for path in (b"/", b"/chat/x", b"/anything"):
        assert target_name(routes.route(path)) == "www"


# --- sites: Host -> listener ----------------------------------------------------------

@pytest.mark.parametrize("host, listener", [
    (b"www.example.com", "www"),            # exact
    (b"WWW.EXAMPLE.COM", "www"),            # case-insensitive
    (b"www.example.com:8100", "www"),       # port stripped
    (b"www.example.com.", "www"),           # trailing dot of an FQDN
    (b"mixed.example.org", "www"),          # configured in mixed case
    (b"MIXED.example.ORG:1", "www"),
    (b"a.example.com", "wild"),             # wildcard
    (b"deep.a.example.com", "wild"),        # a wildcard covers every level below it
    (b"Foo.Example.Com:443", "wild"),
    (b"x.api.example.com", "www"),          # exact beats the longer wildcard
    (b"y.api.example.com", "wild-api"),     # the longest wildcard wins
    (b"z.y.api.example.com", "wild-api"),
    (b"api.example.com", "wild"),           # "*.api.example.com" needs a label before it
    (b"example.com", "rest"),               # "*.example.com" does not match the bare name
    (b"evilexample.com", "rest"),
    (b"www.example.com.evil", "rest"),
    (b"", "rest"),                          # the catch-all takes the rest
    (b"10.0.0.1", "rest"),
    (b"[::1]:8100", "rest"),
])
def test_site_by_host(sites, host, listener):
    routes = site(sites, 8100).listener_for(host)
    assert routes is not None and routes.listener.name == listener


@pytest.mark.parametrize("host", [b"other.example", b"", b"x.only.example", b"only.example.com"])
def test_site_without_catch_all_answers_none(sites, host):
    assert site(sites, 8200).listener_for(host) is None


@pytest.mark.parametrize("host", [b"only.example", b"ONLY.example:8200", b"only.example."])
def test_site_without_catch_all_serves_its_names(sites, host):
    assert site(sites, 8200).listener_for(host).listener.name == "only"


def test_basic_listener_takes_any_host(sites):
    for host in (b"", b"x", b"evil.example:1", b"[::1]"):
        assert site(sites, 8300).listener_for(host).listener.name == "paths"


def test_routes_carry_proto_and_port(sites):
    routes = site(sites, 8443).listener_for(b"a.example")
    assert (routes.proto, routes.port) == (b"https", b"8443")
    routes = site(sites, 8300).listener_for(b"x")
    assert (routes.proto, routes.port) == (b"http", b"8300")


@pytest.mark.parametrize("server_name, listener", [
    ("a.example", "tls-alt"),
    ("A.EXAMPLE", "tls-alt"),
    ("x.b.example", "tls-wild"),
    ("b.example", "tls-rest"),
    ("other.example", "tls-rest"),
    ("", "tls-rest"),
])
def test_certificate_by_sni(sites, server_name, listener):
    assert site(sites, 8443).certificate_for(server_name).listener.name == listener


@pytest.mark.parametrize("host, expected", [
    (b"a.example:8080", b"a.example"),
    (b"a.example", b"a.example"),
    (b"[::1]:80", b"[::1]"),
    (b"[::1]", b"[::1]"),
    (b"10.0.0.1:1", b"10.0.0.1"),
    (b"", b""),
])
def test_host_name(host, expected):
    assert host_name(host) == expected


# --- redirects ---------------------------------------------------------------------------

def redirect_at(sites, port, path, host=b"x"):
    target = site(sites, port).listener_for(host).route(path)
    assert isinstance(target, Redirector)
    return target


def test_redirect_to_listener_with_port(sites):
    target = redirect_at(sites, 8300, b"/secure/x")
    assert target.status == 301
    # include_query = false; the listener's non-default port is kept; Host's port is not.
    assert target.location(b"www.example.com:8300", b"/secure/a/b", b"q=1") == \
        b"https://www.example.com:8443/secure/a/b"


def test_redirect_to_listener_on_default_port(sites):
    target = redirect_at(sites, 8300, b"/home")
    assert target.status == 302
    assert target.location(b"www.example.com:8300", b"/home", b"q=1&r=2") == b"https://www.example.com/?q=1&r=2"
    assert target.location(b"www.example.com", b"/home", b"") == b"https://www.example.com/"


def test_redirect_rule_to_listener_defaults(sites):
    # A whole rule redirecting: status 301, path and query included by default.
    target = redirect_at(sites, 80, b"/a/b")
    assert target.status == 301
    assert target.location(b"Example.com:80", b"/a/b", b"c=d") == b"https://Example.com/a/b?c=d"
    assert target.location(b"[::1]:80", b"/", b"") == b"https://[::1]/"


def test_redirect_to_http_listener_on_port_80(sites):
    target = redirect_at(sites, 8302, b"/x")
    assert target.status == 307
    assert target.location(b"h.example:8302", b"/x", b"") == b"http://h.example/x"


@pytest.mark.parametrize("path, query, status, location", [
    (b"/both/a", b"q=1", 302, b"https://new.example/base/both/a?q=1"),
    (b"/both/a", b"", 302, b"https://new.example/base/both/a"),
    (b"/no-path/a", b"q=1", 303, b"https://new.example/landing?q=1"),
    (b"/no-query/a", b"q=1", 307, b"https://new.example/no-query/a"),
    (b"/neither/a", b"q=1", 301, b"https://new.example/fixed"),
    (b"/host-only/a/b", b"", 301, b"https://new.example/host-only/a/b"),
    (b"/url-query/a", b"q=1", 302, b"https://new.example/base?src=old&q=1"),
    (b"/url-query/a", b"", 302, b"https://new.example/base?src=old"),
])
def test_redirect_to_url(sites, path, query, status, location):
    target = redirect_at(sites, 8400, path)
    assert target.status == status
    assert target.location(b"x", path, query) == location


def test_redirect_url_with_query_puts_the_path_before_it(sites):
    # url = "https://new.example/base?src=old" with include_path: the request
    # path belongs in the URL's path, not appended to its query.
    target = redirect_at(sites, 8400, b"/url-query-path/a")
    assert target.location(b"x", b"/url-query-path/a", b"q=1") == \
        b"https://new.example/base/url-query-path/a?src=old&q=1"


def test_redirect_path_entry_from_path_rules(sites):
    target = redirect_at(sites, 8300, b"/old/page")
    assert target.status == 308
    assert target.location(b"x", b"/old/page", b"a=1") == b"https://new.example/base/old/page?a=1"
