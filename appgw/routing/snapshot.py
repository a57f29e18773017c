"""A configuration compiled for serving: sites, routes, backends, endpoints.

A snapshot is never changed after it is built; a reload builds a new one and
swaps it in, so a connection keeps the snapshot it started with. Endpoints
whose definition is unchanged are carried over with their health and idle
connections.
"""
from appgw.upstream.balancer import Backend
from appgw.exchange.compress import CompressPolicy
from appgw.exchange.errorpages import pages_for
from appgw.exchange.rewrite import compile_sets
from appgw.routing.router import Redirector, Site, compile_listener
from appgw.upstream.endpoint import Endpoint, tls_client_context


class Snapshot:
    def __init__(self, config, sites, backends, endpoints, successors=None):
        self.config = config
        self.sites = sites          # (host, port) -> Site
        self.backends = backends    # (pool, settings, rewrite set, compress) names -> Backend
        self.endpoints = endpoints  # key -> Endpoint
        # key of a previous snapshot's endpoint -> the endpoint that took its
        # place here: the same server, its probe or settings changed.
        self.successors = successors or {}


def _same_server(endpoint):
    """What a server is across reloads: its pool, its address (port
    included) and the name of the backend settings it is used with."""
    pool_name, _, settings, _ = endpoint.key
    return pool_name, endpoint.label, endpoint.path, settings.name


def build_snapshot(config, app_path, previous=None) -> Snapshot:
    """`app_path(spec)` returns the unix socket of an in-process app."""
    old = previous.endpoints if previous else {}
    old_servers = {_same_server(e): e for e in old.values()}
    endpoints, backends, successors = {}, {}, {}
    rewrite_sets = {name: s for name, s in compile_sets(config).items() if s.has_request or s.has_response}
    compress = CompressPolicy.from_gateway(config.gateway)

    def endpoint(pool, server, settings, probe):
        kind, label, where = server
        key = (pool.name, label, settings, probe)
        found = old.get(key) or endpoints.get(key)
        if found is None:
            tls = tls_client_context(settings.verify_tls, settings.trusted_root) \
                if settings.protocol == "https" else None
            if kind == "unix":
                found = Endpoint(key, label, path=where, tls=tls, connect_timeout=settings.connect_timeout,
                                 request_timeout=settings.request_timeout,
                                 healthy_threshold=probe.healthy_threshold,
                                 unhealthy_threshold=probe.unhealthy_threshold)
            else:
                host, port = where
                found = Endpoint(key, label, host=host, port=port or settings.port, tls=tls,
                                 connect_timeout=settings.connect_timeout,
                                 request_timeout=settings.request_timeout,
                                 healthy_threshold=probe.healthy_threshold,
                                 unhealthy_threshold=probe.unhealthy_threshold)
                found.label = "%s:%d" % (host if ":" not in host else "[%s]" % host, found.port)
            found.set_cookie_identity(pool.name, label)
            before = old_servers.get(_same_server(found))
            if before is not None and before.key not in successors:
                # A kept server whose probe or settings changed: it goes on
                # from its state, probed with the new settings.
                found.health.adopt(before.health)
                successors[before.key] = found
        endpoints[key] = found
        return found

    def backend(pool_name, settings_name, rewrite_set, compressed):
        key = (pool_name, settings_name, rewrite_set, compressed)
        if key not in backends:
            pool = config.pool_by_name[pool_name]
            settings = config.settings(settings_name)
            probe = config.probe(settings.probe)
            servers = [endpoint(pool, s, settings, probe) for s in _servers(pool, app_path)]
            backends[key] = Backend(pool, settings, servers, rewrite_sets.get(rewrite_set),
                                    compress if compressed else None)
        return backends[key]

    def target_for(rule, entry):
        source = entry or rule
        if source.redirect is not None:
            return Redirector(source.redirect, config.listener_by_name)
        return backend(source.backend_pool, source.backend_settings, rule.rewrite_set_for(entry),
                       rule.compress_for(entry))

    by_bind = {}
    for listener in config.listeners:
        rule = config.rule_by_listener[listener.name]
        by_bind.setdefault((listener.host, listener.port), []).append(compile_listener(listener, rule, target_for))
    gateway_pages = pages_for(config.gateway)
    for routes_list in by_bind.values():
        for routes in routes_list:
            routes.pages = pages_for(config.gateway, routes.listener)
    # Answers made before the Host picks a listener (400, 408, 431) take the
    # pages of a bind's only listener; on a bind shared by Host, the gateway's.
    sites = {bind: Site(bind, routes, routes[0].pages if len(routes) == 1 else gateway_pages)
             for bind, routes in by_bind.items()}
    successors = {k: e for k, e in successors.items() if k not in endpoints}
    return Snapshot(config, sites, backends, endpoints, successors)


def _servers(pool, app_path):
    """(kind, label, where) for each server of a pool, the in-process app last."""
    servers = []
    for server in pool.servers:
        if server.kind == "unix":
            servers.append(("unix", server.address, server.path))
        else:
            servers.append(("tcp", server.address, (server.host, server.port)))
    if pool.app:
        servers.append(("unix", "app:" + pool.app, app_path(pool.app, pool.app_path)))
    return servers
