"""A test server for the HTTP/2 connection layer alone: appgw's h2 Session
on a plain socket (h2c with prior knowledge), with a small stream handler
in place of the gateway's exchange.

    python tests/backends/h2_session_server.py --port N [--max-streams N]

Prints ``READY <port>``. Paths: /bytes?n=N (N pattern bytes), /echo (the
request body back, as it arrives), /hold (never answers; prints HELD and,
when the stream is let go, RELEASED on stderr).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from appgw.config import parse_config  # noqa: E402
from appgw.downstream.h2conn import Session  # noqa: E402
from appgw.http.h2 import request_from_h2, response_headers  # noqa: E402
from appgw.control.stats import Stats  # noqa: E402

PATTERN = bytes(range(251))


def pattern_bytes(offset, length):
    start = offset % len(PATTERN)
    return (PATTERN * ((start + length) // len(PATTERN) + 1))[start:start + length]


def handler(session, stream):
    req = request_from_h2(stream.headers, stream.end_stream, 32768)
    timeout = session.gateway.client_idle_timeout
    if req.path == b"/bytes":
        n = int(req.query.partition(b"=")[2] or 0)
        stream.send_headers(response_headers(200, [b"content-type: application/octet-stream"], content_length=n))
        sent = 0
        while sent < n:
            piece = pattern_bytes(sent, min(65536, n - sent))
            stream.send_data(piece, end=sent + len(piece) == n, timeout=timeout)
            sent += len(piece)
        if not n:
            stream.end()
    elif req.path == b"/echo":
        stream.send_headers(response_headers(200, []))
        while True:
            data = stream.read(timeout)
            if not data:
                break
            stream.send_data(data, timeout=timeout)
        stream.end()
    elif req.path == b"/hold":
        print("HELD %d" % stream.id, file=sys.stderr, flush=True)
        try:
            gevent.sleep(3600)
        finally:
            print("RELEASED %d" % stream.id, file=sys.stderr, flush=True)
    else:
        stream.send_headers(response_headers(404, []), end=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-streams", type=int, default=100)
    parser.add_argument("--idle", type=float, default=60)
    args = parser.parse_args()
    config = parse_config(f"""
[gateway]
client_idle_timeout = {args.idle}
[[listeners]]
name = "h2"
bind = "127.0.0.1:1"
http2 = true
max_concurrent_streams = {args.max_streams}
[[backend_pools]]
name = "app"
servers = ["127.0.0.1:1"]
[[rules]]
name = "main"
listener = "h2"
backend_pool = "app"
""", "h2.toml")
    listener = config.listeners[0]
    site = types.SimpleNamespace(listeners=[types.SimpleNamespace(listener=listener)])
    runtime = types.SimpleNamespace(config=config, stats=Stats())

    def handle(sock, address):
        Session(sock, address[0], site, runtime, handler).serve()

    server = StreamServer(("127.0.0.1", args.port), handle)
    server.start()
    print("READY %d" % server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
