"""A raw-socket WebSocket backend that controls every byte and every FIN.

    python tests/backends/ws_raw_backend.py --port N --mode MODE [--status S]
                                            [--tls CERT KEY]

Prints ``READY <port>`` once listening (port 0 picks a free one). It speaks
just enough RFC 6455 for the tests: unfragmented frames, no extensions.
With --tls it serves TLS; the peer's FIN without close_notify then reads as
EOF and writing goes on (OP_IGNORE_UNEXPECTED_EOF).
Modes (all answer a valid 101 to a WebSocket handshake):
  frame-with-101   writes the 101 and a text frame "sent with the 101" in ONE
                   send, then echoes every frame (a close frame is echoed,
                   then the connection closed)
  eof-then-send    reads frames until EOF (the peer's FIN), then sends a text
                   frame "after EOF: <payloads joined by |>" and closes
  shut-then-read   sends a text frame "backend done writing", shuts down its
                   write side, then reads frames until EOF and writes
                   "RECEIVED <payloads joined by |>" to stderr
  reset-after-101  waits for the first frame, then resets the connection
  refuse           keep-alive HTTP: a WebSocket handshake gets --status with
                   the body "refused", any other request 200 "plain ok"
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


def frame(opcode, payload=b""):
    """One unmasked (server to client) frame with FIN set."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class Reader:
    """Buffered reads of a request head and of frames from one socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self):
        """The next request head as {lowercase name: value}, plus its request line."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    def frame(self):
        """(opcode, unmasked payload) of the next frame; EOFError at EOF."""
        b0, b1 = self.exactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.exactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.exactly(8))[0]
        mask = self.exactly(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(self.exactly(n)))
        return b0 & 0x0F, payload

    def frames_until_eof(self):
        payloads = []
        try:
            while True:
                opcode, payload = self.frame()
                payloads.append(payload.decode("latin-1"))
        except (EOFError, OSError):
            return payloads


def switching(headers):
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def mode_frame_with_101(sock, reader, headers, args):
    sock.sendall(switching(headers) + frame(TEXT, b"sent with the 101"))
    while True:
        opcode, payload = reader.frame()
        sock.sendall(frame(opcode, payload))
        if opcode == CLOSE:
            return


def mode_eof_then_send(sock, reader, headers, args):
    sock.sendall(switching(headers))
    payloads = reader.frames_until_eof()
    sock.sendall(frame(TEXT, ("after EOF: " + "|".join(payloads)).encode()))


def mode_shut_then_read(sock, reader, headers, args):
    sock.sendall(switching(headers) + frame(TEXT, b"backend done writing"))
    # The TCP socket's own shutdown, also under TLS: the end of the byte
    # stream, while TLS reads go on.
    socket.socket.shutdown(sock, socket.SHUT_WR)
    payloads = reader.frames_until_eof()
    print("RECEIVED " + "|".join(payloads), file=sys.stderr, flush=True)


def mode_reset_after_101(sock, reader, headers, args):
    sock.sendall(switching(headers))
    reader.frame()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


MODES = {
    "frame-with-101": mode_frame_with_101,
    "eof-then-send": mode_eof_then_send,
    "shut-then-read": mode_shut_then_read,
    "reset-after-101": mode_reset_after_101,
}


def refuse(sock, reader, args):
    while True:
        _, headers = reader.head()
        if headers.get("upgrade", "").lower() == "websocket":
            body, status = b"refused", args.status
        else:
            body, status = b"plain ok", 200
        sock.sendall(b"HTTP/1.1 %d Status\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode", required=True, choices=sorted(MODES) + ["refuse"])
    parser.add_argument("--status", type=int, default=403)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    tls = {}
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
        # A peer's FIN without close_notify ends our reads, not our writes:
        # the half-close tests need that to see what the gateway does.
        context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        tls = {"ssl_context": context}

    def handle(sock, address):
        reader = Reader(sock)
        try:
            if args.mode == "refuse":
                refuse(sock, reader, args)
                return
            _, headers = reader.head()
            if headers.get("upgrade", "").lower() != "websocket":  # a health probe
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                return
            MODES[args.mode](sock, reader, headers, args)
        except (EOFError, OSError):
            pass  # the peer went away: nothing to report to a test

    server = StreamServer((args.host, args.port), handle, **tls)
    server.start()
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
