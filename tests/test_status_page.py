"""The status page and its data: counters, rates and the page in a browser.

Pure tests cover the histogram's quantiles, the rate history and the JSON
document built from a config; the live tests run a gateway with real
backends, and the browser test drives headless Chromium over its DevTools
protocol: the page loads once, numbers and the sparkline change with
traffic, and a killed backend's row turns Unhealthy, without a reload.

Screenshots: set APPGW_SCREENSHOTS=DIR and the browser test writes a PNG of
each stage there, e.g.
    APPGW_SCREENSHOTS=/tmp/shots .venv/bin/python -m pytest -q tests/test_status_page.py -k chromium
"""
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import websocket

from harness import free_port, wait_until

from appgw.control.accesslog import Entry
from appgw.control.admin import servers_by_pool
from appgw.config import parse_config
from appgw.control.rates import RateHistory
from appgw.routing.snapshot import build_snapshot
from appgw.control.stats import BUCKETS, Histogram, Stats
from appgw.control.status_doc import status_document
from appgw.control.status_page import PAGE

CONFIG = """
[gateway]
admin_bind = "127.0.0.1:{admin}"
access_log = ""

[[listeners]]
name = "web"
bind = "127.0.0.1:{port}"

[[backend_pools]]
name = "app"
servers = ["{a}", "{b}"]

[[backend_settings]]
name = "fast"
probe = "fast"

[[probes]]
name = "fast"
path = "/probe-status"
interval = 0.3
timeout = 1
unhealthy_threshold = 1

[[rules]]
name = "main"
listener = "web"
backend_pool = "app"
backend_settings = "fast"
  [[rules.paths]]
  paths = ["/old/*"]
  redirect = { url = "https://example.com/new", status = 301 }
"""


def ports():
    return {"port": free_port(), "admin": free_port()}


def status(gw):
    return requests.get(gw.admin_url("/status.json"), timeout=5).json()


def server_rows(doc):
    return {s["address"]: s for pool in doc["backend_pools"] for s in pool["servers"]}


# --- pure -----------------------------------------------------------------------

def test_quantiles_interpolate_within_the_bucket():
    h = Histogram()
    assert h.quantile(0.5) is None
    for _ in range(10):
        h.observe(0.02)           # all in (0.01, 0.025]
    assert h.quantile(0.5) == pytest.approx(0.0175)
    assert h.quantile(0.99) == pytest.approx(0.01 + 0.015 * 0.99)
    slow = Histogram()
    slow.observe(60)
    assert slow.quantile(0.5) == BUCKETS[-1]   # beyond the last bound: the histogram knows no more


def test_rate_history_series_and_the_last_minute():
    history = RateHistory(step=5, span=600)
    for t in range(0, 101, 5):
        history.sample(t, {"web": 2 * t, "api": 0 if t < 50 else t - 50})
    series = history.series("web")
    assert series == [2.0] * 20
    assert history.series("api")[:10] == [0.0] * 10 and history.series("api")[-1] == 1.0
    # The sample nearest 60 s ago is t=40 (total 80); 130 more in 61 s.
    assert history.rate("web", 101, 210) == pytest.approx(130 / 61)
    # Less history than a minute: from the oldest sample.
    young = RateHistory()
    assert young.rate("web", 1, 0) is None
    young.sample(0, {})
    assert young.rate("web", 4, 8) == 2.0
    assert young.series("web") == []


def test_rate_history_keeps_ten_minutes():
    history = RateHistory(step=5, span=600)
    for t in range(0, 3000, 5):
        history.sample(t, {"web": t})
    assert len(history.series("web")) == 120
    assert history.samples[0][0] == 3000 - 5 - 600


def entry(listener, server, status, start, rule="main"):
    e = Entry("127.0.0.1", listener)
    e.rule, e.server, e.status, e.start = rule, server, status, start
    e.received, e.sent = 100, 1000
    return e


def test_finished_counts_per_server_and_websocket_sessions_apart():
    stats = Stats()
    stats.finished(entry("web", "10.0.0.1:80", 200, 10.0), now=10.004)
    stats.finished(entry("web", "10.0.0.1:80", 502, 10.0), now=10.2)
    stats.finished(entry("web", "10.0.0.1:80", 101, 10.0), now=70.0)
    stats.finished(entry("web", "-", 404, 10.0), now=10.001)
    server = stats.servers["10.0.0.1:80"]
    assert (server.requests, server.errors, server.websocket_sessions) == (2, 1, 1)
    # The session's minute is not a response time.
    assert server.seconds.count == 2 and server.seconds.sum == pytest.approx(0.204)
    assert stats.websocket_ended["web"] == 1
    assert list(stats.servers) == ["10.0.0.1:80"]
    assert stats.bytes_sent == 4000
    assert stats.requests[("web", "main", "1xx")] == 1    # /metrics keeps its classes


def test_document_shows_routes_and_servers_from_the_config():
    text = CONFIG
    for name, value in dict(admin=9901, port=8080, a="10.0.0.1:80", b="10.0.0.2:80").items():
        text = text.replace("{%s}" % name, str(value))
    config = parse_config(text)
    snapshot = build_snapshot(config, lambda spec: "/nonexistent.sock")
    stats = Stats()
    stats.finished(entry("web", "10.0.0.1:80", 200, 1.0), now=1.01)
    stats.finished(entry("web", "10.0.0.1:80", 101, 1.0), now=9.0)
    history = RateHistory()
    history.sample(0.0, {})
    doc = status_document(snapshot, servers_by_pool(snapshot), stats, history, time.time(), 10.0)
    listener, = doc["listeners"]
    assert listener["bind"] == "127.0.0.1:8080" and listener["rule"] == "main"
    assert listener["default"] == {"pool": "app", "settings": "fast"}
    assert listener["paths"] == [{"paths": ["/old/*"], "target": {"redirect": 301, "to": "https://example.com/new"}}]
    assert listener["responses"] == {"websocket": 1, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 0}
    assert listener["rate"] == pytest.approx(0.2)
    assert doc["totals"]["rate"] == pytest.approx(0.2)
    rows = server_rows(doc)
    assert list(rows) == ["10.0.0.1:80", "10.0.0.2:80"]
    assert rows["10.0.0.1:80"]["requests"] == 1 and rows["10.0.0.1:80"]["websocket_sessions"] == 1
    assert rows["10.0.0.2:80"]["health"] == "Unknown" and rows["10.0.0.2:80"]["p50"] is None
    assert doc["totals"]["requests"] == 1 and doc["totals"]["websocket_sessions_ended"] == 1


def test_the_page_is_self_contained():
    page = PAGE.decode()
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    # The only URL is the SVG namespace, which is a name, not a fetch.
    urls = set(re.findall(r"[a-z]+://[^\s\"'<>]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert "http-equiv" not in page            # never reloads itself
    assert 'fetch("/status.json"' in page


# --- live -------------------------------------------------------------------------

def test_status_json_counts_what_a_client_did(backend_factory, gateway_factory):
    a, b = backend_factory.wsgi("a"), backend_factory.wsgi("b")
    gw = gateway_factory(CONFIG, a=a.address, b=b.address, **ports())
    for _ in range(8):
        assert requests.get(gw.url("/name"), timeout=5).status_code == 200
    for _ in range(2):
        assert requests.get(gw.url("/status?code=503"), timeout=5).status_code == 503
    assert requests.get(gw.url("/old/x"), allow_redirects=False, timeout=5).status_code == 301
    ws = websocket.create_connection(f"ws://127.0.0.1:{gw.port()}/ws/echo", timeout=5)
    ws.send("hi")
    assert ws.recv() == "hi"
    during = status(gw)
    assert sum(s["websocket_open"] for s in server_rows(during).values()) == 1
    assert during["totals"]["websocket_sessions_open"] == 1
    ws.close()
    doc = wait_until(lambda: (d := status(gw))["totals"]["websocket_sessions_ended"] == 1 and d,
                     message="the session counted when it ended")
    rows = server_rows(doc)
    assert sum(s["requests"] for s in rows.values()) == 10            # the redirect had no server
    assert sum(s["errors"] for s in rows.values()) == 2
    assert sum(s["websocket_sessions"] for s in rows.values()) == 1
    assert all(s["p50"] is not None and 0 < s["p50"] <= s["p99"] < 1 for s in rows.values())
    assert all(s["health"] == "Healthy" and s["reason"] for s in rows.values())
    listener, = doc["listeners"]
    assert listener["responses"] == {"websocket": 1, "2xx": 8, "3xx": 1, "4xx": 0, "5xx": 2}
    assert listener["rate"] > 0 and doc["totals"]["rate"] == listener["rate"]
    assert doc["totals"]["requests"] == 11 and doc["totals"]["errors"] == 2
    assert doc["totals"]["bytes_sent"] > 0 and doc["totals"]["bytes_received"] > 0
    assert 0 <= doc["uptime"] < 120 and doc["version"]


# --- the browser -------------------------------------------------------------------

def chromium_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        # CI installs it (.ci/run): there a missing browser is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)("chromium is not installed")
    return chromium


class Browser:
    """Headless Chromium driven over the DevTools protocol (a WebSocket)."""

    def __init__(self, chromium, profile):
        self.log = open(profile.parent / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL)
        try:
            port_file = profile / "DevToolsActivePort"
            wait_until(lambda: port_file.is_file() and len(port_file.read_text().split("\n")) >= 2,
                       timeout=30, message="Chromium's DevTools port")
            port = int(port_file.read_text().split("\n")[0])
            session = requests.Session()
            session.trust_env = False       # loopback only, whatever proxy the environment names
            pages = wait_until(lambda: [t for t in session.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                                        if t["type"] == "page"], timeout=10, message="a page target")
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=20,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.ids = itertools.count(1)

    def call(self, method, **params):
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:     # events in between are not asked for
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, name):
        """A PNG of the whole page in $APPGW_SCREENSHOTS, when it is set."""
        directory = os.environ.get("APPGW_SCREENSHOTS")
        if not directory:
            return
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# What the test reads off the page, by the data-* attributes it carries.
READ_PAGE = """JSON.stringify({
  refreshes: window.appgwRefreshes || 0,
  marker: window.testMarker || null,
  rows: Object.fromEntries([...document.querySelectorAll("tr[data-server]")].map(tr => [tr.dataset.server, {
    state: tr.querySelector("[data-state]").dataset.state,
    reason: tr.querySelector("[data-reason]").textContent,
    requests: tr.querySelector("[data-requests]").textContent,
    errors: tr.querySelector("[data-errors]").textContent}])),
  line: (document.querySelector('svg[data-listener="web"] polyline') || {getAttribute: () => null})
        .getAttribute("points"),
  rate: (document.querySelector('[data-rate="web"]') || {}).textContent,
  tiles: Object.fromEntries([...document.querySelectorAll("[data-tile]")].map(t => [t.dataset.tile, t.textContent])),
  card: (document.querySelector('.card[data-listener="web"]') || {}).textContent || ""
})"""


def test_status_page_in_headless_chromium(backend_factory, gateway_factory, tmp_path):
    chromium = chromium_or_skip()
    a, b = backend_factory.wsgi("a"), backend_factory.wsgi("b")
    gw = gateway_factory(CONFIG, a=a.address, b=b.address, **ports())
    browser = Browser(chromium, tmp_path / "profile")
    try:
        def page():
            return json.loads(browser.evaluate(READ_PAGE))

        browser.call("Page.enable")
        browser.call("Page.navigate", url=gw.admin_url("/"))
        first = wait_until(lambda: (p := page())["refreshes"] and len(p["rows"]) == 2
                           and all(r["state"] == "Healthy" for r in p["rows"].values()) and p,
                           timeout=15, interval=0.2, message="the page showing both servers Healthy")
        # Routing as configured: the path entry and the rule's own target.
        for fact in ("/old/*", "redirect 301 \u2192 https://example.com/new", "every other path", "pool app",
                     "http://127.0.0.1:%d" % gw.port(), "rule main"):
            assert fact in first["card"], fact
        assert first["tiles"]["requests"] == "0" and first["tiles"]["rate"] == "0.00"
        browser.evaluate("window.testMarker = 'the same page'")
        browser.screenshot("1-start")

        # Traffic: counters and, at the next samples, the sparkline.
        for _ in range(30):
            requests.get(gw.url("/name"), timeout=5)
        requests.get(gw.url("/status?code=500"), timeout=5)
        ws = websocket.create_connection(f"ws://127.0.0.1:{gw.port()}/ws/echo", timeout=5)
        ws.send("x")
        ws.recv()
        ws.close()
        busy = wait_until(lambda: (p := page())["tiles"]["requests"] == "31"
                          and p["tiles"]["websocket_ended"] == "1" and p, timeout=15,
                          interval=0.2, message="the page counting 31 requests and 1 WebSocket session")
        assert sum(int(r["requests"]) for r in busy["rows"].values()) == 31
        assert sum(int(r["errors"]) for r in busy["rows"].values()) == 1
        assert busy["tiles"]["errors"] == "1"
        assert busy["rate"] not in ("\u2013", "0.00")
        assert "WebSocket sessions 1" in busy["card"] and "1xx" not in busy["card"]
        line = wait_until(lambda: (p := page())["line"] and p["line"] != first["line"] and p["line"],
                          timeout=20, interval=0.2, message="the sparkline drawn from the traffic")
        heights = [float(point.split(",")[1]) for point in line.split()]
        assert min(heights) < max(heights), "a peak stands out of the line"
        browser.screenshot("2-traffic")

        # A backend dies: its row turns Unhealthy with the probe's reason.
        b.stop()
        down = wait_until(lambda: (p := page())["rows"][b.address]["state"] == "Unhealthy" and p,
                          timeout=15, interval=0.2, message=f"{b.address} Unhealthy on the page")
        # The probe's own words, as /status.json has them: a failed connect
        # ("connection refused"), or the kept-alive probe connection closing.
        reason = down["rows"][b.address]["reason"]
        assert reason == server_rows(status(gw))[b.address]["reason"]
        assert any(word in reason for word in ("refused", "closed", "reset", "aborted")), reason
        assert down["rows"][a.address]["state"] == "Healthy"
        assert down["marker"] == "the same page", "the page was reloaded"
        assert down["refreshes"] > first["refreshes"]
        browser.screenshot("3-backend-down")
    finally:
        browser.close()
