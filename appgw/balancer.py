"""Backends: a pool as used with one backend settings, and server selection."""
from .health import HEALTHY, UNKNOWN


class Backend:
    """The target of a rule or path entry: endpoints of one pool under one
    settings, with the entry's compiled rewrite set (None: none, or one with
    no actions) and compression policy (None: off).

    `choose` returns only Healthy endpoints, or Unknown ones while none is
    Healthy (so a start or reload never answers 502 while the first probes
    are in flight); never an Unhealthy one."""

    __slots__ = ("pool", "settings", "endpoints", "least_connections", "_next", "rewrite", "compress")

    def __init__(self, pool, settings, endpoints, rewrite=None, compress=None):
        self.pool = pool
        self.settings = settings
        self.endpoints = endpoints
        self.rewrite = rewrite
        self.compress = compress
        self.least_connections = pool.load_balancing == "least_connections"
        self._next = 0

    def eligible(self):
        healthy = [e for e in self.endpoints if e.health.state == HEALTHY]
        return healthy or [e for e in self.endpoints if e.health.state == UNKNOWN]

    def choose(self, exclude=(), affinity=None):
        """`affinity`: an affinity cookie's value; its server wins while it
        is eligible."""
        candidates = self.eligible()
        if exclude:
            candidates = [e for e in candidates if e not in exclude]
        if not candidates:
            return None
        if affinity is not None:
            for endpoint in candidates:
                if endpoint.cookie == affinity:
                    return endpoint
        if self.least_connections:
            return min(candidates, key=_active)
        self._next += 1
        return candidates[self._next % len(candidates)]


def _active(endpoint):
    return endpoint.active
