"""One line per request and per WebSocket session: combined or JSON.

Both formats carry the same fields under the same names: the combined
line's `listener= rule= server= rx= duration= pid= ended=` and `reason="..."`
(why the gateway answered a request itself) are JSON keys of the same name
and value, and its status and byte count are "status" and "sent"."""
import json
import os
import sys
import time


class Entry:
    """What one request or session leaves behind for the log."""

    __slots__ = ("client", "listener", "rule", "server", "method", "target", "version",
                 "status", "received", "sent", "start", "referer", "user_agent", "ended", "reason")

    def __init__(self, client, listener):
        self.client, self.listener = client, listener
        self.rule = self.server = "-"
        self.method = self.target = self.version = b""
        self.status = 0
        self.received = self.sent = 0
        self.start = time.time()
        self.referer = self.user_agent = b""
        self.ended = ""
        self.reason = ""    # why the gateway answered itself (an error): for the log, not the client


def _header(headers, lname):
    for name, value in headers:
        if name.lower() == lname:
            return value
    return b""


class AccessLogError(Exception):
    """The access-log file cannot be opened: one line, for the log or stderr."""


class AccessLog:
    """Writes entries to stdout, a file, or nowhere (`enabled` is False)."""

    def __init__(self, target: str, fmt: str):
        self.enabled = bool(target)
        self.json = fmt == "json"
        self.target = target
        if not target:
            self._stream = None
        elif target == "-":
            self._stream = sys.stdout
        else:
            self._stream = self._open()

    def _open(self):
        try:
            return open(self.target, "a", buffering=1, encoding="utf-8")
        except OSError as exc:
            raise AccessLogError("cannot open the access log %s: %s" % (
                self.target, (exc.strerror or str(exc)).lower())) from None

    def reopen(self):
        """Open the file again by its name (logrotate moved the old one
        away); the old file is closed once the new one is open, so a
        failure keeps logging where it was. Raises AccessLogError. True when
        there was a file to reopen."""
        if self._stream is None or self._stream is sys.stdout:
            return False
        old, self._stream = self._stream, self._open()
        old.close()
        return True

    def close(self):
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
            self._stream = None

    def fill_request(self, entry, req):
        entry.method, entry.target, entry.version = req.method, req.target, b"HTTP/1.%d" % req.minor
        entry.referer = _header(req.headers, b"referer")
        entry.user_agent = _header(req.headers, b"user-agent")

    def write(self, entry: Entry):
        if self._stream is None:
            return
        duration = time.time() - entry.start
        self._stream.write((self._json if self.json else self._combined)(entry, duration))
        self._stream.flush()

    @staticmethod
    def _combined(e, duration):
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(e.start))
        request = b"%s %s %s" % (e.method, e.target, e.version) if e.method else b"-"
        tail = (" ended=" + _ended(e) if e.ended else "") + (' reason="%s"' % _reason(e) if e.reason else "")
        return '%s - - [%s] "%s" %d %d "%s" "%s" listener=%s rule=%s server=%s rx=%d duration=%.3f pid=%d%s\n' % (
            e.client, when, _text(request), e.status, e.sent, _text(e.referer) or "-",
            _text(e.user_agent) or "-", e.listener, e.rule, e.server, e.received, duration,
            os.getpid(), tail)

    @staticmethod
    def _json(e, duration):
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.start)),
            "client": e.client, "listener": e.listener, "rule": e.rule, "server": e.server,
            "method": _text(e.method), "target": _text(e.target), "version": _text(e.version),
            "status": e.status, "sent": e.sent, "rx": e.received,
            "duration": round(duration, 6), "referer": _text(e.referer),
            "user_agent": _text(e.user_agent), "pid": os.getpid(),
        }
        if e.ended:
            record["ended"] = _ended(e)
        if e.reason:
            record["reason"] = e.reason
        return json.dumps(record) + "\n"


def _ended(e) -> str:
    # One word, so that the combined line splits on spaces: "idle_timeout".
    return e.ended.replace(" ", "_")


def _reason(e) -> str:
    return _text(e.reason.encode("utf-8", "replace"))


def _text(value: bytes) -> str:
    # Log lines must stay one line: escape quotes and anything not printable.
    return value.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')
