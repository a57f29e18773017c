"""The WebSocket byte relay: after a 101, two greenlets copy bytes both ways.

Each direction is `recv` then `sendall`, so a slow reader slows its writer
(backpressure, no queue). EOF in one direction is passed on as
shutdown(SHUT_WR) and the other keeps flowing (half-close); an error closes
both. One shared last-activity clock makes the idle timeout: a recv that
times out checks whether the other direction was busy meanwhile. No buffer
is held while a session is idle: recv allocates only when bytes arrive.
"""
import socket
import time

import gevent
from gevent import GreenletExit

RECV = 65536


class Session:
    __slots__ = ("client", "backend", "idle_timeout", "last", "ended", "up", "down")

    def __init__(self, client, backend, idle_timeout):
        self.client, self.backend = client, backend
        self.idle_timeout = idle_timeout
        self.last = time.monotonic()
        self.ended = ""      # how the session ended: the first cause wins
        self.up = self.down = 0  # bytes client->backend, backend->client

    def end(self, why):
        if not self.ended:
            self.ended = why

    def abort(self, why):
        """Close both directions at once: blocked recvs return EOF."""
        self.end(why)
        shutdown(self.client, socket.SHUT_RDWR)
        shutdown(self.backend, socket.SHUT_RDWR)

    def pump(self, src, dst, upstream: bool):
        """Copy src -> dst until src ends; pass its end on to dst."""
        idle = self.idle_timeout
        src.settimeout(idle)
        dst.settimeout(idle)
        while True:
            try:
                data = src.recv(RECV)
            except socket.timeout:
                quiet = time.monotonic() - self.last
                if quiet >= idle:
                    self.abort("idle timeout")
                    return
                src.settimeout(idle - quiet)
                continue
            except (OSError, ValueError):  # ValueError: a TLS socket closed under us
                self.abort("error")
                return
            except GreenletExit:
                self.abort("stopped")
                return
            if not data:
                self.end("client close" if upstream else "backend close")
                shutdown(dst, socket.SHUT_WR)
                return
            self.last = time.monotonic()
            try:
                dst.sendall(data)
            except socket.timeout:
                self.abort("idle timeout")
                return
            except (OSError, ValueError):
                self.abort("error")
                return
            if upstream:
                self.up += len(data)
            else:
                self.down += len(data)
            src.settimeout(idle)


    def run(self, early: bytes, entry, stats):
        """Relay until both directions have ended; fill the log entry.
        `early` is what the client sent right after its handshake."""
        stats.websocket_active += 1
        stats.websocket_total += 1
        try:
            if early:
                self.backend.sendall(early)
                self.up += len(early)
            down = gevent.spawn(self.pump, self.backend, self.client, False)
            try:
                self.pump(self.client, self.backend, True)
                down.join()
            finally:
                down.kill()
        except (OSError, ValueError):
            self.end("error")
        finally:
            stats.websocket_active -= 1
            entry.received += self.up
            entry.sent += self.down
            entry.ended = self.ended


def shutdown(sock, how):
    """shutdown() of the TCP socket itself, also under TLS: ssl's own shutdown
    drops the TLS state, which would end the direction still flowing. The
    peer sees the end of the byte stream (TLS without close_notify)."""
    try:
        socket.socket.shutdown(sock, how)
    except (OSError, ValueError):
        pass
