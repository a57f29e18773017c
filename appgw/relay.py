"""The WebSocket byte relay: after a 101, bytes are copied both ways, unchanged.

Each direction waits on its source socket's read watcher, with no greenlet.
Between plain TCP sockets the watcher's callback copies what arrived
(one recv, one send) and stays started: a message costs no greenlet switch
at all. When the other side does not take the bytes at once, or on TLS, a
greenlet pumps that direction instead (`recv` -> `sendall`, which blocks
while the reader is slow: backpressure, no queue); if the direction was busy
a moment ago it waits up to LINGER for more, then parks it again and ends.
So an idle session holds no greenlet and no buffer: thousands of idle
sessions cost a few KiB each.

EOF in one direction is passed on as shutdown(SHUT_WR) and the other keeps
flowing (half-close); an error closes both. One last-activity clock per
session and one timer make the idle timeout.
"""
import socket
import ssl
import time

import gevent
from gevent import get_hub

from . import sockio

from .sockio import PLAIN, READ_BUFFER, READ_VIEW, RECV, kernel, read_watcher, tls_object

LINGER = 0.5   # seconds a pump waits for more bytes before its direction parks


class _Quiet(Exception):
    """Nothing arrived within LINGER."""


def _quiet(glet):
    glet.throw(_Quiet)


def _wait_readable(sock, timer):
    """True when sock became readable, False after timer.repeat seconds."""
    timer.again(_quiet, gevent.getcurrent())
    try:
        get_hub().wait(read_watcher(sock))
        return True
    except _Quiet:
        return False
    finally:
        timer.stop()


class Session:
    """One relayed WebSocket connection; it owns both sockets once started."""

    __slots__ = ("client", "backend", "idle_timeout", "last_up", "last_down", "ended", "up", "down",
                 "up_open", "down_open", "pumps", "timer", "on_end", "finished")

    def __init__(self, client, backend, idle_timeout):
        self.client, self.backend = client, backend
        self.idle_timeout = idle_timeout
        self.last_up = self.last_down = time.monotonic()   # last bytes each way
        self.ended = ""          # how the session ended: the first cause wins
        self.up = self.down = 0  # bytes client->backend, backend->client
        self.up_open = self.down_open = True   # directions not yet ended
        self.pumps = 0           # greenlets copying right now
        self.timer = None
        self.on_end = None
        self.finished = False

    def start(self, early: bytes, on_end):
        """Relay from now on; `early` is what the client sent right after its
        handshake. `on_end(session)` runs once both directions are over."""
        self.on_end = on_end
        for sock in (self.client, self.backend):
            sock.settimeout(self.idle_timeout)   # bounds a blocked sendall
        self._arm_timer(self.idle_timeout)
        if early:
            self.pumps += 1
            gevent.spawn_raw(self._send_early, early)
        else:
            self._park(True)
        self._park(False)

    def _send_early(self, early):
        try:
            sockio.sendall(self.backend, early)
            self.up += len(early)
        except (OSError, ValueError):
            self.abort("error")
        self.pumps -= 1
        self._pump(True)

    # -- directions ------------------------------------------------------------

    def _park(self, upstream: bool):
        """No greenlet waits: the read watcher calls back when bytes arrive."""
        src = self.client if upstream else self.backend
        tls = tls_object(src) if type(src) is not PLAIN else None
        if tls is not None and tls.pending():
            # Decrypted bytes already wait inside TLS: the socket will not
            # become readable for them.
            gevent.spawn_raw(self._pump, upstream)
            return
        try:
            read_watcher(src).start(self._wake, upstream)
        except (OSError, ValueError, AttributeError):
            self.abort("error")

    def _wake(self, upstream):
        src, dst = (self.client, self.backend) if upstream else (self.backend, self.client)
        if type(src) is PLAIN and type(dst) is PLAIN:
            self._copy_now(upstream, src, dst)
            return
        read_watcher(src).stop()
        gevent.spawn_raw(self._pump, upstream)

    def _copy_now(self, upstream, src, dst):
        """Plain TCP both ways: copy in the watcher's callback, with no
        greenlet at all, as long as the other side takes the bytes at once.
        The watcher stays started, so a message costs one recv and one send.
        A slow reader on the other side gets a greenlet, blocked in sendall
        with the rest (backpressure)."""
        try:
            size = kernel(src).recv_into(READ_BUFFER, RECV)
        except BlockingIOError:
            return
        except OSError:
            size = None
        if not size:
            read_watcher(src).stop()
            if size is None:
                self.abort("error")
            else:
                self.end("client close" if upstream else "backend close")
                self._direction_over(upstream, dst)
            return
        data = READ_VIEW[:size]
        if upstream:
            self.last_up = time.monotonic()
        else:
            self.last_down = time.monotonic()
        try:
            sent = kernel(dst).send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            read_watcher(src).stop()
            self.abort("error")
            return
        if upstream:
            self.up += sent
        else:
            self.down += sent
        if sent < len(data):
            read_watcher(src).stop()
            gevent.spawn_raw(self._pump, upstream, bytes(data[sent:]))   # out of the shared buffer

    def _pump(self, upstream: bool, unsent=b""):
        """Copy src -> dst while bytes come (after `unsent`, what the other
        side did not take yet); park after LINGER seconds of quiet."""
        src, dst = (self.client, self.backend) if upstream else (self.backend, self.client)
        self.pumps += 1
        linger = None
        # A session that was busy a moment ago will send again soon: waiting
        # here is cheaper than parking and waking a new greenlet for each
        # message. One woken after a quiet spell parks at once, so a burst of
        # single messages over many idle sessions leaves no greenlets behind.
        busy = time.monotonic() - (self.last_up if upstream else self.last_down) < LINGER
        try:
            if unsent:
                sockio.sendall(dst, unsent)
                if upstream:
                    self.up += len(unsent)
                else:
                    self.down += len(unsent)
            while not self.finished:
                data = _read_now(src)
                if data is None:
                    if busy:
                        linger = linger or get_hub().loop.timer(LINGER, LINGER)
                        if _wait_readable(src, linger):
                            continue
                    self._park(upstream)
                    return
                if not data:
                    self.end("client close" if upstream else "backend close")
                    self._direction_over(upstream, dst)
                    return
                if upstream:
                    self.last_up = time.monotonic()
                    sockio.sendall(dst, data)
                    self.up += len(data)
                else:
                    self.last_down = time.monotonic()
                    sockio.sendall(dst, data)
                    self.down += len(data)
        except socket.timeout:
            self.abort("idle timeout")    # the reader on the other side stopped reading
        except (OSError, ValueError):      # ValueError: a TLS socket closed under us
            self.abort("error")
        finally:
            if linger is not None:
                linger.stop()
            self.pumps -= 1
            self._maybe_finish()

    def _direction_over(self, upstream, dst):
        if upstream:
            self.up_open = False
        else:
            self.down_open = False
        if self.up_open or self.down_open:
            shutdown(dst, socket.SHUT_WR)
        self._maybe_finish()

    # -- ending ----------------------------------------------------------------

    def end(self, why):
        if not self.ended:
            self.ended = why

    def abort(self, why):
        """Close both directions now: a pump blocked in sendall fails, one
        lingering wakes to EOF, parked directions end with the session."""
        if self.finished:
            return
        self.end(why)
        self.up_open = self.down_open = False
        shutdown(self.client, socket.SHUT_RDWR)
        shutdown(self.backend, socket.SHUT_RDWR)
        self._maybe_finish()

    def _arm_timer(self, seconds):
        self.timer = get_hub().loop.timer(max(seconds, 0.001))
        self.timer.start(self._idle_check)

    def _idle_check(self):
        quiet = time.monotonic() - max(self.last_up, self.last_down)
        if quiet >= self.idle_timeout:
            self.abort("idle timeout")
        elif not self.finished:
            self._arm_timer(self.idle_timeout - quiet)

    def _maybe_finish(self):
        if self.finished or self.up_open or self.down_open or self.pumps:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.stop()
            self.timer = None
        for sock in (self.client, self.backend):
            _stop_watching(sock)
            sock.close()
        if self.on_end is not None:
            self.on_end(self)


def _read_now(sock):
    """Bytes available now, b"" at the end of the stream, None when nothing is there."""
    if type(sock) is PLAIN:
        try:
            return kernel(sock).recv(RECV)
        except BlockingIOError:
            return None
    try:
        return tls_object(sock).read(RECV)
    except ssl.SSLWantReadError:
        return None
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return b""


def _stop_watching(sock):
    try:
        read_watcher(sock).stop()
    except (AttributeError, ValueError, OSError):
        pass


def shutdown(sock, how):
    """shutdown() of the TCP socket itself, also under TLS: ssl's own shutdown
    drops the TLS state, which would end the direction still flowing. The
    peer sees the end of the byte stream (TLS without close_notify)."""
    try:
        socket.socket.shutdown(sock, how)
    except (OSError, ValueError):
        pass
