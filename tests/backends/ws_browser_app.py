"""A test-only in-process app for the browser test (``backends.ws_browser_app:app``).

Everything is the demo app's (its page at ``/``, its ``/ws/echo``) except:

``GET /drive?text=X``
    a driver page that loads the demo page in an iframe, and once the demo's
    status says "connected", types X into its box and submits it; when X
    shows in the demo's log it writes ``<p id="result">echoed:X</p>`` and
    calls ``/report?echo=X``. It reacts to DOM mutations, not timers, since
    Chromium's virtual time stands still while a fetch is pending.
``GET /wait?for=X``
    answers once ``/report?echo=X`` came (10 s at most). The driver page
    starts it first: a pending fetch keeps ``--virtual-time-budget`` from
    running out, so ``--dump-dom`` waits for the echo.
"""
from urllib.parse import parse_qs

from appgw.demo import app as demo_app

DRIVER = """<!doctype html>
<html><head><meta charset="utf-8"><title>demo driver</title></head>
<body><p id="result">waiting</p>
<iframe id="demo" src="/" width="600" height="400"></iframe>
<script>
  const text = new URLSearchParams(location.search).get("text") || "hello";
  fetch("/wait?for=" + encodeURIComponent(text));
  const result = document.getElementById("result");
  let sent = false, done = false;
  function check(doc) {
    const status = doc.getElementById("status");
    if (!sent && status && status.textContent === "connected") {
      sent = true;
      doc.getElementById("msg").value = text;
      doc.getElementById("form").requestSubmit();
      result.textContent = "sent";
    }
    const first = doc.querySelector("#log li");
    if (!done && first && first.textContent === text) {
      done = true;
      result.textContent = "echoed:" + text;
      fetch("/report?echo=" + encodeURIComponent(text));
    }
  }
  document.getElementById("demo").onload = (ev) => {
    const doc = ev.target.contentDocument;
    new MutationObserver(() => check(doc)).observe(doc.body,
      {subtree: true, childList: true, characterData: true, attributes: true});
    check(doc);
  };
</script></body></html>
"""

_reports = {}  # text -> gevent Event, set by /report


def _event(text):
    from gevent.event import Event  # the gateway's process runs under gevent

    return _reports.setdefault(text, Event())


def _no_content(start_response):
    start_response("204 No Content", [])
    return []


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/drive":
        body = DRIVER.encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/wait":
        _event(query.get("for", "")).wait(10)
        return _no_content(start_response)
    if path == "/report":
        _event(query.get("echo", "")).set()
        return _no_content(start_response)
    return demo_app(environ, start_response)
