"""Where stream results go: terminal status, JSON lines, annotated video, a window, a callback."""

from __future__ import annotations

import glob as _glob
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.runtime.counters import PerSource, Stats
from edgekit.runtime.streaming import Result


class TerminalStatus:
    """One live status line on stderr, refreshed a few times a second."""

    def __init__(self, stats: Stats, dropped: Callable[[], int], out: Callable[[str], None],
                 per: PerSource | None = None) -> None:
        self.stats, self.dropped, self.out, self.per = stats, dropped, out, per
        self.last = 0.0

    def write(self, r: Result) -> None:
        now = time.perf_counter()
        if now - self.last < 0.25:
            return
        self.last = now
        s = self.stats
        if self.per is not None and len(self.per.by) > 1:  # many sources: each one's rate and latency
            parts = [f"{name[-18:]} {st.fps:4.1f} fps {st.recent(50):5.0f} ms" for name, st in self.per.by.items()]
            self.out(f"\r{'  |  '.join(parts)}  drops {self.dropped():5d}")
            return
        self.out(f"\r{s.fps:5.1f} fps  latency p50 {s.recent(50):6.1f} ms  p90 {s.recent(90):6.1f} ms  "
                 f"drops {self.dropped():5d}  {r.prediction.label[:30]:<30} {r.prediction.score:5.1%}")

    def close(self) -> None:
        self.out("\n")


class JsonLines:
    def __init__(self, stream: IO[str], threshold: float = 0.0, t_ref: float | None = None,
                 describe: str | None = None) -> None:
        self.f = stream
        self.threshold = threshold
        self.describe = describe or f"JSON lines to {getattr(stream, 'name', 'a stream')}"
        self._seekable: bool | None = None
        # capture times are reported as wall-clock seconds
        self.offset = time.time() - time.perf_counter() if t_ref is None else t_ref

    def write(self, r: Result) -> None:
        p = r.prediction
        top = [{"label": lb, "index": i, "score": round(s, 5)} for lb, i, s in zip(p.labels, p.indices, p.scores)]
        rec: dict[str, Any] = {"source": r.source, "frame": r.frame_index} if r.source else {"frame": r.frame_index}
        if r.name is not None:
            rec["file"] = r.name
        rec.update({"capture_time": round(r.captured + self.offset, 6), "latency_ms": round(r.latency_ms, 2),
                    "infer_ms": round(r.infer_ms, 2), "label": p.label if p.score >= self.threshold else None,
                    "top": top})
        line = json.dumps(rec) + "\n"
        pos = self._position()
        try:
            self.f.write(line)
            self.f.flush()  # a line is whole on disk, or the error is raised now (a full disk)
            end = self._position() if pos is not None else None
            if pos is not None and end is not None and end < pos + len(line.encode("utf-8")):
                import errno  # a short write the buffer kept quiet about: the disk or a limit is full

                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            if pos is not None:  # a file: cut the part of the line that did get written
                try:
                    os.ftruncate(self.f.fileno(), pos)
                except (OSError, ValueError):
                    pass
            raise

    def _position(self) -> int | None:
        """Where the next line starts, for a regular file written in place; None for a pipe, a
        terminal, /dev/null (always at 0) or a file opened to append (``>>``: another program, such
        as logrotate's copytruncate, may cut it under us), where a short write cannot be told."""
        if self._seekable is False:
            return None
        try:
            fd = self.f.fileno()
            if self._seekable is None:
                import fcntl
                import stat

                self._seekable = stat.S_ISREG(os.fstat(fd).st_mode) and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
                if not self._seekable:
                    return None
            return os.lseek(fd, 0, os.SEEK_CUR)
        except (OSError, ValueError, AttributeError, ImportError, io.UnsupportedOperation):
            self._seekable = False
            return None

    def close(self) -> None:
        self.f.flush()


def annotate(frame: np.ndarray, r: Result) -> np.ndarray:
    cv2 = require("cv2", "drawing annotations")
    img = frame.copy()
    p = r.prediction
    lines = [f"{s:5.1%} {lb}" for lb, s in zip(p.labels[:3], p.scores[:3])]
    lines.append(f"{r.latency_ms:.0f} ms")
    for i, text in enumerate(lines):
        y = 24 + 22 * i
        cv2.putText(img, text, (9, y + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


# containers and the codec written into each (both encoded by pip's OpenCV and JetPack's, and both
# index their frames, so the count read back at close is exact)
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


class VideoOutput:
    """Annotated video, written to a temporary file beside the target and renamed at close.

    The container and encoder are tried before the first frame (a bad extension is an error up
    front, not after the model loaded); at close the file is read back, and a video that lost
    frames (a full disk: OpenCV's writer reports no write errors) is an error, not a success.
    """

    FREE_MIN = 8 << 20  # stop when the disk has less than this left

    draws = True  # takes the frame (SinkThread hands the others results without it)

    def __init__(self, path: Path, fps: float) -> None:
        self.cv2 = require("cv2", "writing video")
        self.path = Path(path)
        if self.path.is_symlink():  # written through the link, which stays a link
            self.path = Path(os.path.realpath(self.path))
        self.describe = f"video {self.path}"
        self.folder = self.path.parent
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise UsageError(f"cannot write video {self.path}: {suffix or 'no extension'} is not a video container "
                             f"edgekit writes; use one of {', '.join(VIDEO_CODECS)}")
        if not self.folder.is_dir():
            raise UsageError(f"cannot write {self.path}: folder {self.folder} does not exist")
        if self.path.is_dir():
            raise UsageError(f"cannot write video {self.path}: it is a folder; give a file name")
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self.fourcc = self.cv2.VideoWriter_fourcc(*VIDEO_CODECS[suffix])
        self.fps = fps or 30.0
        self.writer: Any = None
        self.frames = 0
        self._size_at_check = 0
        self._remove_leftovers()
        self._probe()

    def _remove_leftovers(self) -> None:
        """Temporary videos of runs killed before they finished (kill -9, power loss): on a robot
        restarted for weeks they would fill the disk."""
        for f in self.folder.glob(f".{_glob.escape(self.path.stem)}.tmp-*{self.path.suffix}"):
            pid = f.name[len(self.path.stem) + 6:-len(self.path.suffix) or None]
            if pid.isdigit() and not bundle_mod.alive(int(pid)):
                try:
                    f.unlink()
                except OSError:
                    pass

    def _probe(self) -> None:
        """Open the encoder on a real file once, so a missing codec or an unwritable folder is
        found before the first frame."""
        w = self.cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, (64, 64))
        ok = w.isOpened()
        if ok:
            w.write(np.zeros((64, 64, 3), np.uint8))
        w.release()
        self.tmp.unlink(missing_ok=True)
        if not ok:
            raise UsageError(f"cannot write video {self.path}: this OpenCV cannot encode {self.path.suffix} here "
                             f"(or {self.folder} is not writable); try .avi")

    def write(self, r: Result) -> None:
        if r.frame is None:
            return
        img = annotate(r.frame, r)
        if self.writer is None:
            self.size = (img.shape[1], img.shape[0])
            self.writer = self.cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise UsageError(f"cannot write video {self.path}: the encoder refused {self.size[0]}x{self.size[1]}")
        self.writer.write(img)
        self.frames += 1
        if self.frames % 128 == 0:
            self._check_space()

    def _check_space(self) -> None:
        """Every 128 frames: room left, and the file still growing (OpenCV's writer reports no
        write errors: a file-size limit, a quota or FAT32's 4 GB shows only as a file that stopped)."""
        import errno
        import shutil

        if shutil.disk_usage(self.folder).free < self.FREE_MIN:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.folder))
        try:
            size = self.tmp.stat().st_size
        except OSError:
            size = 0
        if size <= self._size_at_check:
            raise OSError(errno.EFBIG, f"the video stopped growing at {size} bytes", str(self.path))
        self._size_at_check = size

    def close(self) -> None:
        """Finish the file and put it in place if every frame is in it; else an error and no file."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        have = self._frames_in(self.tmp)
        if have != self.frames:
            self.tmp.unlink(missing_ok=True)
            import errno

            raise OSError(errno.ENOSPC, f"the video holds {have} of {self.frames} frames", str(self.path))
        os.replace(self.tmp, self.path)

    def _frames_in(self, path: Path) -> int:
        try:
            if path.stat().st_size == 0:
                return 0
        except OSError:
            return 0
        cap = self.cv2.VideoCapture(str(path))
        try:
            return int(cap.get(self.cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


class Window:
    draws = True  # takes the frame (SinkThread hands the others results without it)

    def __init__(self, title: str = "edgekit") -> None:
        self.cv2 = require("cv2", "showing a window")
        self.title = title

    def write(self, r: Result) -> None:
        if r.frame is not None:  # a window per source
            self.cv2.imshow(f"{self.title}: {r.source}" if r.source else self.title, annotate(r.frame, r))
            self.cv2.waitKey(1)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


class Callback:
    draws = True  # your function may want the frame

    def __init__(self, fn: Callable[[Result], None]) -> None:
        self.fn = fn

    def write(self, r: Result) -> None:
        self.fn(r)

    def close(self) -> None:
        pass
