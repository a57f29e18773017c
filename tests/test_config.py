"""Config loading and checking: pure tests, no network.

Each test writes a small TOML text and asserts the exact problem lines.
"""
import dataclasses
import os
import pickle
import subprocess

import pytest

from appgw.config import (
    DEFAULT_PROBE, DEFAULT_SETTINGS, BackendSettings, ConfigError, Gateway,
    Listener, Server, load_config, parse_config,
)
from appgw.config.summary import summarize

pytestmark = pytest.mark.sansio

LISTENER = """
[[listeners]]
name = "http"
bind = "0.0.0.0:80"
"""
POOL = """
[[backend_pools]]
name = "app"
servers = ["10.0.0.4"]
"""
RULE = """
[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
"""
BASE = LISTENER + POOL + RULE


def parse(text, base_dir="/nonexistent"):
    return parse_config(text, "appgw.toml", base_dir=base_dir)


def problems(text, base_dir="/nonexistent"):
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value.problems


def lines(*items):
    return ["appgw.toml: " + item for item in items]


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """A directory with two self-signed pairs: c.pem/k.pem and c2.pem/k2.pem."""
    directory = tmp_path_factory.mktemp("tls")
    for suffix in ("", "2"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", f"k{suffix}.pem", "-out", f"c{suffix}.pem", "-days", "1",
             "-subj", "/CN=localhost"],
            cwd=directory, check=True, capture_output=True)
    (directory / "garbage.pem").write_text("not a pem file\n")
    return directory


def https_listener(certificate="c.pem", private_key="k.pem", name="https", extra=""):
    return f"""
[[listeners]]
name = "{name}"
bind = "0.0.0.0:443"
protocol = "https"
certificate = "{certificate}"
private_key = "{private_key}"
{extra}
[[rules]]
name = "{name}-rule"
listener = "{name}"
backend_pool = "app"
"""


# --- a valid file and its defaults --------------------------------------------

def test_minimal_config_gets_every_default():
    config = parse(BASE)
    assert config.path == "appgw.toml"
    assert config.gateway == Gateway()
    assert (config.gateway.workers, config.gateway.admin_host, config.gateway.admin_port) == (
        1, "127.0.0.1", 9901)
    assert config.gateway.max_header_size == 32768 and config.gateway.drain_timeout == 30
    listener = config.listener_by_name["http"]
    assert (listener.host, listener.port, listener.protocol, listener.host_names) == (
        "0.0.0.0", 80, "http", ())
    pool = config.pool_by_name["app"]
    assert pool.servers == (Server("10.0.0.4"),) and pool.load_balancing == "round_robin"
    rule = config.rule_by_listener["http"]
    assert rule.name == "main" and rule.backend_settings == "" and rule.paths == ()
    assert config.settings(rule.backend_settings) is DEFAULT_SETTINGS
    assert config.probe(DEFAULT_SETTINGS.probe) is DEFAULT_PROBE


def test_default_settings_and_probe_follow_the_spec():
    assert (DEFAULT_SETTINGS.protocol, DEFAULT_SETTINGS.port, DEFAULT_SETTINGS.request_timeout,
            DEFAULT_SETTINGS.connect_timeout, DEFAULT_SETTINGS.verify_tls) == ("http", 80, 20, 5, True)
    assert DEFAULT_SETTINGS.websocket_timeout == 20
    assert (DEFAULT_PROBE.path, DEFAULT_PROBE.interval, DEFAULT_PROBE.timeout,
            DEFAULT_PROBE.unhealthy_threshold, DEFAULT_PROBE.healthy_threshold,
            DEFAULT_PROBE.match_status) == ("/", 30, 30, 3, 1, ((200, 399),))
    assert BackendSettings(name="s", protocol="https").port == 443
    assert BackendSettings(name="s", protocol="https", port=8443).port == 8443
    assert BackendSettings(name="s", websocket_idle_timeout=3600).websocket_timeout == 3600


def test_full_config_is_read():
    config = parse("""
[gateway]
workers = 4
admin_bind = ""
access_log = ""
log_format = "json"
client_header_timeout = 2.5
max_body_size = 1048576

[[listeners]]
name = "http"
bind = "[::]:8080"
host_names = ["Chat.Example.com", "*.example.org"]

[[backend_pools]]
name = "app"
servers = ["10.0.0.4", "10.0.0.5:8081", "app.internal", "[fe80::1]:81", "unix:/run/app.sock"]
load_balancing = "least_connections"

[[backend_pools]]
name = "local"
app = "appgw.demo:app"

[[backend_settings]]
name = "s"
protocol = "https"
request_timeout = 5
websocket_idle_timeout = 3600
probe = "p"
host_name = "backend.example.com:8443"
affinity_cookie = "AGW-affinity"
verify_tls = false

[[probes]]
name = "p"
protocol = "http"
port = 8080
path = "/health?full=1"
interval = 5
timeout = 2
unhealthy_threshold = 2
healthy_threshold = 2
match_status = ["200", "300-308", 418]
match_body = "ok"

[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
backend_settings = "s"
  [[rules.paths]]
  paths = ["/chat/*", "/ws"]
  backend_pool = "local"
  [[rules.paths]]
  paths = ["/old/*"]
  redirect = { url = "https://new.example.com/", status = 308, include_path = false }
""")
    gateway = config.gateway
    assert (gateway.workers, gateway.admin_host, gateway.admin_port, gateway.access_log,
            gateway.log_format, gateway.client_header_timeout) == (4, "", 0, "", "json", 2.5)
    listener = config.listeners[0]
    assert (listener.host, listener.port, listener.address) == ("::", 8080, "[::]:8080")
    assert listener.host_names == ("chat.example.com", "*.example.org")
    servers = config.pool_by_name["app"].servers
    assert [(s.kind, s.host, s.port, s.path) for s in servers] == [
        ("tcp", "10.0.0.4", None, ""), ("tcp", "10.0.0.5", 8081, ""),
        ("tcp", "app.internal", None, ""), ("tcp", "fe80::1", 81, ""),
        ("unix", "", None, "/run/app.sock")]
    assert config.pool_by_name["local"].app == "appgw.demo:app"
    settings = config.settings("s")
    assert (settings.port, settings.websocket_timeout, settings.verify_tls) == (443, 3600, False)
    probe = config.probe("p")
    assert probe.match_status == ((200, 200), (300, 308), (418, 418))
    assert probe.status_matches(304) and not probe.status_matches(204)
    rule = config.rules[0]
    assert rule.paths[0].paths == ("/chat/*", "/ws") and rule.paths[0].backend_settings == ""
    redirect = rule.paths[1].redirect
    assert (redirect.url, redirect.status, redirect.include_path, redirect.include_query) == (
        "https://new.example.com/", 308, False, True)


def test_config_is_frozen_and_picklable():
    config = parse(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gateway.workers = 2
    with pytest.raises(TypeError):
        config.pool_by_name["x"] = None
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config and copy.rule_by_listener["http"] == config.rules[0]


def test_dataclasses_derive_their_parts():
    assert (Listener(name="a", bind="127.0.0.1:8080").port) == 8080
    assert Server("unix:/tmp/s").path == "/tmp/s"
    with pytest.raises(ValueError):
        Listener(name="a", bind="127.0.0.1")


def test_access_log_file_resolves_against_the_config_directory(tmp_path):
    (tmp_path / "logs").mkdir()
    config = parse('[gateway]\naccess_log = "logs/access.log"\n' + BASE, base_dir=str(tmp_path))
    assert config.gateway.access_log == str(tmp_path / "logs" / "access.log")
    assert parse('[gateway]\naccess_log = "-"\n' + BASE).gateway.access_log == "-"


# --- file-level errors ----------------------------------------------------------

def test_error_lines_and_str():
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[gateway]\nwokers = 2\nworkers = 0\n", "conf/my.toml")
    assert info.value.problems == [
        "conf/my.toml: gateway.workers: must be between 1 and 64, got 0",
        "conf/my.toml: gateway.wokers: unknown key",  # unknown keys come last in a table
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_toml_syntax_error_has_line_and_column():
    assert problems("[gateway]\nworkers = 1\n\nadmin = =\n") == lines(
        "line 4, column 9: Invalid value")
    assert problems("[x]\n[x]\n") == lines("line 2, column 3: Cannot declare ('x',) twice")


def test_toml_syntax_error_at_end_of_document():
    assert problems('a = 1\nb = "open') == lines("line 2, column 10: Unterminated string")


def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "appgw.toml"
    path.write_text(BASE)
    assert load_config(str(path)).path == str(path)


def test_load_config_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]


def test_load_config_names_the_file_in_every_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + "[oops]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [f"{path}: oops: unknown key"]


def test_listeners_and_rules_are_required():
    assert problems(POOL) == lines(
        "listeners: at least one listener is required",
        "rules: at least one rule is required")


def test_sections_must_have_the_right_shape():
    assert problems('gateway = 1\nlisteners = "x"\n' + POOL + RULE) == lines(
        "gateway: must be a table, got integer 1",
        'listeners: must be an array of tables ([[listeners]]), got string "x"',
    )
    assert problems("rules = [1]\n" + LISTENER + POOL) == lines(
        "rules[0]: must be a table, got integer 1")


# --- unknown keys ---------------------------------------------------------------

def test_unknown_keys_name_the_full_path():
    text = BASE.replace('backend_pool = "app"', """backend_pool = "app"
redirect_x = 1
  [[rules.paths]]
  paths = ["/a"]
  backend_pool = "app"
  [[rules.paths]]
  paths = ["/b"]
  backend_poool = "app"
""") + "[extra]\nx = 1\n"
    assert problems(text) == lines(
        "extra: unknown key",
        "rules[0].paths[1]: needs backend_pool or redirect",
        "rules[0].paths[1].backend_poool: unknown key",
        "rules[0].redirect_x: unknown key",
    )


def test_unknown_key_in_redirect_and_listener():
    text = LISTENER + 'colour = "red"\n' + POOL + """
[[rules]]
name = "main"
listener = "http"
redirect = { url = "https://example.com/", code = 301 }
"""
    assert problems(text) == lines(
        "listeners[0].colour: unknown key",
        "rules[0].redirect.code: unknown key",
    )


# --- types and ranges --------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    ('client_header_timeout = "10s"', 'gateway.client_header_timeout: must be a number, got string "10s"'),
    ("client_idle_timeout = 0", "gateway.client_idle_timeout: must be greater than 0, got 0"),
    ("client_idle_timeout = -1.5", "gateway.client_idle_timeout: must be greater than 0, got -1.5"),
    ("client_idle_timeout = inf", "gateway.client_idle_timeout: must be a finite number, got inf"),
    ("drain_timeout = -1", "gateway.drain_timeout: must be 0 or more, got -1"),
    ("workers = 65", "gateway.workers: must be between 1 and 64, got 65"),
    ("workers = 2.0", "gateway.workers: must be an integer, got float 2.0"),
    ("workers = true", "gateway.workers: must be an integer, got boolean true"),
    ("max_header_size = 1000", "gateway.max_header_size: must be at least 1024, got 1000"),
    ("max_body_size = -1", "gateway.max_body_size: must be at least 0, got -1"),
    ("max_connections = 0", "gateway.max_connections: must be at least 1, got 0"),
    ('log_format = "text"', 'gateway.log_format: must be "combined" or "json", got "text"'),
    ('admin_bind = "9901"', 'gateway.admin_bind: must be "host:port" or "[v6addr]:port", '
                            'got "9901": the port is missing ("host:port")'),
    ("access_log = 5", "gateway.access_log: must be a string, got integer 5"),
    ('allow_underscores_in_headers = "yes"',
     'gateway.allow_underscores_in_headers: must be true or false, got string "yes"'),
])
def test_gateway_values_are_checked(line, problem):
    assert problems(f"[gateway]\n{line}\n" + BASE) == lines(problem)


def test_allow_underscores_in_headers_is_read():
    assert parse(BASE).gateway.allow_underscores_in_headers is False
    assert parse("[gateway]\nallow_underscores_in_headers = true\n" + BASE).gateway.allow_underscores_in_headers


def test_zero_is_allowed_where_documented():
    config = parse("[gateway]\ndrain_timeout = 0\nmax_body_size = 0\n" + BASE + """
[[backend_settings]]
name = "s"
websocket_idle_timeout = 0
drain_timeout = 0
request_timeout = 0.5
""")
    assert config.gateway.drain_timeout == 0 and config.settings("s").request_timeout == 0.5


@pytest.mark.parametrize("value, shown", [("1", "integer 1"), ('"true"', 'string "true"')])
def test_booleans_must_be_toml_booleans(value, shown):
    text = BASE + f'[[backend_settings]]\nname = "s"\nverify_tls = {value}\n'
    assert problems(text) == lines(f"backend_settings[0].verify_tls: must be true or false, got {shown}")


def test_problem_values_stay_on_one_line():
    text = BASE + '[[backend_settings]]\nname = "s"\nhost_name = "a\\r\\nX-Evil: 1"\n'
    assert problems(text) == lines(
        'backend_settings[0].host_name: must be a host name or address, optionally with ":port", '
        'got "a\\r\\nX-Evil: 1"')


# --- names and references ---------------------------------------------------------

def test_names_are_required_non_empty_and_unique():
    text = BASE + POOL + """
[[backend_pools]]
name = ""
servers = ["x"]

[[backend_pools]]
servers = ["y"]
"""
    assert problems(text) == lines(
        'backend_pools[1].name: duplicate name "app"',
        "backend_pools[2].name: must not be empty",
        "backend_pools[3].name: is required",
    )


def test_every_reference_must_resolve():
    text = LISTENER + POOL + """
[[backend_settings]]
name = "s"
probe = "pp"

[[rules]]
name = "main"
listener = "http"
backend_pool = "chatt"
backend_settings = "ss"
  [[rules.paths]]
  paths = ["/a"]
  backend_pool = "b"
  backend_settings = "c"
  [[rules.paths]]
  paths = ["/r"]
  redirect = { listener = "nope" }

[[rules]]
name = "other"
listener = "htp"
backend_pool = "app"
"""
    assert problems(text) == lines(
        'rules[0].backend_pool: no backend pool named "chatt"',
        'rules[0].backend_settings: no backend settings named "ss"',
        'rules[0].paths[0].backend_pool: no backend pool named "b"',
        'rules[0].paths[0].backend_settings: no backend settings named "c"',
        'rules[0].paths[1].redirect.listener: no listener named "nope"',
        'rules[1].listener: no listener named "htp"',
        'backend_settings[0].probe: no probe named "pp"',
    )


def test_a_broken_value_is_not_reported_again_by_cross_checks():
    text = LISTENER + POOL + """
[[rules]]
name = "main"
listener = "http"
backend_pool = 5
"""
    assert problems(text) == lines("rules[0].backend_pool: must be a string, got integer 5")


def test_a_broken_listener_still_counts_as_declared():
    text = BASE.replace('bind = "0.0.0.0:80"', 'bind = "0.0.0.0"')
    assert problems(text) == lines(
        'listeners[0].bind: must be "host:port" or "[v6addr]:port", got "0.0.0.0": '
        'the port is missing ("host:port")')


def test_a_rule_with_a_broken_listener_key_hides_the_missing_rule_check():
    text = LISTENER + POOL + RULE.replace('listener = "http"', "listener = 1")
    assert problems(text) == lines("rules[0].listener: must be a string, got integer 1")


# --- rules ------------------------------------------------------------------------

def test_every_listener_has_exactly_one_rule():
    text = BASE + """
[[listeners]]
name = "other"
bind = "0.0.0.0:8080"

[[rules]]
name = "second"
listener = "http"
backend_pool = "app"
"""
    assert problems(text) == lines(
        'rules[1].listener: listener "http" already has rule "main"',
        'listeners[1]: no rule for listener "other"',
    )


@pytest.mark.parametrize("target, problem", [
    ("", "rules[0]: needs backend_pool or redirect"),
    ('backend_pool = "app"\nredirect = { url = "https://x.example/" }',
     "rules[0]: needs backend_pool or redirect, not both"),
    ('backend_pool = ""', "rules[0]: needs backend_pool or redirect"),
    ('backend_settings = "s"\nredirect = { url = "https://x.example/" }',
     "rules[0].backend_settings: not used with a redirect"),
])
def test_a_rule_has_one_target(target, problem):
    text = LISTENER + POOL + f'[[rules]]\nname = "main"\nlistener = "http"\n{target}\n'
    text += '[[backend_settings]]\nname = "s"\n'
    assert problems(text) == lines(problem)


def test_a_rule_with_paths_still_needs_a_default_target():
    text = LISTENER + POOL + """
[[rules]]
name = "main"
listener = "http"
  [[rules.paths]]
  paths = ["/a"]
  backend_pool = "app"
  redirect = { url = "https://x.example/" }
"""
    assert problems(text) == lines(
        "rules[0]: needs backend_pool or redirect",
        "rules[0].paths[0]: needs backend_pool or redirect, not both",
    )


@pytest.mark.parametrize("paths, problem", [
    ("[]", "paths: must not be empty"),
    ('"/a"', 'paths: must be an array of strings, got string "/a"'),
    ('["/a", 5]', "paths[1]: must be a string, got integer 5"),
    ('["chat"]', 'paths[0]: must start with "/", got "chat"'),
    ('["/a b"]', 'paths[0]: must not contain spaces or control characters, got "/a b"'),
    ('["/a\\r\\n"]', 'paths[0]: must not contain spaces or control characters, got "/a\\r\\n"'),
    ('["/a?x=1"]', 'paths[0]: must not contain "?" or "#" (the query is ignored), got "/a?x=1"'),
    ('["/a*"]', 'paths[0]: "*" is only allowed as a trailing "/*", got "/a*"'),
    ('["/*/b"]', 'paths[0]: "*" is only allowed as a trailing "/*", got "/*/b"'),
    ('["/ws", "/ws"]', 'paths[1]: duplicate path "/ws"'),
])
def test_paths_are_checked(paths, problem):
    text = BASE + f'  [[rules.paths]]\n  paths = {paths}\n  backend_pool = "app"\n'
    assert problems(text) == lines("rules[0].paths[0]." + problem)


def test_paths_are_required_in_a_path_entry_and_unique_across_entries():
    text = BASE + """
  [[rules.paths]]
  backend_pool = "app"
  [[rules.paths]]
  paths = ["/chat/*", "/"]
  backend_pool = "app"
  [[rules.paths]]
  paths = ["/chat/*"]
  backend_pool = "app"
"""
    assert problems(text) == lines(
        "rules[0].paths[0].paths: is required",
        'rules[0].paths[2].paths[0]: duplicate path "/chat/*"',
    )


# --- redirects ----------------------------------------------------------------------

@pytest.mark.parametrize("redirect, problem", [
    ("{}", "rules[0].redirect: needs listener or url"),
    ('{ listener = "http2", url = "https://a.example/" }',
     "rules[0].redirect: needs listener or url, not both"),
    ('{ url = "https://a.example/", status = 200 }',
     "rules[0].redirect.status: must be one of 301, 302, 303, 307 or 308, got 200"),
    ('{ url = "/relative" }',
     'rules[0].redirect.url: must be an absolute http:// or https:// URL, got "/relative"'),
    ('{ url = "ftp://a.example/" }',
     'rules[0].redirect.url: must be an absolute http:// or https:// URL, got "ftp://a.example/"'),
    ('{ url = "https://a.example/\\r\\nSet-Cookie: x" }',
     'rules[0].redirect.url: must be an absolute http:// or https:// URL, '
     'got "https://a.example/\\r\\nSet-Cookie: x"'),
    ('{ url = "https://a.example/", include_path = "yes" }',
     'rules[0].redirect.include_path: must be true or false, got string "yes"'),
    ('{ listener = "http" }', 'rules[0].redirect.listener: redirects to its own listener "http", a loop'),
    ('"https://a.example/"', 'rules[0].redirect: must be a table, got string "https://a.example/"'),
])
def test_redirects_are_checked(redirect, problem):
    text = LISTENER + POOL + f"""
[[listeners]]
name = "http2"
bind = "0.0.0.0:8080"

[[rules]]
name = "other"
listener = "http2"
backend_pool = "app"

[[rules]]
name = "main"
listener = "http"
redirect = {redirect}
"""
    assert problems(text) == lines(problem.replace("rules[0]", "rules[1]"))


def test_redirect_to_another_listener_is_fine():
    text = LISTENER + POOL + """
[[listeners]]
name = "http2"
bind = "0.0.0.0:8080"

[[rules]]
name = "main"
listener = "http"
redirect = { listener = "http2", status = 307, include_query = false }

[[rules]]
name = "other"
listener = "http2"
backend_pool = "app"
"""
    redirect = parse(text).rules[0].redirect
    assert (redirect.listener, redirect.status, redirect.include_path, redirect.include_query) == (
        "http2", 307, True, False)


# --- listeners ------------------------------------------------------------------

@pytest.mark.parametrize("bind, why", [
    ("0.0.0.0", 'the port is missing ("host:port")'),
    (":80", "the host is missing"),
    ("0.0.0.0:70000", 'port must be 1-65535, got "70000"'),
    ("0.0.0.0:0", 'port must be 1-65535, got "0"'),
    ("0.0.0.0:http", 'port must be 1-65535, got "http"'),
    ("::1:80", 'write IPv6 addresses in brackets, e.g. "[::1]:8080"'),
    ("[::1:80", 'missing "]" after the IPv6 address'),
    ("[zz]:80", '"zz" is not an IPv6 address'),
    ("300.1.1.1:80", '"300.1.1.1" is not an IP address or host name'),
    ("a b:80", '"a b" is not an IP address or host name'),
])
def test_bind_is_checked(bind, why):
    text = BASE.replace('bind = "0.0.0.0:80"', f'bind = "{bind}"')
    assert problems(text) == lines(
        f'listeners[0].bind: must be "host:port" or "[v6addr]:port", got "{bind}": {why}')


def test_listener_protocol_is_checked():
    text = BASE.replace('bind = "0.0.0.0:80"', 'bind = "0.0.0.0:80"\nprotocol = "htp"')
    assert problems(text) == lines('listeners[0].protocol: must be "http" or "https", got "htp"')


@pytest.mark.parametrize("name", ["a.example.com:80", "a b.example.com", "a.*.example.com",
                                  "*", "*example.com", "", "a..example.com"])
def test_host_names_are_checked(name):
    text = BASE.replace('bind = "0.0.0.0:80"', f'bind = "0.0.0.0:80"\nhost_names = ["{name}"]')
    assert problems(text) == lines(
        'listeners[0].host_names[0]: must be a host name or "*.suffix" (no port, "*" only as "*."), '
        f'got "{name}"')


def test_duplicate_host_name_in_one_listener():
    text = BASE.replace('bind = "0.0.0.0:80"',
                        'bind = "0.0.0.0:80"\nhost_names = ["a.example.com", "A.example.com"]')
    assert problems(text) == lines('listeners[0].host_names[1]: duplicate host name "a.example.com"')


def site(name, bind="0.0.0.0:80", host_names="[]", protocol="http"):
    return f"""
[[listeners]]
name = "{name}"
bind = "{bind}"
protocol = "{protocol}"
host_names = {host_names}

[[rules]]
name = "{name}"
listener = "{name}"
backend_pool = "app"
"""


def test_listeners_may_share_a_bind_by_host_name():
    config = parse(POOL + site("a", host_names='["a.example.com"]')
                   + site("b", host_names='["*.example.com"]') + site("rest"))
    assert [listener.address for listener in config.listeners] == ["0.0.0.0:80"] * 3


def test_shared_bind_conflicts_are_reported():
    text = POOL + site("site-a", host_names='["a.example.com"]') + site("rest") + site(
        "site-b", host_names='["b.example.com", "A.example.com"]') + site("rest2")
    assert problems(text) == lines(
        'listeners[2].host_names[1]: "a.example.com" is already served on 0.0.0.0:80 '
        'by listener "site-a"',
        'listeners[3]: listener "rest" already takes every host name on 0.0.0.0:80; '
        "a listener sharing it needs host_names",
    )


def test_shared_bind_needs_one_protocol(tls):
    text = POOL + site("a", bind="0.0.0.0:443", host_names='["a.example.com"]') + https_listener(
        extra='host_names = ["b.example.com"]')
    assert problems(text, base_dir=str(tls)) == lines(
        'listeners[1].protocol: "https" differs from "http" of listener "a" '
        "on the same bind 0.0.0.0:443")


@pytest.mark.parametrize("first, second, conflict", [
    ("0.0.0.0:80", "127.0.0.1:80", True),
    ("127.0.0.1:80", "0.0.0.0:80", True),
    ("[::]:80", "127.0.0.1:80", True),
    ("0.0.0.0:80", "[::1]:80", False),
    ("127.0.0.1:80", "127.0.0.2:80", False),
    ("0.0.0.0:80", "127.0.0.1:81", False),
    ("0.0.0.0:80", "localhost:80", True),
])
def test_a_wildcard_bind_overlaps_others_on_the_same_port(first, second, conflict):
    text = POOL + site("a", bind=first) + site("b", bind=second)
    if not conflict:
        parse(text)
        return
    assert problems(text) == lines(
        f'listeners[1].bind: {second} overlaps {first} of listener "a": they cannot both be bound')


def test_admin_bind_may_not_take_a_listener_address():
    text = '[gateway]\nadmin_bind = "127.0.0.1:80"\n' + BASE
    assert problems(text) == lines('gateway.admin_bind: 127.0.0.1:80 conflicts with listener "http" on 0.0.0.0:80')


# --- TLS ---------------------------------------------------------------------------

def test_https_listener_with_valid_files(tls):
    config = parse(POOL + https_listener(), base_dir=str(tls))
    listener = config.listeners[0]
    assert listener.certificate == str(tls / "c.pem") and listener.private_key == str(tls / "k.pem")
    absolute = parse(POOL + https_listener(tls / "c.pem", tls / "k.pem"), base_dir="/")
    assert absolute.listeners[0].certificate == str(tls / "c.pem")


def test_https_listener_needs_certificate_and_key(tls):
    text = POOL + https_listener(certificate="", private_key="")
    assert problems(text, str(tls)) == lines(
        "listeners[0].certificate: required for https listeners",
        "listeners[0].private_key: required for https listeners",
    )


def test_https_listener_files_must_be_readable(tls):
    assert problems(POOL + https_listener(certificate="x.pem"), str(tls)) == lines(
        'listeners[0].certificate: cannot read "x.pem": No such file or directory')


@pytest.mark.parametrize("certificate, key", [("c.pem", "k2.pem"), ("garbage.pem", "k.pem"),
                                              ("c.pem", "garbage.pem")])
def test_https_listener_files_must_be_a_matching_pair(tls, certificate, key):
    found = problems(POOL + https_listener(certificate=certificate, private_key=key), str(tls))
    assert len(found) == 1
    assert found[0].startswith("appgw.toml: listeners[0]: certificate and private_key do not "
                               "match or are not valid PEM: ")
    assert "_ssl.c" not in found[0]


def test_http_listener_takes_no_certificate():
    text = BASE.replace('bind = "0.0.0.0:80"', 'bind = "0.0.0.0:80"\ncertificate = "c.pem"')
    assert problems(text) == lines("listeners[0].certificate: only for https listeners")


# --- pools -------------------------------------------------------------------------

@pytest.mark.parametrize("server, why", [
    ("::1", 'write IPv6 addresses in brackets, e.g. "[::1]:8080"'),
    ("10.0.0.4:0", 'port must be 1-65535, got "0"'),
    ("unix:run/app.sock", 'a unix socket needs an absolute path: "unix:/run/app.sock"'),
    ("http://10.0.0.4", 'write "host:port", not a URL'),
    ("", "the host is missing"),
    ("a_b c", '"a_b c" is not an IP address or host name'),
])
def test_servers_are_checked(server, why):
    text = BASE.replace('servers = ["10.0.0.4"]', f'servers = ["10.0.0.4", "{server}"]')
    assert problems(text) == lines(
        f'backend_pools[0].servers[1]: "{server}" is not a server address: {why}')


def test_duplicate_server():
    text = BASE.replace('servers = ["10.0.0.4"]', 'servers = ["10.0.0.4", "10.0.0.4"]')
    assert problems(text) == lines('backend_pools[0].servers[1]: duplicate server "10.0.0.4"')


@pytest.mark.parametrize("pool, problem", [
    ("servers = []", "backend_pools[0]: needs servers or app"),
    ("", "backend_pools[0]: needs servers or app"),
    ('app = "wsgi"', 'backend_pools[0].app: must be "package.module:callable", got "wsgi"'),
    ('app = "pkg.mod:app()"', 'backend_pools[0].app: must be "package.module:callable", got "pkg.mod:app()"'),
    ('app = "pkg..mod:app"', 'backend_pools[0].app: must be "package.module:callable", got "pkg..mod:app"'),
    ('servers = ["a"]\nload_balancing = "random"',
     'backend_pools[0].load_balancing: must be "round_robin" or "least_connections", got "random"'),
])
def test_pools_are_checked(pool, problem):
    text = LISTENER + RULE + f'[[backend_pools]]\nname = "app"\n{pool}\n'
    assert problems(text) == lines(problem)


def test_pool_with_only_an_app():
    text = LISTENER + RULE + '[[backend_pools]]\nname = "app"\napp = "appgw.demo:app"\n'
    pool = parse(text).backend_pools[0]
    assert pool.servers == () and pool.app == "appgw.demo:app"


# --- backend settings ------------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    ('protocol = "tcp"', 'protocol: must be "http" or "https", got "tcp"'),
    ("port = 0", "port: must be between 1 and 65535, got 0"),
    ("request_timeout = 0", "request_timeout: must be greater than 0, got 0"),
    ("connect_timeout = false", "connect_timeout: must be a number, got boolean false"),
    ('affinity_cookie = "my cookie"',
     "affinity_cookie: must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got \"my cookie\""),
    ('affinity_cookie = "a=b"',
     "affinity_cookie: must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got \"a=b\""),
    ('host_name = "a b"', 'host_name: must be a host name or address, optionally with ":port", got "a b"'),
    ('host_name = "x"\npick_host_name_from_backend = true',
     None),
    ('trusted_root = "ca.pem"', "trusted_root: only for https backends"),
])
def test_backend_settings_are_checked(line, problem):
    text = BASE + f'[[backend_settings]]\nname = "s"\n{line}\n'
    if problem is None:
        problem = "backend_settings[0]: host_name and pick_host_name_from_backend exclude each other"
    else:
        problem = "backend_settings[0]." + problem
    assert problems(text) == lines(problem)


def test_trusted_root_is_resolved_and_checked(tls):
    text = BASE + '[[backend_settings]]\nname = "s"\nprotocol = "https"\ntrusted_root = "{}"\n'
    config = parse(text.format("c.pem"), base_dir=str(tls))
    assert config.settings("s").trusted_root == str(tls / "c.pem")
    assert problems(text.format("none.pem"), str(tls)) == lines(
        'backend_settings[0].trusted_root: cannot read "none.pem": No such file or directory')
    found = problems(text.format("garbage.pem"), str(tls))
    assert len(found) == 1 and found[0].startswith(
        "appgw.toml: backend_settings[0].trusted_root: not a valid PEM CA bundle: ")


# --- probes ------------------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    ('protocol = "tcp"', 'protocol: must be "", "http" or "https", got "tcp"'),
    ('path = "health"', 'path: must start with "/", got "health"'),
    ("port = 65536", "port: must be between 0 and 65535, got 65536"),
    ("interval = 0", "interval: must be greater than 0, got 0"),
    ("unhealthy_threshold = 0", "unhealthy_threshold: must be at least 1, got 0"),
    ("healthy_threshold = 0", "healthy_threshold: must be at least 1, got 0"),
    ("match_status = []", "match_status: must not be empty"),
    ('match_status = "200"', 'match_status: must be an array like ["200-399"], got string "200"'),
    ('match_status = ["2xx"]',
     'match_status[0]: must be a status "200" or a range "200-399" within 100-599, got string "2xx"'),
    ('match_status = ["399-200"]',
     'match_status[0]: must be a status "200" or a range "200-399" within 100-599, got string "399-200"'),
    ("match_status = [200, 600]",
     'match_status[1]: must be a status "200" or a range "200-399" within 100-599, got integer 600'),
    ('host = "a\\nb"', 'host: must be a host name or address, optionally with ":port", got "a\\nb"'),
])
def test_probes_are_checked(line, problem):
    text = BASE + f'[[probes]]\nname = "p"\n{line}\n'
    assert problems(text) == lines("probes[0]." + problem)


def test_probe_timeout_may_exceed_interval():
    probe = parse(BASE + '[[probes]]\nname = "p"\ninterval = 5\ntimeout = 10\n').probe("p")
    assert (probe.interval, probe.timeout) == (5, 10)


# --- all problems at once ---------------------------------------------------------

def test_all_problems_of_a_file_are_reported_together():
    text = """
[gateway]
wokers = 2
max_connections = "many"

[[listeners]]
name = "http"
bind = "0.0.0.0:80"
protocol = "htp"

[[listeners]]
name = "https"
bind = "0.0.0.0:443"

[[backend_pools]]
name = "app"
servers = ["10.0.0.4:99999"]

[[backend_pools]]
name = "app"

[[rules]]
name = "main"
listener = "http"
backend_pool = "chatt"
  [[rules.paths]]
  paths = ["chat/*"]
  backend_pool = "app"
"""
    assert problems(text) == lines(
        "gateway.max_connections: must be an integer, got string \"many\"",
        "gateway.wokers: unknown key",
        'listeners[0].protocol: must be "http" or "https", got "htp"',
        'backend_pools[0].servers[0]: "10.0.0.4:99999" is not a server address: '
        'port must be 1-65535, got "99999"',
        "backend_pools[1]: needs servers or app",
        'backend_pools[1].name: duplicate name "app"',
        'rules[0].paths[0].paths[0]: must start with "/", got "chat/*"',
        'rules[0].backend_pool: no backend pool named "chatt"',
        'listeners[1]: no rule for listener "https"',
    )


# --- summary ----------------------------------------------------------------------

def test_summary_shows_the_tree(tls):
    text = POOL + https_listener() + """
[[listeners]]
name = "http"
bind = "0.0.0.0:80"

[[backend_pools]]
name = "chat"
servers = ["[::1]:9000", "unix:/run/chat.sock"]

[[backend_settings]]
name = "chat-settings"
websocket_idle_timeout = 3600
probe = "p"

[[probes]]
name = "p"
path = "/health"

[[rules]]
name = "to-https"
listener = "http"
redirect = { listener = "https" }
"""
    text = text.replace('backend_pool = "app"\n', 'backend_pool = "app"\n  [[rules.paths]]\n'
                        '  paths = ["/ws"]\n  backend_pool = "chat"\n'
                        '  backend_settings = "chat-settings"\n', 1)
    summary = summarize(parse(text, base_dir=str(tls)))
    assert summary.splitlines() == [
        "appgw.toml: ok",
        "gateway: 1 worker(s), admin 127.0.0.1:9901, access log stdout (combined), "
        "max 10000 connections, drain 30s",
        'listener "https"  https://0.0.0.0:443  any host',
        '  rule "https-rule": pool "app" with default settings',
        '    /ws: pool "chat" with "chat-settings"',
        'listener "http"  http://0.0.0.0:80  any host',
        '  rule "to-https": redirect 301 to listener "https" (keeps path and query)',
        'pool "app"  round_robin',
        "  with default settings: http port 80, request 20s, websocket idle 20s, connect 5s",
        "    servers: 10.0.0.4:80",
        "    probe default: GET http://SERVER/ every 30s (timeout 30s), down after 3, "
        "up after 1, status 200-399",
        'pool "chat"  round_robin',
        '  with "chat-settings": http port 80, request 20s, websocket idle 3600s, connect 5s',
        "    servers: [::1]:9000, unix:/run/chat.sock",
        '    probe "p": GET http://SERVER/health every 30s (timeout 30s), down after 3, '
        "up after 1, status 200-399",
    ]


def test_summary_marks_unused_pools_and_apps():
    text = BASE + '[[backend_pools]]\nname = "spare"\napp = "appgw.demo:app"\n'
    summary = summarize(parse(text))
    assert 'pool "spare"  round_robin  (not used by any rule)' in summary
    assert "    servers: app:appgw.demo:app" in summary


def test_repository_sample_passes():
    sample = os.path.join(os.path.dirname(__file__), "..", "appgw.toml")
    summary = summarize(load_config(sample))
    assert len(summary.splitlines()) <= 30


def test_app_that_cannot_be_imported_is_a_problem_with_the_others():
    text = (LISTENER + RULE + '[[backend_pools]]\nname = "app"\napp = "no_such_module_xyz:app"\n'
            '[gateway]\nworkers = 0\n')
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    problems = err.value.problems
    assert any(p.startswith("appgw.toml: backend_pools[0].app: cannot import 'no_such_module_xyz'") for p in problems)
    assert any(p.startswith("appgw.toml: gateway.workers:") for p in problems)


# --- HTTP/2 keys ------------------------------------------------------------------

def test_http2_keys_default_and_are_read():
    listener = parse(BASE).listener_by_name["http"]
    assert (listener.http2, listener.max_concurrent_streams) == (False, 100)
    text = BASE.replace('bind = "0.0.0.0:80"', 'bind = "0.0.0.0:80"\nhttp2 = true\nmax_concurrent_streams = 8')
    listener = parse(text).listener_by_name["http"]
    assert (listener.http2, listener.max_concurrent_streams) == (True, 8)


def test_summary_shows_how_each_listener_takes_http2(tls):
    text = (BASE.replace('bind = "0.0.0.0:80"', 'bind = "0.0.0.0:80"\nhttp2 = true')
            + https_listener(extra="http2 = true\nmax_concurrent_streams = 8")
            + https_listener(name="plain-tls").replace("0.0.0.0:443", "0.0.0.0:8443"))
    summary = summarize(parse(text, base_dir=str(tls))).splitlines()
    listeners = [line for line in summary if line.startswith(("listener ", "  http2"))]
    assert listeners == [
        'listener "http"  http://0.0.0.0:80  any host',
        "  http2: h2c accepted with prior knowledge (and HTTP/1.1), max 100 concurrent streams",
        'listener "https"  https://0.0.0.0:443  any host',
        "  http2: h2 offered by ALPN (then http/1.1), max 8 concurrent streams",
        'listener "plain-tls"  https://0.0.0.0:8443  any host',
    ]


def test_http2_keys_are_checked():
    text = BASE.replace('bind = "0.0.0.0:80"', 'bind = "0.0.0.0:80"\nhttp2 = "yes"\nmax_concurrent_streams = 0')
    assert problems(text) == lines(
        'listeners[0].http2: must be true or false, got string "yes"',
        "listeners[0].max_concurrent_streams: must be between 1 and 2147483647, got 0")


def test_a_shared_bind_needs_one_http2_setting():
    second = site("b", host_names='["b.example.com"]').replace(
        'protocol = "http"', 'protocol = "http"\nhttp2 = true\nmax_concurrent_streams = 5')
    assert problems(POOL + site("a", host_names='["a.example.com"]') + second) == lines(
        'listeners[1].http2: true differs from false of listener "a" on the same bind 0.0.0.0:80',
        'listeners[1].max_concurrent_streams: 5 differs from 100 of listener "a" on the same bind 0.0.0.0:80')


def test_every_key_is_declared_once_with_how_it_is_read():
    """Each TOML key is a dataclass field whose metadata says how it is read:
    a field without it would be a key nobody reads (or a derived value)."""
    from appgw.config import model
    from appgw.config.check import CHECKS, _READERS

    sections = (model.Gateway, model.Listener, model.BackendPool, model.BackendSettings, model.Probe,
                model.Redirect, model.PathRule, model.Rule, model.RewriteSet, model.RewriteRule,
                model.RewriteCondition, model.UrlRewrite)
    for cls in sections:
        for f in dataclasses.fields(cls):
            key = model.key_of(f)
            assert (key is not None) == f.init, f"{cls.__name__}.{f.name}"
            if key is not None:
                assert key.kind == "custom" or key.kind in _READERS, f"{cls.__name__}.{f.name}"
                assert key.check in CHECKS, f"{cls.__name__}.{f.name}"
