"""What the video libraries say on stderr while a source opens: captured, kept for the open's error
message (``library_reason``) and otherwise passed on (``LIBRARY_LOG``)."""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.redact import redact, secrets_of

if TYPE_CHECKING:
    from edgekit.runtime.sources import SourceSpec


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
