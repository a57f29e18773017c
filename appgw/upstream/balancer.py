"""Backends: a pool as used with one backend settings, server selection,
and waiting for a server when none can take a request (retry_window)."""
import time

import gevent

from appgw.control.health import HEALTHY, UNKNOWN


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

    def wait_for_server(self, since, deadline, abort=None):
        """Wait until a server of this pool may take a request again: a
        probe or a connect of one of them succeeded after `since`
        (monotonic; a success before the wait began counts, so none is
        missed while the caller was trying servers). False at `deadline`
        or once `abort` (an Event: the gateway stops) is set.

        Woken by events, never by polling; meanwhile the servers' probers
        probe every HURRY_INTERVAL at most (see prober.Prober)."""
        wakeups = [endpoint.health.wakeup for endpoint in self.endpoints]
        if any(wakeup.fired_at >= since for wakeup in wakeups):
            return not (abort is not None and abort.is_set())
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (abort is not None and abort.is_set()):
            return False
        events = [wakeup.event() for wakeup in wakeups]
        if abort is not None:
            events.append(abort)
        for wakeup in wakeups:
            wakeup.waiters += 1
            if wakeup.hurry is not None:
                wakeup.hurry.set()
        try:
            woken = gevent.wait(events, timeout=remaining, count=1)
        finally:
            for wakeup in wakeups:
                wakeup.waiters -= 1
        return bool(woken) and not (abort is not None and abort.is_set())


class RetryWindow:
    """One request's wait for a server (the settings' retry_window > 0):
    made before the first server is tried; each wait() waits for the next
    success after the last round of tries began, within retry_window of
    the first wait. True: try the servers again."""

    __slots__ = ("backend", "abort", "since", "deadline")

    def __init__(self, backend, abort=None):
        self.backend = backend
        self.abort = abort
        self.since = time.monotonic()
        self.deadline = None

    def wait(self):
        if self.deadline is None:
            self.deadline = time.monotonic() + self.backend.settings.retry_window
        woken = self.backend.wait_for_server(self.since, self.deadline, self.abort)
        self.since = time.monotonic()
        return woken


def _active(endpoint):
    return endpoint.active
