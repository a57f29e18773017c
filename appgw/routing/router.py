"""Routing, compiled at config load: bind + Host -> listener, path -> target.

Per request only dictionary look-ups and a short prefix scan remain.
"""


class Redirector:
    """A redirect target: builds the Location for one request."""

    __slots__ = ("status", "url", "scheme", "port_suffix", "include_path", "include_query")

    def __init__(self, redirect, listener_by_name):
        self.status = redirect.status
        self.include_path = redirect.include_path
        self.include_query = redirect.include_query
        if redirect.listener:
            target = listener_by_name[redirect.listener]
            self.url = None
            self.scheme = target.protocol
            default = 80 if target.protocol == "http" else 443
            self.port_suffix = "" if target.port == default else ":%d" % target.port
        else:
            self.url = redirect.url
            self.scheme = self.port_suffix = None

    def location(self, host: bytes, path: bytes, query: bytes) -> bytes:
        if self.url is not None:
            location, _, url_query = self.url.encode().partition(b"?")
            if self.include_path:
                location = location.rstrip(b"/") + path
            if url_query:
                location += b"?" + url_query
        else:
            location = b"%s://%s%s%s" % (self.scheme.encode(), host_name(host), self.port_suffix.encode(),
                                         path if self.include_path else b"/")
        if self.include_query and query:
            location += (b"&" if b"?" in location else b"?") + query
        return location


class ListenerRoutes:
    """One listener and its rule: path -> Backend or Redirector."""

    __slots__ = ("listener", "rule", "exact", "prefixes", "default", "proto", "port", "pages")

    def __init__(self, listener, rule, default, exact, prefixes):
        self.listener = listener
        self.rule = rule
        self.default = default
        self.exact = exact            # path -> target
        self.prefixes = prefixes      # [(prefix, target)], longest first
        self.proto = listener.protocol.encode()
        self.port = str(listener.port).encode()
        self.pages = None             # errorpages.ErrorPages of the listener, set by the snapshot

    def route(self, path: bytes):
        target = self.exact.get(path)
        if target is not None:
            return target
        for prefix, target in self.prefixes:
            if path.startswith(prefix):
                return target
        return self.default


def compile_listener(listener, rule, target_for):
    """`target_for(rule, entry)` turns the rule (entry None) or one of its
    path entries into a Backend or Redirector."""
    exact, prefixes = {}, []
    for entry in rule.paths:
        target = target_for(rule, entry)
        for path in entry.paths:
            if path.endswith("/*"):
                prefixes.append((path[:-1].encode(), target))
            else:
                exact[path.encode()] = target
    prefixes.sort(key=lambda item: len(item[0]), reverse=True)
    return ListenerRoutes(listener, rule, target_for(rule, None), exact, prefixes)


class Site:
    """Every listener sharing one bind address, chosen by Host: exact names
    beat wildcards (longest suffix first), then the catch-all, else None (404)."""

    __slots__ = ("bind", "protocol", "exact", "wildcards", "default", "listeners", "pages")

    def __init__(self, bind, listeners, pages=None):
        self.bind = bind
        self.listeners = listeners
        self.pages = pages   # error pages for answers made before Host chose a listener
        self.protocol = listeners[0].listener.protocol
        self.exact, self.wildcards, self.default = {}, [], None
        for routes in listeners:
            names = routes.listener.host_names
            if not names:
                self.default = routes
            for name in names:
                if name.startswith("*."):
                    self.wildcards.append((name[1:].encode(), routes))
                else:
                    self.exact[name.encode()] = routes
        self.wildcards.sort(key=lambda item: len(item[0]), reverse=True)

    def listener_for(self, host: bytes):
        if not self.exact and not self.wildcards:
            return self.default
        name = host_name(host).lower().rstrip(b".")
        routes = self.exact.get(name)
        if routes is not None:
            return routes
        for suffix, routes in self.wildcards:
            if name.endswith(suffix) and len(name) > len(suffix):
                return routes
        return self.default

    def certificate_for(self, server_name: str):
        """The listener whose certificate answers this TLS SNI name."""
        if server_name:
            routes = self.listener_for(server_name.encode())
            if routes is not None:
                return routes
        return self.default or self.listeners[0]


def host_name(host: bytes) -> bytes:
    """Host without its port: "a.example:8080" -> "a.example", "[::1]:80" -> "[::1]"."""
    if host.startswith(b"["):
        return host[:host.find(b"]") + 1]
    return host.partition(b":")[0]
