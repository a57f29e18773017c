"""The running gateway: holds the current snapshot, the listeners, the apps;
starts, stops and (later) reloads them."""
import logging
import signal

import gevent
from gevent.event import Event

from .accesslog import AccessLog
from .apps import AppHost
from .listener import BindError, BindServer, bind_socket
from .snapshot import build_snapshot
from .stats import STATS

log = logging.getLogger("appgw")


class Runtime:
    def __init__(self, config):
        self.config = config
        self.stats = STATS
        self.access_log = AccessLog(config.gateway.access_log, config.gateway.log_format)
        self.stopping = False
        self.apps = AppHost()
        self.servers = {}
        self.snapshot = None
        self._stopped = Event()

    def start(self):
        """Bind every address first: nothing serves unless everything can."""
        sockets, problems = {}, []
        for listener in self.config.listeners:
            bind = (listener.host, listener.port)
            if bind in sockets:
                continue
            try:
                sockets[bind] = bind_socket(*bind)
            except BindError as exc:
                problems.append(str(exc))
        if problems:
            for sock in sockets.values():
                sock.close()
            raise BindError("\n".join(problems))
        self.snapshot = build_snapshot(self.config, self.apps.path_for)
        for bind, sock in sockets.items():
            server = BindServer(bind, sock, self)
            server.set_site(self.snapshot.sites[bind])
            self.servers[bind] = server
        for bind, server in self.servers.items():
            server.start()
            log.info("listening on %s:%d (%s)", bind[0], bind[1], self.snapshot.sites[bind].protocol)

    def run(self):
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.stop)
        self._stopped.wait()
        return 0

    def stop(self):
        if self.stopping:
            return
        log.info("stopping")
        self.stopping = True
        for server in self.servers.values():
            server.stop_accepting()
        for endpoint in self.snapshot.endpoints.values():
            endpoint.close_idle()
        self.apps.close()
        self._stopped.set()
