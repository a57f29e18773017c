"""`workers = N` (N > 1): a master process binds the listening sockets once,
forks N workers that inherit them, replaces a worker that dies and passes
signals on. Each worker is a whole gateway (its own probers, its own reload).

A worker that cannot start (its start failed: the admin port taken, an
access log it cannot open) exits with BOOT_ERROR, and the master then stops
the others and exits 1, as gunicorn does: starting it again would fail the
same way, forever.

The admin endpoint is served by worker 0, which adds the other workers'
counters to its own when scraped (peers.py); /backend-health is worker 0's
view of the probes.
"""
import logging
import os
import signal
import sys

import gevent
from gevent.monkey import get_original

from appgw.control.accesslog import AccessLogError
from appgw.control.listener import BindError, bind_all
from appgw.control.peers import Peers
from appgw.control.runtime import Runtime

# The master stays out of gevent's hub: plain signal handlers, the plain
# select and waitpid, and the plain fork (the child re-initialises gevent
# itself), so that no watcher of the hub takes SIGCHLD or a child's exit.
_signal = get_original("signal", "signal")
_waitpid = get_original("os", "waitpid")
_fork = get_original("os", "fork")
_select = get_original("select", "select")

log = logging.getLogger("appgw.master")

BOOT_ERROR = 3      # a worker's exit status when its start failed (gunicorn's WORKER_BOOT_ERROR)
FORWARDED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)
IDLE_WAKEUP = 1.0   # the loop wakes at least this often, should a wake-up byte be lost


class Master:
    def __init__(self, config, load):
        self.config = config
        self.load = load
        self.sockets = {}
        self.workers = {}          # pid -> worker index
        self.stopping = False
        self.exit_code = 0
        self.received = []         # signals the handler recorded, in order
        self._wakeup = None        # (read fd, write fd) of the self-pipe
        self.count = config.gateway.workers   # a reload does not change it: that needs a restart
        self.master_pid = os.getpid()          # names the workers' sockets for the admin endpoint

    def run(self):
        self.sockets = bind_all(self.config, reuse_port=True)  # BindError: nothing has started
        self._wakeup = os.pipe()
        for fd in self._wakeup:
            os.set_blocking(fd, False)
        # The C-level handler writes the signal's number to the pipe, which
        # wakes the select below; the Python handler only records it.
        signal.set_wakeup_fd(self._wakeup[1])
        for sig in FORWARDED + (signal.SIGCHLD,):
            _signal(sig, self._record)
        for index in range(self.count):
            self.spawn(index)
        log.info("master %d running %d workers", os.getpid(), len(self.workers))
        while self.workers:
            self._sleep()
            self._reap()
            while self.received:
                self._act(self.received.pop(0))
        signal.set_wakeup_fd(-1)
        for fd in self._wakeup:
            os.close(fd)
        log.info("master stopped")
        return self.exit_code

    def _record(self, signum, _frame):
        self.received.append(signum)

    def _sleep(self):
        if self.received:
            return
        try:
            _select([self._wakeup[0]], [], [], IDLE_WAKEUP)
        except InterruptedError:
            pass
        try:
            while os.read(self._wakeup[0], 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self):
        while True:
            try:
                pid, status = _waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.workers.pop(pid, None)
            if index is None:
                continue
            if self.stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == BOOT_ERROR:
                log.error("worker %d (pid %d) could not start (see its error above); stopping", index, pid)
                self.exit_code = 1
                self.stop(signal.SIGTERM)
                continue
            log.error("worker %d (pid %d) died (%s); starting a new one", index, pid, _describe(status))
            self.spawn(index)

    def _act(self, sig):
        if sig == signal.SIGHUP:
            self.reload()
        elif sig == signal.SIGUSR1:
            self._signal_all(signal.SIGUSR1)
        elif sig in (signal.SIGTERM, signal.SIGINT):
            self.stop(signal.SIGTERM)
        elif sig == signal.SIGQUIT:
            self.stop(signal.SIGQUIT)

    def spawn(self, index):
        # Signals are held across the fork: one that reached the child
        # before it reset its handlers would run the master's, and be lost.
        held = FORWARDED + (signal.SIGCHLD,)
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        pid = _fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
            self.workers[pid] = index
            log.info("worker %d started (pid %d)", index, pid)
            return
        # In the worker: a whole gateway on the inherited sockets.
        code = BOOT_ERROR
        try:
            signal.set_wakeup_fd(-1)
            for fd in self._wakeup:
                os.close(fd)
            # Until the runtime installs its own handlers: a reload or reopen
            # signal now is harmless (this worker already has the newest
            # config and a freshly opened log).
            for sig in (signal.SIGHUP, signal.SIGUSR1):
                _signal(sig, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
                _signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
            gevent.reinit()
            try:
                peers = Peers(self.master_pid, index, self.count)
                runtime = Runtime(self.config, self.load, sockets=self.sockets, admin=index == 0, reuse_port=True,
                                  peers=peers)
                runtime.start()
            except (BindError, AccessLogError) as exc:
                log.error("worker %d: %s", index, exc)
                return
            except BaseException:
                log.exception("worker %d failed to start", index)
                return
            code = 1
            code = runtime.serve()
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def reload(self):
        """Check the file here, so an invalid one is reported once; each
        worker then reloads itself and keeps its health state."""
        if self.stopping:
            return
        config = self.load(self.config.path)
        if config is None:
            log.error("reload refused: %s is invalid; the running configuration stays", self.config.path)
            # The workers still reopen their access logs (logrotate may send SIGHUP).
            self._signal_all(signal.SIGUSR1)
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
