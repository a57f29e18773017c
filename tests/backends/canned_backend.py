"""A raw-socket backend that answers every request head with fixed bytes.

    python tests/backends/canned_backend.py --port N --hex HEX [--later HEX2]
                                            [--then MODE] [--certfile C --keyfile K]

Prints ``READY <port>`` once listening (port 0 picks a free one). A request
head for /health gets "200 ok" (so the server passes its probe); any other
head gets the bytes HEX decodes to, in one send, then (with --later) 0.3 s
later the bytes HEX2 decodes to, in a second send, and then (--then):
  close   the connection is closed with a FIN (default)
  reset   the connection is reset (RST) 0.2 s later
  hold    the connection stays open, silent, until the peer leaves
With --certfile and --keyfile it speaks TLS.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

HEALTHY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--hex", required=True)
    parser.add_argument("--later", default="")
    parser.add_argument("--then", choices=["close", "reset", "hold"], default="close")
    parser.add_argument("--certfile", default="")
    parser.add_argument("--keyfile", default="")
    args = parser.parse_args()
    answer, later = bytes.fromhex(args.hex), bytes.fromhex(args.later)

    def handle(sock, address):
        try:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    piece = sock.recv(65536)
                    if not piece:
                        return
                    buf += piece
                head, _, buf = buf.partition(b"\r\n\r\n")
                if head.split(b" ", 2)[1:2] == [b"/health"]:
                    sock.sendall(HEALTHY)
                    continue
                sock.sendall(answer)
                if later:
                    gevent.sleep(0.3)
                    sock.sendall(later)
                if args.then == "reset":
                    gevent.sleep(0.2)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                elif args.then == "hold":
                    while sock.recv(65536):
                        pass
                return
        except OSError:
            pass
        finally:
            sock.close()

    tls = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else {}
    server = StreamServer((args.host, args.port), handle, **tls)
    server.start()
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
