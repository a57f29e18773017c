"""A test backend that swallows request bodies: gevent's WSGI server.

    python tests/backends/sink_backend.py --port N

Prints ``READY <port>`` once listening (port 0 picks a free one). Endpoints:
  /sink     reads the whole body (Content-Length or chunked) in 1 MiB pieces,
            keeps none of it, and answers JSON {"length": N, "sha256": HEX}
  /health   200 "ok" (for probes)
anything else is 404.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

PIECE = 1024 * 1024


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sink":
        digest, length = hashlib.sha256(), 0
        body = environ["wsgi.input"]
        while piece := body.read(PIECE):
            digest.update(piece)
            length += len(piece)
        answer = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
        status = "200 OK"
    elif path == "/health":
        answer, status = b"ok", "200 OK"
    else:
        answer, status = b"not found\n", "404 Not Found"
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(answer)))])
    return [answer]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = WSGIServer((args.host, args.port), app, log=None)
    server.start()
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
