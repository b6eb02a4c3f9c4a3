"""Opening a source: what OpenCV, FFmpeg and GStreamer print while it fails goes into edgekit's one-line
error, not before it; what other threads print meanwhile still comes out; a camera, file or folder that
cannot be opened is what was given (exit 2), a source lost on the way is not (exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2")

from edgekit import sources  # noqa: E402
from edgekit.errors import UsageError  # noqa: E402

_SCRIPT = Path(sys.executable).with_name("edgekit")
EDGEKIT = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "edgekit"]
LIBRARY = ("[ WARN", "[ERROR", "[ INFO", "[DEBUG")


def _v4l2() -> bool:
    return sys.platform.startswith("linux") and cv2.videoio_registry.hasBackend(cv2.CAP_V4L2)


no_v4l2 = pytest.mark.skipif(not _v4l2() or Path("/dev/video57").exists(),
                             reason="needs OpenCV's V4L2 backend (Linux) and no /dev/video57")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=120)
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
        from edgekit import sources
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
    assert [ln for ln in err if ln.startswith("edgekit line")] == [f"edgekit line {i}" for i in range(talked)]
    assert [ln for ln in err if ln.startswith("raw line")] == [f"raw line {i}" for i in range(talked)]
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
        from edgekit import sources
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
