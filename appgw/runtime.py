"""The running gateway of one process: the current snapshot, the listeners,
the apps, the probers and the admin endpoint; start, reload and stop.

A reload builds a whole new snapshot and swaps it in. Connections keep the
snapshot they started with, so nothing open is closed by a reload; endpoints
that are unchanged carry their health and idle connections over.
"""
import logging
import os
import signal
import time

import gevent
from gevent.event import Event

from .accesslog import AccessLog
from .admin import AdminServer
from .apps import AppHost
from .listener import BindError, BindServer, bind_all
from .prober import Probers
from .snapshot import build_snapshot
from .stats import STATS

log = logging.getLogger("appgw")


class Runtime:
    def __init__(self, config, load=None, sockets=None, admin=True, reuse_port=False):
        """`load(path)` re-reads the config for a reload (None when invalid);
        `sockets` are listening sockets inherited from a master process."""
        self.config = config
        self.load = load
        self.stats = STATS
        self.access_log = AccessLog(config.gateway.access_log, config.gateway.log_format)
        self.stopping = False
        self.apps = AppHost()
        self.servers = {}            # bind -> BindServer
        self.snapshot = None
        self.connections = set()     # every client Connection served by a greenlet
        self.sessions = set()        # every WebSocket relay (they outlive their Connection)
        self.probers = Probers()
        self.admin = AdminServer(self) if admin else None
        self.reuse_port = reuse_port
        self._inherited = dict(sockets or {})
        self._stopped = Event()

    # -- start -----------------------------------------------------------------

    def start(self):
        """Bind every address first (the admin endpoint too): nothing serves
        unless everything can."""
        sockets = bind_all(self.config, inherited=self._inherited, reuse_port=self.reuse_port)
        try:
            if self.admin is not None:
                self.admin.start()
        except BindError:
            for sock in sockets.values():
                sock.close()
            raise
        self.snapshot = build_snapshot(self.config, self.apps.path_for)
        self._open(sockets)
        self.probers.update(self.snapshot)

    def _open(self, sockets):
        for bind, sock in sockets.items():
            server = BindServer(bind, sock, self)
            server.set_site(self.snapshot.sites[bind])
            self.servers[bind] = server
            server.start()
            log.info("listening on %s:%d (%s)", bind[0], bind[1], self.snapshot.sites[bind].protocol)

    def run(self):
        self.start()
        gevent.signal_handler(signal.SIGTERM, self._on_term)
        gevent.signal_handler(signal.SIGINT, self._on_term)
        gevent.signal_handler(signal.SIGQUIT, self.halt)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        log.info("appgw started (pid %d)", os.getpid())
        self._stopped.wait()
        return 0

    # -- reload ----------------------------------------------------------------

    def reload(self):
        """Re-read the file; apply it if valid, else keep the running config."""
        if self.stopping:
            return False
        config = self.load(self.config.path)
        if config is None:
            log.error("reload refused: %s is invalid; the running configuration stays", self.config.path)
            return False
        binds = {(l.host, l.port) for l in config.listeners}
        try:
            sockets = bind_all(config, self.servers, self._inherited, self.reuse_port)
        except BindError as exc:
            log.error("reload refused: %s", exc)
            return False
        old = self.snapshot
        self.config = config
        self.snapshot = build_snapshot(config, self.apps.path_for, previous=old)
        self.access_log = AccessLog(config.gateway.access_log, config.gateway.log_format)
        for bind in list(self.servers):
            if bind not in binds:
                self.servers.pop(bind).stop_accepting()
                log.info("stopped listening on %s:%d", *bind)
            else:
                self.servers[bind].set_site(self.snapshot.sites[bind])
        self._open(sockets)
        self.probers.update(self.snapshot)
        self._retire(old)
        self._goaway()
        self.apps.retain({pool.app for pool in config.backend_pools if pool.app})
        if self.admin is not None and config.gateway.admin_bind != old.config.gateway.admin_bind:
            self.admin.stop()
            try:
                self.admin.start()
            except BindError as exc:
                log.error("admin endpoint: %s", exc)
        log.info("reload applied: %d listener(s), %d pool(s)", len(config.listeners), len(config.backend_pools))
        return True

    def _retire(self, old):
        """Endpoints gone from the new snapshot: idle connections close now;
        open sessions run on, or until their settings' drain_timeout (0: no limit)."""
        for key, endpoint in old.endpoints.items():
            if key in self.snapshot.endpoints:
                continue
            endpoint.close_idle()
            drain = key[2].drain_timeout
            if drain > 0 and endpoint.sessions:
                gevent.spawn_later(drain, endpoint.abort_sessions, "server removed by reload")

    # -- stop ------------------------------------------------------------------

    def _on_term(self):
        if self.stopping:
            self.halt()  # a second SIGTERM stops at once
        else:
            gevent.spawn(self.stop)

    def stop(self):
        """Graceful: stop accepting, close idle keep-alive connections, let
        requests finish and WebSocket sessions run for up to drain_timeout."""
        if self.stopping:
            return
        self.stopping = True
        drain = self.config.gateway.drain_timeout
        log.info("stopping: %d open connection(s), up to %gs to drain",
                 len(self.connections) + len(self.sessions), drain)
        for server in self.servers.values():
            server.stop_accepting()
        self.probers.stop()
        for conn in list(self.connections):
            if conn.waiting:
                conn.close()
        self._goaway()
        deadline = time.monotonic() + drain
        while (self.connections or self.sessions) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.connections or self.sessions:
            log.info("closing %d connection(s) still open after %gs",
                     len(self.connections) + len(self.sessions), drain)
            self._close_all("stopped")
            gevent.sleep(0.05)
        self._finish()
        log.info("stopped")

    def _goaway(self):
        """HTTP/2 connections are told (GOAWAY) to take new requests elsewhere:
        on stop, and on reload, so that they reconnect to the new config."""
        for conn in list(self.connections):
            drain = getattr(conn, "drain", None)
            if drain is not None:
                drain()

    def halt(self):
        """Stop at once (SIGQUIT, second SIGTERM)."""
        self.stopping = True
        log.info("stopping at once")
        self._close_all("stopped")
        self._finish()

    def _close_all(self, why):
        for conn in list(self.connections):
            conn.close()
        for session in list(self.sessions):
            session.abort(why)

    def _finish(self):
        if self.admin is not None:
            self.admin.stop()
        for server in self.servers.values():
            server.stop_accepting()
        if self.snapshot is not None:
            for endpoint in self.snapshot.endpoints.values():
                endpoint.close_idle()
        self.apps.close()
        self._stopped.set()
