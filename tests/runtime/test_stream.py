"""Streams over real video files written here, whose frames carry their own index as a bit
pattern, so each test can tell exactly which frames were classified."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import edgekit  # noqa: E402
from edgekit.runtime import latest, sources  # noqa: E402
from edgekit.runtime.streaming import Stream, StreamOptions  # noqa: E402
from tests.threads import run_threads  # noqa: E402

BITS = 10
W, H = 320, 240


def encode(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    cv2.circle(img, (W // 2, H // 2 + 30), 60, (30, 160, 220), -1)
    for b in range(BITS):
        v = 255 if (i >> b) & 1 else 0
        img[0:32, b * 32:(b + 1) * 32] = v
    return img


def decode(img: np.ndarray) -> int:
    if img.shape[:2] != (H, W):
        img = cv2.resize(img, (W, H))
    return sum(1 << b for b in range(BITS) if img[8:24, b * 32 + 8:b * 32 + 24].mean() > 127)


def write_video(path: Path, n: int, fps: float) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    for i in range(n):
        w.write(encode(i))
    w.release()
    return path


@pytest.fixture(scope="module")
def fast_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "fast.avi", 240, 200.0)


@pytest.fixture(scope="module")
def clf(googlenet_bundle):
    with edgekit.load(googlenet_bundle) as c:
        yield c


def test_bit_pattern_survives_the_codec(fast_video):
    cap = cv2.VideoCapture(str(fast_video))
    for i in range(20):
        ok, frame = cap.read()
        assert ok and decode(frame) == i
    cap.release()


def test_source_faster_than_model_gives_only_fresh_frames(fast_video, clf):
    st = Stream(str(fast_video), clf, StreamOptions(topk=3), keep_frames=True)
    results = list(st)
    idx = [r.frame_index for r in results]
    assert len(results) >= 5
    assert all(decode(r.frame) == r.frame_index for r in results)  # the frame is the one named
    assert idx == sorted(set(idx))  # never the same or an older frame twice
    assert st.dropped > 0 and max(np.diff(idx)) > 1  # the model is slower: stale frames are skipped
    lat = np.median([r.latency_ms for r in results])
    inf = np.median([r.infer_ms for r in results])
    assert lat <= 2.0 * inf + 15  # frame age stays bounded by about one inference


def test_every_frame_skips_none(fast_video, clf):
    st = Stream(str(fast_video), clf, StreamOptions(every_frame=True), keep_frames=True)
    results = list(st)
    assert [r.frame_index for r in results] == list(range(240))
    assert [decode(r.frame) for r in results] == list(range(240))


def _stats(infer_ms: float, every_s: float, n: int = 20):
    from edgekit.runtime.classifier import Prediction
    from edgekit.runtime.counters import Stats
    from edgekit.runtime.streaming import Result

    st = Stats()
    for i in range(n):
        st.write(Result(i, i * every_s, i * every_s + infer_ms / 1000, infer_ms, Prediction(("a",), (0,), (1.0,),
                                                                                             infer_ms)))
    return st


def test_summary_says_why_a_file_skipped_frames_exactly_when_it_did():
    """Issue 17: a video file played like a camera skips the frames a slow model cannot take, and results
    differ from run to run; the summary says so, and how to keep them all, only then."""
    from edgekit.runtime.counters import PerSource
    from edgekit.runtime.streaming import Played

    slow = _stats(40.0, 0.050)  # 20 results a second: 50 ms a frame
    line = slow.summary(37, 0, played=Played(240, 30.0))
    first, hint = line.split("\n")
    assert "37 stale frames dropped" in first
    assert hint == ("skipped 37 of 240 frames: the model (50 ms a frame) is slower than the file plays (30 fps, "
                    "33 ms a frame); --every-frame classifies them all")
    assert "\n" not in slow.summary(0, 0, played=Played(240, 30.0))  # nothing skipped: nothing to say
    assert "\n" not in slow.summary(37, 0)  # a camera or stream: stale frames are dropped by design
    fast = _stats(5.0, 0.010)  # 10 ms a frame against a 30 fps file: it fell behind now and then
    assert fast.skipped_frames(3, Played(240, 30.0)) == (
        "skipped 3 of 240 frames: the model (10 ms a frame) fell behind the file (30 fps) at times, on a busy "
        "machine; --every-frame classifies them all")
    per = PerSource()
    per.by = {"clip.avi": slow, "0": slow}
    lines = per.summary({"clip.avi": {"dropped": 37, "reconnects": 0, "state": "ended", "file_frames": 240,
                                      "file_fps": 30.0},
                         "0": {"dropped": 37, "reconnects": 0, "state": "live"}})
    assert len(lines) == 3 and lines[1].startswith("clip.avi: skipped 37 of 240 frames: ")
    assert lines[2].startswith("0: ") and "skipped" not in lines[2]


def test_a_file_faster_than_the_model_says_it_skipped_frames(tmp_path, clf):
    """A real file at 1000 fps, a real model: frames are skipped for certain, and the summary tells why."""
    from edgekit.runtime.counters import Stats
    from edgekit.runtime.streaming import Played

    video = write_video(tmp_path / "thousand.avi", 300, 1000.0)
    st = Stream(str(video), clf, StreamOptions(topk=1))
    stats = Stats()
    for r in st:
        stats.write(r)
    assert st.kind == "file" and st.played == Played(300, 1000.0)
    assert st.dropped > 0 and stats.count + st.dropped == 300
    hint = stats.summary(st.dropped, st.reconnects, len(st.skipped), played=st.played).split("\n")[1]
    assert hint.startswith(f"skipped {st.dropped} of 300 frames: the model (") and "(1000 fps, 1 ms a frame)" in hint
    assert hint.endswith("; --every-frame classifies them all")
    assert st.status()[st.name]["file_fps"] == 1000.0

    every = Stream(str(video), clf, StreamOptions(topk=1, every_frame=True, max_frames=3))
    assert len(list(every)) == 3 and every.played is None and every.dropped == 0  # nothing to skip
    assert "file_fps" not in every.status()[every.name]


def test_image_folder_and_glob(tmp_path, clf):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), encode(i))
    got = [decode(r.frame) for r in Stream(str(tmp_path), clf, StreamOptions(every_frame=True), keep_frames=True)]
    assert got == list(range(5))
    got = [r.frame_index for r in Stream(str(tmp_path / "00[0-2].png"), clf, StreamOptions(every_frame=True))]
    assert got == [0, 1, 2]


def test_idle_capture_hands_over_the_frame_it_holds(fast_video):
    """A file paced at 2 fps: a consumer asking halfway between two frames gets the one grabbed
    before it asked, decoded on demand, instead of waiting 250 ms for the next grab."""
    spec = sources.parse(str(fast_video))
    cap = latest.LatestFrame(lambda: sources.Reader(spec), live=False, pace_fps=2)
    ages = []
    try:
        first = cap.next(timeout=2)
        assert first is not None
        for k in range(1, 4):  # halfway between grabs k and k+1: far from either, even on a busy machine
            time.sleep(max(0.0, first.captured + 0.5 * k + 0.25 - time.perf_counter()))
            asked = time.perf_counter()
            frame = cap.next(timeout=2)
            assert frame is not None and decode(frame.image) == frame.index == k
            ages.append(asked - frame.captured)
    finally:
        cap.stop()
    assert all(0 < a < 0.5 for a in ages), ages


class Camera(sources.Reader):
    """The real file reader, with grab() blocking until the next frame is due, as a V4L2
    camera's does: the capture thread cannot decode on demand while it waits there."""

    period = 0.02  # 50 fps

    def open(self):
        super().open()
        self._due = time.perf_counter()

    def grab(self):
        self._due += self.period
        time.sleep(max(0.0, self._due - time.perf_counter()))
        return super().grab()


def test_capture_decodes_ahead_of_a_regular_consumer(fast_video):
    """A consumer asking every ~45 ms from a 50 fps camera: the capture thread learns both rates
    and decodes the last frame before each ask, so the ask does not wait for the next grab,
    and frames no one takes are not decoded."""
    spec = sources.parse(str(fast_video))
    cap = latest.LatestFrame(lambda: Camera(spec), live=True, pace_fps=None)
    waits, ages = [], []
    try:
        for i in range(24):
            asked = time.perf_counter()
            frame = cap.next(timeout=2)
            assert frame is not None and decode(frame.image) == frame.index
            if i >= 8:  # after it has learned the rates
                waits.append(time.perf_counter() - asked)
                ages.append(asked - frame.captured)
            time.sleep(0.045)  # "inference"
        taken, decoded, dropped, grabbed = cap._taken_count, cap.read_count, cap.dropped, cap._grabbed + 1
    finally:
        cap.stop()
    assert np.median(waits) < 0.005, waits  # without decoding ahead: about half a frame, 10 ms
    assert sum(a > 0 for a in ages) >= len(ages) // 2, ages  # mostly grabbed before the ask
    assert decoded <= 2 * taken + 2  # about two of every three frames are never decoded
    assert grabbed - 1 <= taken + dropped <= grabbed  # every grabbed frame taken or dropped (one on offer)


def test_capture_stops_decoding_for_a_consumer_that_stops_asking(fast_video):
    """Decoding ahead is for a consumer that keeps its rhythm: one that pauses (busy elsewhere)
    costs a few decodes, not one per frame of the pause."""
    spec = sources.parse(str(fast_video))
    cap = latest.LatestFrame(lambda: Camera(spec), live=True, pace_fps=None)
    try:
        for _ in range(10):
            assert cap.next(timeout=2) is not None
            time.sleep(0.045)
        before = cap.read_count
        time.sleep(0.6)  # 30 frames come and go
        during = cap.read_count - before
    finally:
        cap.stop()
    assert during <= 5, during


def test_source_that_fails_mid_stream_reconnects(fast_video):
    """The first connection dies after 30 frames (a wrapper over the real file reader stands
    in for a camera unplugged mid-stream); the capture thread reconnects."""
    opened = []
    spec = sources.parse(str(fast_video))

    class Dying(sources.Reader):
        def grab(self):
            if len(opened) == 1 and self._n >= 30:
                return False
            self._n += 1
            return super().grab()

    def open_reader():
        r = Dying(spec)
        r._n = 0
        opened.append(r)
        return r

    events: list[str] = []
    cap = latest.LatestFrame(open_reader, live=True, pace_fps=400,
                              reconnect=sources.Reconnect(3, 0.05, 0.1), on_event=events.append)
    seen = 0
    t0 = time.time()
    while cap.reconnects == 0 and time.time() - t0 < 10:
        if cap.next(timeout=0.2) is not None:
            seen += 1
    cap.stop()
    assert cap.reconnects == 1 and len(opened) == 2
    assert any("reconnecting" in e for e in events) and "source reconnected" in events


def test_source_that_never_opens_is_a_clear_error():
    with pytest.raises(sources.SourceError, match="cannot open /dev/video57"):
        sources.Reader(sources.parse("/dev/video57"))
    with pytest.raises(edgekit.errors.UsageError, match="neither a camera"):
        sources.parse("no/such/clip.mp4")


def test_lost_live_source_gives_up_after_attempts(fast_video):
    spec = sources.parse(str(fast_video))
    calls = []

    def open_reader():
        calls.append(1)
        if len(calls) > 1:  # what a camera that has gone says when reopened: the input error (exit 2)
            raise sources.SourceInputError("cannot open camera")
        return sources.Reader(spec)

    cap = latest.LatestFrame(open_reader, live=True, pace_fps=None, reconnect=sources.Reconnect(2, 0.01, 0.02))
    with pytest.raises(sources.SourceError, match="not back after 2 attempts") as e:
        while True:
            cap.next(timeout=1)
    cap.stop()
    assert e.value.exit_code == 1  # lost on the way is the device, not what was given


def test_credentials_never_shown():
    spec = sources.parse("rtsp://admin:s3cret@cam.local:554/stream1")
    assert "s3cret" not in spec.display_name and "admin" not in spec.display_name
    assert spec.display_name == "rtsp://***@cam.local:554/stream1"
    with pytest.raises(edgekit.errors.UsageError) as e:
        sources.parse("rtsp:/admin:s3cret@cam.local/stream1")  # a typo: not a URL
    assert "s3cret" not in str(e.value)


def test_csi_uses_a_dropping_appsink():
    spec = sources.parse("csi://1", 1920, 1080, 30)
    assert spec.kind == "csi" and "sensor-id=1" in spec.target
    assert "appsink drop=true max-buffers=1 sync=false" in spec.target


def test_classify_from_four_threads_matches_one(clf):
    from edgekit.images import read_image, sample_images

    frames = [read_image(p) for p in sample_images()]
    ref = [clf.classify(f).indices for f in frames]
    out = run_threads(lambda t: [clf.classify(f).indices for _ in range(5) for f in frames])
    for t in range(4):
        assert out[t] == ref * 5


def test_run_cli_json_and_annotated_output(fast_video, googlenet_bundle, tmp_path):
    out = tmp_path / "annotated.avi"
    res = subprocess.run([sys.executable, "-m", "edgekit", "run", str(googlenet_bundle), "--source", str(fast_video),
                          "--every-frame", "--json", "--topk", "2", "--output", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["frame"] for x in lines] == list(range(240))
    assert all(len(x["top"]) == 2 and x["latency_ms"] > 0 for x in lines)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 240
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.avi"]
    assert "240 frames" in res.stderr


def test_run_cli_sigint_stops_cleanly(tmp_path, googlenet_bundle):
    video = write_video(tmp_path / "long.avi", 600, 30.0)  # 20 s at its own pace
    out = tmp_path / "out.avi"
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "run", str(googlenet_bundle), "--source", str(video),
                             "--json", "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "frames," in stderr and "Traceback" not in stderr
    lines = [json.loads(x) for x in stdout.splitlines()]  # every line complete
    assert 0 < len(lines) < 600
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    cap.release()


def test_run_needs_a_source(googlenet_bundle):
    res = subprocess.run([sys.executable, "-m", "edgekit", "run", str(googlenet_bundle)], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "give a source: --camera" in res.stderr


def test_a_live_source_is_opened_once(fast_video, clf):
    """Argus often fails a CSI camera reopened at once ("Failed to create CaptureSession"): the
    reader opened to learn the frame rate is the one the capture thread reads from."""
    opened = []

    def opener(spec):
        opened.append(spec)
        return sources.Reader(spec)

    st = Stream(str(fast_video), clf, StreamOptions(topk=1, max_frames=5), opener=opener)
    results = list(st)
    assert len(results) == 5 and len(opened) == 1


def test_run_takes_the_device_profiles_camera_settings(monkeypatch):
    """A Jetson Nano's profile (1280x720 at 30 fps) stands in for detection here. Sensor modes
    belong to the camera module (IMX219, IMX477), not the board: only the user sets one."""
    from edgekit import profiles as pm
    from edgekit.runtime.streaming import camera_settings

    nano = pm.get("jetson-nano")
    monkeypatch.setattr(pm, "detect", lambda *a, **k: (nano, pm.Device(model="NVIDIA Jetson Nano")))
    assert camera_settings() == (1280, 720, 30, None)
    assert camera_settings(640, 480, 60, 2) == (640, 480, 60, 2)  # what the user gives wins
    pipeline = sources.parse("csi://0", *camera_settings()).target
    assert "sensor-id=0 !" in pipeline and "sensor-mode" not in pipeline
    assert "width=1280, height=720, framerate=30/1" in pipeline
    assert "sensor-id=0 sensor-mode=2" in sources.parse("csi://0", *camera_settings(sensor_mode=2)).target
