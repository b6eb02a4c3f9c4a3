"""The runtime under faults, bad input and long runs: nothing lost, nothing leaked.

Real video files, real image folders, real OpenCV writers, the real CLI in a subprocess. Where
a fault cannot be made for real without root (a full disk), RLIMIT_FSIZE stands in for it: a
write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC."""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import edgekit  # noqa: E402
from edgekit import redact  # noqa: E402
from edgekit.runtime import latest, sinks, sources  # noqa: E402
from edgekit.runtime.classifier import Prediction  # noqa: E402
from edgekit.runtime.sink_thread import SinkError, SinkThread  # noqa: E402
from edgekit.runtime.streaming import Result, Stream, StreamOptions  # noqa: E402
from tests.runtime.test_stream import Camera, decode, encode, write_video  # noqa: E402

EDGEKIT = [sys.executable, "-m", "edgekit"]


@pytest.fixture(scope="module")
def clf(googlenet_bundle):
    with edgekit.load(googlenet_bundle) as c:
        yield c


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(12):
        cv2.imwrite(str(d / f"{i:03d}.png"), encode(i))
    return d


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
    finally:
        cap.release()


def _lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines()]


def _one_line_error(stderr: str, text: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0], stderr


# ---- sources with no pace: folders, globs, single images, in live mode --------------------------

def test_folder_glob_and_image_in_live_mode_classify_every_image(folder, clf):
    """A folder has no frame rate: live mode used to grab every file before the first ask and
    classify nothing ("12 stale frames dropped")."""
    for src, want in ((str(folder), list(range(12))), (str(folder / "00[3-5].png"), [3, 4, 5]),
                      (str(folder / "007.png"), [7])):
        st = Stream(src, clf, StreamOptions(topk=1), keep_frames=True)
        got = list(st)
        assert [decode(r.frame) for r in got] == want, src
        assert st.dropped == 0
        assert all(r.name and Path(r.name).name == f"{i:03d}.png" for r, i in zip(got, want))


def test_cli_folder_live_mode_writes_every_image_with_its_file(folder, googlenet_bundle):
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(folder), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = _lines(res.stdout)
    assert [x["frame"] for x in lines] == list(range(12))
    assert [Path(x["file"]).name for x in lines] == [f"{i:03d}.png" for i in range(12)]
    assert "12 frames" in res.stderr and "0 stale frames dropped" in res.stderr


# ---- one bad file does not end a run -------------------------------------------------------------

def test_unreadable_and_vanished_files_are_skipped_counted_and_named(folder, clf):
    (folder / "004.png").write_bytes(b"not a png")
    (folder / "005.png").write_bytes(b"")
    events: list[str] = []
    st = Stream(str(folder), clf, StreamOptions(topk=1), on_event=events.append, keep_frames=True)
    (folder / "009.png").unlink()  # deleted after the folder was listed
    got = [decode(r.frame) for r in st]
    assert got == [0, 1, 2, 3, 6, 7, 8, 10, 11]
    assert sorted(p.name for p, _ in st.skipped) == ["004.png", "005.png", "009.png"]
    assert sum("skipped" in e for e in events) == 3


def test_cli_keeps_the_whole_output_past_a_bad_file(folder, googlenet_bundle, tmp_path):
    (folder / "006.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out.avi"
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(folder), "--every-frame", "--json",
                                    "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(_lines(res.stdout)) == 11 == _frame_count(out)
    assert "1 unreadable files skipped" in res.stderr and "006.png" in res.stderr


# ---- any error mid-run: every result produced is written, outputs finished, one line ----------

INJECT = textwrap.dedent("""
    import sys
    from edgekit.runtime import sources
    read = sources.Reader.read
    def failing(self):
        if self._next >= 30:
            raise sources.SourceError("injected: the source failed for good")
        return read(self)
    sources.Reader.read = failing
    from edgekit.cli import main
    main(sys.argv[1:])
""")


def test_error_mid_run_finishes_every_output(tmp_path, googlenet_bundle):
    """A source failing for good after 30 frames (injected into the real reader): the writer was
    released under the sink thread (segfaults, aborts), queued results were dropped and the
    video deleted. Now every result produced reaches JSON and the video, then the error."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(60):
        cv2.imwrite(str(d / f"{i:03d}.jpg"), encode(i))
    for trial in range(3):
        out = tmp_path / f"out{trial}.avi"
        res = subprocess.run([sys.executable, "-c", INJECT, "run", str(googlenet_bundle), "--source", str(d),
                              "--json", "--output", str(out)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 1, res.stderr
        _one_line_error(res.stderr, "injected: the source failed for good")
        assert [x["frame"] for x in _lines(res.stdout)] == list(range(30))
        assert _frame_count(out) == 30
        assert "30 frames" in res.stderr  # the summary still comes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---- signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_with_every_frame_flushes_and_exits_0(tmp_path, googlenet_bundle, sig):
    """The handler closed the reader under the main loop: a traceback, exit 1, --output deleted."""
    video = write_video(tmp_path / "long.avi", 900, 30.0)
    out = tmp_path / "out.avi"
    proc = subprocess.Popen(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--every-frame",
                                       "--json", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # results are flowing
    assert first
    time.sleep(0.5)
    proc.send_signal(sig)
    rest, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "frames," in stderr
    lines = _lines(first + rest)
    assert 0 < len(lines) < 900
    assert [x["frame"] for x in lines] == list(range(len(lines)))
    assert _frame_count(out) == len(lines)


# ---- full disk -----------------------------------------------------------------------------------

def _limit_file_size(limit: int):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return pre


@pytest.mark.parametrize("frames", [100, 600])
def test_full_disk_video_is_an_error_not_a_0_byte_success(tmp_path, googlenet_bundle, frames):
    """100 frames: found when the video is read back at close; 600: found mid-run, when the file
    stops growing, and the run stops there instead of going on for days."""
    video = write_video(tmp_path / "clip.avi", frames, 30.0)
    out = tmp_path / "o" / "out.avi"
    out.parent.mkdir()
    (out.parent / f".out.tmp-{2 ** 22 + 12345}.avi").write_bytes(b"left by a run killed with -9")
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--every-frame", "--json",
                                    "--output", str(out)], capture_output=True, text=True, timeout=300,
                         preexec_fn=_limit_file_size(300_000))  # stands in for a disk that fills mid-run
    assert res.returncode == 1, res.stderr
    _one_line_error(res.stderr, f"cannot write video {out}")
    assert list(out.parent.iterdir()) == []  # no truncated video, no temporary file, no dead run's leftover
    lines = [x["frame"] for x in _lines(res.stdout)]
    assert lines == list(range(len(lines)))  # the other output has every result produced
    assert len(lines) == frames if frames == 100 else len(lines) < 400


def test_stalled_stdout_does_not_hold_ctrl_c_and_the_video_is_finished(tmp_path, googlenet_bundle):
    """stdout to a pipe nobody reads: the first SIGINT did nothing; a second gave 130 and no video."""
    video = write_video(tmp_path / "long.avi", 3000, 30.0)
    out = tmp_path / "out.avi"
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--every-frame",
                                           "--json", "--topk", "100", "--output", str(out)],
                                stdout=subprocess.PIPE, stderr=err)
        time.sleep(12)  # ~100 KB of JSON: the pipe (64 KiB) is full and nobody reads it
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    stderr = (tmp_path / "err.txt").read_text()
    assert rc == 1, stderr
    _one_line_error(stderr, "JSON lines to stdout stopped responding")
    n = int(stderr.split(" frames,")[0].split()[-1])
    assert 0 < n < 3000 and _frame_count(out) == n  # the video has every result
    proc.stdout.close()


def test_odd_file_names_and_all_unreadable_folders(tmp_path, googlenet_bundle):
    video = write_video(tmp_path / "cam[1].avi", 5, 30.0)  # brackets: a glob if taken for one
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--every-frame", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and len(_lines(res.stdout)) == 5, res.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.png").write_bytes(b"nope")
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(bad)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2
    _one_line_error(res.stderr, "no image in")


def test_a_huge_file_with_a_small_header_is_refused_unread(tmp_path):
    from edgekit.errors import UsageError
    from edgekit.images import read_image

    p = tmp_path / "padded.jpg"
    ok, enc = cv2.imencode(".jpg", encode(1)[:50, :50])
    with open(p, "wb") as f:
        f.write(enc.tobytes())
        f.truncate(300 << 20)  # sparse: 300 MB that a 50x50 image never needs
    with pytest.raises(UsageError, match="more than any image of that size needs"):
        read_image(p)


def test_json_to_a_file_that_hits_its_limit_keeps_whole_lines(tmp_path, googlenet_bundle):
    video = write_video(tmp_path / "clip.avi", 200, 30.0)
    out = tmp_path / "preds.jsonl"
    with open(out, "w") as f:
        res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--every-frame",
                                        "--json", "--topk", "5"], stdout=f, stderr=subprocess.PIPE, text=True,
                             timeout=300, preexec_fn=_limit_file_size(20_000))  # a full disk, at 20 kB
    assert res.returncode == 1
    _one_line_error(res.stderr, "cannot write JSON lines to stdout")
    text = out.read_text()
    assert text.endswith("\n") and 0 < len(_lines(text)) < 200  # no half line at the end


def test_full_disk_json_is_a_one_line_error(tmp_path, googlenet_bundle):
    video = write_video(tmp_path / "clip.avi", 20, 30.0)
    with open("/dev/full", "w") as full:
        res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--every-frame",
                                        "--json"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert res.returncode == 1
    _one_line_error(res.stderr, "cannot write JSON lines to stdout: the disk is full")


def test_bad_output_is_refused_before_the_model_loads(tmp_path, googlenet_bundle):
    video = write_video(tmp_path / "clip.avi", 5, 30.0)
    for name, text in (("out.txt", ".txt is not a video container"), ("no/such/dir/out.avi", "does not exist"),
                       ("clip.avi", "is the source itself")):
        res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", str(video), "--output",
                                        str(tmp_path / name)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2
        _one_line_error(res.stderr, text)
        assert "backend:" not in res.stderr  # nothing loaded, no frame read


# ---- a sink that fails ---------------------------------------------------------------------------

def _result(i: int) -> Result:
    return Result(i, 0.0, 0.001, 1.0, Prediction(("a",), (0,), (1.0,), 1.0))


class _Keeps:
    def __init__(self):
        self.got: list[int] = []
        self.closed = False

    def write(self, r):
        self.got.append(r.frame_index)

    def close(self):
        self.closed = True


def _produce(t: SinkThread, n: int, outcome: queue.Queue) -> threading.Thread:
    def body() -> None:
        try:
            for i in range(n):
                t.put(_result(i))
            outcome.put("all queued")
        except SinkError as exc:
            outcome.put(exc)

    th = threading.Thread(target=body, daemon=True)
    th.start()
    return th


def test_a_sink_that_fails_while_its_queue_is_full_never_blocks_put():
    """A sink that raised while the 64-slot queue was full blocked put() forever."""
    gate = threading.Event()

    class Breaks:
        def write(self, r):
            gate.wait()
            raise RuntimeError("sink broke")

        def close(self):
            pass

    keeps = _Keeps()
    t = SinkThread([Breaks(), keeps], maxsize=4)
    outcome: queue.Queue = queue.Queue()
    th = _produce(t, 100, outcome)
    time.sleep(0.5)
    assert t.workers[0].q.full() and th.is_alive()  # waiting on a slow sink, as it should ...
    gate.set()  # ... until it fails
    th.join(timeout=10)
    assert not th.is_alive(), "put() blocked on a dead sink"
    err = outcome.get_nowait()
    assert isinstance(err, SinkError) and "sink broke" in str(err)
    with pytest.raises(SinkError, match="sink broke"):
        t.close()
    assert keeps.got == list(range(len(keeps.got))) and len(keeps.got) >= 5 and keeps.closed


def test_a_stalled_sink_does_not_hold_a_stopping_run_and_the_others_are_finished():
    """stdout to a pipe nobody reads: the first Ctrl-C did nothing and the video was lost. Once a
    stop is asked for, put() gives up on the stalled sink, and close() abandons it after a timeout
    while every other sink gets everything and is closed."""
    never = threading.Event()

    class Stalls:
        describe = "JSON lines to stdout"

        def write(self, r):
            never.wait()

        def close(self):
            raise AssertionError("closed under a write in progress")

    stop = threading.Event()
    keeps = _Keeps()
    t = SinkThread([Stalls(), keeps], maxsize=4, stop=stop.is_set)
    outcome: queue.Queue = queue.Queue()
    th = _produce(t, 50, outcome)
    time.sleep(0.5)
    assert th.is_alive()  # a stalled sink holds a run that is not stopping
    stop.set()
    th.join(timeout=10)
    assert not th.is_alive() and outcome.get_nowait() == "all queued"
    t0 = time.monotonic()
    with pytest.raises(SinkError, match="JSON lines to stdout stopped responding"):
        t.close(timeout=1.0)
    assert time.monotonic() - t0 < 5
    assert keeps.got == list(range(50)) and keeps.closed
    assert t.abandoned == ["JSON lines to stdout"]
    never.set()


# ---- long runs: bounded memory, constant work -----------------------------------------------------

def test_stats_memory_and_work_do_not_grow_with_run_length():
    rng = np.random.default_rng(0)
    lat = rng.lognormal(3.0, 0.5, 200_000)
    st = sinks.Stats()
    for v in lat[:10_000]:
        st.write(Result(0, 0.0, v / 1000.0, 5.0, Prediction(("a",), (0,), (1.0,), 1.0)))
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    for v in lat[10_000:]:
        st.write(Result(0, 0.0, v / 1000.0, 5.0, Prediction(("a",), (0,), (1.0,), 1.0)))
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    assert grown < 64 * 1024, grown  # the old list kept 2 floats per frame: 3 MB here
    assert st.count == 200_000
    for q in (50, 90, 99):
        exact = np.percentile(lat, q)
        assert abs(st.pct(q) - exact) / exact < 0.01, (q, st.pct(q), exact)
    assert abs(st.recent(50) - np.percentile(lat[-512:], 50)) < 1e-9  # the live line: the last results


def test_fresh_frame_after_the_consumer_pauses(fast_video):
    """After a pause the frame handed over was 173/556/1465 ms old with 8/27/73 newer frames
    grabbed; it must be the newest grabbed when asked, or the next one."""
    spec = sources.parse(str(fast_video))
    cap = latest.LatestFrame(lambda: Camera(spec), live=True, pace_fps=None)
    try:
        for _ in range(8):
            assert cap.next(timeout=2) is not None
            time.sleep(0.045)
        for pause in (0.2, 0.6, 1.5):
            time.sleep(pause)
            newest = cap._grabbed
            frame = cap.next(timeout=2)
            handed = time.perf_counter()
            assert frame is not None and decode(frame.image) == frame.index
            assert frame.index >= newest, (pause, frame.index, newest)
            assert handed - frame.captured < Camera.period + 0.1, (pause, handed - frame.captured)
    finally:
        cap.stop()


@pytest.fixture(scope="module")
def fast_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "fast.avi", 240, 200.0)


# ---- credentials ---------------------------------------------------------------------------------

URLS = [  # (what the user typed, the secrets it carries)
    ("rtsp://user:s3cr%40et@127.0.0.1:9/stream", ["s3cr%40et", "s3cr@et"]),
    ("rtsp://user:p@ss@127.0.0.1:9/s", ["p@ss", ":p@"]),
    ("rtsp://user:s3c/ret@127.0.0.1:9/s", ["s3c/ret"]),
    ("rtsp://127.0.0.1:9/s?user=bob&password=hunter2", ["hunter2", "=bob"]),
    ("RTSP://admin:UPPERpw@127.0.0.1:9/s?x=1", ["UPPERpw"]),  # any case; a ? made it a glob
    ("rtmp://127.0.0.1:9/app?key=RTMPW99", ["RTMPW99"]),
    ("rtsp://127.0.0.1:9/s?loginPas=fosc4m&auth_token=tok999#password=frag1", ["fosc4m", "tok999", "frag1"]),
    ("rtsp://admin:pa ss99@127.0.0.1:9/s", ["pa ss99", "ss99"]),  # a space in the password
]


@pytest.mark.parametrize("url,secrets", URLS)
def test_no_password_in_any_output_whatever_the_libraries_print(url, secrets, googlenet_bundle):
    """OpenCV's warning printed the whole URL, percent-encoded password included."""
    env = dict(os.environ, OPENCV_LOG_LEVEL="DEBUG")  # OpenCV's debug lines go to stdout, URL and all
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--source", url, "--reconnect-attempts", "1",
                                    "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1
    _one_line_error(res.stderr, f"cannot open {url.split('://')[0]}://")
    for s in secrets:
        assert s not in res.stdout and s not in res.stderr, (s, res.stderr)


@pytest.mark.parametrize("url,secrets", URLS)
def test_no_password_in_a_repr_or_display_name(url, secrets):
    spec = sources.parse(url)
    for text in (repr(spec), spec.display_name, str(spec), redact.redact_uri(url)):
        for s in secrets:
            assert s not in text, text


def test_stderr_filter_holds_a_url_cut_between_two_writes_and_keeps_crash_reports(tmp_path):
    code = textwrap.dedent("""
        import os, signal, time
        from edgekit import redact
        redact.protect("rtsp://admin:FILTERSECRET@cam/s")
        os.write(2, b"opening rtsp://admin:FILTERSE")
        time.sleep(0.3)  # longer than the filter's idle flush
        os.write(2, b"CRET@cam/s failed\\n")
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGSEGV)
    """)
    res = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "FILTERSE" not in res.stderr and "opening rtsp://***@cam/s failed" in res.stderr, res.stderr
    assert "Fatal Python error: Segmentation fault" in res.stderr  # faulthandler writes past the filter


def test_redaction_keeps_ordinary_text():
    line = "[ WARN:0@0.008] global cap.cpp:172 open rtsp://cam.local:554/s?quality=high"
    assert redact.redact(line) == line
    assert redact.redact("rtsp://cam/s?password=x: check") == "rtsp://cam/s?password=***: check"


def test_stderr_filter_masks_what_a_c_library_writes(tmp_path):
    """Writes straight to file descriptor 2 (as OpenCV and FFmpeg do) are masked once a URL with
    a secret was opened."""
    code = textwrap.dedent("""
        import os, sys
        from edgekit import redact
        redact.protect("rtsp://admin:hunter22@cam.local/s")
        os.write(2, b"[ffmpeg] cannot open rtsp://admin:hunter22@cam.local/s\\n")
        os.write(2, b"raw secret hunter22 and decoded\\n")
        print("python says hunter22", file=sys.stderr)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "hunter22" not in res.stderr
    assert "[ffmpeg] cannot open rtsp://***@cam.local/s" in res.stderr
    assert res.stderr.count("***") == 3


def test_json_lines_name_the_file_for_image_sources(folder, clf):
    class Buf:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    buf = Buf()
    js = sinks.JsonLines(buf)  # type: ignore[arg-type]
    for r in Stream(str(folder / "001.png"), clf, StreamOptions(topk=1)):
        js.write(r)
    rec = json.loads(buf.text)
    assert rec["frame"] == 0 and Path(rec["file"]).name == "001.png"
