"""`workers = N` (N > 1): a master process binds the listening sockets once,
forks N workers that inherit them, replaces a worker that dies and passes
signals on. Each worker is a whole gateway (its own probers, its own reload).

The admin endpoint is served by worker 0 only, so /metrics is one worker's
counters and /backend-health one worker's view of the probes.
"""
import logging
import os
import signal
import sys

from gevent.monkey import get_original

from .listener import BindError, bind_all
from .runtime import Runtime

# The master stays out of gevent's hub: plain signal handlers and a blocking
# waitpid (retried after each handler, PEP 475), so forked workers inherit no
# hub state. Workers are forked with gevent's fork, which re-initialises it.
_signal = get_original("signal", "signal")
_waitpid = get_original("os", "waitpid")

log = logging.getLogger("appgw.master")


class Master:
    def __init__(self, config, load):
        self.config = config
        self.load = load
        self.sockets = {}
        self.workers = {}          # pid -> worker index
        self.stopping = False

    def run(self):
        self.sockets = bind_all(self.config, reuse_port=True)  # BindError: nothing has started
        _signal(signal.SIGHUP, lambda *_: self.reload())
        _signal(signal.SIGTERM, lambda *_: self.stop(signal.SIGTERM))
        _signal(signal.SIGINT, lambda *_: self.stop(signal.SIGTERM))
        _signal(signal.SIGQUIT, lambda *_: self.stop(signal.SIGQUIT))
        for index in range(self.config.gateway.workers):
            self.spawn(index)
        log.info("master %d running %d workers", os.getpid(), len(self.workers))
        while self.workers:
            try:
                pid, status = _waitpid(-1, 0)
            except ChildProcessError:
                break
            index = self.workers.pop(pid, None)
            if index is None:
                continue
            if not self.stopping:
                log.error("worker %d (pid %d) died (%s); starting a new one", index, pid, _describe(status))
                self.spawn(index)
        log.info("master stopped")
        return 0

    def spawn(self, index):
        pid = os.fork()
        if pid:
            self.workers[pid] = index
            log.info("worker %d started (pid %d)", index, pid)
            return
        # In the worker: a whole gateway on the inherited sockets.
        code = 1
        try:
            # Until the runtime installs its own handlers: a reload signal
            # now is harmless (this worker already has the newest config).
            _signal(signal.SIGHUP, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                _signal(sig, signal.SIG_DFL)
            runtime = Runtime(self.config, self.load, sockets=self.sockets, admin=index == 0, reuse_port=True)
            code = runtime.run()
        except BindError as exc:
            log.error("worker %d: %s", index, exc)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            os._exit(code)

    def reload(self):
        """Check the file here, so an invalid one is reported once; each
        worker then reloads itself and keeps its health state."""
        config = self.load(self.config.path)
        if config is None:
            log.error("reload refused: %s is invalid; the running configuration stays", self.config.path)
            return
        self.config = config
        # A removed bind must stop accepting: the master's copy of its socket
        # would keep it listening after every worker closed its own.
        binds = {(listener.host, listener.port) for listener in config.listeners}
        for bind in list(self.sockets):
            if bind not in binds:
                self.sockets.pop(bind).close()
        self._signal_all(signal.SIGHUP)

    def stop(self, sig):
        if self.stopping and sig == signal.SIGTERM:
            sig = signal.SIGQUIT      # a second SIGTERM stops at once
        self.stopping = True
        for sock in self.sockets.values():
            sock.close()     # stop accepting at once, as the workers do
        self.sockets = {}
        self._signal_all(sig)

    def _signal_all(self, sig):
        for pid in list(self.workers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _describe(status):
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)
