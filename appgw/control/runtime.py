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

from appgw.control.accesslog import AccessLog, AccessLogError
from appgw.acme.manager import AcmeManager
from appgw.control.admin import AdminServer, servers_by_pool
from appgw.control.apps import AppHost
from appgw.control.listener import BindError, BindServer, bind_all, listen_all
from appgw.control.peers import PeerServer
from appgw.control.peerstate import dump
from appgw.control.prober import Probers
from appgw.routing.snapshot import build_snapshot
from appgw.control.stats import STATS

log = logging.getLogger("appgw")


class OpenSet(set):
    """The open connections (or sessions): `empty` is set while there are none."""

    def __init__(self):
        super().__init__()
        self.empty = Event()
        self.empty.set()

    def add(self, item):
        super().add(item)
        self.empty.clear()

    def discard(self, item):
        super().discard(item)
        if not self:
            self.empty.set()


class Runtime:
    def __init__(self, config, load=None, sockets=None, admin=True, reuse_port=False, peers=None):
        """`load(path)` re-reads the config for a reload (None when invalid);
        `sockets` are listening sockets inherited from a master process;
        `peers` (a peers.Peers) places this worker among the master's."""
        self.config = config
        self.load = load
        self.stats = STATS
        self.access_log = AccessLog(config.gateway.access_log, config.gateway.log_format)
        self.stopping = False
        self.apps = AppHost()
        self.servers = {}            # bind -> BindServer
        self.snapshot = None
        self.connections = OpenSet()   # every client Connection served by a greenlet
        self.sessions = OpenSet()      # every WebSocket relay (they outlive their Connection)
        self.probers = Probers()
        self.acme = AcmeManager()    # certificates of listeners with acme = true
        self.peers = peers
        self.since = time.monotonic()   # this process's start, on the clock every process shares
        # Workers without the admin endpoint answer worker 0 with their counters.
        self.peer_server = PeerServer(peers.address(peers.index), self.peer_state) if peers and not admin else None
        self.admin = AdminServer(self) if admin else None
        self.reuse_port = reuse_port
        self._inherited = dict(sockets or {})
        self._stopped = Event()
        self.stop_requested = Event()   # ends the waits of requests for a server (retry_window)

    # -- start -----------------------------------------------------------------

    def start(self):
        """Bind every address first (the admin endpoint too): nothing serves
        unless everything can."""
        sockets = bind_all(self.config, inherited=self._inherited, reuse_port=self.reuse_port, listen=False)
        try:
            if self.admin is not None:
                self.admin.start()
        except BindError:
            for sock in sockets.values():
                sock.close()
            raise
        try:
            listen_all(sockets)
        except BindError:
            if self.admin is not None:
                self.admin.stop()
            raise
        self.snapshot = build_snapshot(self.config, self.apps.path_for)
        self.acme.update(self.config)
        self._open(sockets)
        self.probers.update(self.snapshot)
        if self.peer_server is not None:
            self.peer_server.start()

    def peer_state(self):
        return dump(self.stats, servers_by_pool(self.snapshot), self.since, os.getpid())

    def _open(self, sockets):
        for bind, sock in sockets.items():
            server = BindServer(bind, sock, self)
            server.set_site(self.snapshot.sites[bind])
            self.servers[bind] = server
            server.start()
            log.info("listening on %s:%d (%s)", bind[0], bind[1], self.snapshot.sites[bind].protocol)

    def run(self):
        self.start()
        return self.serve()

    def serve(self):
        """Until stopped, after start(): signals as SPEC 2 and 17 say."""
        gevent.signal_handler(signal.SIGTERM, self._on_term)
        gevent.signal_handler(signal.SIGINT, self._on_term)
        gevent.signal_handler(signal.SIGQUIT, self.halt)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        log.info("appgw started (pid %d)", os.getpid())
        self._stopped.wait()
        return 0

    # -- reload ----------------------------------------------------------------

    def reopen_logs(self):
        """SIGUSR1 (and every SIGHUP): the access-log file is opened again by
        its name, so that logrotate can move the old one away."""
        try:
            if self.access_log.reopen():
                log.info("access log %s reopened", self.access_log.target)
        except AccessLogError as exc:
            log.error("%s; logging goes on to the old file", exc)

    def reload(self):
        """Re-read the file; apply it if valid, else keep the running config.
        Either way the access log is opened again (logrotate may send SIGHUP)."""
        if self.stopping:
            return False
        config = self.load(self.config.path)
        if config is None:
            log.error("reload refused: %s is invalid; the running configuration stays", self.config.path)
            self.reopen_logs()
            return False
        try:
            access_log = AccessLog(config.gateway.access_log, config.gateway.log_format)
        except AccessLogError as exc:
            log.error("reload refused: %s", exc)
            return False
        binds = {(listener.host, listener.port) for listener in config.listeners}
        try:
            sockets = bind_all(config, self.servers, self._inherited, self.reuse_port)
        except BindError as exc:
            log.error("reload refused: %s", exc)
            access_log.close()
            return False
        old = self.snapshot
        self.config = config
        self.snapshot = build_snapshot(config, self.apps.path_for, previous=old)
        self.access_log, old_log = access_log, self.access_log
        old_log.close()
        self.acme.update(config)
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
        open sessions run on, or, on a server that was removed, until their
        settings' drain_timeout (0: no limit)."""
        for key, endpoint in old.endpoints.items():
            if key in self.snapshot.endpoints:
                continue
            endpoint.close_idle()
            if key in self.snapshot.successors:
                continue    # the server stays (its probe or settings changed): its sessions run on
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
        self.stop_requested.set()
        drain = self.config.gateway.drain_timeout
        for server in self.servers.values():
            server.stop_accepting()
        self.probers.stop()
        idle = [conn for conn in self.connections if conn.waiting]
        for conn in idle:
            conn.close()
        busy = len(self.connections) - len(idle)
        if busy or self.sessions:
            # Say what the stop waits for: a WebSocket the user believes
            # closed (a page kept in a browser's back/forward cache) is open.
            log.info("stopping: closed %d idle connection(s); waiting up to %gs for %d other connection(s) "
                     "and %d WebSocket session(s) (SIGTERM again stops at once)",
                     len(idle), drain, busy, len(self.sessions))
        else:
            log.info("stopping: closed %d idle connection(s)", len(idle))
        self._goaway()
        self._drain(time.monotonic() + drain)
        if self.connections or self.sessions:
            log.info("closing %d connection(s) still open after %gs",
                     len(self.connections) + len(self.sessions), drain)
            self._close_all("stopped")
            self._drain(time.monotonic() + 0.5)   # their greenlets end, and log
        self._finish()
        log.info("stopped")

    def _goaway(self):
        """HTTP/2 connections are told (GOAWAY) to take new requests elsewhere:
        on stop, and on reload, so that they reconnect to the new config."""
        for conn in list(self.connections):
            drain = getattr(conn, "drain", None)
            if drain is not None:
                drain()

    def _drain(self, deadline):
        """Until nothing is open or the deadline: woken by the last one to
        end, so a stop returns as soon as there is nothing left to drain."""
        while self.connections or self.sessions:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            (self.connections if self.connections else self.sessions).empty.wait(remaining)

    def halt(self):
        """Stop at once (SIGQUIT, second SIGTERM)."""
        self.stopping = True
        self.stop_requested.set()
        log.info("stopping at once")
        self._close_all("stopped")
        self._finish()

    def _close_all(self, why):
        for conn in list(self.connections):
            conn.close()
        for session in list(self.sessions):
            session.abort(why)

    def _finish(self):
        self.acme.stop()
        if self.admin is not None:
            self.admin.stop()
        if self.peer_server is not None:
            self.peer_server.stop()
        for server in self.servers.values():
            server.stop_accepting()
        if self.snapshot is not None:
            for endpoint in self.snapshot.endpoints.values():
                endpoint.close_idle()
        self.apps.close()
        self._stopped.set()
