"""The capture thread of a live source: it keeps only the newest frame (``LatestFrame``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edgekit.runtime.sources import Frame, Reader, Reconnect, SourceError


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
