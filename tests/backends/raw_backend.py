"""A raw-socket backend that misbehaves on purpose, for fault tests.

    python tests/backends/raw_backend.py --port N --mode MODE [--record FILE]

Prints ``READY <port>`` once listening (port 0 picks a free one). Modes:
  reset-mid-body        200 with Content-Length 100000, 1000 bytes, then RST
  reset-mid-chunked     chunked 200, three chunks, then RST
  never-answer          reads the head, then stays silent until the peer leaves
  garbage               answers "HELLO NOT HTTP\\r\\n\\r\\n" and closes
  close-after-response  one keep-alive-looking "200 ok", closes 0.2 s later
                        (a stale pooled connection for the gateway)
  short-second          "200 ok" keep-alive to a connection's first request; to its
                        second, Content-Length 100000 with 1000 bytes, then FIN
  vanish-after-one      "200 ok" keep-alive to the first request, then closes that
                        connection and stops listening (a replay's connect is refused)
  record                "200 ok" keep-alive to every request, and appends what it
                        received to FILE, one JSON line per recv:
                        {"conn": n, "data": "<latin-1 text>"}
  drop-second           "200 ok" keep-alive to a connection's first request; reads
                        the second and closes without answering (a pooled
                        connection that dies under a request); records as record
  hints-then-body       on the head, "103 Early Hints" at once; then reads the
                        whole Content-Length body and answers 200 with its length

Requests are parsed with h11, which takes any token as a method (llhttp
knows a fixed list), so extension methods are answered too.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import h11  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

OK_KEEPALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# Long enough for the peer to read what was sent before the reset: an RST
# may make the kernel drop data the peer has not read yet.
BEFORE_RESET = 0.2


def read_head(sock):
    """Reads until the end of a request head (or EOF); returns what it read."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def drain_until_eof(sock):
    while sock.recv(65536):
        pass


def reset(sock):
    """Closes with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def mode_reset_mid_body(sock, conn, args):
    read_head(sock)
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    gevent.sleep(BEFORE_RESET)
    reset(sock)


def mode_reset_mid_chunked(sock, conn, args):
    read_head(sock)
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        sock.sendall(b"6\r\nchunk\n\r\n")
    gevent.sleep(BEFORE_RESET)
    reset(sock)


def mode_never_answer(sock, conn, args):
    read_head(sock)
    drain_until_eof(sock)


def mode_garbage(sock, conn, args):
    read_head(sock)
    sock.sendall(b"HELLO NOT HTTP\r\n\r\n")


def mode_close_after_response(sock, conn, args):
    read_head(sock)
    sock.sendall(OK_KEEPALIVE)
    gevent.sleep(0.2)


def mode_short_second(sock, conn, args):
    read_head(sock)
    sock.sendall(OK_KEEPALIVE)
    read_head(sock)
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)


def mode_vanish_after_one(sock, conn, args):
    read_head(sock)
    SERVER.close()     # no new connections from now on
    sock.sendall(OK_KEEPALIVE)
    gevent.sleep(0.2)


def record(args, conn, data):
    with open(args.record, "a", encoding="utf-8") as f:
        f.write(json.dumps({"conn": conn, "data": data.decode("latin-1")}) + "\n")


def answered_requests(sock, conn, args, limit=None):
    """Record everything received; answer each complete request 200 ok, the
    first `limit` of them (all when None). Returns when the peer closes, or
    once a request past `limit` is complete."""
    parser = h11.Connection(h11.SERVER)
    answering, served = True, 0
    while True:
        data = sock.recv(65536)
        if not data:
            return
        record(args, conn, data)
        if not answering:
            continue
        parser.receive_data(data)
        try:
            while (event := parser.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                if type(event) is not h11.EndOfMessage:
                    continue
                if limit is not None and served == limit:
                    return
                served += 1
                # The same bytes to every request, HEAD included (h11 would
                # leave the body out); h11 is told of the answer only to
                # move on to the next request.
                sock.sendall(OK_KEEPALIVE)
                parser.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                parser.send(h11.EndOfMessage())
                parser.start_next_cycle()
        except h11.ProtocolError:
            answering = False   # malformed: stop answering, keep recording


def mode_record(sock, conn, args):
    answered_requests(sock, conn, args)


def mode_drop_second(sock, conn, args):
    answered_requests(sock, conn, args, limit=1)


def mode_hints_then_body(sock, conn, args):
    data = read_head(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    received = len(body)
    while received < length:
        piece = sock.recv(65536)
        if not piece:
            return
        received += len(piece)
    answer = b"%d bytes\n" % received
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))


MODES = {
    "reset-mid-body": mode_reset_mid_body,
    "reset-mid-chunked": mode_reset_mid_chunked,
    "never-answer": mode_never_answer,
    "garbage": mode_garbage,
    "close-after-response": mode_close_after_response,
    "record": mode_record,
    "short-second": mode_short_second,
    "vanish-after-one": mode_vanish_after_one,
    "drop-second": mode_drop_second,
    "hints-then-body": mode_hints_then_body,
}
SERVER = None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode", required=True, choices=sorted(MODES))
    parser.add_argument("--record", help="file for --mode record")
    args = parser.parse_args()
    if args.mode in ("record", "drop-second") and not args.record:
        parser.error(f"--mode {args.mode} needs --record FILE")
    mode, counter = MODES[args.mode], itertools.count()

    def handle(sock, address):
        try:
            mode(sock, next(counter), args)
        except OSError:
            pass  # the peer went away: nothing to report to a test

    global SERVER
    server = SERVER = StreamServer((args.host, args.port), handle)
    server.start()
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
