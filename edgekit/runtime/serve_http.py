"""The live view's HTTP side: the server (at most MAX_CONNECTIONS connections at once), the request
handler, each source's state, the Prometheus collector, and the page."""

from __future__ import annotations

import json
import re
import select
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from edgekit.runtime.serve import LiveView
    from edgekit.runtime.streaming import Result

STATES = ("live", "reconnecting", "lost", "ended")
WINDOW = 256  # the live figures are over a source's last WINDOW results
MAX_CONNECTIONS = 64  # more at once are closed at accept: no client can take the process's file descriptors


class _Source:
    """One source: its newest result, a ring of recent latencies and finish times, its newest JPEG."""

    def __init__(self, key: int, name: str) -> None:
        self.key, self.name = key, name
        self.latest: Result | None = None
        self.results = 0
        self.latency = np.zeros(WINDOW)
        self.done = np.zeros(WINDOW)
        self.viewers = 0
        self.polled_at = -1e9  # monotonic time of the page's last /frame/<k>.jpg
        self.encoded_at = 0  # self.results when the JPEG was made
        self.next_due = 0.0  # monotonic time of the next encode allowed (the fps cap)
        self.jpeg = b""
        self.jpeg_seq = 0  # 0: none yet
        self.cond = threading.Condition()  # a new JPEG, or closing
        self.m_results: Any = None
        self.m_latency: Any = None


def _hung_up(conn: socket.socket) -> bool:
    """The viewer closed its end (a video viewer sends nothing after its request)."""
    try:
        if hasattr(select, "poll"):  # select() fails on descriptors past 1023
            p = select.poll()
            p.register(conn, select.POLLIN)
            readable = bool(p.poll(0))
        else:
            readable = bool(select.select([conn], [], [], 0)[0])
        return readable and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # a page opening many videos at once is not held up in SYN retries
    view: LiveView
    active = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.view._lock:
            full = self.active >= MAX_CONNECTIONS
            if not full:
                self.active += 1
        if full:  # closed at once: the descriptor is back before the next accept
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            with self.view._lock:
                self.active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a viewer that left or stalled: not worth a traceback
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing idles between requests

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.view.stall_s)  # a client stalled longer is dropped
        self.server.view._track(self.connection, True)

    def finish(self) -> None:
        self.server.view._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a page polled every second would flood the run's terminal

    def send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not getattr(self, "_head_only", False):
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        """Health checkers that ask with HEAD get GET's status and headers."""
        self._head_only = True
        self.do_GET()

    def do_GET(self) -> None:
        view = self.server.view
        path = urlsplit(self.path).path
        video = re.fullmatch(r"/video/(\d+)\.mjpg", path)
        frame = re.fullmatch(r"/frame/(\d+)\.jpg", path)
        if path == "/":
            self.send(200, "text/html; charset=utf-8", view.page().encode("utf-8"))
        elif path == "/stats.json":
            self.send(200, "application/json", json.dumps(view.stats()).encode("utf-8"))
        elif path == "/metrics":
            self.send(200, CONTENT_TYPE_LATEST, generate_latest(view.registry))
        elif path == "/healthz":
            ok, why = view.health()
            self.send(200 if ok else 503, "text/plain; charset=utf-8", why.encode("utf-8") + b"\n")
        elif frame:
            jpeg = view._frame(int(frame.group(1)))
            if jpeg is None:
                self.send(404, "text/plain; charset=utf-8", b"no such source (yet)\n")
            else:
                self.send(200, "image/jpeg", jpeg)
        elif video and not getattr(self, "_head_only", False):
            view._video(self, int(video.group(1)))
        else:
            self.send(404, "text/plain; charset=utf-8", b"not found: try / /stats.json /metrics /healthz\n")


class _SourceCollector:
    """Drops, reconnects and state, read from sources() when /metrics is scraped."""

    def __init__(self, view: LiveView) -> None:
        self.view = view

    def collect(self) -> Iterator[Any]:
        v = self.view
        labels = ["source", "model", "backend"]
        drops = CounterMetricFamily("edgekit_dropped_frames_total", "Stale frames dropped by capture (a newer "
                                    "frame came before inference was ready)", labels=labels)
        recon = CounterMetricFamily("edgekit_reconnects_total", "Times the source was reopened after it failed",
                                    labels=labels)
        state = GaugeMetricFamily("edgekit_source_state", "1 for the source's state now (live, reconnecting, lost: "
                                  "gave up reconnecting, ended)", labels=labels + ["state"])
        for name, d in v._source_info().items():
            lv = [name, v.model, v.backend]
            drops.add_metric(lv, float(d.get("dropped", 0)))
            recon.add_metric(lv, float(d.get("reconnects", 0)))
            for st in STATES:
                state.add_metric(lv + [st], 1.0 if d.get("state") == st else 0.0)
        yield drops
        yield recon
        yield state


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>@@TITLE@@</title>
<style>
body{font:14px system-ui,sans-serif;margin:12px;background:#111;color:#ddd}
h1{font-size:16px;margin:0 0 10px}
#grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#1c1c1c;padding:8px;border-radius:6px;width:640px;max-width:calc(100vw - 40px)}
.card img{display:block;width:100%;background:#000}
.name{font-weight:bold;margin-bottom:6px}
.figs{margin-top:6px;font-variant-numeric:tabular-nums}
.lost{color:#f55}.reconnecting{color:#fb3}.ended{color:#999}.live{color:#6d6}
</style></head>
<body><h1>@@TITLE@@ <span id="conn"></span></h1><div id="grid"></div>
<script>
var grid = document.getElementById('grid');
function card(s) {
  var c = document.createElement('div'); c.className = 'card'; c.id = 's' + s.key;
  var n = document.createElement('div'); n.className = 'name'; n.textContent = s.name || '(source)';
  var img = document.createElement('img'); img.alt = s.name; img.src = s.frame;
  // the next frame once this one has loaded (short requests: a browser has 6 connections a host)
  img.onload = function () { setTimeout(function () { img.src = s.frame + '?' + Date.now(); }, @@PERIOD@@); };
  img.onerror = function () { setTimeout(function () { img.src = s.frame + '?' + Date.now(); }, 2000); };
  var f = document.createElement('div'); f.className = 'figs';
  c.appendChild(n); c.appendChild(img); c.appendChild(f); grid.appendChild(c);
  return c;
}
function render(st) {
  st.sources.forEach(function (s) {
    var c = document.getElementById('s' + s.key) || card(s), l = s.latency_ms;
    var top = s.label === null ? '' : ' | ' + (100 * s.score).toFixed(1) + '% ' + s.label;
    c.querySelector('.figs').innerHTML = '';
    var st_ = document.createElement('span'); st_.className = s.state; st_.textContent = s.state;
    var t = document.createElement('span');
    t.textContent = ' | ' + s.fps.toFixed(1) + ' fps | latency p50 ' + l.p50.toFixed(1) + ' p90 ' +
      l.p90.toFixed(1) + ' p99 ' + l.p99.toFixed(1) + ' ms | ' + s.results + ' results | ' + s.dropped +
      ' drops | ' + s.reconnects + ' reconnects' + top;
    c.querySelector('.figs').appendChild(st_); c.querySelector('.figs').appendChild(t);
  });
}
render(@@FIRST@@);
setInterval(function () {
  fetch('/stats.json').then(function (r) { return r.json(); })
    .then(function (st) { document.getElementById('conn').textContent = ''; render(st); })
    .catch(function () { document.getElementById('conn').textContent = '(disconnected)'; });
}, 1000);
</script></body></html>
"""
