"""Socket fast paths for the per-request hot loop.

gevent's socket methods are general: sendall asks the kernel for SO_SNDBUF
on every call and slices the data, recv always tries the syscall before
waiting. On a plain (non-TLS) socket these go straight to the kernel socket
gevent keeps non-blocking, and wait on gevent's own read event (with the
socket's timeout) only when the kernel has nothing. TLS sockets take
gevent's ordinary path.
"""
import socket

_PLAIN = socket.socket  # gevent's class once monkey patching has run


def sendall(sock, data):
    """Send everything; on a plain socket one syscall when the buffer has room."""
    if type(sock) is _PLAIN:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)


def recv_after_wait(sock, size):
    """recv for a read that is expected to find nothing yet (the answer to
    a request just sent, the next request after an answer): wait for
    readability first and save the syscall that would fail."""
    if type(sock) is _PLAIN:
        sock._wait(sock._read_event)   # raises socket.timeout after sock.timeout
        try:
            return sock._sock.recv(size)
        except BlockingIOError:
            pass
    return sock.recv(size)


def recv(sock, size):
    """recv for a read that often finds data already there (a body in flight)."""
    if type(sock) is _PLAIN:
        try:
            return sock._sock.recv(size)
        except BlockingIOError:
            pass
    return sock.recv(size)
