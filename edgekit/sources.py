"""Frame sources (video tier): cameras, CSI, RTSP, files, image folders.

A live source is read by a capture thread that keeps only the newest frame, so a slow model
never processes stale frames; frames it overwrites are counted as dropped. Files can be read
frame by frame instead (``every_frame``) for offline runs.
"""

from __future__ import annotations

import glob
import os
import re
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import EdgekitError, UsageError
from edgekit.images import IMAGE_SUFFIXES, read_image
from edgekit.redact import protect, redact, redact_uri, secrets_of

__all__ = ["Frame", "SourceSpec", "SourceError", "SourceInputError", "Reader", "LatestFrame", "Reconnect", "parse",
           "redact", "every_frame"]


class SourceError(EdgekitError):
    """A source cannot be opened, or was lost and did not come back (exit 1: a stream's network, a camera
    lost on the way; running again may succeed)."""


class SourceInputError(SourceError):
    """What was given as a source is wrong: a camera, video file or folder that cannot be opened or holds no
    images, an option the source cannot take. Fix the command (exit 2, as for any input)."""

    exit_code = UsageError.exit_code


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8
    index: int  # frame number from the source (0-based; an image's place in the sorted folder)
    captured: float  # time.perf_counter() when it was read
    name: str | None = None  # the image file it came from (folders and globs)


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "v4l2", "csi", "rtsp", "file", "images"
    target: str = field(repr=False)  # device index/path, pipeline, URL (credentials: never printed), file or pattern
    live: bool
    display_name: str


def csi_pipeline(sensor: int, width: int, height: int, fps: int, sensor_mode: int | None = None) -> str:
    # drop=true max-buffers=1: without it frames queue in appsink and latency grows
    mode = f" sensor-mode={sensor_mode}" if sensor_mode is not None else ""
    return (f"nvarguscamerasrc sensor-id={sensor}{mode} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1, format=NV12 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
            "video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


def parse(spec: str | int, width: int = 1280, height: int = 720, fps: int = 30,
          sensor_mode: int | None = None) -> SourceSpec:
    """What the user typed -> a source (the URIs Jetson users know from jetson-inference)."""
    s = str(spec).strip()
    if s.isdigit():
        return SourceSpec("v4l2", s, True, f"/dev/video{s}")
    m = re.fullmatch(r"(?:v4l2://)?/dev/video(\d+)", s)
    if m:
        return SourceSpec("v4l2", m.group(1), True, f"/dev/video{m.group(1)}")
    m = re.fullmatch(r"csi://(\d+)", s)
    if m:
        return SourceSpec("csi", csi_pipeline(int(m.group(1)), width, height, fps, sensor_mode), True, s)
    if s.lower().startswith("file://"):
        s = s[len("file://"):]
    elif re.match(r"(?i)[a-z][a-z0-9+.-]*://", s):  # rtsp, rtsps, http(s) MJPEG, rtmp, srt, udp ... any case
        return SourceSpec("rtsp", s, True, redact_uri(s))
    p = Path(s)
    if p.is_dir():
        return SourceSpec("images", str(p), False, s)
    if p.is_file():  # before the glob test: a file may be named cam[1].avi
        kind = "images" if p.suffix.lower() in IMAGE_SUFFIXES else "file"
        return SourceSpec(kind, s, False, s)
    if any(ch in s for ch in "*?["):
        return SourceSpec("images", s, False, redact(s, loose=True))
    raise UsageError(f"source {redact(s, loose=True)!r} is neither a camera (0, /dev/video0, csi://0), a stream URL "
                     "(rtsp://...), nor an existing video file, image folder or glob")


def has_gstreamer(cv2: Any) -> bool:
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\w+)", info)
    return bool(m and m.group(1).upper() == "YES")


def _quiet_opencv(cv2: Any) -> None:
    """OpenCV writes INFO and DEBUG lines (URLs included) to stdout, which carries the JSON results
    and is not filtered: with a secret in the URL, nothing above warnings (which go to stderr)."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None or not hasattr(log, "getLogLevel"):
        return
    if log.getLogLevel() > log.LOG_LEVEL_WARNING:
        log.setLogLevel(log.LOG_LEVEL_WARNING)


# Lines the video libraries write to stderr (C and C++, file descriptor 2), by how they start: OpenCV's log
# ([ WARN:0@0.010] ...), FFmpeg's ([rtsp @ 0x5581...]), GLib/GStreamer's ((edgekit:123): GStreamer-WARNING),
# GST_DEBUG's (0:00:00.01 123 0x55 WARN ...), OpenCV's VIDEOIO debug, libv4l, and Jetson's Argus/NvMM.
_LIBRARY_LINE = re.compile(
    r"^\s*(?:\[\s*(?:FATAL|ERROR|WARN|INFO|DEBUG|VERBOSE)\s*:\d"
    r"|\[[\w:,./ -]+ @ (?:0x)?[0-9a-fA-F]+\]"
    r"|\(\S+:\d+\): [\w-]+-(?:WARNING|CRITICAL|ERROR|INFO|DEBUG|Message)"
    r"|(?:\x1b\[[\d;]*m)*\d+:\d\d:\d\d\.\d+ "
    r"|VIDEOIO|OpenCV|GStreamer|libv4l|VIDIOC_|nvbuf|NvBuf|NvMM|Argus|\(Argus\)|SCF:|Opening in BLOCKING MODE)")
_FAILURE = re.compile(r"(?i)can'?t|cannot|could ?n[o']t|fail|error|unable|refused|timed? ?out|not found|no such|"
                      r"denied|unauthori[sz]ed|invalid|busy")
_OPENCV_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s+(?:global\s+)?(?:\S+\.\w+(?::\d+|\s\(\d+\))\s+\S+\s+)?")
_FFMPEG_PREFIX = re.compile(r"^\s*\[([\w:,./ -]+) @ (?:0x)?[0-9a-fA-F]+\]\s*")


class LibraryLog:
    """While a source opens, file descriptor 2 goes into a pipe read by a thread: the lines the video
    libraries write there (OpenCV's warnings, FFmpeg, GStreamer) are kept for the open's error message
    and otherwise dropped; every other line (edgekit's own, from any thread; a status line) goes on to
    stderr at once. Opens in several threads share one redirection (multistream opens its sources side by
    side); the last one out restores fd 2. Where something else redirected fd 2 meanwhile (the credential
    filter of :mod:`edgekit.redact`), the pipe stays and passes everything on, for good."""

    KEEP = 256  # library lines remembered (only the newest matter: those of the opens under way)

    def __init__(self) -> None:
        self._gate = threading.Lock()  # starts and stops
        self._cond = threading.Condition()  # the lines, the reader's progress
        self._users = 0
        self._seq = 0  # library lines seen so far
        self._lines: deque[tuple[int, str]] = deque(maxlen=self.KEEP)
        self._marks: set[str] = set()
        self._pipe: tuple[int, int] | None = None  # (st_dev, st_ino) of the pipe fd 2 was pointed at
        self._real = -1
        self._thread: threading.Thread | None = None
        self._passing = threading.Event()  # the running thread's: pass everything on
        self._mark_no = 0

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """``with capture() as said:`` the library lines written inside the block are in ``said`` after it."""
        said: list[str] = []
        start = self._enter()
        try:
            yield said
        finally:
            if start is not None:
                said.extend(self._leave(start))

    def _enter(self) -> int | None:
        with self._gate:
            if self._users == 0 and not self._start():
                return None
            self._users += 1
            with self._cond:
                return self._seq

    def _leave(self, start: int) -> list[str]:
        self._sync()
        with self._cond:
            lines = [text for n, text in self._lines if n >= start]
        with self._gate:
            self._users -= 1
            if self._users == 0:
                self._stop()
        return lines

    def _ours(self) -> bool:
        try:
            st = os.fstat(2)
        except OSError:
            return False
        return self._pipe == (st.st_dev, st.st_ino)

    def _start(self) -> bool:
        try:
            os.fstat(2)
        except OSError:  # no stderr: nothing is printed anyway
            return False
        _flush_stderr()
        real = os.dup(2)
        r, w = os.pipe()
        st = os.fstat(w)
        os.dup2(w, 2)
        os.close(w)
        self._pipe, self._real = (st.st_dev, st.st_ino), real
        self._passing = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(r, real, self._passing), name="edgekit-library-log",
                                        daemon=True)
        self._thread.start()
        return True

    def _stop(self) -> None:
        _flush_stderr()
        if self._ours():
            os.dup2(self._real, 2)  # the pipe's only writer closes: the thread passes on the rest, closes, ends
            if self._thread is not None:
                self._thread.join(timeout=1.0)  # a child holding the pipe must not delay the run
        # whatever still comes through the pipe passes on: a child that inherited it, or fd 2 redirected on
        # top of ours meanwhile (the pipe then carries all of stderr)
        self._passing.set()
        self._pipe, self._real, self._thread = None, -1, None

    def _sync(self) -> None:
        """Wait until the thread has read everything written to fd 2 so far (a mark through the pipe)."""
        if not self._ours():
            time.sleep(0.05)
            return
        _flush_stderr()
        with self._cond:
            self._mark_no += 1
            mark = f"\x00edgekit-mark-{os.getpid()}-{self._mark_no}"
        try:
            os.write(2, (mark + "\n").encode())
        except OSError:
            return
        with self._cond:
            self._cond.wait_for(lambda: mark in self._marks, timeout=2.0)
            self._marks.discard(mark)

    def _run(self, r: int, real: int, passing: threading.Event) -> None:
        buf = b""
        held: float | None = None
        try:
            while True:
                ready, _, _ = select.select([r], [], [], 0.05)
                if not ready:  # quiet: a partial line goes on now (a status line ends in \r), unless it is
                    if buf:    # the start of a library line, which waits up to 1 s for its end
                        now = time.monotonic()
                        if not passing.is_set() and _LIBRARY_LINE.match(_text(buf)) and (
                                held is None or now - held < 1.0):
                            held = held or now
                            continue
                        self._line(buf, real, passing)
                        buf, held = b"", None
                    continue
                chunk = os.read(r, 65536)
                if not chunk:
                    if buf:
                        self._line(buf, real, passing)
                    return
                buf += chunk
                *whole, buf = re.split(rb"(?<=[\r\n])", buf)
                for piece in whole:
                    self._line(piece, real, passing)
                if whole:
                    held = None
        finally:
            os.close(r)
            os.close(real)

    def _line(self, data: bytes, real: int, passing: threading.Event) -> None:
        text = _text(data).rstrip("\r\n")
        if text.startswith("\x00edgekit-mark-"):
            with self._cond:
                self._marks.add(text)
                self._cond.notify_all()
            return
        if not passing.is_set() and _LIBRARY_LINE.match(text):
            with self._cond:
                self._lines.append((self._seq, text))
                self._seq += 1
            return
        try:
            os.write(real, data)
        except OSError:
            pass


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _flush_stderr() -> None:
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


LIBRARY_LOG = LibraryLog()


def library_reason(lines: list[str], spec: SourceSpec, limit: int = 150) -> str:
    """The line of what the libraries said that best explains a failed open, shortened ('' if none):
    one naming the source and saying it failed, else one that failed, else the last."""
    if not lines:
        return ""
    names = [spec.display_name]
    if spec.kind == "v4l2":
        names.append(f"/dev/video{spec.target}")
    elif spec.kind == "file":
        names.append(Path(spec.target).name)

    def score(line: str) -> int:
        return 2 * any(n and n in line for n in names) + bool(_FAILURE.search(line))

    best = max(reversed(lines), key=score)  # ties: the last (the libraries' conclusion)
    text = _FFMPEG_PREFIX.sub(lambda m: f"[{m.group(1)}] ", _OPENCV_PREFIX.sub("", best)).strip()
    for secret in secrets_of(spec.target):
        text = text.replace(secret, "***")
    text = redact(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Reader:
    """Reads frames from one source in order; reopen() after a failure."""

    def __init__(self, spec: SourceSpec, width: int | None = None, height: int | None = None,
                 fps: int | None = None, on_skip: Callable[[Path, str], None] | None = None) -> None:
        """``on_skip(path, why)``: told of each image file that cannot be read (it is skipped)."""
        self.spec = spec
        self.size = (width, height, fps)
        self._cap: Any = None
        self._images: list[Path] = []
        self._next = 0
        self.fps: float = 0.0
        self.skipped: list[tuple[Path, str]] = []  # image files that could not be read, and why
        self._on_skip = on_skip
        self.open()

    def open(self) -> None:
        spec = self.spec
        if spec.kind == "images":
            p = Path(spec.target)
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            elif p.is_file():
                files = [p]
            else:
                files = sorted(Path(f) for f in glob.glob(spec.target) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise SourceInputError(f"no images in {spec.display_name}: give a folder or glob of "
                                       f"{', '.join(sorted(IMAGE_SUFFIXES))} files")
            self._images = files
            return
        cv2 = require("cv2", "reading cameras and video")
        if spec.kind == "rtsp" and protect(spec.target):  # OpenCV and FFmpeg print the URL they fail on
            _quiet_opencv(cv2)
        if spec.kind == "csi" and not has_gstreamer(cv2):
            raise SourceError(
                "csi:// cameras need OpenCV built with GStreamer, and this cv2 has none (pip's OpenCV wheels lack "
                "it); on a Jetson use JetPack's OpenCV: pip uninstall opencv-python opencv-python-headless"
            )
        # what OpenCV, FFmpeg and GStreamer print while opening goes into the error, not before it
        with LIBRARY_LOG.capture() as said:
            if spec.kind == "v4l2":
                cap = cv2.VideoCapture(int(spec.target), cv2.CAP_V4L2)
                if cap.isOpened():
                    w, h, fps = self.size
                    if w and h:
                        cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
                        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
                    if fps:
                        cap.set(cv2.CAP_PROP_FPS, fps)
                    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # often ignored (opencv #10671): the thread keeps the newest
            elif spec.kind == "csi":
                with _ARGUS:  # one Argus session opened at a time (cameras reconnecting together after a restart)
                    cap = cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
            else:
                cap = cv2.VideoCapture(spec.target)
            opened = cap.isOpened()
            if not opened:
                cap.release()
        if not opened:
            hint = {"v4l2": "is the camera connected (ls /dev/video*) and not used by another program?",
                    "csi": "is the sensor connected? 'Failed to create CaptureSession': sudo systemctl restart "
                           "nvargus-daemon",
                    "rtsp": "check the URL, the network and the credentials",
                    "file": "is it a video file OpenCV can decode?"}[spec.kind]
            why = library_reason(said, spec)
            # a stream URL may be right and its server down (exit 1); a camera, file or folder is what was given
            cls = SourceError if spec.kind == "rtsp" else SourceInputError
            raise cls(f"cannot open {spec.display_name}{f' ({why})' if why else ''}: {hint}")
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._cap = cap

    def grab(self) -> bool:
        """Advance to the next frame without decoding it; False at the end or on failure."""
        if self._images:
            if self._next >= len(self._images):
                return False
            self._next += 1
            return True
        return bool(self._cap.grab())

    def retrieve(self) -> np.ndarray | None:
        """Decode the frame grab() reached (None if it cannot be: an unreadable image is skipped)."""
        if self._images:
            return self._read_image(self._images[self._next - 1])
        ok, frame = self._cap.retrieve()
        return frame if ok else None

    def _read_image(self, path: Path) -> np.ndarray | None:
        try:
            return read_image(path)
        except Exception as exc:  # noqa: BLE001 - deleted, unreadable, corrupt, too large, a decoder's own error
            why = str(exc) if isinstance(exc, EdgekitError) else f"cannot decode image {path}: a corrupt or empty file"
            self.skipped.append((path, why))
            if self._on_skip is not None:
                self._on_skip(path, why)
            return None

    @property
    def position(self) -> tuple[int, str | None]:
        """Index and file name of the frame grab() reached (images; a file name is None for video)."""
        if self._images:
            return self._next - 1, str(self._images[self._next - 1])
        return -1, None

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end (files) or on failure (live). Image files that
        cannot be read are skipped (see ``skipped``), never the end of a folder."""
        while self.grab():
            img = self.retrieve()
            if img is not None or not self._images:
                return img
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@dataclass(frozen=True)
class Reconnect:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0


_ARGUS = threading.Lock()  # nvargus-daemon: concurrent session opens fail with "Failed to create CaptureSession"


class LatestFrame:
    """A capture thread that keeps only the newest frame (never a queue of stale ones).

    Frames are grabbed continuously, so no driver or network buffer fills with stale ones,
    but decoded only when a consumer will take them:

    - a consumer that asks while the thread is idle (a file paced like a camera) gets the
      frame grabbed last, decoded at once rather than at the next grab;
    - the thread learns how often the consumer asks and how often frames arrive, and decodes
      a frame ahead when the next one would come after the consumer's next ask, so the
      decode overlaps inference instead of delaying it.

    A slow model thus costs no decoding of frames it would never see, leaving the cores to
    inference. Frames grabbed and never handed out are counted as dropped.
    """

    _EWMA = 0.2  # weight of the newest interval in the running means below

    def __init__(self, open_reader: Callable[[], Reader], live: bool, pace_fps: float | None = None,
                 reconnect: Reconnect = Reconnect(), on_event: Callable[[str], None] | None = None,
                 first: Reader | None = None, on_frame: Callable[[], None] | None = None) -> None:
        """``first``: a reader already open (a CSI camera is opened once: Argus often fails a quick
        reopen with "Failed to create CaptureSession"); ``open_reader`` serves reconnects.
        ``on_frame``: called (from the capture thread) when a frame is ready or the source ends,
        so one consumer can wait on many sources."""
        self._on_frame = on_frame or (lambda: None)
        self.state = "live"  # live, reconnecting, lost (gave up), ended
        self._open = open_reader
        self._live = live
        self._pace = pace_fps
        self._reconnect = reconnect
        self._say = on_event or (lambda _: None)
        self._cond = threading.Condition()
        self._frame: Frame | None = None  # the newest decoded frame
        self._grabbed = -1  # index of the newest grabbed frame
        self._decoded = -1  # index of the newest frame a decode was tried for
        self._taken = -1  # index of the last frame handed out
        self._taken_count = 0
        self._busy = False  # the thread is in grab() and cannot decode on demand
        self._waiting = 0
        self._asked_at: float | None = None
        self._ask_every = 0.0  # mean time between a consumer's asks
        self._frame_every = 0.0  # mean time between grabs
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.read_count = 0  # frames decoded
        self.reconnects = 0
        self._reader = first if first is not None else self._open()
        self._thread = threading.Thread(target=self._run, name="edgekit-capture", daemon=True)
        self._thread.start()

    def _mean(self, old: float, new: float) -> float:
        return new if old <= 0 else old + self._EWMA * (new - old)

    def _run(self) -> None:
        index = -1
        t_next = time.perf_counter()
        last: float | None = None
        try:
            while not self._stop.is_set():
                with self._cond:
                    self._busy = True
                if not self._reader.grab():
                    if not self._live:
                        break
                    self._reopen()
                    continue
                now = time.perf_counter()
                index += 1
                with self._cond:
                    self._busy = False
                    self._grabbed = index
                    if last is not None:
                        self._frame_every = self._mean(self._frame_every, now - last)
                    want = self._waiting > 0 or self._due(now)
                last = now
                if want:
                    self._decode(index, now)
                if self._pace:
                    t_next += 1.0 / self._pace
                    self._serve_until(t_next, index, now)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._error = exc
        finally:
            self._reader.close()
            with self._cond:
                self._done = True
                self.state = "lost" if self._error is not None else "ended"
                self._busy = True  # nothing newer will come: any undelivered frame may be taken
                self._cond.notify_all()
            self._on_frame()

    def _due(self, now: float) -> bool:
        """The next frame would arrive after the consumer's next ask: this one is what it gets.
        A consumer late by more than a few frames (busy elsewhere, paused) is not decoded for
        until it asks again."""
        if self._asked_at is None or self._ask_every <= 0 or self._frame_every <= 0:
            return False
        expected = self._asked_at + self._ask_every
        return expected - self._frame_every <= now <= expected + 2 * self._frame_every

    def _decode(self, index: int, grabbed_at: float) -> None:
        with self._cond:
            self._decoded = index
        img = self._reader.retrieve()
        with self._cond:
            if img is not None:
                self._frame = Frame(img, index, grabbed_at)
                self.read_count += 1
            self._cond.notify_all()
        if img is not None:
            self._on_frame()

    def _serve_until(self, t_next: float, index: int, grabbed_at: float) -> None:
        """Wait for the next frame's time, decoding the current one if a consumer asks meanwhile."""
        while not self._stop.is_set():
            with self._cond:
                remaining = t_next - time.perf_counter()
                if remaining <= 0:
                    return
                if not (self._waiting and self._decoded != index):
                    self._cond.wait(remaining)
                    continue
            self._decode(index, grabbed_at)

    def _reopen(self) -> None:
        self._reader.close()
        self.state = "reconnecting"
        delay = self._reconnect.first_delay
        for attempt in range(1, self._reconnect.attempts + 1):
            self._say(f"source lost; reconnecting ({attempt}/{self._reconnect.attempts}) in {delay:.1f} s")
            if self._stop.wait(delay):
                return
            try:
                self._reader = self._open()
                self.reconnects += 1
                self.state = "live"
                self._say("source reconnected")
                return
            except SourceError:
                delay = min(delay * 2, self._reconnect.max_delay)
        raise SourceError(f"source lost and not back after {self._reconnect.attempts} attempts")

    def _ready(self) -> bool:
        """An untaken frame that is the newest grabbed, or the one just before it when the thread,
        waiting in grab() for the next, can no longer decode the newest. Anything older (a consumer
        back from a pause) is never handed out: it waits for the next grab, decoded at once, so
        a frame is at most one frame period plus its decode old."""
        f = self._frame
        if f is None or f.index == self._taken:
            return False
        if f.index == self._grabbed:
            return True
        if self._done:
            return f.index >= self._grabbed - 1
        return self._busy and self._decoded != self._grabbed and f.index == self._grabbed - 1

    def next(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None when the source has ended (or on timeout)."""
        with self._cond:
            self._ask()
            try:
                while True:
                    frame = self._hand_out()
                    if frame is not None or self._done:
                        return frame
                    if not self._cond.wait(timeout):
                        return None
            finally:
                self._waiting -= 1

    def _ask(self) -> None:
        now = time.perf_counter()
        if self._asked_at is not None:
            self._ask_every = self._mean(self._ask_every, now - self._asked_at)
        self._asked_at = now
        self._waiting += 1
        self._cond.notify_all()  # an idle capture thread decodes the frame it holds

    def _hand_out(self) -> Frame | None:
        if self._ready():
            assert self._frame is not None
            self._taken = self._frame.index
            self._taken_count += 1
            return self._frame
        if self._done and self._error is not None:
            raise self._error
        return None

    def ask(self) -> None:
        """A consumer of many sources wants a frame: decode for it until :meth:`take`."""
        with self._cond:
            self._ask()

    def take(self) -> Frame | None:
        """The frame :meth:`ask` wanted, if it is ready now (never waits); raises the source's
        failure once it has failed for good."""
        with self._cond:
            self._waiting = max(0, self._waiting - 1)
            return self._hand_out()

    @property
    def ready(self) -> bool:
        """A frame would be handed out now (or the source has ended)."""
        with self._cond:
            return self._done or self._ready()

    @property
    def grabbed(self) -> int:
        """Frames the source has given so far (a file: the frames it played)."""
        with self._cond:
            return self._grabbed + 1

    @property
    def dropped(self) -> int:
        """Frames grabbed and never handed out (the one still on offer excepted)."""
        with self._cond:
            pending = self._grabbed != self._taken and not (self._done and not self._ready())
            return max(0, self._grabbed + 1 - self._taken_count - int(pending))

    @property
    def finished(self) -> bool:
        """The source ended (a file) or failed for good; next() raises the failure."""
        with self._cond:
            if self._done and self._error is not None:
                raise self._error
            return self._done and not self._ready()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)


def every_frame(reader: Reader) -> Iterator[Frame]:
    """All frames of a file or folder, in order, none skipped but unreadable image files (an
    image keeps its place in the sorted folder as its index, so skips leave gaps)."""
    index = 0
    try:
        while True:
            img = reader.read()
            if img is None:
                return
            pos, name = reader.position
            yield Frame(img, pos if name is not None else index, time.perf_counter(), name)
            index += 1
    finally:
        reader.close()
