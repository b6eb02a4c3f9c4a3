"""Frame sources (video tier): cameras, CSI, RTSP, files, image folders.

A live source is read by a capture thread that keeps only the newest frame, so a slow model
never processes stale frames; frames it overwrites are counted as dropped. Files can be read
frame by frame instead (``every_frame``) for offline runs.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import EdgekitError, UsageError
from edgekit.images import IMAGE_SUFFIXES, read_image
from edgekit.redact import protect, redact, redact_uri
from edgekit.runtime.liblog import LIBRARY_LOG, library_reason

__all__ = ["Frame", "SourceSpec", "SourceError", "SourceInputError", "Reader", "Reconnect", "parse",
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
