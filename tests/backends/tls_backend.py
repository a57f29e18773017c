"""wsgi_backend.py's app over TLS or on a unix socket.

    python tests/backends/tls_backend.py --port N --certfile C --keyfile K [--name NAME]
    python tests/backends/tls_backend.py --unix PATH [--name NAME]
    python tests/backends/tls_backend.py --port N --any-path [--name NAME]

Prints ``READY <port>`` once listening (``READY 0`` on a unix socket).
Same endpoints as wsgi_backend.py (same Backend class and handler); with
``--any-path`` every path answers 200 with JSON naming the backend and the
request (name, method, path, query, host), so routing tests can ask any path.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsgi_backend import Backend, RawHeadersHandler  # noqa: E402


class Handler(RawHeadersHandler):
    # A unix-socket peer has no port; /echo reports 0 there.
    def get_environ(self):
        env = super().get_environ()
        env.setdefault("REMOTE_PORT", "0")
        return env


class AnyPath:
    def __init__(self, name):
        self.name = name

    def __call__(self, environ, start_response):
        body = json.dumps({
            "name": self.name,
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "host": environ.get("HTTP_HOST", ""),
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="backend")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--unix", help="listen on this unix socket path instead of TCP")
    parser.add_argument("--any-path", action="store_true", help="answer every path (JSON)")
    args = parser.parse_args()
    app = AnyPath(args.name) if args.any_path else Backend(args.name)
    if args.unix:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        listener.bind(args.unix)
        listener.listen(128)
        server = WSGIServer(listener, app, handler_class=Handler,
                            log=None)
        server.start()
        print("READY 0", flush=True)
    else:
        ssl_args = {}
        if args.certfile:
            ssl_args = {"certfile": args.certfile, "keyfile": args.keyfile}
        server = WSGIServer((args.host, args.port), app,
                            handler_class=Handler, log=None, **ssl_args)
        server.start()
        print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
