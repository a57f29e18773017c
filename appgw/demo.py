"""The bundled demo WSGI app (``app = "appgw.demo:app"`` in appgw.toml).

Pure WSGI, no framework, so it runs on appgw's in-process server as any
legacy app would: ``GET /`` a WebSocket echo page, ``GET /api/info`` what
the app saw (including the X-Forwarded-* headers the gateway added),
``GET /health`` for probes and ``/ws/echo`` a WebSocket echo through
gevent-websocket's ``environ["wsgi.websocket"]``.
"""
import datetime
import json

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>appgw demo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem;
         margin: 3rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .25rem; }
  .muted { color: #666; font-size: .9rem; }
  form { display: flex; gap: .5rem; margin: 1rem 0; }
  input { flex: 1; padding: .4rem .6rem; border: 1px solid #bbb;
          border-radius: 4px; font: inherit; }
  button { padding: .4rem 1rem; border: 0; border-radius: 4px;
           background: #2563eb; color: #fff; font: inherit; cursor: pointer; }
  button:disabled { background: #999; cursor: default; }
  #log { list-style: none; padding: 0; margin: 0; }
  #log li { padding: .3rem .6rem; border-bottom: 1px solid #eee;
            font-family: ui-monospace, monospace; word-break: break-all; }
  #status.connected { color: #15803d; }
  #status.closed { color: #b91c1c; }
</style>
</head>
<body>
<h1>appgw demo</h1>
<p class="muted">WebSocket echo via <code>/ws/echo</code>:
  <span id="status">connecting</span></p>
<form id="form">
  <input id="msg" autocomplete="off" placeholder="Type a message" autofocus>
  <button id="send" type="submit" disabled>Send</button>
</form>
<ul id="log"></ul>
<script>
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const status = document.getElementById("status");
  const send = document.getElementById("send");
  const msg = document.getElementById("msg");
  let ws = null;
  function setStatus(text) { status.textContent = text; status.className = text; }
  function connect() {
    const sock = new WebSocket(scheme + "://" + location.host + "/ws/echo");
    sock.onopen = () => { setStatus("connected"); send.disabled = false; };
    sock.onclose = () => { if (sock === ws) { setStatus("closed"); send.disabled = true; } };
    sock.onmessage = (ev) => {
      const li = document.createElement("li");
      li.textContent = ev.data;
      document.getElementById("log").prepend(li);
    };
    ws = sock;
  }
  // A page the browser keeps in its back/forward cache after you leave it
  // keeps its WebSocket open, and a graceful stop of the gateway then waits
  // for it: close it when the page is hidden, open a new one if it comes back.
  addEventListener("pagehide", () => { send.disabled = true; if (ws) { ws.close(); ws = null; } });
  addEventListener("pageshow", (ev) => { if (ev.persisted) { setStatus("connecting"); connect(); } });
  document.getElementById("form").onsubmit = (ev) => {
    ev.preventDefault();
    if (msg.value && ws && ws.readyState === WebSocket.OPEN) { ws.send(msg.value); msg.value = ""; }
  };
  connect();
</script>
</body>
</html>
"""

# Headers the gateway adds on the way in; /api/info shows them back.
_FORWARDED_PREFIXES = ("HTTP_X_FORWARDED_", "HTTP_X_ORIGINAL_HOST")


def _respond(start_response, status, body, content_type="text/plain; charset=utf-8",
             extra=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(status, headers + list(extra))
    return [body]


def _forwarded_headers(environ):
    """The X-Forwarded-* (and X-Original-Host) headers, with their HTTP names."""
    found = {}
    for key, value in environ.items():
        if key.startswith(_FORWARDED_PREFIXES):
            name = "-".join(part.capitalize() for part in key[5:].split("_"))
            found[name] = value
    return found


def _info(environ):
    return json.dumps({
        "app": "appgw demo",
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "path": environ.get("PATH_INFO", ""),
        "headers": _forwarded_headers(environ),
    })


def _ws_echo(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        return _respond(start_response, "400 Bad Request", "expected a WebSocket upgrade\n")
    while True:
        message = ws.receive()
        if message is None:  # closed by the peer (or the connection dropped)
            break
        # gevent-websocket gives str for text frames, bytearray for binary.
        ws.send(message, binary=not isinstance(message, str))
    return []


PAGES = {
    "/": lambda environ: ("text/html; charset=utf-8", PAGE),
    "/api/info": lambda environ: ("application/json", _info(environ)),
    "/health": lambda environ: ("text/plain; charset=utf-8", "ok"),
}


def app(environ, start_response):
    """The demo WSGI application."""
    path = environ.get("PATH_INFO", "")
    if path == "/ws/echo":
        return _ws_echo(environ, start_response)
    page = PAGES.get(path)
    if page is None:
        return _respond(start_response, "404 Not Found", "not found\n")
    if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
        return _respond(start_response, "405 Method Not Allowed", "method not allowed\n",
                        extra=[("Allow", "GET, HEAD")])
    content_type, body = page(environ)
    response = _respond(start_response, "200 OK", body, content_type)
    # The same headers as GET, no body: gevent's WSGI server would send it.
    return [] if environ["REQUEST_METHOD"] == "HEAD" else response
