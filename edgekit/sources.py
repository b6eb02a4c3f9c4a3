"""Frame sources (video tier): cameras, CSI, RTSP, files, image folders.

A live source is read by a capture thread that keeps only the newest frame, so a slow model
never processes stale frames; frames it overwrites are counted as dropped. Files can be read
frame by frame instead (``every_frame``) for offline runs.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import sys
import tempfile
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
    """A source cannot be opened, or was lost and did not come back (exit 1: a stream's server or network, a
    camera that is there but busy in another program, not ours to read or its daemon down (nvargus-daemon),
    a camera lost on the way; running again may succeed once that is dealt with)."""


class SourceInputError(SourceError):
    """What was given as a source is wrong: a camera node (/dev/videoN) that is not there, a video file that
    is not there or cannot be decoded, a folder or glob with no images, an option the source cannot take
    (--every-frame on a live source). Fix the command (exit 2, as for any input)."""

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
# where a library line may start inside another's (the distinctive starts only: OpenCV's, FFmpeg's, GLib's, Argus')
_LIBRARY_INSIDE = re.compile(rb"\[\s*(?:FATAL|ERROR|WARN|INFO|DEBUG|VERBOSE)\s*:\d"
                             rb"|\[[\w:,./ -]+ @ (?:0x)?[0-9a-fA-F]+\]"
                             rb"|\(\S+:\d+\): [\w-]+-(?:WARNING|CRITICAL|ERROR)|\(Argus\) ")
_FAILURE = re.compile(r"(?i)can'?t|cannot|could ?n[o']t|fail|error|unable|refused|timed? ?out|not found|no such|"
                      r"denied|unauthori[sz]ed|invalid|busy")
_OPENCV_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s+(?:global\s+)?(?:\S+\.\w+(?::\d+|\s\(\d+\))\s+\S+\s+)?")
_FFMPEG_PREFIX = re.compile(r"^\s*\[([\w:,./ -]+) @ (?:0x)?[0-9a-fA-F]+\]\s*")


OPEN_WATCHDOG_S = 5.0  # an open under way this long: what the libraries said goes out, and all they say from then on
POLL_S = 0.05  # how often the captured stderr is read, its other lines passed on and the opens watched
DEBUG_ENV = ("GST_DEBUG", "OPENCV_VIDEOIO_DEBUG", "OPENCV_LOG_LEVEL")  # set by the user: nothing is captured


class _Redirect:
    """One redirection of fd 2 into an unlinked temporary file, shared by the opens under way."""

    def __init__(self, fd: int, real: int, ident: tuple[int, int]) -> None:
        self.fd = fd  # the file (O_APPEND: every writer adds at its end; read here with pread)
        self.real = real  # the stderr it stands in for
        self.ident = ident  # (st_dev, st_ino) of the file
        self.offset = 0  # read up to here
        self.buf = b""  # the start of a line not yet ended
        self.held: float | None = None  # since when a partial library line waits for its end
        self.lock = threading.Lock()  # reading the file and writing on: one thread at a time
        self.opens: dict[int, list[Any]] = {}  # token -> [started (monotonic), name, first line, told]
        self.released = False  # fd 2 points at the real stderr again: whatever still comes passes on
        self.for_good = False  # a copy of fd 2 could not be pointed back: read on and pass on, for good
        self.ending = False  # the last open is done: the thread reads what is left and ends
        self.wake = threading.Event()


class LibraryLog:
    """While a source opens, file descriptor 2 goes into an unlinked temporary file: the lines the video
    libraries write there (OpenCV's warnings, FFmpeg, GStreamer, Argus) are kept for the open's error
    message and otherwise dropped; every other line (edgekit's own, from any thread; a status line) is
    read back within :data:`POLL_S` and goes on to stderr. A file, not a pipe: a write to it never waits
    for a reader, so a C extension writing much while it holds the GIL cannot deadlock the reader.

    Opens in several threads share one redirection (multistream opens its sources side by side); the
    last one out points fd 2 back at stderr, and so does the watchdog once an open has been under way
    :data:`OPEN_WATCHDOG_S` (an Argus open can block for ever): what the libraries said so far goes out
    then, with a line saying which source is still opening, and from then on all they say, for every
    open sharing it. A copy of fd 2 made meanwhile (the credential filter of :mod:`edgekit.redact`
    redirecting stderr on top of ours) is pointed back at stderr too; where that cannot be done (no
    /proc/self/fd) the file is read and passed on for good. A child process started during an open
    inherits the file as its stderr: what it writes after the last open has ended is not read. Nothing
    is captured where the user asked the libraries to talk (:data:`DEBUG_ENV`)."""

    KEEP = 256  # library lines remembered (only the newest matter: those of the opens under way)

    def __init__(self) -> None:
        self._gate = threading.Lock()  # starts, joins, leaves and stops
        self._lines_lock = threading.Lock()
        self._users = 0
        self._seq = 0  # library lines seen so far
        self._lines: deque[tuple[int, str]] = deque(maxlen=self.KEEP)
        self._now: _Redirect | None = None
        self._tokens = itertools.count()

    @contextmanager
    def capture(self, name: str = "a source") -> Iterator[list[str]]:
        """``with capture("csi://0") as said:`` the library lines written inside the block are in ``said``
        after it (``name``: what the watchdog's line calls the source)."""
        said: list[str] = []
        entry = self._enter(name)
        try:
            yield said
        finally:
            if entry is not None:
                said.extend(self._leave(*entry))

    def _enter(self, name: str) -> tuple[_Redirect, int, int] | None:
        if any(os.environ.get(var) for var in DEBUG_ENV):
            return None
        with self._gate:
            r = self._now
            if r is None:
                r = self._now = self._start()
                if r is None:
                    return None
            with self._lines_lock:
                start = self._seq
            token = next(self._tokens)
            with r.lock:
                r.opens[token] = [time.monotonic(), name, start, False]
            self._users += 1
            return r, token, start

    def _leave(self, r: _Redirect, token: int, start: int) -> list[str]:
        with self._gate:
            with r.lock:
                self._drain(r)
                r.opens.pop(token, None)
                self._users -= 1
                if self._users == 0:
                    self._now = None
                    self._stop(r)
        with self._lines_lock:
            return [text for n, text in self._lines if n >= start]

    def _start(self) -> _Redirect | None:
        if not hasattr(os, "pread"):
            return None
        try:
            os.fstat(2)
        except OSError:  # no stderr: nothing is printed anyway
            return None
        try:
            tmp, path = tempfile.mkstemp(prefix="edgekit-stderr-")
        except OSError:  # no writable temporary folder: the libraries' lines go straight to stderr
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            os.unlink(path)
        except OSError:
            os.close(tmp)
            try:
                os.unlink(path)
            except OSError:
                pass
            return None
        os.close(tmp)
        st = os.fstat(fd)
        # sys.stderr is not flushed here nor at the end: from another thread a flush would cut a print() in
        # two, between its text and its newline, and another thread's line could land in between
        try:
            real = os.dup(2)
        except OSError:  # no descriptor left: no capture
            os.close(fd)
            return None
        os.dup2(fd, 2)
        r = _Redirect(fd, real, (st.st_dev, st.st_ino))
        threading.Thread(target=self._run, args=(r,), name="edgekit-library-log", daemon=True).start()
        return r

    def _stop(self, r: _Redirect) -> None:
        """The last open is done (``r.lock`` held): fd 2 back, the rest passed on, the thread told to end."""
        if not r.released:
            self._release(r)
        self._drain(r)
        if r.buf:
            self._line(r, r.buf)
            r.buf, r.held = b"", None
        r.ending = True
        r.wake.set()

    def _release(self, r: _Redirect, show_from: int | None = None) -> int:
        """Point fd 2, and every copy of it made since, back at the real stderr (``r.lock`` held); what is
        in the file goes on (or is kept) first, the library lines from number ``show_from`` on are shown
        before it, and whatever still comes into the file passes on. How many lines were shown."""
        self._drain(r)
        shown = []
        if show_from is not None:
            with self._lines_lock:
                shown = [text for n, text in self._lines if n >= show_from]
            for text in shown:
                _write(r.real, (text + "\n").encode("utf-8", "replace"))
        copies = _fds_on(r.ident, r.fd)
        if copies is None:  # no /proc/self/fd: fd 2 alone
            copies = [2] if _fd_ident(2) == r.ident else []
            r.for_good = _fd_ident(2) != r.ident  # something took fd 2 over: its copy of ours stays
        for fd in copies:
            try:
                os.dup2(r.real, fd, inheritable=fd == 2 or os.get_inheritable(fd))
            except OSError:
                r.for_good = r.for_good or _fd_ident(fd) == r.ident
        r.released = True
        self._drain(r)
        return len(shown)

    def _run(self, r: _Redirect) -> None:
        try:
            while True:
                r.wake.wait(POLL_S)
                r.wake.clear()
                with r.lock:
                    now = time.monotonic()
                    if not self._drain(r) and r.buf:
                        self._quiet(r, now)
                    if not r.ending:
                        self._watch(r, now)
                    elif not r.for_good:
                        if r.buf:
                            self._line(r, r.buf)
                        return
        finally:
            os.close(r.fd)
            os.close(r.real)

    def _drain(self, r: _Redirect) -> bool:
        """Read what came into the file since last time: its whole lines kept or passed on (``r.lock``
        held); True when there was anything."""
        got = False
        while True:
            try:
                chunk = os.pread(r.fd, 1 << 16, r.offset)
            except OSError:
                chunk = b""
            if not chunk:
                break
            got = True
            r.offset += len(chunk)
            *whole, r.buf = re.split(rb"(?<=[\r\n])", r.buf + chunk)
            for piece in whole:
                self._line(r, piece)
            if whole:
                r.held = None
        return got

    def _quiet(self, r: _Redirect, now: float) -> None:
        """Nothing new: a partial line goes on now (a status line ends in \\r), unless it is the start of
        a library line, which waits up to 1 s for its end."""
        if not r.released and _LIBRARY_LINE.match(_text(r.buf)) and (r.held is None or now - r.held < 1.0):
            r.held = r.held or now
            return
        self._line(r, r.buf)
        r.buf, r.held = b"", None

    def _watch(self, r: _Redirect, now: float) -> None:
        """An open under way for OPEN_WATCHDOG_S: what the libraries said for the opens under way goes
        out, fd 2 goes back to stderr (so all they say from then on), and a line names the source."""
        late = [o for o in r.opens.values() if not o[3] and now - o[0] >= OPEN_WATCHDOG_S]
        if not late:
            return
        said = r.released
        if not r.released:
            said = self._release(r, show_from=min(o[2] for o in r.opens.values())) > 0
        why = "what the camera stack said is above" if said else "the camera stack has said nothing so far"
        for o in late:
            o[3] = True
            _write(r.real, f"note: still opening {o[1]} after {OPEN_WATCHDOG_S:g} s ({why})\n".encode())

    def _line(self, r: _Redirect, data: bytes) -> None:
        text = _text(data).rstrip("\r\n")
        if not r.released:
            if _LIBRARY_LINE.match(text):
                self._keep(text)
                return
            # another thread's line cut in two by a library's (print() writes its text, then its newline):
            # the start goes on, its newline follows as a line of its own, the library's is kept
            m = _LIBRARY_INSIDE.search(data, 1)
            if m and _LIBRARY_LINE.match(_text(data[m.start():])):
                _write(r.real, data[:m.start()])
                self._keep(_text(data[m.start():]).rstrip("\r\n"))
                return
        _write(r.real, data)

    def _keep(self, text: str) -> None:
        with self._lines_lock:
            self._lines.append((self._seq, text))
            self._seq += 1


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass


def _fd_ident(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _fds_on(ident: tuple[int, int], skip: int) -> list[int] | None:
    """This process's file descriptors open on the file ``ident`` (``skip`` aside); None if it cannot tell."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        return [int(n) for n in names if n.isdigit() and int(n) != skip and _fd_ident(int(n)) == ident]
    return None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


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


V4L2_NODE = "/dev/video{}"  # what a camera index is on Linux


def _video_capture(cv2: Any, spec: SourceSpec, size: tuple[int | None, int | None, int | None]) -> Any:
    """cv2.VideoCapture for a camera, stream or file: the call that may block (an Argus open, for ever
    on OpenCV before 4.7) and prints what the libraries say."""
    if spec.kind == "v4l2":
        cap = cv2.VideoCapture(int(spec.target), cv2.CAP_V4L2)
        if cap.isOpened():
            w, h, fps = size
            if w and h:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # often ignored (opencv #10671): the thread keeps the newest
        return cap
    if spec.kind == "csi":
        with _ARGUS:  # one Argus session opened at a time (cameras reconnecting together after a restart)
            return cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
    return cv2.VideoCapture(spec.target)


def _open_error(spec: SourceSpec, why: str) -> SourceError:
    """Why a source did not open, and what to check. What was given is wrong (exit 2): a camera node,
    video file or folder that is not there, a file OpenCV cannot decode. The device's state is not
    (exit 1): a camera that is there but busy, not ours to read, or its daemon down (Argus), a stream's
    server or network."""
    head = f"cannot open {spec.display_name}{f' ({why})' if why else ''}: "
    if spec.kind == "v4l2":
        node = V4L2_NODE.format(spec.target)
        if sys.platform.startswith("linux") and not os.path.exists(node):
            return SourceInputError(head + f"there is no {node}: is the camera connected, and is it this number? "
                                           "(ls /dev/video*)")
        if sys.platform.startswith("linux") and not os.access(node, os.R_OK | os.W_OK):
            return SourceError(head + f"no permission to use {node}: add yourself to the video group "
                                      "(sudo usermod -aG video $USER, then log in again)")
        return SourceError(head + f"is another program using it? (fuser {node}); is it the capture node? "
                                  "(v4l2-ctl --list-devices: a USB camera's second node carries metadata)")
    if spec.kind == "csi":
        return SourceError(head + "is the sensor connected and no other program using it? 'Failed to create "
                                  "CaptureSession' or 'Connecting to nvargus-daemon failed': sudo systemctl restart "
                                  "nvargus-daemon")
    if spec.kind == "rtsp":  # the URL may be right and its server down
        return SourceError(head + "check the URL, the network and the credentials")
    if not os.path.exists(spec.target):
        return SourceInputError(head + "the file is not there (any more)")
    return SourceInputError(head + "is it a video file OpenCV can decode?")


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
        with LIBRARY_LOG.capture(spec.display_name) as said:
            cap = _video_capture(cv2, spec, self.size)
            opened = cap.isOpened()
            if not opened:
                cap.release()
        if not opened:
            raise _open_error(spec, library_reason(said, spec))
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
