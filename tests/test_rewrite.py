"""Rewrite sets, sans-io: sets written in TOML, compiled, run on parsed requests.

No sockets: a request head goes through the real request policy, the set is
compiled from a real config, and the tests assert the header lines and the
request-target a backend would get, and the answer lines a client would get.
"""
import logging

import pytest

from appgw.config import parse_config
from appgw.http.policy import parse_request
from appgw.exchange.rewrite import RewriteView, apply_header_edits, compile_sets

BASE = """
[[listeners]]
name = "http"
bind = "0.0.0.0:80"
[[backend_pools]]
name = "app"
servers = ["10.0.0.4"]
[[rules]]
name = "main"
listener = "http"
backend_pool = "app"
rewrite_set = "s"
[[rewrite_sets]]
name = "s"
"""

HEAD = (b"GET /shop/Item-42/view?colour=red&size=9 HTTP/1.1\r\nHost: Shop.Example:8080\r\n"
        b"User-Agent: curl/8.5\r\nAccept: */*\r\nX-Debug: 1\r\nX-Tag: a\r\nx-tag: b\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\n\r\n")


def compiled(rules):
    """The set "s" made of `rules` ([[rewrite_sets.rules]] tables in TOML)."""
    return compile_sets(parse_config(BASE + rules, "appgw.toml", base_dir="/nonexistent"))["s"]


def view(head=HEAD, client_ip="192.0.2.7", client_port=50123, tls=False, server_port=8080):
    return RewriteView(parse_request(head), client_ip, client_port, tls, server_port)


def rule(body, name="r"):
    return f'[[rewrite_sets.rules]]\nname = "{name}"\n{body}\n'


def sent_headers(rewrite_set, v):
    """The header lines a backend would get after the request phase."""
    rewrite = rewrite_set.request(v)
    return v.request.passed if rewrite is None else rewrite.apply_headers(v.request.passed)


# --- variables ---------------------------------------------------------------------

VARIABLES = {
    "var_client_ip": b"192.0.2.7",
    "var_client_port": b"50123",
    "var_host": b"shop.example",
    "var_http_method": b"GET",
    "var_request_uri": b"/shop/Item-42/view?colour=red&size=9",
    "var_uri_path": b"/shop/Item-42/view",
    "var_query_string": b"colour=red&size=9",
    "var_request_scheme": b"http",
    "var_server_port": b"8080",
    "var_ssl_enabled": b"",
    "http_req_User-Agent": b"curl/8.5",
    "http_req_user-agent": b"curl/8.5",
    "http_req_X-Tag": b"a, b",
    "http_req_Cookie": b"a=1; b=2",
    "http_req_X-Absent": b"",
}


def test_every_request_variable_in_a_request_header():
    headers = ", ".join(f'"X-V{i}" = "<{{{name}}}>"' for i, name in enumerate(VARIABLES))
    lines = sent_headers(compiled(rule(f"request_headers = {{ {headers} }}")), view())
    for i, expected in enumerate(VARIABLES.values()):
        assert b"X-V%d: <%s>" % (i, expected) in lines


def test_tls_variables():
    v = view(tls=True, server_port=443)
    assert (v.value("var_request_scheme"), v.value("var_ssl_enabled"), v.value("var_server_port")) == (
        b"https", b"on", b"443")


def test_absolute_form_target_gives_its_host_and_path():
    v = view(b"GET http://Other.Example:81/p?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert (v.value("var_host"), v.value("var_uri_path"), v.value("var_request_uri")) == (
        b"other.example", b"/p", b"/p?q=1")


def test_response_variables_in_response_values():
    s = compiled(rule('response_headers = { "X-Was" = "{http_resp_Content-Type}|{http_resp_X-Missing}|'
                      '{var_uri_path}" }'))
    lines = s.response(view(), [b"Content-Type: text/html; charset=utf-8", b"Server: demo"])
    assert lines == [b"Content-Type: text/html; charset=utf-8", b"Server: demo",
                     b"X-Was: text/html; charset=utf-8||/shop/Item-42/view"]


def test_response_variables_come_from_the_answer_s_pairs_when_given():
    s = compiled(rule('response_headers = { "X-Length" = "{http_resp_Content-Length}" }'))
    lines = s.response(view(), [b"Server: demo"], 200, headers=[(b"Content-Length", b"12"), (b"Server", b"demo")])
    assert lines == [b"Server: demo", b"X-Length: 12"]


# --- conditions ----------------------------------------------------------------------

def set_if(*conditions):
    shown = ", ".join(conditions)
    return compiled(rule(f'conditions = [{shown}]\nrequest_headers = {{ "X-Hit" = "yes" }}'))


def hit(rewrite_set, v=None):
    return b"X-Hit: yes" in sent_headers(rewrite_set, v or view())


def test_conditions_true_and_false():
    assert hit(set_if('{ variable = "var_uri_path", pattern = "^/shop/" }'))
    assert not hit(set_if('{ variable = "var_uri_path", pattern = "^/admin/" }'))
    assert hit(compiled(rule('request_headers = { "X-Hit" = "yes" }')))  # no conditions: always


def test_every_condition_must_hold():
    assert hit(set_if('{ variable = "var_uri_path", pattern = "^/shop/" }',
                      '{ variable = "http_req_User-Agent", pattern = "curl" }'))
    assert not hit(set_if('{ variable = "var_uri_path", pattern = "^/shop/" }',
                          '{ variable = "http_req_User-Agent", pattern = "Mozilla" }'))


def test_negated_condition():
    assert not hit(set_if('{ variable = "var_uri_path", pattern = "^/shop/", negate = true }'))
    assert hit(set_if('{ variable = "var_uri_path", pattern = "^/admin/", negate = true }'))
    # an absent header is the empty string: "not matching x" holds
    assert hit(set_if('{ variable = "http_req_X-Absent", pattern = "x", negate = true }'))


def test_ignore_case():
    assert not hit(set_if('{ variable = "var_uri_path", pattern = "item-42" }'))
    assert hit(set_if('{ variable = "var_uri_path", pattern = "item-42", ignore_case = true }'))
    assert hit(set_if('{ variable = "http_req_User-Agent", pattern = "^CURL/", ignore_case = true }'))


def test_a_pattern_is_searched_not_anchored():
    assert hit(set_if('{ variable = "var_query_string", pattern = "size=9" }'))
    assert not hit(set_if('{ variable = "var_query_string", pattern = "^size=9" }'))


def test_conditions_see_the_request_as_sent_not_an_earlier_rule_s_rewrite():
    s = compiled(rule('request_headers = { "User-Agent" = "rewritten" }', "first")
                 + rule('conditions = [{ variable = "http_req_User-Agent", pattern = "^curl" }]\n'
                        'request_headers = { "X-Hit" = "yes" }', "second"))
    lines = sent_headers(s, view())
    assert b"User-Agent: rewritten" in lines and b"X-Hit: yes" in lines


# --- capture groups ------------------------------------------------------------------

def test_capture_groups_in_values():
    s = compiled(rule('conditions = [{ variable = "var_uri_path", pattern = "^/shop/([a-z]+)-([0-9]+)(/x)?", '
                      'ignore_case = true },\n'
                      '  { variable = "http_req_User-Agent", pattern = "^(\\\\w+)/" }]\n'
                      'request_headers = { "X-Item" = "{var_uri_path_1}:{var_uri_path_2}:'
                      '[{var_uri_path_3}]:{var_uri_path_0}", "X-Agent" = "{http_req_User-Agent_1}" }'))
    lines = sent_headers(s, view())
    assert b"X-Item: Item:42:[]:/shop/Item-42" in lines
    assert b"X-Agent: curl" in lines


def test_capture_from_a_response_condition():
    s = compiled(rule('conditions = [{ variable = "http_resp_Content-Type", pattern = "^text/(\\\\w+)" }]\n'
                      'response_headers = { "X-Kind" = "{http_resp_Content-Type_1}" }'))
    assert s.response(view(), [b"Content-Type: text/css"]) == [b"Content-Type: text/css", b"X-Kind: css"]
    assert s.response(view(), [b"Content-Type: image/png"]) == [b"Content-Type: image/png"]


def test_request_captures_reach_the_response_actions():
    s = compiled(rule('conditions = [{ variable = "var_uri_path", pattern = "^/shop/([^/]+)" }]\n'
                      'request_headers = { "X-Item" = "{var_uri_path_1}" }\n'
                      'response_headers = { "X-Item" = "{var_uri_path_1}" }'))
    v = view()
    assert b"X-Item: Item-42" in sent_headers(s, v)
    assert s.response(v, [b"Server: demo"]) == [b"Server: demo", b"X-Item: Item-42"]
    other = view(HEAD.replace(b"/shop/", b"/blog/"))
    assert s.request(other) is None and s.response(other, [b"Server: demo"]) == [b"Server: demo"]


def test_literal_braces():
    s = compiled(rule('request_headers = { "X-Json" = "{{\\"path\\": \\"{var_uri_path}\\"}}" }'))
    assert b'X-Json: {"path": "/shop/Item-42/view"}' in sent_headers(s, view())


# --- header actions ------------------------------------------------------------------

def test_request_header_set_replaces_every_copy_and_remove_takes_it_out():
    s = compiled(rule('request_headers = { "x-TAG" = "one", "X-Debug" = "", "X-New" = "{var_client_ip}" }'))
    lines = sent_headers(s, view())
    assert [line for line in lines if line.lower().startswith((b"x-tag", b"x-debug"))] == [b"x-TAG: one"]
    assert b"X-New: 192.0.2.7" in lines and b"User-Agent: curl/8.5" in lines


def test_response_header_set_and_remove():
    s = compiled(rule('response_headers = { "Server" = "", "Strict-Transport-Security" = "max-age=31536000", '
                      '"cache-control" = "no-store" }'))
    lines = s.response(view(), [b"Server: gunicorn", b"Cache-Control: max-age=60", b"Cache-Control: public",
                                b"Content-Type: text/plain"])
    assert lines == [b"Content-Type: text/plain", b"Strict-Transport-Security: max-age=31536000",
                     b"cache-control: no-store"]


def test_a_later_rule_wins():
    s = compiled(rule('request_headers = { "X-A" = "first", "X-B" = "kept" }', "one")
                 + rule('request_headers = { "X-A" = "second" }', "two")
                 + rule('request_headers = { "X-B" = "" }\nconditions = [{ variable = "var_host", '
                        'pattern = "nomatch" }]', "three"))
    lines = sent_headers(s, view())
    assert b"X-A: second" in lines and b"X-A: first" not in lines and b"X-B: kept" in lines


def test_a_value_that_substitutes_to_empty_removes_the_header():
    s = compiled(rule('request_headers = { "X-Debug" = "{http_req_X-Absent}" }'))
    assert not any(line.startswith(b"X-Debug") for line in sent_headers(s, view()))


def test_101_keeps_the_headers_the_handshake_needs():
    s = compiled(rule('response_headers = { "Sec-WebSocket-Accept" = "forged", "Sec-WebSocket-Protocol" = "", '
                      '"X-Gw" = "1" }'))
    handshake = [b"Sec-WebSocket-Accept: abc=", b"Sec-WebSocket-Protocol: chat"]
    assert s.response(view(), handshake, 101) == handshake + [b"X-Gw: 1"]
    assert s.response(view(), handshake, 200) == [b"Sec-WebSocket-Accept: forged", b"X-Gw: 1"]


def test_apply_header_edits():
    lines = [b"A: 1", b"b: 2", b"B: 3", b"C: 4"]
    edits = [(b"b", b"B: new"), (b"c", None), (b"d", b"D: 5"), (b"d", None), (b"a", None), (b"a", b"A: 9")]
    assert apply_header_edits(lines, edits) == [b"B: new", b"A: 9"]
    assert apply_header_edits(lines, [(b"c", None)], skip={b"c"}) is lines
    assert apply_header_edits(lines, []) is lines


# --- values that must never be sent -----------------------------------------------------

def injected(value):
    """A request whose X-In header carries `value`: the parser refuses CR and LF,
    so this stands for whatever a less strict front end might hand over."""
    v = view()
    v.request.headers = v.request.headers + [(b"X-In", value)]
    return v


@pytest.mark.parametrize("value", [b"a\r\nX-Injected: 1", b"a\nb", b"a\rb", b"a\x00b", b"a\x7fb"])
def test_a_value_with_a_control_character_is_dropped_and_logged(value, caplog):
    s = compiled(rule('request_headers = { "X-Out" = "v={http_req_X-In}", "X-Client-Port" = "spoofed" }\n'
                      'response_headers = { "X-Echo" = "{http_req_X-In}" }'))
    v = injected(value)
    v.request.passed = v.request.passed + [b"X-Out: from-the-client"]
    with caplog.at_level(logging.WARNING, logger="appgw"):
        lines = sent_headers(s, v)
        answer = s.response(v, [b"X-Echo: backend"])
    assert not any(line.startswith(b"X-Out") for line in lines)  # neither the bad value nor the client's
    assert b"X-Client-Port: spoofed" in lines
    assert answer == []
    assert not any(b"\r" in line or b"\n" in line or b"\x00" in line for line in lines + answer)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("control character" in m for m in messages)
    assert "rewrite set s, rule r: header X-Out left out" in messages[0]


def test_tab_and_obs_text_are_valid_values():
    s = compiled(rule('request_headers = { "X-Out" = "{http_req_X-In}" }'))
    assert b"X-Out: a\tb\xe9" in sent_headers(s, injected(b"a\tb\xe9"))


# --- url ----------------------------------------------------------------------------

def test_url_path_and_query_rewrite_without_reroute():
    s = compiled(rule('url = { path = "/v2{var_uri_path}", query = "{var_query_string}&src=gw" }'))
    v = view()
    rewrite = s.request(v)
    assert rewrite.target(v.request) == b"/v2/shop/Item-42/view?colour=red&size=9&src=gw"
    assert rewrite.reroute is False


def test_url_rewrite_with_reroute_and_captures():
    s = compiled(rule('conditions = [{ variable = "var_uri_path", pattern = "^/shop/(.*)$" }]\n'
                      'url = { path = "/store/{var_uri_path_1}", reroute = true }'))
    v = view()
    rewrite = s.request(v)
    assert (rewrite.path, rewrite.reroute) == (b"/store/Item-42/view", True)
    assert rewrite.target(v.request) == b"/store/Item-42/view?colour=red&size=9"


def test_query_only_and_an_emptied_query():
    v = view()
    assert compiled(rule('url = { query = "page=1" }')).request(v).target(v.request) == b"/shop/Item-42/view?page=1"
    assert compiled(rule('url = { query = "" }')).request(v).target(v.request) == b"/shop/Item-42/view"


def test_a_rewritten_path_that_is_not_a_path_stays_as_sent(caplog):
    s = compiled(rule('url = { path = "{http_req_X-In}", query = "{http_req_X-In}", reroute = true }'))
    for value in (b"no-slash", b"/with space", b"/a?b", b"/a#b"):
        v = injected(value)
        with caplog.at_level(logging.WARNING, logger="appgw"):
            rewrite = s.request(v)
        assert rewrite.path is None and rewrite.reroute is False
        assert rewrite.target(v.request) == (v.request.target if b" " in value or b"#" in value
                                             else b"/shop/Item-42/view?" + value)
    assert "url path left as sent" in caplog.text


# --- cost ----------------------------------------------------------------------------

def test_a_set_without_request_actions_does_no_request_work():
    s = compiled(rule('conditions = [{ variable = "http_req_User-Agent", pattern = "curl" }]\n'
                      'response_headers = { "X-A" = "1" }'))
    v = view()
    assert s.has_request is False and s.request(v) is None
    assert v._request_index is None  # no header was even looked at
    assert compiled("").response(v, [b"A: 1"]) == [b"A: 1"]
