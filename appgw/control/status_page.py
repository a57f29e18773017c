"""The status page (GET / of the admin endpoint): one self-contained HTML
document, its style and script inline.

Nothing is fetched from elsewhere (the admin endpoint may have no internet):
the script reads /status.json every REFRESH_MS and redraws the parts of the
page in place, so the page is never reloaded. Values from the gateway are
set as text, never as HTML. Elements carry data-* attributes naming what
they show, which the browser test reads.
"""

REFRESH_MS = 2000

_HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>appgw status</title>
<style>
:root {
  --bg: #f4f5f7; --card: #fff; --ink: #1d2330; --muted: #6b7280; --line: #e3e6eb;
  --accent: #2563eb; --accent-soft: rgba(37, 99, 235, .12);
  --ok: #15803d; --ok-bg: #dcfce7; --bad: #b91c1c; --bad-bg: #fee2e2; --unk: #4b5563; --unk-bg: #e5e7eb;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { background: #111827; color: #f9fafb; padding: 14px 28px; display: flex; align-items: baseline;
         gap: 18px; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; letter-spacing: .02em; }
header .meta { color: #cbd5e1; font-size: 13px; }
header .meta b { color: #f9fafb; font-weight: 600; }
header nav { margin-left: auto; font-size: 13px; }
header nav a { color: #93c5fd; text-decoration: none; margin-left: 14px; }
#live { display: inline-block; width: 8px; height: 8px; border-radius: 50%; background: #22c55e;
        margin-right: 6px; vertical-align: middle; }
#live.stale { background: #ef4444; }
main { padding: 20px 28px 40px; max-width: 1400px; }
h2 { font-size: 15px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
     margin: 28px 0 10px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.tile .label { color: var(--muted); font-size: 12px; }
.tile .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.card h3 { margin: 0 0 2px; font-size: 16px; }
.card .where { color: var(--muted); font-size: 13px; margin-bottom: 8px; }
.proto { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 6px; border-radius: 4px;
         background: var(--accent-soft); color: var(--accent); margin-left: 6px; vertical-align: 2px; }
.chart { display: flex; align-items: flex-end; gap: 12px; margin: 6px 0 10px; }
.spark { flex: 1; min-width: 0; }
.spark svg { display: block; width: 100%; height: 48px; background: #fafbfc; border: 1px solid var(--line);
             border-radius: 4px; }
.spark-empty { height: 48px; display: flex; align-items: center; justify-content: center; color: #9ca3af;
               font-size: 12px; background: #fafbfc; border: 1px dashed var(--line); border-radius: 4px; }
.spark .axis { display: flex; justify-content: space-between; color: #9ca3af; font-size: 11px; }
.chart .now { min-width: 92px; text-align: right; }
.chart .now .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.chart .now .label { color: var(--muted); font-size: 12px; }
.facts { display: flex; gap: 16px; flex-wrap: wrap; font-size: 13px; color: var(--muted); margin-bottom: 10px; }
.facts b { color: var(--ink); font-weight: 600; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.routes td { padding: 4px 8px; font-size: 13px; }
.routes td:first-child { white-space: nowrap; width: 1%; }
.routes code { background: #f1f3f6; padding: 1px 5px; border-radius: 3px; }
.pool { background: var(--card); border: 1px solid var(--line); border-radius: 8px; margin-bottom: 14px;
        overflow-x: auto; }
.pool h3 { margin: 0; padding: 12px 14px 4px; font-size: 16px; }
.pool .where { color: var(--muted); font-size: 13px; padding: 0 14px 8px; }
.state { display: inline-block; padding: 2px 9px; border-radius: 999px; font-weight: 600; font-size: 12px; }
.state.Healthy { background: var(--ok-bg); color: var(--ok); }
.state.Unhealthy { background: var(--bad-bg); color: var(--bad); }
.state.Unknown { background: var(--unk-bg); color: var(--unk); }
.reason { color: var(--muted); font-size: 13px; max-width: 340px; }
.muted { color: var(--muted); }
.err { color: var(--bad); font-weight: 600; }
#error { display: none; margin: 14px 28px 0; padding: 10px 14px; border-radius: 6px; background: var(--bad-bg);
         color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>appgw</h1>
  <span class="meta">version <b id="version">&ndash;</b></span>
  <span class="meta">up <b id="uptime">&ndash;</b></span>
  <span class="meta">pid <b id="pid">&ndash;</b></span>
  <span class="meta" id="workers"></span>
  <span class="meta"><span id="live"></span>updated <b id="updated">&ndash;</b></span>
  <nav><a href="/status.json">status.json</a><a href="/backend-health">backend-health</a><a href="/metrics">metrics</a></nav>
</header>
<div id="error"></div>
<main>
  <section class="tiles" id="tiles"></section>
  <h2>Listeners and their rules</h2>
  <section class="cards" id="listeners"></section>
  <h2>Backend pools</h2>
  <section id="pools"></section>
  <h2>Certificates</h2>
  <section class="pool" id="certificates"></section>
</main>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const SLOTS = 120;   // sparkline width in samples: 10 minutes of 5 s steps

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const count = n => Number(n).toLocaleString("en-US");

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}

function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
  if (d) return d + " d " + h + " h";
  if (h) return h + " h " + m + " min";
  if (m) return m + " min " + r + " s";
  return r + " s";
}

function seconds(x) {
  if (x === null || x === undefined) return "\u2013";
  if (x < 1) return (x * 1000).toPrecision(x < 0.01 ? 2 : 3).replace(/\.0+$/, "") + " ms";
  return x.toFixed(2) + " s";
}

function rate(r) {
  if (r === null || r === undefined) return "\u2013";
  return r < 10 ? r.toFixed(2) : r < 100 ? r.toFixed(1) : count(Math.round(r));
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString("en-GB", {hour12: false});
}

function tile(label, value, name, cls) {
  return el("div", {class: "tile"}, el("div", {class: "label"}, label),
            el("div", {class: "value" + (cls ? " " + cls : ""), "data-tile": name}, value));
}

function sparkline(listener, series) {
  const NS = "http://www.w3.org/2000/svg", W = 240, H = 48, PAD = 3;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("data-listener", listener);
  const title = document.createElementNS(NS, "title");
  title.textContent = "requests/s, last 10 minutes, a point every 5 s";
  svg.append(title);
  const values = series.slice(-SLOTS);
  if (values.length < 2) {
    // Text in the stretched SVG would be distorted: an HTML caption instead.
    return el("div", {class: "spark-empty", "data-listener": listener}, "collecting samples\u2026");
  }
  const peak = Math.max(...values, 1e-9);
  const step = W / (SLOTS - 1), x0 = W - step * (values.length - 1);
  const pts = values.map((v, i) =>
    (x0 + i * step).toFixed(1) + "," + (H - PAD - (H - 2 * PAD) * v / peak).toFixed(1));
  const area = document.createElementNS(NS, "polygon");
  area.setAttribute("points", x0.toFixed(1) + "," + H + " " + pts.join(" ") + " " + W + "," + H);
  area.setAttribute("fill", "rgba(37, 99, 235, .14)");
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2563eb");
  line.setAttribute("stroke-width", "1.5"); line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(area, line);
  return svg;
}

function targetText(t) {
  if (t.redirect) return el("span", {}, "redirect " + t.redirect + " \u2192 " + t.to);
  return el("span", {}, "pool ", el("b", {}, t.pool), el("span", {class: "muted"}, " with " + t.settings));
}

function listenerCard(l) {
  const routes = el("table", {class: "routes"});
  for (const p of l.paths) {
    routes.append(el("tr", {}, el("td", {}, ...p.paths.map((path, i) =>
      el("span", {}, i ? " " : "", el("code", {}, path)))), el("td", {}, targetText(p.target))));
  }
  routes.append(el("tr", {}, el("td", {}, el("span", {class: "muted"}, l.paths.length ? "every other path" : "every path")),
                   el("td", {}, targetText(l.default))));
  const r = l.responses;
  const peak = l.history.length ? Math.max(...l.history) : null;
  return el("div", {class: "card", "data-listener": l.name},
    el("h3", {}, l.name, el("span", {class: "proto"}, l.protocol)),
    el("div", {class: "where"}, l.protocol + "://" + l.bind +
       (l.host_names.length ? " \u00b7 " + l.host_names.join(", ") : " \u00b7 any host") + " \u00b7 rule " + l.rule),
    el("div", {class: "chart"},
       el("div", {class: "spark"}, sparkline(l.name, l.history),
          el("div", {class: "axis"}, el("span", {}, "10 min ago"), el("span", {}, "now"))),
       el("div", {class: "now"}, el("div", {class: "value", "data-rate": l.name}, rate(l.rate)),
          el("div", {class: "label"}, "req/s, last minute"),
          el("div", {class: "label"}, peak === null ? "" : "peak " + rate(peak)))),
    el("div", {class: "facts"},
       el("span", {}, "connections ", el("b", {}, count(l.connections_open))),
       el("span", {}, "2xx ", el("b", {}, count(r["2xx"]))),
       el("span", {}, "3xx ", el("b", {}, count(r["3xx"]))),
       el("span", {}, "4xx ", el("b", {}, count(r["4xx"]))),
       el("span", {}, "5xx ", el("b", {class: r["5xx"] ? "err" : ""}, count(r["5xx"]))),
       el("span", {}, "WebSocket sessions ", el("b", {}, count(r.websocket)))),
    routes);
}

function serverRow(pool, s, now) {
  const last = s.last_probe;
  const probe = last === null ? "no answer yet"
    : (last.ok ? "ok" : "failed") + (last.status ? " (" + last.status + ")" : "") + ", " + duration(now - last.time) + " ago";
  return el("tr", {"data-server": s.address, "data-pool": pool},
    el("td", {}, el("b", {}, s.address)),
    el("td", {class: "muted"}, s.backend_settings),
    el("td", {}, el("span", {class: "state " + s.health, "data-state": s.health}, s.health)),
    el("td", {class: "num", title: clock(s.since)}, duration(now - s.since)),
    el("td", {class: "reason", "data-reason": ""}, s.reason || "\u2013"),
    el("td", {class: "reason"}, probe),
    el("td", {class: "num"}, count(s.in_flight)),
    el("td", {class: "num", "data-requests": ""}, count(s.requests)),
    el("td", {class: "num" + (s.errors ? " err" : ""), "data-errors": ""}, count(s.errors)),
    el("td", {class: "num"}, count(s.websocket_open) + " / " + count(s.websocket_sessions)),
    el("td", {class: "num"}, seconds(s.p50)),
    el("td", {class: "num"}, seconds(s.p99)));
}

function poolBlock(p, now) {
  const head = el("tr", {}, ...["server", "settings", "state", "for", "reason", "last probe", "in flight",
    "requests", "5xx", "WebSocket open / ended", "p50", "p99"].map((h, i) =>
      el("th", {class: i >= 6 || i === 3 ? "num" : ""}, h)));
  const table = el("table", {}, el("thead", {}, head),
    el("tbody", {}, ...p.servers.map(s => serverRow(p.name, s, now))));
  const states = p.servers.map(s => s.health);
  const healthy = states.filter(s => s === "Healthy").length;
  return el("div", {class: "pool", "data-pool": p.name},
    el("h3", {}, p.name),
    el("div", {class: "where"}, p.servers.length
      ? healthy + " of " + p.servers.length + " healthy \u00b7 " + p.load_balancing.replace("_", " ")
      : "not used by any rule"),
    p.servers.length ? table : null);
}

function certificateTable(list) {
  // Every https listener's certificate; a row with a warning (expires within
  // 14 days, expired, none yet) is marked red and says why.
  if (!list || !list.length) return [el("div", {class: "where"}, "no https listener")];
  const head = el("tr", {}, ...["listener", "names", "source", "signed by", "not after", "warning",
    "last renewal"].map(h => el("th", {}, h)));
  const rows = list.map(c => {
    const last = c.last_renewal;
    const renewal = last === null ? "\u2013" : (last.ok ? "ok" : "FAILED") + " " + last.time + ": " + last.result +
      (c.next_attempt ? " (next try " + c.next_attempt + ")" : "");
    return el("tr", {"data-certificate": c.listener},
      el("td", {}, el("b", {}, c.listener)),
      el("td", {}, c.names.length ? c.names.join(", ") : "any host"),
      el("td", {}, c.source === "acme" ? "ACME" : "file " + c.file),
      el("td", {class: "reason"}, c.signed_by || "\u2013"),
      el("td", {class: "num"}, c.not_after || "\u2013"),
      el("td", {class: c.warning ? "err" : "muted", "data-warning": c.warning || ""}, c.warning || "\u2013"),
      el("td", {class: "reason" + (last && !last.ok ? " err" : "")}, renewal));
  });
  return [el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))];
}

function render(doc) {
  document.getElementById("version").textContent = doc.version;
  document.getElementById("uptime").textContent = duration(doc.uptime);
  document.getElementById("pid").textContent = doc.pid;
  document.getElementById("workers").textContent = doc.workers > 1
    ? doc.workers + " workers" + (doc.workers_reporting < doc.workers
        ? " (" + doc.workers_reporting + " reporting)" : "") : "";
  document.getElementById("updated").textContent = clock(doc.time);
  const t = doc.totals;
  document.getElementById("tiles").replaceChildren(
    tile("requests/s, last minute", rate(t.rate), "rate"),
    tile("requests", count(t.requests), "requests"),
    tile("5xx answers", count(t.errors), "errors", t.errors ? "err" : ""),
    tile("open connections", count(t.connections_open), "connections"),
    tile("HTTP/2: requests, open connections", count(t.http2_requests) + " · " + count(t.http2_connections_open),
         "http2"),
    tile("WebSocket sessions open", count(t.websocket_sessions_open), "websocket_open"),
    tile("WebSocket sessions ended", count(t.websocket_sessions_ended), "websocket_ended"),
    tile("received", bytes(t.bytes_received), "received"),
    tile("sent", bytes(t.bytes_sent), "sent"));
  document.getElementById("listeners").replaceChildren(...doc.listeners.map(listenerCard));
  document.getElementById("pools").replaceChildren(...doc.backend_pools.map(p => poolBlock(p, doc.time)));
  document.getElementById("certificates").replaceChildren(...certificateTable(doc.certificates));
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  const banner = document.getElementById("error"), live = document.getElementById("live");
  try {
    const answer = await fetch("/status.json", {cache: "no-store"});
    if (!answer.ok) throw new Error("status.json answered " + answer.status);
    render(await answer.json());
    banner.style.display = "none";
    live.className = "";
    window.appgwRefreshes = (window.appgwRefreshes || 0) + 1;
  } catch (err) {
    banner.textContent = "Cannot reach the gateway's admin endpoint (" + err.message + "); retrying.";
    banner.style.display = "block";
    live.className = "stale";
  } finally {
    busy = false;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""

PAGE = _HTML.replace("__REFRESH_MS__", str(REFRESH_MS)).encode("utf-8")
"""The page as served: bytes, built once."""
