"""The live view (edgekit.runtime.serve.LiveView) on real sockets, real photographs and a real browser:
what a person sees, what Prometheus reads, and that viewers never cost the run anything."""

from __future__ import annotations

import json
import re
import shutil
import socket
import statistics
import struct
import subprocess
import threading
import time
import tracemalloc
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgekit.errors import UsageError
from edgekit.images import read_image, sample_images
from edgekit.runtime.classifier import Prediction
from edgekit.runtime.serve import VIEW_WIDTH, LiveView
from edgekit.runtime.sinks import annotate
from edgekit.runtime.streaming import Result

PRED = Prediction(("tabby cat", "tiger cat", "Egyptian cat"), (281, 282, 285), (0.61, 0.2, 0.1), 5.0)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {p.stem: read_image(p) for p in sample_images()}


def result(i: int, frame: np.ndarray | None, source: str, latency_ms: float = 20.0) -> Result:
    t = time.perf_counter()
    return Result(frame_index=i, captured=t - latency_ms / 1000.0, done=t, infer_ms=5.0, prediction=PRED,
                  frame=frame, source=source)


@pytest.fixture
def make_view():
    views: list[LiveView] = []

    def make(sources=None, **kw) -> LiveView:
        state = sources if sources is not None else {}
        kw.setdefault("model", "googlenet")
        kw.setdefault("backend", "onnxruntime")
        v = LiveView("127.0.0.1", 0, sources=state if callable(state) else (lambda: state), **kw)
        views.append(v)
        return v

    yield make
    for v in views:
        v.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with NO_PROXY.open(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def wait_until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


class Viewer:
    """A raw video connection: reads Motion-JPEG parts only when asked (or never)."""

    def __init__(self, port: int, key: int = 0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"GET /video/%d.mjpg HTTP/1.1\r\nHost: robot\r\n\r\n" % key)
        self.buf = b""

    def jpeg(self, timeout: float = 10.0) -> bytes:
        end = time.monotonic() + timeout
        while True:
            m = re.search(rb"Content-Type: image/jpeg\r\nContent-Length: (\d+)\r\n\r\n", self.buf)
            if m and len(self.buf) >= m.end() + int(m.group(1)):
                n = m.end() + int(m.group(1))
                part, self.buf = self.buf[m.end():n], self.buf[n:]
                return part
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            data = self.sock.recv(1 << 16)
            assert data, "the server closed the video"
            self.buf += data

    def image(self, timeout: float = 10.0) -> np.ndarray:
        img = cv2.imdecode(np.frombuffer(self.jpeg(timeout), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        return img

    def reset(self) -> None:
        """Leave abruptly (a TCP reset, as a browser tab killed mid-frame)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Writer:
    """Writes results in a thread, as SinkThread does, timing every write()."""

    def __init__(self, view: LiveView, frames: dict[str, np.ndarray | None], pause: float = 0.005) -> None:
        self.view, self.frames, self.pause = view, frames, pause
        self.times: list[float] = []
        self.written = 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for name, frame in self.frames.items():
                r = result(i, frame, name)
                t0 = time.perf_counter()
                self.view.write(r)
                self.times.append(time.perf_counter() - t0)
                self.written += 1
            i += 1
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()
        self.t.join(5)


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: `make browser` installs it (Debian: apt-get install chromium)"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
           "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1280,1100", "--virtual-time-budget=2500", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def best_match(shot: np.ndarray, img: np.ndarray, width: int = 640) -> tuple[float, tuple[int, int], np.ndarray]:
    """Where ``img``, shown ``width`` pixels wide, is in the screenshot, and how well it matches."""
    h = round(img.shape[0] * width / img.shape[1])
    tpl = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
    scores = cv2.matchTemplate(shot, tpl, cv2.TM_CCOEFF_NORMED)
    _, score, _, at = cv2.minMaxLoc(scores)
    return float(score), at, tpl


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float32).ravel(), b.astype(np.float32).ravel())[0, 1])


def test_a_browser_shows_each_source_annotated_with_its_figures(make_view, photos, tmp_path):
    calls = []
    state = {"cam0": {"dropped": 3, "reconnects": 1, "state": "live"},
             "rtsp://robot/front": {"dropped": 0, "reconnects": 2, "state": "reconnecting"}}

    def sources():
        calls.append(1)
        return state

    v = make_view(sources, fps=20)
    w = Writer(v, {"cam0": photos["chelsea"], "rtsp://robot/front": photos["coffee"]})
    try:
        assert wait_until(lambda: w.written >= 20, 10)
        shot_png = tmp_path / "page.png"
        run = chromium(tmp_path, f"--screenshot={shot_png}", v.url)
        assert run.returncode == 0 and shot_png.exists(), run.stderr[-2000:]
        polled = len(calls)
        dom = chromium(tmp_path, "--dump-dom", v.url)
    finally:
        w.stop()
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = cv2.imread(str(shot_png), cv2.IMREAD_COLOR)
    assert shot is not None and shot.shape[:2] == (1100, 1280) and shot.std() > 20  # not blank
    assert polled >= 2  # the page fetched /stats.json by itself after it loaded
    anchors = []
    for name, photo in (("cam0", photos["chelsea"]), ("rtsp://robot/front", photos["coffee"])):
        drawn = annotate(photo, result(0, photo, name))
        score, at, tpl = best_match(shot, drawn)
        assert score > 0.9, f"{name}: the annotated frame is not on the page (best match {score:.2f})"
        anchors.append(at)
        # the labels are drawn: the top-left band (the text) is the annotated frame's, not the bare photograph's
        shown = shot[at[1]:at[1] + 130, at[0]:at[0] + 330]
        bare = cv2.resize(photo, (tpl.shape[1], tpl.shape[0]), interpolation=cv2.INTER_AREA)[:130, :330]
        with_text, without = corr(shown, tpl[:130, :330]), corr(shown, bare)
        assert with_text > 0.95 and with_text > without + 0.05, (name, with_text, without)
    assert anchors[0][1] != anchors[1][1]  # two videos, one above the other
    never_written, _, _ = best_match(shot, photos["astronaut"])
    assert never_written < 0.6  # the matcher tells photographs apart
    html = dom.stdout
    # frames polled as short requests (a browser has six connections a host; a Motion-JPEG stream holds one)
    assert '<img alt="cam0" src="/frame/0.jpg' in html and 'src="/frame/1.jpg' in html
    assert "rtsp://robot/front" in html and "3 drops" in html and "2 reconnects" in html
    assert re.search(r"latency p50 20\.\d p90 20\.\d p99 20\.\d ms", html)
    assert 'class="reconnecting">reconnecting<' in html and "61.0% tabby cat" in html


def test_stats_json_figures_and_sources_that_appear_later(make_view, photos):
    state = {"cam0": {"dropped": 7, "reconnects": 0, "state": "live"}}
    v = make_view(state)
    for i, lat in enumerate(range(1, 101)):  # latencies 1..100 ms
        v.write(result(i, photos["rocket"], "cam0", latency_ms=float(lat)))
    code, ctype, body = get(v.url + "stats.json")
    st = json.loads(body)
    assert code == 200 and ctype == "application/json"
    assert (st["model"], st["backend"]) == ("googlenet", "onnxruntime")
    (s,) = st["sources"]
    assert (s["key"], s["name"], s["video"], s["results"]) == (0, "cam0", "/video/0.mjpg", 100)
    assert (s["dropped"], s["reconnects"], s["state"], s["label"]) == (7, 0, "live", "tabby cat")
    assert s["latency_ms"] == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01}, abs=0.02)
    assert s["fps"] > 100  # written back to back
    state["cam1"] = {"dropped": 0, "reconnects": 3, "state": "reconnecting"}  # listed before its first result
    v.write(result(0, photos["rocket"], "cam2"))
    st = json.loads(get(v.url + "stats.json")[2])
    names = [(x["key"], x["name"], x["state"], x["results"]) for x in st["sources"]]
    assert names == [(0, "cam0", "live", 100), (1, "cam2", "live", 1), (2, "cam1", "reconnecting", 0)]
    assert get(v.url + "video/9.mjpg")[0] == 404 and get(v.url + "nothing")[0] == 404
    page = get(v.url)[2].decode()
    assert "googlenet on onnxruntime" in page and "/stats.json" in page and "http" not in page.split("<body>")[1]


def test_metrics_parse_and_count_what_was_written(make_view, photos):
    state = {"cam0": {"dropped": 4, "reconnects": 1, "state": "live"},
             "cam1": {"dropped": 0, "reconnects": 2, "state": "lost"}}
    v = make_view(state)
    lat = {"cam0": [12.0, 40.0, 40.0, 250.0], "cam1": [30.0] * 9}
    for name, values in lat.items():
        for i, ms in enumerate(values):
            v.write(result(i, photos["coffee"], name, latency_ms=ms))
    code, ctype, body = get(v.url + "metrics")
    assert code == 200 and ctype.startswith("text/plain")
    samples = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = dict(s.labels)
            if "source" in labels:
                assert (labels.pop("model"), labels.pop("backend")) == ("googlenet", "onnxruntime")
            samples[(s.name, tuple(sorted(labels.items())))] = s.value

    def at(name: str, source: str, **extra: str) -> float:
        return samples[(name, tuple(sorted({"source": source, **extra}.items())))]

    for name, values in lat.items():
        assert at("edgekit_results_total", name) == len(values)
        assert at("edgekit_latency_seconds_count", name) == len(values)
        assert at("edgekit_latency_seconds_sum", name) == pytest.approx(sum(values) / 1000, rel=1e-3)
        assert at("edgekit_latency_seconds_bucket", name, le="0.05") == sum(ms <= 50 for ms in values)
        assert at("edgekit_latency_seconds_bucket", name, le="+Inf") == len(values)
        assert at("edgekit_dropped_frames_total", name) == state[name]["dropped"]
        assert at("edgekit_reconnects_total", name) == state[name]["reconnects"]
    assert at("edgekit_source_state", "cam0", state="live") == 1
    assert at("edgekit_source_state", "cam0", state="lost") == 0
    assert at("edgekit_source_state", "cam1", state="lost") == 1
    other = make_view(state)  # each view has its own registry
    theirs = [s.value for f in text_string_to_metric_families(get(other.url + "metrics")[2].decode())
              for s in f.samples if s.name == "edgekit_results_total"]
    assert theirs and not any(theirs)  # the same sources (registered in order), none of these results


def test_a_stalled_viewer_costs_write_nothing_and_is_dropped(make_view, photos):
    big = cv2.resize(photos["astronaut"], (1280, 720))
    v = make_view({"cam0": {"dropped": 0, "reconnects": 0, "state": "live"}}, fps=50, stall_s=1.0)
    v.write(result(0, big, "cam0"))
    stalled = Viewer(v.port, rcvbuf=4096)  # asks for the video, never reads
    slow = Viewer(v.port)
    slow_frames: list[tuple[int, ...]] = []  # their shapes
    done = threading.Event()

    def read_slowly() -> None:  # a viewer on a slow link: a frame every 100 ms, keeps up with nothing
        while not done.is_set():
            try:
                slow_frames.append(slow.image(timeout=5).shape)
                time.sleep(0.1)
            except (OSError, AssertionError):
                return

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    assert wait_until(lambda: v.viewers == 2, 5)
    tracemalloc.start()
    try:
        times = []
        t_end, i, base = time.monotonic() + 3.5, 1, None
        while time.monotonic() < t_end:
            r = result(i, big, "cam0")
            t0 = time.perf_counter()
            v.write(r)
            times.append(time.perf_counter() - t0)
            if base is None and time.monotonic() > t_end - 2.5:
                base = tracemalloc.get_traced_memory()[0]  # after the stalled socket's buffers filled
            i += 1
            time.sleep(0.002)
        grown = tracemalloc.get_traced_memory()[0] - (base or 0)
    finally:
        tracemalloc.stop()
    done.set()
    assert v.encoded > 60  # frames were made for the viewers all along: ~50 a second
    assert max(times) < 0.25 and statistics.median(times) < 0.001, (max(times), statistics.median(times))
    assert grown < 4e6, f"memory grew by {grown / 1e6:.1f} MB over {v.encoded} JPEGs"
    assert wait_until(lambda: v.viewers == 1, 10)  # the stalled one is gone, the slow one stays
    shown = (round(big.shape[0] * VIEW_WIDTH / big.shape[1]), VIEW_WIDTH, 3)  # scaled for the page
    assert len(slow_frames) >= 5 and slow_frames[-1] == shown
    stalled.sock.settimeout(5)  # the server hung up on it: what was in flight, then the end
    with pytest.raises((ConnectionResetError, EOFError)):
        while stalled.sock.recv(1 << 20):
            pass
        raise EOFError


def test_viewers_come_and_go_while_writes_go_on_and_close_is_quick(make_view, photos, capfd):
    state = {"cam0": {"state": "live"}, "cam1": {"state": "live"}}
    v = make_view(state, fps=30, stall_s=5.0)
    w = Writer(v, {"cam0": photos["chelsea"], "cam1": photos["rocket"]}, pause=0.002)
    errors: list[BaseException] = []
    end = time.monotonic() + 2.5

    def churn(n: int) -> None:
        k = 0
        while time.monotonic() < end:
            k += 1
            try:
                how = (n + k) % 5
                if how == 4:
                    get(v.url + ("stats.json" if k % 2 else ""))
                    continue
                c = Viewer(v.port, key=(n + k) % 2)
                if how == 1:
                    c.jpeg()
                elif how == 2:
                    c.jpeg()
                    c.reset()
                    continue
                elif how == 3:
                    c.sock.recv(100)
                    c.reset()
                    continue
                c.sock.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    clients = [threading.Thread(target=churn, args=(n,), daemon=True) for n in range(6)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(20)
    assert not errors, errors
    assert wait_until(lambda: v.viewers == 0, 5)
    attached = [Viewer(v.port, 0, rcvbuf=4096), Viewer(v.port, 1), Viewer(v.port, 0)]
    attached[1].jpeg()
    assert wait_until(lambda: v.viewers == 3, 5)
    time.sleep(0.5)  # the stalled one's buffers fill; its handler blocks in send
    t0 = time.perf_counter()
    v.close()
    took = time.perf_counter() - t0
    w.stop()
    assert took < 2.0
    v.close()  # idempotent
    assert wait_until(lambda: v.viewers == 0, 2)
    assert max(w.times) < 0.25 and statistics.median(w.times) < 0.001
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", v.port), timeout=2)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err[-2000:]


def test_healthz_follows_the_sources_and_a_bad_bind_is_one_line(make_view):
    state = {"cam0": {"state": "live"}, "rtsp://robot/front": {"state": "reconnecting"}}
    v = make_view(state)
    assert get(v.url + "healthz") == (200, "text/plain; charset=utf-8", b"ok\n")
    state["cam0"]["state"] = "ended"
    assert get(v.url + "healthz")[0] == 200
    state["rtsp://robot/front"]["state"] = "lost"
    code, _, body = get(v.url + "healthz")
    assert code == 503 and body.decode().count("\n") == 1
    assert "rtsp://robot/front" in body.decode() and "lost" in body.decode() and "cam0" not in body.decode()
    with pytest.raises(UsageError) as e:
        LiveView("127.0.0.1", v.port, model="m", backend="b", sources=dict)
    assert f"127.0.0.1:{v.port}" in str(e.value) and "in use" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="not a host name or address"):
        LiveView("no-such-host.invalid", 0, model="m", backend="b", sources=dict)
    with pytest.raises(UsageError, match="0-65535"):
        LiveView("127.0.0.1", 70000, model="m", backend="b", sources=dict)


def test_jpegs_are_made_only_for_viewers_only_for_new_results_and_at_most_fps(make_view, photos):
    v = make_view({}, fps=5)
    photo = photos["coffee"]
    for i in range(300):
        v.write(result(i, photo, "cam0"))
        time.sleep(0.001)
    time.sleep(0.3)
    assert v.encoded == 0  # nobody watches
    c = Viewer(v.port)
    img = c.image()
    if img.shape[:2] != photo.shape[:2]:  # the placeholder before the first frame
        img = c.image()
    assert img.shape == photo.shape and corr(img, annotate(photo, result(0, photo, ""))) > 0.98
    assert v.encoded == 1
    time.sleep(0.5)
    assert v.encoded == 1  # nothing new, nothing encoded
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        v.write(result(0, photo, "cam0"))
        time.sleep(0.002)
    assert 5 <= v.encoded <= 1 + (5 * 2 + 1) + 1  # at most fps a second (both ends of the 2 s, and one in flight)
    c.sock.close()
    assert wait_until(lambda: v.viewers == 0, 5)
    before = v.encoded
    for i in range(200):
        v.write(result(i, photo, "cam0"))
        time.sleep(0.002)
    time.sleep(0.3)
    assert v.encoded == before


def test_hostile_clients_cannot_take_the_processes_descriptors(make_view):
    """Connections that send nothing (slowloris) beyond MAX_CONNECTIONS are closed at accept, so
    the process keeps its file descriptors; once they go, the view answers again."""
    import os

    from edgekit.runtime.serve_http import MAX_CONNECTIONS

    v = make_view({"cam0": {"dropped": 0, "reconnects": 0, "state": "live"}}, stall_s=4.0)
    fds = len(os.listdir("/proc/self/fd"))
    socks = []
    for _ in range(MAX_CONNECTIONS + 40):
        s = socket.create_connection(("127.0.0.1", v.port), timeout=5)
        socks.append(s)
    time.sleep(0.5)
    # each idle connection costs the server one descriptor, up to the cap; the rest were closed
    assert len(os.listdir("/proc/self/fd")) - fds <= 2 * MAX_CONNECTIONS + 40 + 8
    active = v._server.active
    assert MAX_CONNECTIONS - 2 <= active <= MAX_CONNECTIONS, active
    for s in socks:
        s.close()
    assert wait_until(lambda: get(v.url + "healthz")[0] == 200, 10)  # stalled ones dropped after stall_s


def test_sources_keep_their_order_head_answers_and_the_page_polls_frames(make_view):
    """Video keys follow the sources' own order (not whose frame came first); HEAD /healthz
    answers as GET does, without a body; /frame/<k>.jpg gives the newest annotated JPEG and
    counts as watching, so the page's polling is what makes frames be encoded."""
    state = {"front": {"dropped": 0, "reconnects": 0, "state": "live"},
             "rear": {"dropped": 0, "reconnects": 0, "state": "live"}}
    v = make_view(state)
    photo = read_image(sample_images()[0])
    v.write(result(0, photo, "rear"))  # rear's frame first
    keys = {s["name"]: s["key"] for s in v.stats()["sources"]}
    assert keys == {"front": 0, "rear": 1}
    req = urllib.request.Request(v.url + "healthz", method="HEAD")
    with NO_PROXY.open(req, timeout=10) as r:
        assert r.status == 200 and r.read() == b""
    assert v.encoded == 0
    code, ctype, body = get(v.url + "frame/1.jpg")  # the first ask: the placeholder, and rear is watched
    assert code == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert wait_until(lambda: v.encoded >= 1, 5)
    code, _, jpeg = get(v.url + "frame/1.jpg")
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[1] == min(photo.shape[1], VIEW_WIDTH)
    assert get(v.url + "frame/7.jpg")[0] == 404
