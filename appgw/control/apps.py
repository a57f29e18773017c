"""In-process WSGI apps: served by gevent's WSGI server with gevent-websocket's
handler on a private unix socket, so the proxy reaches them as one more server
of their pool (routed, probed and logged like any other).

The proxy parses and re-serializes every head before pywsgi sees it, which
matters: pywsgi's own parser is lenient with hostile input.
"""
import importlib
import logging
import os
import socket
import sys
import tempfile

log = logging.getLogger("appgw.apps")
# gevent-websocket logs every request at INFO; the gateway writes the access log.
logging.getLogger("geventwebsocket.handler").setLevel(logging.WARNING)


class AppImportError(Exception):
    pass


def import_app(spec: str, search=()):
    """Import "package.module:callable" and return the callable; the
    directories `search` go first on sys.path (in their order) if they are
    not on it yet, as gunicorn's --pythonpath does. sys.path is the
    process's, so they stay there: the app imports its own modules later."""
    for path in reversed(search):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of a user module
        raise AppImportError("cannot import %r: %s: %s" % (module_name, type(exc).__name__, exc)) from None
    app = getattr(module, attr, None)
    if app is None:
        raise AppImportError("module %r has no attribute %r" % (module_name, attr))
    if not callable(app):
        raise AppImportError("%s is not callable" % spec)
    return app


class AppHost:
    """Serves each distinct app spec once per process, in a private directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="appgw-apps-")
        os.chmod(self.dir, 0o700)
        self.servers = {}   # spec -> (WSGIServer, socket path)

    def path_for(self, spec: str, search=()) -> str:
        """Start serving `spec` (imported with `search` on sys.path) if it is
        not served yet; return its socket path."""
        if spec not in self.servers:
            self.servers[spec] = self._start(spec, search)
        return self.servers[spec][1]

    def _start(self, spec, search):
        from gevent.pywsgi import WSGIServer
        from geventwebsocket.handler import WebSocketHandler

        app = import_app(spec, search)
        path = os.path.join(self.dir, "app-%d.sock" % len(self.servers))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1024)
        server = WSGIServer(listener, app, handler_class=WebSocketHandler, log=None,
                            error_log=logging.getLogger("appgw.app"))
        server.start()
        log.info("serving app %s in-process", spec)
        return server, path

    def retain(self, specs):
        """Stop the apps no longer named by the configuration."""
        for spec in list(self.servers):
            if spec not in specs:
                server, path = self.servers.pop(spec)
                # Stop accepting only: requests and WebSocket sessions still
                # open on the app run on until they end.
                server.close()
                _unlink(path)

    def close(self):
        self.retain(())
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
