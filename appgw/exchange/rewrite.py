"""Rewrite rule sets, sans-io: conditions on request and answer variables,
header and URL actions, compiled once at load.

A set's rules run in the order written. Every condition of a rule must hold
for its actions to run; conditions always see the request as the client sent
it and the answer as the backend sent it, so a rule never depends on what an
earlier rule rewrote. Actions accumulate: a later rule's edit of a header
replaces an earlier one's.

Two phases, and each rule belongs to the one its actions need:
- `CompiledSet.request(view)` runs the rules that have request actions
  (request_headers, url). Their conditions may use request variables only
  (the config check refuses `http_resp_*` there). A rule that also has
  response actions keeps its outcome in the view for the answer.
- `CompiledSet.response(view, lines, status)` runs the rules with response
  actions; a rule without request actions is judged only now, so its
  conditions may use `http_resp_*` as well.

Values are templates: `{var_uri_path}`, `{http_req_User-Agent}`, a capture
group `{var_uri_path_1}` of one of the rule's own conditions; `{{` and `}}`
are literal braces. A value is checked after substitution: one that would
carry a control character (CR, LF, NUL, ...) is never sent; the header is
left out and a warning logged.
"""
import logging
import re

from appgw.http.grammar import TOKEN
from appgw.routing.router import host_name

log = logging.getLogger("appgw")

VARIABLES = (
    "var_client_ip", "var_client_port", "var_host", "var_http_method", "var_request_uri",
    "var_uri_path", "var_query_string", "var_request_scheme", "var_server_port", "var_ssl_enabled",
)
REQUEST_HEADER_PREFIX = "http_req_"
RESPONSE_HEADER_PREFIX = "http_resp_"

# Headers that frame the message or carry the connection's own state: the
# gateway sets them itself, so a set may not (a config error names the key).
FORBIDDEN = frozenset(("connection", "upgrade", "host", "content-length", "transfer-encoding",
                       "keep-alive", "te", "trailer", "proxy-connection"))
# Expect belongs to the gateway's 100-continue handling with the client.
FORBIDDEN_REQUEST = FORBIDDEN | {"expect"}
FORBIDDEN_RESPONSE = FORBIDDEN
# A 101's headers that the client checks against its own handshake.
HANDSHAKE = frozenset((b"sec-websocket-accept", b"sec-websocket-protocol", b"sec-websocket-extensions"))

_TOKEN_RE = re.compile(TOKEN)
_CAPTURE_RE = re.compile(r"(.+)_([0-9]{1,2})")
_REFERENCE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|\{")
# field-value = *( VCHAR / SP / HTAB / obs-text ): any other control is refused.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A request-target is visible ASCII; "?" only between path and query, "#" never.
_BAD_PATH = re.compile(rb"[^\x21-\x7e]|[?#]")
_BAD_QUERY = re.compile(rb"[^\x21-\x7e]|#")


# --- variables and templates, shared with the config check --------------------

def variable_phase(name: str):
    """"request", "response", or None for a name that is no variable."""
    if name in VARIABLES:
        return "request"
    for prefix, phase in ((REQUEST_HEADER_PREFIX, "request"), (RESPONSE_HEADER_PREFIX, "response")):
        if name.startswith(prefix) and _TOKEN_RE.fullmatch(name[len(prefix):]):
            return phase
    return None


class TemplateError(ValueError):
    """A value template that cannot be compiled; the message fits a problem line."""


def parse_template(text: str, captures: dict) -> list:
    """Split a value into parts: ("text", str), ("var", name) or ("capture", variable, n).

    `captures` maps each variable that a (not negated) condition of the rule
    matches to (condition index, number of groups in its pattern). A name
    that is a variable wins over a capture reading: `{http_req_X-Id_1}` is
    the header X-Id_1 unless a condition matches http_req_X-Id.
    """
    parts, pos = [], 0
    for ref in _REFERENCE_RE.finditer(text):
        if ref.start() > pos:
            parts.append(("text", text[pos:ref.start()]))
        pos = ref.end()
        token = ref.group(0)
        if token in ("{{", "}}"):
            parts.append(("text", token[0]))
        elif token == "{":
            raise TemplateError('"{" starts a variable such as {var_uri_path}; write "{{" for a literal brace')
        else:
            parts.append(_reference(ref.group(1), captures))
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return _merge_text(parts)


def _reference(name: str, captures: dict):
    capture = _CAPTURE_RE.fullmatch(name)
    if capture and capture.group(1) in captures:
        variable, n = capture.group(1), int(capture.group(2))
        index, groups = captures[variable]
        if n > groups:
            raise TemplateError(f"{{{name}}}: the pattern of conditions[{index}] has "
                                f"{groups} group{'s' if groups != 1 else ''}")
        return ("capture", variable, n)
    if variable_phase(name):
        return ("var", name)
    if capture and variable_phase(capture.group(1)):
        raise TemplateError(f"{{{name}}}: no condition of this rule matches {capture.group(1)} "
                            "to capture from (negated conditions capture nothing)")
    raise TemplateError(f"unknown variable {{{name}}}")


def _merge_text(parts):
    merged = []
    for part in parts:
        if merged and part[0] == "text" and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + part[1])
        else:
            merged.append(part)
    return merged


def template_phase(parts) -> str:
    """"response" when a part needs the answer, else "request"."""
    for part in parts:
        name = part[1] if part[0] != "text" else ""
        if part[0] != "text" and variable_phase(name) == "response":
            return "response"
    return "request"


def capture_map(conditions) -> dict:
    """variable -> (condition index, group count) for the rule's capturing conditions.

    The first not-negated condition on a variable is the one its captures
    come from. Patterns that do not compile are left out (the check reports them).
    """
    found = {}
    for index, condition in enumerate(conditions):
        if condition is None or condition.negate or condition.variable in found:
            continue
        try:
            groups = re.compile(condition.pattern.encode()).groups
        except re.error:
            continue
        found[condition.variable] = (index, groups)
    return found


def has_request_actions(rule) -> bool:
    return bool(rule.request_headers) or rule.url is not None


# --- the per-request view ------------------------------------------------------

class RewriteView:
    """The variables of one exchange, as bytes. Filled with what the exchange
    already holds; header look-ups index the headers on first use only.

    `request` is a policy.Request (its .method .target .path .query .host
    .headers); `client_ip` str or bytes; `client_port` and `server_port` ints;
    `tls` whether the client connection is TLS.
    """

    __slots__ = ("request", "client_ip", "client_port", "tls", "server_port",
                 "response_headers", "outcomes", "_request_index", "_response_index", "_response_lines")

    def __init__(self, request, client_ip, client_port, tls, server_port):
        self.request = request
        self.client_ip = client_ip
        self.client_port = client_port
        self.tls = tls
        self.server_port = server_port
        self.response_headers = None   # the answer's (name, value) pairs, set by response()
        self._response_lines = ()      # else its lines, read on the first http_resp_* look-up
        self.outcomes = None           # rule -> captures (or None), kept from the request phase
        self._request_index = None
        self._response_index = None

    def request_header(self, lname: bytes) -> bytes:
        if self._request_index is None:
            self._request_index = _index(self.request.headers)
        return self._request_index.get(lname, b"")

    def response_header(self, lname: bytes) -> bytes:
        if self._response_index is None:
            headers = self.response_headers
            self._response_index = _index(headers if headers is not None else _pairs(self._response_lines))
        return self._response_index.get(lname, b"")

    def value(self, variable: str) -> bytes:
        """Any variable by name (the compiled rules use getters instead)."""
        return _getter(variable)(self)


def _index(headers):
    """lower-case name -> the values joined as one field ("; " for Cookie, RFC 6265)."""
    index = {}
    for name, value in headers:
        lname = name.lower()
        if lname in index:
            index[lname] += (b"; " if lname == b"cookie" else b", ") + value
        else:
            index[lname] = value
    return index


def _text(value) -> bytes:
    return value if type(value) is bytes else str(value).encode()


_GETTERS = {
    "var_client_ip": lambda v: _text(v.client_ip),
    "var_client_port": lambda v: b"%d" % v.client_port,
    "var_host": lambda v: host_name(v.request.host).lower(),
    "var_http_method": lambda v: v.request.method,
    "var_request_uri": lambda v: v.request.target,
    "var_uri_path": lambda v: v.request.path,
    "var_query_string": lambda v: v.request.query,
    "var_request_scheme": lambda v: b"https" if v.tls else b"http",
    "var_server_port": lambda v: b"%d" % v.server_port,
    "var_ssl_enabled": lambda v: b"on" if v.tls else b"",
}


def _getter(variable: str):
    getter = _GETTERS.get(variable)
    if getter is not None:
        return getter
    if variable.startswith(REQUEST_HEADER_PREFIX):
        lname = variable[len(REQUEST_HEADER_PREFIX):].lower().encode()
        return lambda v: v.request_header(lname)
    lname = variable[len(RESPONSE_HEADER_PREFIX):].lower().encode()
    return lambda v: v.response_header(lname)


# --- header edits ----------------------------------------------------------------

def apply_header_edits(lines: list, edits, skip=frozenset()) -> list:
    """`lines` (b"Name: value") with `edits` applied: a new list.

    Each edit is (lower-case name, b"Name: value" or None for remove); a set
    replaces every line of that name, the last edit of a name wins, names
    compare case-insensitively. Names in `skip` are left as they are.
    """
    final = {}
    for lname, line in edits:
        if lname not in skip:
            final[lname] = line
    if not final:
        return lines
    kept = [line for line in lines if line[:line.index(b":")].lower() not in final]
    kept.extend(line for line in final.values() if line is not None)
    return kept


class RequestRewrite:
    """What a set does to one request: header edits, and the new path and/or
    query (None: as the client sent it); `reroute` asks to route the new path."""

    __slots__ = ("headers", "path", "query", "reroute")

    def __init__(self):
        self.headers = []
        self.path = None
        self.query = None
        self.reroute = False

    def apply_headers(self, lines: list) -> list:
        return apply_header_edits(lines, self.headers)

    def target(self, request) -> bytes:
        """The request-target to send: the rewritten path and query, else the client's."""
        if self.path is None and self.query is None:
            return request.target
        path = request.path if self.path is None else self.path
        query = request.query if self.query is None else self.query
        return path + b"?" + query if query else path


# --- compiled sets ---------------------------------------------------------------

def _compile_template(text: str, captures: dict):
    """A template -> bytes (constant) or a function (view, caps) -> bytes."""
    parts = parse_template(text, captures)
    if all(kind == "text" for kind, *_ in parts):
        return "".join(part[1] for part in parts).encode()
    pieces = []
    for part in parts:
        if part[0] == "text":
            pieces.append(part[1].encode())
        elif part[0] == "var":
            pieces.append(_getter(part[1]))
        else:
            index = captures[part[1]][0]
            n = part[2]
            pieces.append((index, n))
    pieces = tuple(pieces)

    def render(view, caps):
        out = []
        for piece in pieces:
            if type(piece) is bytes:
                out.append(piece)
            elif type(piece) is tuple:
                out.append(caps[piece[0]][piece[1]])
            else:
                out.append(piece(view))
        return b"".join(out)

    return render


_NO_CAPTURES = {}   # a rule without conditions: always, and nothing captured; never written to


class _Condition:
    __slots__ = ("get", "regex", "negate", "captures")

    def __init__(self, condition, captures):
        flags = re.IGNORECASE if condition.ignore_case else 0
        self.get = _getter(condition.variable)
        self.regex = re.compile(condition.pattern.encode(), flags)
        self.negate = condition.negate
        self.captures = captures


class _Rule:
    __slots__ = ("set_name", "name", "conditions", "request_headers", "response_headers",
                 "path", "query", "reroute", "has_request", "both")

    def __init__(self, set_name, rule):
        captures = capture_map(rule.conditions)
        used = {index for index, _ in captures.values()}
        self.set_name, self.name = set_name, rule.name
        self.conditions = tuple(_Condition(c, i in used) for i, c in enumerate(rule.conditions))
        self.request_headers = _header_actions(rule.request_headers, captures)
        self.response_headers = _header_actions(rule.response_headers, captures)
        url = rule.url
        self.path = None if url is None or url.path is None else _compile_template(url.path, captures)
        self.query = None if url is None or url.query is None else _compile_template(url.query, captures)
        self.reroute = url is not None and url.reroute
        self.has_request = has_request_actions(rule)
        # judged once, in the request phase; the answer reuses the outcome
        self.both = self.has_request and bool(rule.response_headers)

    def evaluate(self, view):
        """The captures of the conditions ({index: (group0, group1, ...)}), or None if one fails."""
        if not self.conditions:
            return _NO_CAPTURES
        caps = {}
        for index, condition in enumerate(self.conditions):
            match = condition.regex.search(condition.get(view))
            if condition.negate:
                if match is not None:
                    return None
            elif match is None:
                return None
            elif condition.captures:
                caps[index] = (match.group(0),) + tuple(g or b"" for g in match.groups())
        return caps

    def render(self, template, view, caps):
        return template if type(template) is bytes else template(view, caps)

    def header_edits(self, actions, view, caps, edits):
        for lname, name, template, fixed in actions:
            if template is None:    # a constant, checked at load, or a removal
                edits.append((lname, fixed))
                continue
            value = template(view, caps).strip(b" \t")
            if _BAD_VALUE.search(value):
                log.warning("rewrite set %s, rule %s: header %s left out: its value would carry "
                            "a control character: %.120r", self.set_name, self.name,
                            name.decode(), value)
                edits.append((lname, None))
            else:
                edits.append((lname, name + b": " + value if value else None))

    def url_part(self, template, bad, what, view, caps):
        value = self.render(template, view, caps)
        if bad.search(value) or (what == "path" and not value.startswith(b"/")):
            log.warning("rewrite set %s, rule %s: url %s left as sent: the rewritten one would "
                        "not be a valid %s: %.120r", self.set_name, self.name, what, what, value)
            return None
        return value


def _header_actions(actions, captures):
    """(lower-case name, name, template, line) in order, as bytes: a value
    with variables has a template to render per request; a constant one its
    line made now (None for a removal, or a value of only blanks)."""
    compiled = []
    for name, value in actions:
        template = _compile_template(value, captures) if value else b""
        lname, name = name.lower().encode(), name.encode()
        if type(template) is bytes:
            value = template.strip(b" \t")
            compiled.append((lname, name, None, name + b": " + value if value else None))
        else:
            compiled.append((lname, name, template, None))
    return tuple(compiled)


class CompiledSet:
    """A rewrite set ready for requests. Both phases return at once when the
    set has nothing for them (`has_request` / `has_response` say so)."""

    __slots__ = ("name", "request_rules", "response_rules", "has_request", "has_response")

    def __init__(self, rewrite_set):
        rules = [_Rule(rewrite_set.name, rule) for rule in rewrite_set.rules]
        self.name = rewrite_set.name
        self.request_rules = tuple(r for r in rules if r.has_request)
        self.response_rules = tuple(r for r in rules if r.response_headers)
        self.has_request = bool(self.request_rules)
        self.has_response = bool(self.response_rules)

    def request(self, view):
        """The rewrite for this request, or None when no rule changes it."""
        if not self.has_request:
            return None
        rewrite = None
        for rule in self.request_rules:
            caps = rule.evaluate(view)
            if rule.both:
                if view.outcomes is None:
                    view.outcomes = {}
                view.outcomes[rule] = caps
            if caps is None:
                continue
            if rewrite is None:
                rewrite = RequestRewrite()
            rule.header_edits(rule.request_headers, view, caps, rewrite.headers)
            if rule.path is not None:
                path = rule.url_part(rule.path, _BAD_PATH, "path", view, caps)
                if path is not None:
                    rewrite.path = path
                    rewrite.reroute = rewrite.reroute or rule.reroute
            if rule.query is not None:
                query = rule.url_part(rule.query, _BAD_QUERY, "query", view, caps)
                if query is not None:
                    rewrite.query = query
        return rewrite

    def response(self, view, lines: list, status: int = 200, headers=None) -> list:
        """The answer's header lines after the set's response actions.

        `lines`: the b"Name: value" lines going to the client (hop-by-hop ones
        already out); `headers`: the answer's (name, value) pairs for
        http_resp_* (default: read from `lines`). Returns `lines` itself when
        nothing changes. On a 101 the headers the handshake needs stay.
        """
        if not self.has_response:
            return lines
        view.response_headers, view._response_lines, view._response_index = headers, lines, None
        edits = []
        outcomes = view.outcomes
        for rule in self.response_rules:
            caps = outcomes[rule] if outcomes is not None and rule in outcomes else rule.evaluate(view)
            if caps is not None:
                rule.header_edits(rule.response_headers, view, caps, edits)
        return apply_header_edits(lines, edits, HANDSHAKE if status == 101 else frozenset())


def _pairs(lines):
    pairs = []
    for line in lines:
        name, _, value = line.partition(b":")
        pairs.append((name, value.strip(b" \t")))
    return pairs


def compile_sets(config) -> dict:
    """Every [[rewrite_sets]] of a checked Config, by name."""
    return {s.name: CompiledSet(s) for s in config.rewrite_sets}
