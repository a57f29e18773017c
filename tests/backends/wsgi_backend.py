"""A test backend: gevent's WSGI server + gevent-websocket, keep-alive on.

    python tests/backends/wsgi_backend.py --port N [--name NAME]

Prints ``READY <port>`` once listening (port 0 picks a free one). Endpoints:
/echo, /bytes, /text, /upload-echo, /slow, /status, /health, /probe-status,
/set-probe-status, /name, /ws/echo, /ws/info (see each handler); any path
under /any/ is answered as /echo is (for tests that rewrite and route paths).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import http  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402

PIECE = 64 * 1024
# A period of 251 (prime) does not divide the piece size, so a dropped or
# repeated piece shows in the bytes, not only in the length.
PATTERN = bytes(range(251))


# /text: numbered lines of one length, so that any byte range is quick to
# make and a dropped or repeated piece shows after decoding.
from textbody import TEXT_LINE, TEXT_PERIOD, text_bytes  # noqa: E402,F401  (the script's own directory)


def pattern_bytes(offset, length):
    """``length`` bytes of the repeating pattern starting at ``offset``."""
    start = offset % len(PATTERN)
    reps = (start + length) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + length]


class RawHeadersHandler(WebSocketHandler):
    """Keeps the request's header lines, in order and with their case."""

    def get_environ(self):
        env = super().get_environ()
        env["backend.raw_headers"] = [[k, v] for k, v in self.headers.items()]
        env["backend.target"] = self.path
        return env

    # pywsgi sends the body of a HEAD response (and chunk framing); a backend
    # for the gateway's tests must send the GET's headers and nothing else.
    def finalize_headers(self):
        super().finalize_headers()
        if self.command == "HEAD":
            self.response_use_chunked = False

    def _write(self, data):
        if self.command != "HEAD":
            super()._write(data)


class Backend:
    def __init__(self, name):
        self.name = name
        self.probe_status = 200  # changed by POST /set-probe-status

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        query = {k: v[-1] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        handler = getattr(self, "do_" + path.strip("/").replace("/", "_").replace("-", "_"),
                          None)
        if handler is None and path.startswith("/any/"):
            handler = self.do_echo
        if handler is None:
            return self.reply(start_response, 404, b"not found\n")
        return handler(environ, start_response, query)

    @staticmethod
    def reply(start_response, code, body, content_type="text/plain", extra=()):
        if code in (204, 304):
            body = b""
        headers = [("Content-Type", content_type)]
        if code not in (204, 304):
            headers.append(("Content-Length", str(len(body))))
        start_response(f"{code} {_phrase(code)}", headers + list(extra))
        return [body]

    def do_echo(self, environ, start_response, query):
        """Describes the request as JSON; remote_port shows connection reuse."""
        digest, length = hashlib.sha256(), 0
        for piece in _read_body(environ):
            digest.update(piece)
            length += len(piece)
        body = json.dumps({
            "name": self.name,
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "target": environ["backend.target"],
            "query": environ["QUERY_STRING"],
            "version": environ["SERVER_PROTOCOL"],
            "headers": environ["backend.raw_headers"],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "remote_port": int(environ["REMOTE_PORT"]),
        }).encode()
        return self.reply(start_response, 200, body, "application/json")

    def do_bytes(self, environ, start_response, query):
        """n bytes of the pattern, in 64 KiB pieces; chunked=1 omits Content-Length."""
        n = int(query.get("n", "0"))
        headers = [("Content-Type", "application/octet-stream")]
        if query.get("chunked") != "1":
            headers.append(("Content-Length", str(n)))
        start_response("200 OK", headers)
        return (pattern_bytes(off, min(PIECE, n - off)) for off in range(0, n, PIECE))

    def do_text(self, environ, start_response, query):
        """n bytes of numbered text lines (compressible), in `piece`-byte writes.

        status= (default 200), type= (default text/html; charset=utf-8),
        chunked=1 omits Content-Length, and each header=Name:value adds a
        header (repeatable)."""
        n = int(query.get("n", "0"))
        piece = int(query.get("piece", str(PIECE)))
        code = int(query.get("status", "200"))
        headers = [("Content-Type", query.get("type", "text/html; charset=utf-8"))]
        for item in parse_qs(environ["QUERY_STRING"]).get("header", []):
            name, _, value = item.partition(":")
            headers.append((name.strip(), value.strip()))
        if code in (204, 304):
            n = 0
        elif query.get("chunked") != "1":
            headers.append(("Content-Length", str(n)))
        start_response(f"{code} {_phrase(code)}", headers)
        return (text_bytes(off, min(piece, n - off)) for off in range(0, n, piece))

    def do_upload_echo(self, environ, start_response, query):
        """Streams the body back as it arrives (chunked), never holding it whole."""
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _read_body(environ)

    def do_slow(self, environ, start_response, query):
        gevent.sleep(float(query.get("delay", "1")))
        return self.reply(start_response, 200, b"slow ok\n")

    def do_status(self, environ, start_response, query):
        code = int(query.get("code", "200"))
        return self.reply(start_response, code, f"status {code}\n".encode())

    def do_health(self, environ, start_response, query):
        return self.reply(start_response, 200, b"ok")

    def do_name(self, environ, start_response, query):
        return self.reply(start_response, 200, self.name.encode())

    def do_probe_status(self, environ, start_response, query):
        code = self.probe_status
        return self.reply(start_response, code, f"probe {code}\n".encode())

    def do_set_probe_status(self, environ, start_response, query):
        if environ["REQUEST_METHOD"] != "POST":
            return self.reply(start_response, 405, b"POST only\n", extra=[("Allow", "POST")])
        self.probe_status = int(query["code"])
        return self.reply(start_response, 200, b"ok")

    def do_ws_echo(self, environ, start_response, query):
        ws = environ.get("wsgi.websocket")
        if ws is None:
            return self.reply(start_response, 400, b"expected a WebSocket upgrade\n")
        _echo(ws)
        return []

    def do_ws_info(self, environ, start_response, query):
        """Sends the handshake it received as JSON first, then echoes."""
        ws = environ.get("wsgi.websocket")
        if ws is None:
            return self.reply(start_response, 400, b"expected a WebSocket upgrade\n")
        ws.send(json.dumps({
            "name": self.name,
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "headers": environ["backend.raw_headers"],
        }))
        _echo(ws)
        return []


def _phrase(code):
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _read_body(environ):
    body = environ["wsgi.input"]
    while True:
        piece = body.read(PIECE)
        if not piece:
            return
        yield piece


def _echo(ws):
    while True:
        message = ws.receive()
        if message is None:
            return
        # gevent-websocket gives str for text, bytearray for binary: keep the type.
        ws.send(message, binary=not isinstance(message, str))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    # log=None: nobody reads our stderr pipe for access lines; errors still go there.
    # A deep accept queue: the idle-sessions test opens thousands of backend
    # connections in a burst, and gevent's default (256) drops SYNs then.
    server = WSGIServer((args.host, args.port), Backend(args.name),
                        handler_class=RawHeadersHandler, log=None, backlog=4096)
    server.start()
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
