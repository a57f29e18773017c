"""Config keys of rewrite sets, error pages and compression: pure tests, no network.

Each test writes a small TOML text and asserts the exact problem lines, as
tests/test_config.py does for the other sections.
"""
import pickle

import pytest

from appgw.config import DEFAULT_COMPRESS_TYPES, ConfigError, UrlRewrite, parse_config
from appgw.config.summary import summarize

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
SET = '\n[[rewrite_sets]]\nname = "s"\n'


def parse(text, base_dir="/nonexistent"):
    return parse_config(text, "appgw.toml", base_dir=base_dir)


def problems(text, base_dir="/nonexistent"):
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value.problems


def lines(*items):
    return ["appgw.toml: " + item for item in items]


def rule_problems(body):
    """Problems of one rewrite rule `body` (TOML lines) in set "s"."""
    return problems(BASE + SET + '[[rewrite_sets.rules]]\nname = "r"\n' + body)


R = "rewrite_sets[0].rules[0]."


# --- defaults and a full file ------------------------------------------------------

def test_defaults():
    config = parse(BASE)
    gateway = config.gateway
    assert gateway.error_pages == () and gateway.compress_min_size == 1024
    assert gateway.compress_types == DEFAULT_COMPRESS_TYPES == (
        "text/html", "text/css", "text/plain", "text/javascript", "application/javascript",
        "application/json", "application/xml", "image/svg+xml")
    assert config.listeners[0].error_pages == ()
    rule = config.rules[0]
    assert (rule.rewrite_set, rule.compress) == ("", False)
    assert config.rewrite_sets == ()


def test_full_rewrite_set_is_read_in_order(tmp_path):
    config = parse(BASE.replace('backend_pool = "app"\n', 'backend_pool = "app"\nrewrite_set = "s"\n') + SET + """
[[rewrite_sets.rules]]
name = "first"
conditions = [
  { variable = "var_uri_path", pattern = "^/(v1)/", ignore_case = true },
  { variable = "http_req_X-Test", pattern = "no", negate = true },
]
request_headers = { "X-B" = "{var_uri_path_1}", "X-A" = "" }
url = { path = "/v2{var_uri_path}", query = "", reroute = true }
[[rewrite_sets.rules]]
name = "second"
response_headers = { "Server" = "", "Strict-Transport-Security" = "max-age=31536000" }
""")
    assert config.rules[0].rewrite_set == "s"
    rewrite_set = config.rewrite_set_by_name["s"]
    first, second = rewrite_set.rules
    assert [c.variable for c in first.conditions] == ["var_uri_path", "http_req_X-Test"]
    assert (first.conditions[0].ignore_case, first.conditions[1].negate) == (True, True)
    assert first.request_headers == (("X-B", "{var_uri_path_1}"), ("X-A", ""))
    assert first.url == UrlRewrite(path="/v2{var_uri_path}", query="", reroute=True)
    assert second.response_headers == (("Server", ""), ("Strict-Transport-Security", "max-age=31536000"))
    assert second.url is None and second.conditions == ()
    assert pickle.loads(pickle.dumps(config)) == config


def test_an_empty_set_is_allowed():
    assert parse(BASE + SET).rewrite_set_by_name["s"].rules == ()


def test_path_entry_set_and_compress_replace_the_rule_s():
    config = parse(LISTENER + POOL + """
[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
rewrite_set = "a"
compress = true
  [[rules.paths]]
  paths = ["/own/*"]
  backend_pool = "app"
  rewrite_set = "b"
  compress = false
  [[rules.paths]]
  paths = ["/inherit/*"]
  backend_pool = "app"
[[rewrite_sets]]
name = "a"
[[rewrite_sets]]
name = "b"
""")
    rule = config.rules[0]
    own, inherit = rule.paths
    assert (rule.rewrite_set_for(None), rule.compress_for(None)) == ("a", True)
    assert (rule.rewrite_set_for(own), rule.compress_for(own)) == ("b", False)
    assert (rule.rewrite_set_for(inherit), rule.compress_for(inherit)) == ("a", True)
    assert inherit.compress is None


def test_compression_keys():
    gateway = parse('[gateway]\ncompress_types = ["Text/HTML", "text/*"]\ncompress_min_size = 0\n'
                    + BASE).gateway
    assert (gateway.compress_types, gateway.compress_min_size) == (("text/html", "text/*"), 0)


# --- rewrite set errors --------------------------------------------------------------

def test_set_and_rule_names():
    assert problems(BASE + SET + SET + '[[rewrite_sets]]\n[[rewrite_sets.rules]]\n') == lines(
        'rewrite_sets[1].name: duplicate name "s"',
        "rewrite_sets[2].name: is required",
        "rewrite_sets[2].rules[0].name: is required")
    assert rule_problems('[[rewrite_sets.rules]]\nname = "r"\n') == lines(
        'rewrite_sets[0].rules[1].name: duplicate name "r" in this rewrite set')


def test_references_to_sets_must_resolve():
    text = LISTENER + POOL + """
[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
rewrite_set = "nope"
  [[rules.paths]]
  paths = ["/a"]
  backend_pool = "app"
  rewrite_set = "nada"
"""
    assert problems(text) == lines('rules[0].rewrite_set: no rewrite set named "nope"',
                                   'rules[0].paths[0].rewrite_set: no rewrite set named "nada"')


def test_unknown_variable_in_a_condition():
    assert rule_problems('conditions = [{ variable = "var_nope", pattern = "x" }]\n') == lines(
        R + 'conditions[0].variable: unknown variable "var_nope": one of var_client_ip, var_client_port, '
        "var_host, var_http_method, var_request_uri, var_uri_path, var_query_string, var_request_scheme, "
        "var_server_port, var_ssl_enabled, http_req_<Header-Name> or http_resp_<Header-Name>")
    assert rule_problems('conditions = [{ variable = "http_req_bad name", pattern = "x" }]\n')[0].startswith(
        "appgw.toml: " + R + 'conditions[0].variable: unknown variable "http_req_bad name"')


def test_invalid_regular_expression():
    assert rule_problems('conditions = [{ variable = "var_host", pattern = "a(b" }]\n') == lines(
        R + "conditions[0].pattern: invalid regular expression: missing ), unterminated subpattern "
        "at position 1")


def test_condition_keys_and_types():
    assert rule_problems('conditions = [{ pattern = "x", negate = "yes", case = 1 }, 3]\n') == lines(
        R + "conditions[1]: must be a table, got integer 3",
        R + "conditions[0].variable: is required",
        R + 'conditions[0].negate: must be true or false, got string "yes"',
        R + "conditions[0].case: unknown key")


def test_unknown_variable_in_a_value():
    assert rule_problems('request_headers = { "X-A" = "{var_nope}" }\n') == lines(
        R + "request_headers.X-A: unknown variable {var_nope}")
    assert rule_problems('response_headers = { "X-A" = "{oops" }\n') == lines(
        R + 'response_headers.X-A: "{" starts a variable such as {var_uri_path}; write "{{" for a literal brace')


def test_response_variable_in_a_request_value():
    assert rule_problems('request_headers = { "X-A" = "{http_resp_Server}" }\n') == lines(
        R + "request_headers.X-A: http_resp_* variables are only known for response_headers")
    assert rule_problems('url = { path = "/{http_resp_Server}" }\n') == lines(
        R + "url.path: http_resp_* variables are only known for response_headers")
    assert rule_problems('url = { query = "a={http_resp_Server}" }\n') == lines(
        R + "url.query: http_resp_* variables are only known for response_headers")


def test_response_variable_in_a_condition_of_a_rule_with_request_actions():
    message = ("http_resp_Content-Type is only known once the answer arrives, and this rule has "
               "request actions (request_headers, url): give those a rule of their own")
    condition = 'conditions = [{ variable = "http_resp_Content-Type", pattern = "html" }]\n'
    assert rule_problems(condition + 'request_headers = { "X-A" = "1" }\n') == lines(
        R + "conditions[0].variable: " + message)
    assert rule_problems(condition + 'url = { path = "/x" }\n') == lines(R + "conditions[0].variable: " + message)
    # with response actions only, the rule is judged when the answer arrives
    parse(BASE + SET + '[[rewrite_sets.rules]]\nname = "r"\n' + condition
          + 'response_headers = { "X-A" = "{http_resp_Content-Type}" }\n')


def test_request_variables_may_be_used_in_response_values():
    parse(BASE + SET + '[[rewrite_sets.rules]]\nname = "r"\n'
          'conditions = [{ variable = "var_uri_path", pattern = "(.*)" }]\n'
          'response_headers = { "X-Path" = "{var_uri_path_1} {http_req_User-Agent} {var_client_ip}" }\n')


@pytest.mark.parametrize("name", ["Connection", "upgrade", "HOST", "Content-Length", "Transfer-Encoding",
                                  "Keep-Alive", "TE", "Trailer"])
def test_framing_and_connection_headers_cannot_be_rewritten(name):
    assert rule_problems(f'request_headers = {{ "{name}" = "x" }}\n'
                         f'response_headers = {{ "{name}" = "" }}\n') == lines(
        R + f"request_headers.{name}: {name} cannot be rewritten: the gateway sets it itself",
        R + f"response_headers.{name}: {name} cannot be rewritten: the gateway sets it itself")


def test_forwarded_headers_can_be_rewritten():
    parse(BASE + SET + '[[rewrite_sets.rules]]\nname = "r"\n'
          'request_headers = { "X-Forwarded-For" = "{var_client_ip}", "X-Forwarded-Proto" = "" }\n')


def test_header_names_and_values():
    assert rule_problems('request_headers = { "X A" = "1", "X-B" = 2, "X-C" = "a\\nb", "x-d" = "", '
                         '"X-D" = "" }\n') == lines(
        R + "request_headers.X A: must be a header name (letters, digits and !#$%&'*+-.^_`|~)",
        R + "request_headers.X-B: must be a string, got integer 2",
        R + "request_headers.X-C: must not contain control characters",
        R + 'request_headers.X-D: the same header as "x-d"')
    assert rule_problems('request_headers = 1\nresponse_headers = "x"\n') == lines(
        R + "request_headers: must be a table, got integer 1",
        R + 'response_headers: must be a table, got string "x"')


def test_capture_references():
    condition = 'conditions = [{ variable = "var_uri_path", pattern = "^/(a)(b)?" }, ' \
                '{ variable = "var_host", pattern = "(x)", negate = true }]\n'
    assert rule_problems(condition + 'request_headers = { "X-A" = "{var_uri_path_3}", '
                                     '"X-B" = "{var_host_1}", "X-C" = "{var_query_string_1}" }\n') == lines(
        R + "request_headers.X-A: {var_uri_path_3}: the pattern of conditions[0] has 2 groups",
        R + "request_headers.X-B: {var_host_1}: no condition of this rule matches var_host to capture "
            "from (negated conditions capture nothing)",
        R + "request_headers.X-C: {var_query_string_1}: no condition of this rule matches "
            "var_query_string to capture from (negated conditions capture nothing)")


def test_url_is_checked():
    assert rule_problems("url = {}\n") == lines(R + "url: needs path or query")
    assert rule_problems("url = { reroute = true, query = \"a=1\" }\n") == lines(
        R + "url.reroute: needs path: only a rewritten path is routed again")
    assert rule_problems('url = { path = "v2", query = "?a=1" }\n') == lines(
        R + 'url.path: must start with "/" or a variable',
        R + 'url.query: is written without its "?"')
    assert rule_problems('url = { path = "/a b", query = "a#b" }\n') == lines(
        R + 'url.path: must be visible ASCII without spaces or "?" or "#", got "/a b"',
        R + 'url.query: must be visible ASCII without spaces or "#", got "a#b"')
    assert rule_problems('url = { path = "/a?b", bogus = 1 }\n') == lines(
        R + 'url.path: must be visible ASCII without spaces or "?" or "#", got "/a?b"',
        R + "url.bogus: unknown key")


def test_unknown_keys_in_sets_and_rules():
    assert problems(BASE + SET + 'colour = "red"\n[[rewrite_sets.rules]]\nname = "r"\nwhen = 1\n') == lines(
        "rewrite_sets[0].rules[0].when: unknown key",
        "rewrite_sets[0].colour: unknown key")


# --- error pages --------------------------------------------------------------------

def test_error_pages_are_read_at_load(tmp_path):
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "502.html").write_bytes(b"<h1>gateway</h1>\n")
    (tmp_path / "slow.html").write_text("<h1>slow \u00e9</h1>", encoding="utf-8")
    config = parse('[gateway]\nerror_pages = { "502" = "errors/502.html", "504" = "slow.html" }\n'
                   + LISTENER + 'error_pages = { "504" = "slow.html" }\n' + POOL + RULE,
                   base_dir=str(tmp_path))
    assert config.gateway.error_pages == ((502, b"<h1>gateway</h1>\n"), (504, "<h1>slow \u00e9</h1>".encode()))
    assert config.listeners[0].error_pages == ((504, "<h1>slow \u00e9</h1>".encode()),)
    (tmp_path / "slow.html").unlink()  # read at load: the config keeps the bytes
    assert config.listeners[0].error_pages[0][1].startswith(b"<h1>slow")


def test_error_page_problems(tmp_path):
    (tmp_path / "big.html").write_bytes(b"x" * (1024 * 1024 + 1))
    (tmp_path / "max.html").write_bytes(b"x" * (1024 * 1024))
    (tmp_path / "latin1.html").write_bytes(b"caf\xe9")
    (tmp_path / "dir.html").mkdir()
    text = ('[gateway]\nerror_pages = { "502" = "missing.html", "503" = "big.html", "504" = "max.html", '
            '"418" = "max.html", "2xx" = "max.html", "0502" = "max.html", "500" = "dir.html", "501" = "latin1.html", '
            '"400" = "", "413" = 1 }\n' + LISTENER + 'error_pages = { "200" = "max.html", "404" = "gone.html" }\n'
            + POOL + RULE)
    statuses = "400, 403, 404, 405, 408, 413, 431, 500, 501, 502, 503, 504"
    assert problems(text, base_dir=str(tmp_path)) == lines(
        'gateway.error_pages.502: cannot read "missing.html": No such file or directory',
        'gateway.error_pages.503: "big.html" is larger than 1 MiB',
        f'gateway.error_pages.418: must be a status the gateway answers with ({statuses}), got "418"',
        f'gateway.error_pages.2xx: must be a status the gateway answers with ({statuses}), got "2xx"',
        f'gateway.error_pages.0502: must be a status the gateway answers with ({statuses}), got "0502"',
        'gateway.error_pages.500: cannot read "dir.html": Is a directory',
        'gateway.error_pages.501: "latin1.html" is not UTF-8 (byte 3); it is served as utf-8',
        'gateway.error_pages.400: must be a file path, got ""',
        "gateway.error_pages.413: must be a string (a file path), got integer 1",
        f'listeners[0].error_pages.200: must be a status the gateway answers with ({statuses}), got "200"',
        'listeners[0].error_pages.404: cannot read "gone.html": No such file or directory')


def test_error_pages_must_be_a_table():
    assert problems('[gateway]\nerror_pages = ["502.html"]\n' + BASE) == lines(
        "gateway.error_pages: must be a table, got array")


# --- compression --------------------------------------------------------------------

def test_compression_problems():
    assert problems('[gateway]\ncompress_types = ["text/html; charset=utf-8", "html", "*/*", 3]\n'
                    'compress_min_size = -1\n' + BASE.replace('backend_pool = "app"\n',
                                                              'backend_pool = "app"\ncompress = 1\n')) == lines(
        'gateway.compress_types[0]: must be a media type such as "text/html" or "text/*", without '
        'parameters, got "text/html; charset=utf-8"',
        'gateway.compress_types[1]: must be a media type such as "text/html" or "text/*", without '
        'parameters, got "html"',
        'gateway.compress_types[2]: must be a media type such as "text/html" or "text/*", without '
        'parameters, got "*/*"',
        "gateway.compress_types[3]: must be a string, got integer 3",
        "gateway.compress_min_size: must be at least 0, got -1",
        "rules[0].compress: must be true or false, got integer 1")


# --- the --check summary ----------------------------------------------------------------

def test_summary_shows_sets_compression_and_pages(tmp_path):
    (tmp_path / "p.html").write_text("<h1>x</h1>")
    config = parse('[gateway]\nadmin_bind = ""\nerror_pages = { "502" = "p.html", "404" = "p.html" }\n'
                   + LISTENER + 'error_pages = { "504" = "p.html" }\n' + POOL + RULE
                   + 'rewrite_set = "s"\ncompress = true\n'
                   '  [[rules.paths]]\n  paths = ["/a/*"]\n  backend_pool = "app"\n  compress = false\n'
                   '  [[rules.paths]]\n  paths = ["/b"]\n  backend_pool = "app"\n  rewrite_set = "t"\n'
                   + SET + '\n[[rewrite_sets]]\nname = "t"\n', base_dir=str(tmp_path))
    lines = summarize(config).splitlines()
    assert lines[1].endswith(", drain 30s, error pages 404, 502")
    assert lines[2:6] == [
        'listener "http"  http://0.0.0.0:80  any host  error pages 504',
        '  rule "main": pool "app" with default settings; rewrite set "s", compressed',
        '    /a/*: pool "app" with default settings; rewrite set "s"',
        '    /b: pool "app" with default settings; rewrite set "t", compressed',
    ]
