"""Opens many idle WebSocket sessions at once (a gevent client for load tests).

    python tests/backends/ws_many_clients.py --port N --count C [--path P]
                                             [--concurrency K]

Opens C raw WebSocket handshakes to 127.0.0.1:N (at most K in flight), then
holds every session open and silent. Talks over stdin/stdout, one line each:
  prints  "OPEN C SECONDS"   once all C sessions got their 101
          "FAIL REASON"      if one could not be opened (then exits 1)
  reads   "ECHO"             sends a text frame on every 100th session and on
                             the last one, reads the echoes back; prints
                             "ECHOED M" (M sessions checked) or "FAIL REASON"
          "CLOSE" or EOF     closes every session, prints "CLOSED" and exits
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def open_session(port, path):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(4096)
        if not piece:
            raise EOFError("closed during the handshake")
        head += piece
    if not head.startswith(b"HTTP/1.1 101"):
        raise ValueError(head[:100])
    return sock


def echo(sock, payload):
    mask = os.urandom(4)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    data = b""
    while len(data) < 2 + len(payload):
        piece = sock.recv(4096)
        if not piece:
            raise EOFError("closed before the echo")
        data += piece
    if data[2:] != payload:
        raise ValueError(f"echo {data!r} for {payload!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--path", default="/ws/echo")
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()

    sessions = [None] * args.count
    pool = Pool(args.concurrency)
    started = time.monotonic()

    def one(i):
        sessions[i] = open_session(args.port, args.path)

    jobs = [pool.spawn(one, i) for i in range(args.count)]
    gevent.joinall(jobs)
    failed = [job.exception for job in jobs if job.exception is not None]
    if failed:
        say(f"FAIL {len(failed)} sessions not opened, first: {failed[0]!r}")
        return 1
    say(f"OPEN {args.count} {time.monotonic() - started:.2f}")

    for line in sys.stdin:
        command = line.strip()
        if command == "ECHO":
            picked = sorted(set(range(0, args.count, 100)) | {args.count - 1})
            try:
                for i in picked:
                    echo(sessions[i], f"echo {i}".encode())
            except Exception as exc:  # noqa: BLE001 - reported to the test
                say(f"FAIL {exc!r}")
                continue
            say(f"ECHOED {len(picked)}")
        elif command == "CLOSE":
            break
    for sock in sessions:
        sock.close()
    say("CLOSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
