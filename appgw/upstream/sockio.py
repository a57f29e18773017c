"""Socket fast paths for the per-request hot loop, and the one module that
knows gevent's private socket attributes.

gevent's socket methods are general: sendall asks the kernel for SO_SNDBUF
on every call and slices the data, recv always tries the syscall before
waiting. On a plain (non-TLS) socket these go straight to the kernel socket
gevent keeps non-blocking, and wait on gevent's own read event (with the
socket's timeout) only when the kernel has nothing. TLS sockets take
gevent's ordinary path.
"""
import operator
import socket

from gevent import get_hub, getcurrent

PLAIN = socket.socket   # gevent's class once monkey patching has run

# gevent's private parts of its sockets, named here and used through these
# names everywhere else (tests/test_sockio.py fails loudly when a gevent
# release renames them): the kernel socket gevent keeps non-blocking, the
# libev read watcher a waiting greenlet parks on, and an SSLSocket's
# ssl.SSLObject (None before the handshake). attrgetter is C: no Python
# frame on the hot path.
kernel = operator.attrgetter("_sock")
read_watcher = operator.attrgetter("_read_event")
tls_object = operator.attrgetter("_sslobj")
RECV = 65536            # bytes asked of the kernel per read

# Reads made in event-loop callbacks (the HTTP fast path, the WebSocket
# relay) land in one buffer for the whole process, sparing an allocation per
# read: a callback never yields, so what it read is sent on, or copied out,
# before the next read. Large enough for an answer's head and a 64 KiB body.
READ_BUFFER = bytearray(4 * RECV)
READ_VIEW = memoryview(READ_BUFFER)


class Timer:
    """A reusable deadline of one duration. gevent's socket timeouts build a
    Timeout object for every wait (about 7 µs); this re-arms one libev timer."""

    __slots__ = ("seconds", "watcher")

    def __init__(self, seconds):
        self.seconds = seconds
        # Repeating, so that again() re-arms it for the full duration; a
        # plain start() after stop() would resume the remaining time.
        self.watcher = get_hub().loop.timer(seconds, seconds)


def _expire(glet):
    glet.throw(socket.timeout("timed out"))


def sendall(sock, data):
    """Send everything; on a plain socket one syscall when the buffer has room."""
    if type(sock) is PLAIN:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)


def send_parts(sock, head, body):
    """Send head then body; on a plain socket with one sendmsg and no copy."""
    if type(sock) is not PLAIN:
        sock.sendall(head + body)
        return
    try:
        sent = sock._sock.sendmsg((head, body))
    except BlockingIOError:
        sent = 0
    if sent < len(head):
        sendall(sock, memoryview(head)[sent:])
        sendall(sock, body)
    elif sent < len(head) + len(body):
        sendall(sock, memoryview(body)[sent - len(head):])


def recv_after_wait(sock, size, timer: Timer):
    """recv for a read that is expected to find nothing yet (the answer to
    a request just sent, the next request after an answer): wait for
    readability first, saving the syscall that would fail. Raises
    socket.timeout when nothing came within `timer.seconds`."""
    if type(sock) is not PLAIN:
        sock.settimeout(timer.seconds)
        return sock.recv(size)
    watcher = timer.watcher
    hub = get_hub()
    while True:
        watcher.again(_expire, getcurrent())
        try:
            hub.wait(sock._read_event)
        finally:
            watcher.stop()
        try:
            return sock._sock.recv(size)
        except BlockingIOError:
            pass  # woken without data (rare): wait again


def recv_now(sock, size):
    """What the socket holds now (b"" at its end), or None when a read would
    wait. A TLS socket with nothing decrypted yet says None: a record may
    be on its way, and the caller waits for the socket to be readable."""
    if type(sock) is PLAIN:
        try:
            return sock._sock.recv(size)
        except BlockingIOError:
            return None
    return sock.recv(size) if sock.pending() else None


def recv(sock, size):
    """recv for a read that often finds data already there (a body in flight)."""
    if type(sock) is PLAIN:
        try:
            return sock._sock.recv(size)
        except BlockingIOError:
            pass
    return sock.recv(size)
