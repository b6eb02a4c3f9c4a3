"""Opening a source: what OpenCV, FFmpeg and GStreamer print while it fails goes into edgekit's one-line
error, not before it; what other threads print meanwhile still comes out; an open that hangs shows what
the camera stack said after a few seconds; debugging the user switched on is never captured; a C
extension writing much while it holds the GIL cannot deadlock the capture. A camera node, file or folder
that is not there, or a file that cannot be decoded, is what was given (exit 2); a camera that is there
but cannot be opened, a stream's server and a source lost on the way are not (exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2")

from edgekit.errors import UsageError  # noqa: E402
from edgekit.runtime import liblog, sources, streaming  # noqa: E402

_SCRIPT = Path(sys.executable).with_name("edgekit")
EDGEKIT = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "edgekit"]
LIBRARY = ("[ WARN", "[ERROR", "[ INFO", "[DEBUG")


def _v4l2() -> bool:
    return sys.platform.startswith("linux") and cv2.videoio_registry.hasBackend(cv2.CAP_V4L2)


no_v4l2 = pytest.mark.skipif(not _v4l2() or Path("/dev/video57").exists(),
                             reason="needs OpenCV's V4L2 backend (Linux) and no /dev/video57")


DEBUG_ENV = ("GST_DEBUG", "OPENCV_VIDEOIO_DEBUG", "OPENCV_LOG_LEVEL")  # the user's: capture stays off


def _env(**extra: str) -> dict[str, str]:
    """This environment without the variables that switch capture off (a developer's GST_DEBUG), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DEBUG_ENV}
    env.update(extra)
    return env


def _run(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=timeout,
                         env=_env(**env))
    # decoded by hand: text=True would turn the status line's \r into \n
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


@no_v4l2
def test_a_camera_that_does_not_exist_is_one_clear_line_without_opencvs_warnings_first(googlenet_bundle):
    res = subprocess.run(EDGEKIT + ["run", str(googlenet_bundle), "--camera", "/dev/video57", "--max-frames", "1"],
                         capture_output=True, text=True, timeout=120)
    lines = res.stderr.splitlines()
    assert res.returncode == 2, res.stderr  # a camera that is not there is what was given
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert not [ln for ln in lines if ln.lstrip().startswith(LIBRARY)], res.stderr  # before it, or anywhere
    err = lines[errors[0]]
    assert err.startswith("error: cannot open /dev/video57 (") and "ls /dev/video*" in err, err
    # what OpenCV said is kept, shortened, as the reason
    assert "(VIDEOIO(V4L2:/dev/video57): can't open camera by index)" in err, err


@no_v4l2
def test_opens_in_many_threads_keep_every_other_line_and_give_each_its_own_reason():
    """Six cameras opened side by side (as multistream does) while another thread writes lines: each error
    names its own camera's OpenCV line, no OpenCV line reaches stderr, none of the other lines is lost, and
    fd 2 is what it was."""
    res = _run("""
        import os, sys, threading, time
        from edgekit.runtime import sources
        fd2 = os.readlink("/proc/self/fd/2")
        stop = threading.Event()
        def talk():
            i = 0
            while not stop.is_set():
                print(f"edgekit line {i}", file=sys.stderr, flush=True)
                os.write(2, f"raw line {i}\\n".encode())
                i += 1
                time.sleep(0.001)
            print(f"talked {i}")
        t = threading.Thread(target=talk)
        t.start()
        errors = {}
        def open_one(n):
            try:
                sources.Reader(sources.parse(f"/dev/video{n}"))
            except sources.SourceError as e:
                errors[n] = (str(e), e.exit_code)
        for _ in range(3):
            opens = [threading.Thread(target=open_one, args=(50 + k,)) for k in range(6)]
            for o in opens:
                o.start()
            for o in opens:
                o.join()
        time.sleep(0.1)
        stop.set()
        t.join()
        for n, (text, code) in sorted(errors.items()):
            print(n, code, text)
        print("fd2", os.readlink("/proc/self/fd/2") == fd2)
        os.write(2, b"after\\n")
    """)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert "fd2 True" in out, res.stdout
    talked = int(next(ln for ln in out if ln.startswith("talked")).split()[1])
    assert talked > 0
    err = res.stderr.splitlines()
    assert not [ln for ln in err if ln.lstrip().startswith(LIBRARY)], res.stderr
    # every line, none lost or doubled; the order is kept only within a capture: a line written just before the
    # last open restores fd 2 is passed on from the capture file after lines written straight to fd 2 just after
    def number(ln: str) -> int:
        return int(ln.rsplit(" ", 1)[1])

    for kind in ("edgekit line", "raw line"):
        assert sorted((ln for ln in err if ln.startswith(kind)), key=number) == [f"{kind} {i}" for i in range(talked)]
    assert err[-1] == "after"
    rows = [ln.split(" ", 2) for ln in out if ln[:2].isdigit()]
    assert len(rows) == 6
    for n, code, text in rows:
        assert code == "2" and text.startswith(f"cannot open /dev/video{n} (VIDEOIO(V4L2:/dev/video{n}): "), text


def test_library_lines_are_kept_for_the_error_and_dropped_on_success():
    """The capture itself, on real fd 2: library lines (OpenCV, FFmpeg, GStreamer) go to the caller, the rest
    (a status line ending in \\r, edgekit's lines) goes on; a partial library line waits for its end."""
    res = _run(r"""
        import os, time
        from edgekit.runtime import sources
        with sources.LIBRARY_LOG.capture() as said:
            os.write(2, b"[ WARN:0@0.050] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video9): can't open\n")
            os.write(2, b"[rtsp @ 0x55d0c0a1b2c0] method DESCRIBE failed: 401 Unauthorized\n")
            os.write(2, b"(edgekit:123): GStreamer-WARNING **: 10:00:00.000: a warning\n")
            os.write(2, b"status 12 fps\r")
            os.write(2, b"[ERROR:0@0.060] global cap.cpp:1 op")
            time.sleep(0.2)  # longer than the quiet after which a partial line goes on
            os.write(2, b"en half a line\n")
            os.write(2, b"error: edgekit's own\n")
        for line in said:
            print("said", line)
        os.write(2, b"[ WARN:0@1.000] after the window it is not ours to hide\n")
    """)
    assert res.returncode == 0, res.stderr
    said = [ln[5:] for ln in res.stdout.splitlines()]
    assert said == ["[ WARN:0@0.050] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video9): can't open",
                    "[rtsp @ 0x55d0c0a1b2c0] method DESCRIBE failed: 401 Unauthorized",
                    "(edgekit:123): GStreamer-WARNING **: 10:00:00.000: a warning",
                    "[ERROR:0@0.060] global cap.cpp:1 open half a line"], res.stdout
    assert res.stderr == ("status 12 fps\rerror: edgekit's own\n"
                          "[ WARN:0@1.000] after the window it is not ours to hide\n"), repr(res.stderr)


def test_a_line_cut_in_two_by_a_library_line_still_comes_out_whole():
    """print() writes its text, then its newline: another thread's OpenCV line may land in between. The
    start goes on, the library line is kept, the newline follows: the terminal shows the line whole."""
    res = _run(r"""
        import os
        from edgekit.runtime import sources
        with sources.LIBRARY_LOG.capture() as said:
            os.write(2, b"edgekit line 9")
            os.write(2, b"[ WARN:9@0.017] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video53): can't open\n")
            os.write(2, b"\n")
        print(said)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "edgekit line 9\n", repr(res.stderr)
    kept = "[ WARN:9@0.017] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video53): can't open"
    assert res.stdout == f"{[kept]}\n", res.stdout


def test_the_reason_is_the_line_that_names_the_source_shortened_and_masked():
    cam = sources.parse("/dev/video7")
    lines = ["[ WARN:0@0.010] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video7): can't open camera by index",
             "[ WARN:0@0.010] global cap.cpp:475 open VIDEOIO(V4L2): backend is generally available but can't be "
             "used to capture by index"]
    assert sources.library_reason(lines, cam) == "VIDEOIO(V4L2:/dev/video7): can't open camera by index"
    assert sources.library_reason([], cam) == ""
    url = sources.parse("rtsp://admin:hunter22@cam.local/s")
    said = ["[rtsp @ 0x55d0c0a1b2c0] method DESCRIBE failed: 401 Unauthorized",
            "[ WARN:0@30.1] global cap_ffmpeg_impl.hpp:453 _opencv_ffmpeg_interrupt_callback Stream timeout "
            "triggered after 30000 ms for rtsp://admin:hunter22@cam.local/s"]
    why = sources.library_reason(said, url)
    assert "hunter22" not in why and why.startswith("Stream timeout triggered after 30000 ms for rtsp://***@")
    assert len(sources.library_reason(["[ WARN:0@1] x " + "y" * 400], cam)) == 150


def test_what_was_given_exits_2_and_a_lost_source_1(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.SourceInputError, match="no images in") as e:
        sources.Reader(sources.parse(str(tmp_path / "empty")))
    assert e.value.exit_code == UsageError.exit_code == 2
    bad = tmp_path / "clip.avi"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(sources.SourceInputError, match=r"cannot open .*clip\.avi.*: is it a video file") as e:
        sources.Reader(sources.parse(str(bad)))
    assert e.value.exit_code == 2
    assert issubclass(sources.SourceInputError, sources.SourceError)  # a reconnect still tries again
    assert sources.SourceError("source lost and not back after 5 attempts").exit_code == 1


def _watched(code: str, trigger: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float | None]:
    """Run ``code`` in a child, reading its real stderr as it comes; once a stderr line contains ``trigger``,
    create the file named by the child's ``GO`` (the child waits for it). Returns the run and when (after the
    start) the trigger was seen, None if never."""
    go = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / f"edgekit-go-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", f"GO = {str(go)!r}\n" + textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    t0 = time.monotonic()
    err: list[bytes] = []
    seen: list[float] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in iter(proc.stderr.readline, b""):
            err.append(line)
            if not seen and trigger.encode() in line:
                seen.append(time.monotonic() - t0)
                go.touch()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killer = threading.Timer(timeout, proc.kill)  # stderr is the thread's alone: no communicate()
    killer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
        reader.join(timeout=5)
    finally:
        killer.cancel()
        go.unlink(missing_ok=True)
    if proc.returncode == -9:
        pytest.fail(f"the child ran past {timeout} s")
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), b"".join(err).decode())
    return res, (seen[0] if seen else None)


ARGUS = ("(Argus) Error FileOperationFailed: Connecting to nvargus-daemon failed: No such file or directory "
         "(in src/rpc/socket/client/SocketClientDispatch.cpp, function openSocketConnection(), line 204)")


def test_an_open_that_hangs_shows_what_the_camera_stack_said_while_it_still_hangs():
    """A CSI open blocking in cv2.VideoCapture (JetPack 4/5: no GStreamer open timeout before OpenCV 4.7):
    after the watchdog's delay, the Argus line held so far reaches the real stderr while the open still
    blocks (the parent sees it and only then lets the open return), followed by edgekit's note; other opens
    meanwhile are not captured either; the open's error still carries the line, exit 1."""
    res, seen = _watched(f"""
        import os, threading, time
        from edgekit.runtime import liblog, sources
        liblog.OPEN_WATCHDOG_S = 0.5
        sources.has_gstreamer = lambda cv2: True
        class Closed:
            def isOpened(self): return False
            def release(self): pass
        def hang(cv2, spec, size):  # stands in for cv2.VideoCapture blocking in nvarguscamerasrc
            os.write(2, {(ARGUS + chr(10)).encode()!r})
            t = time.monotonic()
            while time.monotonic() - t < 7 and not os.path.exists(GO):
                time.sleep(0.02)
            print("released by the parent" if os.path.exists(GO) else "never released", flush=True)
            def other():
                with sources.LIBRARY_LOG.capture("/dev/video3") as said:
                    os.write(2, b"[ WARN:0@9.000] global cap_v4l.cpp:1 open VIDEOIO(V4L2:/dev/video3): other\\n")
                print("other kept", said, flush=True)
            o = threading.Thread(target=other)
            o.start()
            o.join()
            return Closed()
        sources._video_capture = hang
        try:
            sources.Reader(sources.parse("csi://0"))
        except sources.SourceError as e:
            print("exit", e.exit_code, e, flush=True)
    """, trigger="Connecting to nvargus-daemon failed", timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == "released by the parent", (res.stdout, res.stderr)  # seen before the open returned
    assert seen is not None and seen < 6, seen
    err = res.stderr.splitlines()
    assert err[:2] == [ARGUS, "note: still opening csi://0 after 0.5 s (what the camera stack said is above)"], err
    assert "[ WARN:0@9.000] global cap_v4l.cpp:1 open VIDEOIO(V4L2:/dev/video3): other" in err, err
    assert out[1] == "other kept []", out
    assert out[2].startswith("exit 1 cannot open csi://0 ((Argus) Error FileOperationFailed: Connecting to "
                             "nvargus-daemon failed"), out
    assert "sudo systemctl restart nvargus-daemon" in out[2], out


def test_other_lines_reach_stderr_while_the_open_is_under_way():
    """A line that is not the libraries' goes on within a poll or two, not when the open ends."""
    res, seen = _watched("""
        import os, time
        from edgekit.runtime import sources
        with sources.LIBRARY_LOG.capture() as said:
            os.write(2, b"[ WARN:0@0.100] global cap.cpp:1 open held\\n")
            os.write(2, b"edgekit line while opening\\n")
            t = time.monotonic()
            while time.monotonic() - t < 4 and not os.path.exists(GO):
                time.sleep(0.01)
            print("released" if os.path.exists(GO) else "never released", round(time.monotonic() - t, 2))
        print(said)
    """, trigger="edgekit line while opening", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("released "), res.stdout
    assert res.stderr == "edgekit line while opening\n", repr(res.stderr)
    assert res.stdout.splitlines()[1] == "['[ WARN:0@0.100] global cap.cpp:1 open held']"


@pytest.mark.parametrize("var", DEBUG_ENV)
def test_debugging_the_user_switched_on_is_not_captured(var):
    """GST_DEBUG, OPENCV_VIDEOIO_DEBUG or OPENCV_LOG_LEVEL set: fd 2 is left alone, every library line comes out
    where it is written; set but empty, the capture works as usual."""
    code = """
        import os
        from edgekit.runtime import sources
        before = os.readlink("/proc/self/fd/2")
        with sources.LIBRARY_LOG.capture() as said:
            during = os.readlink("/proc/self/fd/2")
            os.write(2, b"[ WARN:0@0.010] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video9): can't open\\n")
            os.write(2, b"0:00:00.016 1234 0x55d0 WARN v4l2src gstv4l2src.c:100: a debug line\\n")
        print(during == before, said)
    """
    line = "[ WARN:0@0.010] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video9): can't open"
    gst = "0:00:00.016 1234 0x55d0 WARN v4l2src gstv4l2src.c:100: a debug line"
    on = _run(code, **{var: "2" if var == "GST_DEBUG" else "DEBUG" if var == "OPENCV_LOG_LEVEL" else "1"})
    assert on.returncode == 0, on.stderr
    assert on.stdout == "True []\n" and on.stderr == f"{line}\n{gst}\n", (on.stdout, on.stderr)
    empty = _run(code, **{var: ""})
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == f"False {[line, gst]}\n" and empty.stderr == "", (empty.stdout, empty.stderr)


def test_a_c_extension_writing_much_while_it_holds_the_gil_does_not_deadlock():
    """200 KB written to fd 2 through ctypes.PyDLL (the GIL held, as a C extension's own writes are) inside a
    capture: more than a pipe holds, so with a pipe drained by a Python thread this never returned. The
    plain lines come out in order, the library lines are kept (the newest KEEP)."""
    code = """
        import ctypes, time
        from edgekit.runtime import sources
        libc = ctypes.PyDLL(None)
        plain = b"".join(b"plain %05d " % i + b"x" * 90 + b"\\n" for i in range(2000))
        lib = b"".join(b"[ WARN:0@0.%05d] global cap.cpp:1 " % i + b"y" * 70 + b"\\n" for i in range(2000))
        t = time.monotonic()
        with sources.LIBRARY_LOG.capture() as said:
            wrote = libc.write(2, plain, len(plain)), libc.write(2, lib, len(lib))
        print(wrote == (len(plain), len(lib)), len(plain) > 200_000, len(said), said[-1][:25], time.monotonic() - t,
              sep="|")
    """
    try:
        res = _run(code, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a 200 KB write to fd 2 with the GIL held did not return in 30 s: the capture deadlocks")
    assert res.returncode == 0, res.stderr
    ok, big, kept, last, secs = res.stdout.split("|")
    assert (ok, big, kept) == ("True", "True", str(liblog.LibraryLog.KEEP)), res.stdout
    assert last == "[ WARN:0@0.01999] global ", res.stdout
    assert float(secs) < 5, res.stdout
    assert res.stderr.splitlines() == [f"plain {i:05d} " + "x" * 90 for i in range(2000)]


def test_a_filter_redirecting_stderr_on_top_of_the_capture_is_pointed_back():
    """The credential filter (edgekit.redact) installed while an open is captured (multistream opening an
    RTSP source with a password beside a camera) copies the captured fd 2 as its output: when the capture
    ends that copy is pointed back at the real stderr, so the filter's lines still come out, masked, and
    no descriptor is left on the deleted file (which would grow with all of stderr)."""
    res = _run("""
        import os, time
        from edgekit import redact
        from edgekit.runtime import sources
        with sources.LIBRARY_LOG.capture() as said:
            redact.protect("rtsp://admin:hunter22@cam.local/s")
            os.write(2, b"inside: hunter22\\n")
        os.write(2, b"after: hunter22\\n")
        time.sleep(0.6)
        left = []
        for n in os.listdir("/proc/self/fd"):
            try:
                left.append(os.readlink(f"/proc/self/fd/{n}"))
            except OSError:  # the listing's own descriptor, closed since
                pass
        print([p for p in left if "edgekit-stderr" in p])
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "[]\n", res.stdout
    assert res.stderr == "inside: ***\nafter: ***\n", repr(res.stderr)


class _Closed:
    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return False

    def release(self) -> None:
        pass


@pytest.fixture
def unopenable(monkeypatch):
    """cv2.VideoCapture opens nothing; /dev/videoN is looked for in a folder of the test's."""
    monkeypatch.setattr(sources, "_video_capture", lambda cv2, spec, size: _Closed())
    monkeypatch.setattr(sources, "has_gstreamer", lambda cv2: True)


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="camera index N is /dev/videoN on Linux")


@linux
def test_a_camera_that_is_there_but_cannot_be_opened_is_exit_1_and_says_what_to_check(unopenable, monkeypatch,
                                                                                      tmp_path):
    monkeypatch.setattr(sources, "V4L2_NODE", str(tmp_path / "video{}"))
    (tmp_path / "video3").write_bytes(b"")
    with pytest.raises(sources.SourceError) as e:
        sources.Reader(sources.parse("3"))
    assert type(e.value) is sources.SourceError and e.value.exit_code == 1
    assert str(e.value).startswith("cannot open /dev/video3: is another program using it? (fuser ")
    assert f"fuser {tmp_path / 'video3'})" in str(e.value)
    with pytest.raises(sources.SourceInputError) as e:  # no such node: what was given
        sources.Reader(sources.parse("/dev/video4"))
    assert e.value.exit_code == 2 and f"there is no {tmp_path / 'video4'}" in str(e.value)
    assert "ls /dev/video*" in str(e.value)


@linux
@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any node")
def test_a_camera_node_not_ours_to_read_is_exit_1(unopenable, monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "V4L2_NODE", str(tmp_path / "video{}"))
    (tmp_path / "video3").write_bytes(b"")
    (tmp_path / "video3").chmod(0)
    with pytest.raises(sources.SourceError, match="add yourself to the video group") as e:
        sources.Reader(sources.parse("3"))
    assert e.value.exit_code == 1


def test_a_csi_camera_that_cannot_be_opened_is_exit_1_and_names_nvargus_daemon(unopenable):
    with pytest.raises(sources.SourceError) as e:
        sources.Reader(sources.parse("csi://0"))
    assert type(e.value) is sources.SourceError and e.value.exit_code == 1
    assert str(e.value).startswith("cannot open csi://0: ") and "sudo systemctl restart nvargus-daemon" in str(e.value)
    with pytest.raises(sources.SourceError) as e:  # a stream's server: exit 1 as before
        sources.Reader(sources.parse("rtsp://cam.local/s"))
    assert type(e.value) is sources.SourceError and e.value.exit_code == 1


def test_a_video_file_gone_before_it_opens_and_every_frame_on_a_live_source_are_exit_2(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    spec = sources.parse(str(clip))
    clip.unlink()
    with pytest.raises(sources.SourceInputError, match="the file is not there") as e:
        sources.Reader(spec)
    assert e.value.exit_code == 2
    with pytest.raises(sources.SourceInputError, match="drop --every-frame") as e:
        streaming._Opened(sources.parse("csi://0"), streaming.StreamOptions(every_frame=True), print, None)
    assert e.value.exit_code == 2
