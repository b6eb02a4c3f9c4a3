"""A live view over HTTP while a stream is classified: on a headless robot, a browser on a laptop
shows what the model sees (annotated JPEGs: the page asks for each source's next one when the last
has loaded, so any number of sources fit in a browser's six connections a host; /video/<k>.mjpg
serves Motion-JPEG to players such as VLC), the live figures, Prometheus metrics and a health
check. Standard library server, no web framework; at most MAX_CONNECTIONS connections at once.

It is a sink: write() only keeps the newest result per source, so it costs inference nothing;
JPEGs are encoded in one thread, only for sources someone is watching, at most ``fps`` a second."""

from __future__ import annotations

import errno
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.runtime.serve_http import (
    PAGE,
    WINDOW,
    _Handler,
    _hung_up,
    _Server,
    _Server6,
    _Source,
    _SourceCollector,
)
from edgekit.runtime.sinks import annotate
from edgekit.runtime.streaming import Result

HEALTHY = ("live", "reconnecting", "ended")
FPS_SPAN_S = 5.0  # a source with no result for this long shows 0 fps
LATENCY_BUCKETS_S = (.005, .01, .02, .03, .05, .075, .1, .15, .2, .3, .5, .75, 1.0, 2.0, 5.0)
BOUNDARY = b"edgekitframe"
JPEG_QUALITY = 80
POLL_WATCH_S = 2.0  # a source whose /frame/<k>.jpg was asked for this recently counts as watched
VIEW_WIDTH = 960  # wider frames are scaled down before they are drawn on and encoded


class LiveView:
    """A sink that serves the run over HTTP: / (the page), /video/<k>.mjpg, /stats.json, /metrics,
    /healthz. Binds at construction (port 0: any free port; ``url`` says which)."""

    draws = True  # takes the frame (SinkThread hands the others results without it)

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, model: str, backend: str,
                 sources: Callable[[], dict[str, dict[str, Any]]], fps: float = 10.0, stall_s: float = 10.0) -> None:
        self.cv2 = require("cv2", "the live view's video")
        self.model, self.backend, self.sources = model, backend, sources
        self.fps, self.stall_s = float(fps), float(stall_s)
        self.encoded = 0  # JPEGs made (none while nobody watches)
        self._lock = threading.Lock()
        self._list: list[_Source] = []
        self._by_name: dict[str, _Source] = {}
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._wake = threading.Event()  # a new result for a watched source, a viewer, or closing
        self._stop = threading.Event()
        self._waiting = self._placeholder()
        self.registry = CollectorRegistry()  # private: two views (or tests) never share figures
        labels = ["source", "model", "backend"]
        self._m_results = Counter("edgekit_results_total", "Results classified", labels, registry=self.registry)
        self._m_latency = Histogram("edgekit_latency_seconds", "Capture-to-result latency in seconds", labels,
                                    buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.registry.register(_SourceCollector(self))
        with self._lock:  # the sources in their own order (video keys never follow whose frame came first)
            for name in self._source_info():
                self._add(name)
        self._server = self._bind(host, port)
        self._server.view = self
        self.host, self.port = host, int(self._server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.describe = f"live view at {self.url}"
        self._serving = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="edgekit-serve",
                                         daemon=True)
        self._encoder = threading.Thread(target=self._encode_loop, name="edgekit-serve-jpeg", daemon=True)
        self._serving.start()
        self._encoder.start()

    @staticmethod
    def _bind(host: str, port: int) -> _Server:
        where = f"cannot serve the live view on {host}:{port}"
        if not 0 <= port <= 65535:
            raise UsageError(f"{where}: a port is 0-65535; use e.g. 8080 (0: any free port)")
        try:
            return (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except socket.gaierror as exc:
            raise UsageError(f"{where}: {host} is not a host name or address here ({exc.strerror}); use 127.0.0.1, "
                             "0.0.0.0 (every interface) or one of this machine's addresses") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "the port is in use (another edgekit run, or another server); pick another port or stop it"
            elif exc.errno == errno.EACCES:
                why = "ports below 1024 need root; use a port above 1024, e.g. 8080"
            elif exc.errno == errno.EADDRNOTAVAIL:
                why = f"{host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or one of its addresses"
            else:
                why = f"{exc.strerror or exc}; check the host and port"
            raise UsageError(f"{where}: {why}") from None

    def _placeholder(self) -> bytes:
        """What a viewer sees before a source's first frame (a stream with no part keeps a browser
        loading, and shows nothing)."""
        img = np.full((180, 320, 3), 40, np.uint8)
        self.cv2.putText(img, "no frame yet", (78, 96), self.cv2.FONT_HERSHEY_SIMPLEX, 0.7, (200, 200, 200), 1,
                         self.cv2.LINE_AA)
        return bytes(self.cv2.imencode(".jpg", img)[1].tobytes())

    # -- the sink --------------------------------------------------------------------------------

    def _add(self, name: str) -> _Source:
        """A source seen for the first time (call with the lock held)."""
        s = _Source(len(self._list), name)
        s.m_results = self._m_results.labels(name, self.model, self.backend)
        s.m_latency = self._m_latency.labels(name, self.model, self.backend)
        self._list.append(s)
        self._by_name[name] = s
        return s

    def write(self, r: Result) -> None:
        """Keep the newest result and count it: O(1), no encoding, never waits on a viewer."""
        with self._lock:
            s = self._by_name.get(r.source) or self._add(r.source)
            i = s.results % WINDOW
            s.latency[i] = r.latency_ms
            s.done[i] = r.done
            s.results += 1
            s.latest = r
            watched = s.viewers > 0
        s.m_results.inc()
        s.m_latency.observe(r.latency_ms / 1000.0)
        if watched:
            self._wake.set()

    def close(self) -> None:
        """Stop serving, end the encoder and every connection (a stalled viewer too); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
            srcs = list(self._list)
        self._stop.set()
        self._wake.set()
        self._server.shutdown()  # serve_forever polls every 0.1 s
        self._server.server_close()
        for c in conns:  # a handler blocked in send gets an error now, not after stall_s
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for s in srcs:
            with s.cond:
                s.cond.notify_all()
        self._encoder.join(1.0)

    # -- encoding and viewers -------------------------------------------------------------------

    def _encode_loop(self) -> None:
        """Encode the newest result of each watched source that has a new one, at most fps a second."""
        cv2, period = self.cv2, 1.0 / self.fps if self.fps > 0 else 0.0
        while not self._closed:
            now = time.monotonic()
            with self._lock:
                todo = [(s, s.latest, s.results) for s in self._list
                        if (s.viewers or now - s.polled_at < POLL_WATCH_S) and s.results != s.encoded_at
                        and s.latest is not None and s.latest.frame is not None]
            if not todo:
                self._wake.wait(POLL_WATCH_S)
                self._wake.clear()
                continue
            due = [t for t in todo if t[0].next_due <= now]
            if not due:  # sleep out the fps cap (new results meanwhile do not wake us)
                self._stop.wait(min(t[0].next_due for t in todo) - now)
                continue
            for s, r, n in due:
                assert r is not None and r.frame is not None
                s.next_due, s.encoded_at = now + period, n
                frame = r.frame
                if frame.shape[1] > VIEW_WIDTH:  # the page shows it smaller: a 1080p encode costs ARM cores 20+ ms
                    h = round(frame.shape[0] * VIEW_WIDTH / frame.shape[1])
                    frame = cv2.resize(frame, (VIEW_WIDTH, h), interpolation=cv2.INTER_AREA)
                try:
                    ok, buf = cv2.imencode(".jpg", annotate(frame, r), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                except Exception:  # noqa: BLE001 - a frame OpenCV cannot encode: the video waits for the next
                    continue
                self.encoded += 1
                if ok:
                    with s.cond:
                        s.jpeg, s.jpeg_seq = buf.tobytes(), s.jpeg_seq + 1
                        s.cond.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    @property
    def viewers(self) -> int:
        """Video connections open now, all sources together."""
        with self._lock:
            return sum(s.viewers for s in self._list)

    def _video(self, h: _Handler, key: int) -> None:
        """Send the newest JPEG whenever there is a newer one; never a queue: a slow viewer skips
        frames, a stalled one is dropped by its socket timeout."""
        with self._lock:
            s = self._list[key] if key < len(self._list) else None
            if s is not None:
                s.viewers += 1
        if s is None:
            h.send(404, "text/plain; charset=utf-8", b"no such source (yet)\n")
            return
        self._wake.set()
        sent = 0
        try:
            h.send_response(200)
            h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + BOUNDARY.decode())
            h.send_header("Cache-Control", "no-store")
            h.end_headers()
            h.wfile.write(b"--" + BOUNDARY + b"\r\n")
            if s.jpeg_seq == 0:
                self._part(h, self._waiting)
            while not self._closed:
                with s.cond:
                    if s.jpeg_seq == sent and not self._closed:
                        s.cond.wait(1.0)
                    jpeg, seq = s.jpeg, s.jpeg_seq
                if self._closed:
                    break
                if seq == sent:
                    if _hung_up(h.connection):  # noticed now, not at the next frame: no encoding for nobody
                        break
                    continue
                self._part(h, jpeg)
                sent = seq
        except OSError:  # the viewer left (a broken pipe, a reset) or stalled past stall_s
            pass
        finally:
            with self._lock:
                s.viewers -= 1

    def _frame(self, key: int) -> bytes | None:
        """The newest JPEG of a source, for the page, which asks for the next one when this one has
        loaded: short requests, so any number of sources fit in a browser's six connections a host
        (Motion-JPEG streams each hold one for good). Asking counts as watching for POLL_WATCH_S."""
        with self._lock:
            s = self._list[key] if key < len(self._list) else None
            if s is None:
                return None
            s.polled_at = time.monotonic()
        self._wake.set()
        with s.cond:
            return s.jpeg if s.jpeg_seq else self._waiting

    @staticmethod
    def _part(h: _Handler, jpeg: bytes) -> None:
        # the closing boundary goes out with the frame: browsers show a part once it is closed
        h.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
        h.wfile.write(jpeg)
        h.wfile.write(b"\r\n--" + BOUNDARY + b"\r\n")

    # -- figures --------------------------------------------------------------------------------

    def _source_info(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(self.sources())
        except Exception:  # noqa: BLE001 - the figures go on without drops and states; /healthz says why
            return {}

    def stats(self) -> dict[str, Any]:
        """Per source: fps, recent latency percentiles, results, drops, reconnects, state."""
        info = self._source_info()
        with self._lock:
            for name in info:
                if name not in self._by_name:
                    self._add(name)
            snap = [(s, s.results, s.latency.copy(), s.done.copy(), s.latest) for s in self._list]
        now = time.perf_counter()
        out = []
        for s, n, lat, done, last in snap:
            k = min(n, WINDOW)
            recent = done[:k][done[:k] > now - FPS_SPAN_S]
            span = float(recent.max() - recent.min()) if recent.size >= 2 else 0.0
            p50, p90, p99 = (float(x) for x in np.percentile(lat[:k], [50, 90, 99])) if k else (0.0, 0.0, 0.0)
            d = info.get(s.name, {})
            out.append({"key": s.key, "name": s.name, "video": f"/video/{s.key}.mjpg", "frame": f"/frame/{s.key}.jpg",
                        "fps": round((recent.size - 1) / span, 2) if span > 0 else 0.0,
                        "latency_ms": {"p50": round(p50, 2), "p90": round(p90, 2), "p99": round(p99, 2)},
                        "results": n, "dropped": int(d.get("dropped", 0)), "reconnects": int(d.get("reconnects", 0)),
                        "state": str(d.get("state", "live" if n else "waiting")),
                        "label": last.prediction.label if last is not None else None,
                        "score": round(last.prediction.score, 4) if last is not None else None})
        return {"model": self.model, "backend": self.backend, "sources": out}

    def health(self) -> tuple[bool, str]:
        """(True, "ok") while every source is live, reconnecting or ended; else False and why."""
        try:
            info = self.sources()
        except Exception as exc:  # noqa: BLE001 - reported as the reason
            return False, f"cannot read the sources' state: {type(exc).__name__}: {exc}"
        bad = [f"source {name} is {d.get('state')}" + (" (gave up reconnecting)" if d.get("state") == "lost" else "")
               for name, d in info.items() if d.get("state") not in HEALTHY]
        return (False, "; ".join(bad)) if bad else (True, "ok")

    def page(self) -> str:
        first = json.dumps(self.stats()).replace("<", "\\u003c")  # safe inside <script>
        title = f"edgekit: {self.model} on {self.backend}".replace("&", "&amp;").replace("<", "&lt;")
        period = str(int(1000 / self.fps)) if self.fps > 0 else "100"
        parts = {"TITLE": title, "FIRST": first, "PERIOD": period}
        return re.sub(r"@@(TITLE|FIRST|PERIOD)@@", lambda m: parts[m.group(1)], PAGE)
