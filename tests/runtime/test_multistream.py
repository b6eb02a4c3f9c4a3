"""Many sources, one model: real video files and image folders read at once, every result
naming its source, batched calls, and a source that fails leaving the others running."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import edgekit  # noqa: E402
from edgekit.runtime import sources  # noqa: E402
from edgekit.runtime.multistream import MultiStream  # noqa: E402
from edgekit.runtime.streaming import StreamOptions  # noqa: E402
from tests.runtime.test_stream import decode, encode, write_video  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    slow = write_video(root / "slow.avi", 40, 30.0)
    fast = write_video(root / "fast.avi", 90, 120.0)
    folder = root / "shots"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:03d}.png"), encode(i))
    return slow, fast, folder


@pytest.fixture(scope="module")
def clf(googlenet_bundle):
    with edgekit.load(googlenet_bundle) as c:
        yield c


class Recording:
    """The classifier's real runner, with the batch size of every call written down."""

    def __init__(self, runner):
        self.runner = runner
        self.batches: list[int] = []

    def infer(self, x):
        self.batches.append(len(x))
        return self.runner.infer(x)


def test_every_frame_of_three_sources_in_one_batched_run(media, clf, monkeypatch):
    slow, fast, folder = media
    rec = Recording(clf.runner)
    monkeypatch.setattr(clf, "runner", rec)
    ms = MultiStream([str(slow), str(fast), str(folder)], clf, StreamOptions(every_frame=True, topk=3),
                     keep_frames=True)
    results = list(ms)
    by: dict[str, list] = {}
    for r in results:
        by.setdefault(r.source, []).append(r)
    names = [s.name for s in ms.sources]
    assert sorted(by) == sorted(names) and len(set(names)) == 3
    want = {names[0]: 40, names[1]: 90, names[2]: 12}
    for name, rs in by.items():  # complete, in order, and each result is its own source's frame
        assert [r.frame_index for r in rs] == list(range(want[name])), name
        assert [decode(r.frame) for r in rs] == list(range(want[name])), name
    # batched: more results than calls, no call above one frame per source
    assert len(rec.batches) < len(results) and max(rec.batches) == 3 and sum(rec.batches) == len(results)
    # and correct: each result is what classifying its frame alone gives
    for r in results[::7]:
        alone = clf.classify(r.frame, topk=3)
        assert r.prediction.indices[0] == alone.indices[0]
        assert abs(r.prediction.scores[0] - alone.scores[0]) < 1e-4
    assert ms.status()[names[2]]["state"] == "ended" and ms.failed == []


def test_live_sources_at_different_rates_each_keep_their_own_pace_and_drops(media, clf):
    slow, fast, _ = media
    ms = MultiStream([str(slow), str(fast)], clf, StreamOptions(topk=1), keep_frames=True)
    results = list(ms)
    for s in ms.sources:
        rs = [r for r in results if r.source == s.name]
        idx = [r.frame_index for r in rs]
        assert idx == sorted(set(idx)) and all(decode(r.frame) == r.frame_index for r in rs)
        total = 40 if "slow" in s.name else 90
        # every frame was either classified or dropped (at most the last one still on offer)
        assert total - 1 <= len(rs) + s.dropped <= total, (s.name, len(rs), s.dropped)
    age = np.median([r.latency_ms for r in results])
    assert age <= 3 * np.median([r.infer_ms for r in results]) + 40  # fresh frames, not a backlog


def test_a_source_deleted_mid_run_does_not_stop_the_others(media, clf, tmp_path):
    slow, fast, folder = media
    doomed = tmp_path / "doomed"
    shutil.copytree(folder, doomed)
    events: list[str] = []
    ms = MultiStream([str(doomed), str(slow)], clf, StreamOptions(every_frame=True), on_event=events.append)
    results = []
    for r in ms:
        results.append(r)
        if len(results) == 4:
            shutil.rmtree(doomed)  # the folder goes away under the run
    slow_name = ms.sources[1].name
    assert [r.frame_index for r in results if r.source == slow_name] == list(range(40))
    doomed_name = ms.sources[0].name
    assert len([r for r in results if r.source == doomed_name]) < 12
    assert ms.sources[0].skipped and any(e.startswith(doomed_name + ": skipped") for e in events)


def test_a_lost_camera_is_left_and_reported_while_the_others_run(media, clf):
    """One source dies after 10 frames and never comes back (a wrapper over the real file
    reader stands in for an unplugged camera); the other runs to its end; the failure is
    raised after, naming the source."""
    slow, fast, _ = media

    class Dying(sources.Reader):
        opened = 0

        def __init__(self, spec, *a, **k):
            Dying.opened += 1
            if Dying.opened > 1:
                raise sources.SourceError("cannot open camera")
            super().__init__(spec, *a, **k)
            self.n = 0

        def grab(self):
            self.n += 1
            return self.n <= 10 and super().grab()

    def opener(spec):
        return Dying(spec) if "fast" in spec.display_name else sources.Reader(spec)

    events: list[str] = []
    opts = StreamOptions(reconnect=sources.Reconnect(2, 0.01, 0.02))
    # both are "cameras" (an opener's sources are live): the good one loops, reopened at its end
    ms = MultiStream([str(fast), str(slow)], clf, opts, on_event=events.append, opener=opener)
    lost, ok = ms.sources
    results = []
    t0 = time.perf_counter()
    for r in ms:
        results.append(r)
        if lost.state == "lost" and len([x for x in results if x.source == ok.name]) >= 60:
            states = (lost.state, ok.state, ok.reconnects)
            break
        assert time.perf_counter() - t0 < 60
    assert states[:2] == ("lost", "live") and states[2] >= 1  # the good one went on past its end
    assert 1 <= len([r for r in results if r.source == lost.name]) <= 10
    assert any("lost" in e and "the other sources go on" in e for e in events)
    with pytest.raises(sources.SourceError, match=r"1 of 2 sources failed .*fast\.avi.*not back after 2"):
        ms.raise_failures()


def test_batch_never_exceeds_the_engines_maximum(media, clf, monkeypatch):
    slow, fast, folder = media
    rec = Recording(clf.runner)
    monkeypatch.setattr(clf, "runner", rec)
    ms = MultiStream([str(slow), str(fast), str(folder)], clf, StreamOptions(every_frame=True), max_batch=2)
    n = len(list(ms))
    assert n == 40 + 90 + 12 and max(rec.batches) == 2


def test_stop_from_another_thread_ends_every_capture(media, clf):
    slow, fast, _ = media
    before = threading.active_count()
    ms = MultiStream([str(slow), str(fast), str(slow)], clf, StreamOptions())
    assert [s.name.endswith("#2") for s in ms.sources] == [False, False, True]  # one file twice: two names
    threading.Timer(0.3, ms.stop).start()
    t0 = time.perf_counter()
    for _ in ms:
        pass
    assert time.perf_counter() - t0 < 3
    time.sleep(0.5)
    assert threading.active_count() <= before


def test_the_same_camera_twice_is_refused_before_anything_opens(clf):
    for twice in (["csi://0", "csi://0"], ["/dev/video57", "v4l2:///dev/video57"]):
        with pytest.raises(sources.SourceError, match="given twice: a camera streams to one reader"):
            MultiStream(twice, clf, StreamOptions())


def test_a_source_that_cannot_open_fails_at_once_and_closes_the_others(media, clf):
    slow, _, _ = media
    before = threading.active_count()
    with pytest.raises(sources.SourceError, match="cannot open /dev/video57"):
        MultiStream([str(slow), "/dev/video57"], clf, StreamOptions())
    time.sleep(0.3)
    assert threading.active_count() <= before


def test_run_cli_many_sources_json_lines_per_source(media, googlenet_bundle, tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import cli

    slow, fast, folder = media
    res = CliRunner().invoke(cli, ["run", str(googlenet_bundle), "--source", str(slow), "--source", str(fast),
                                   "--source", str(folder), "--every-frame", "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(ln) for ln in res.stdout.splitlines()]
    per: dict[str, list[int]] = {}
    for rec in lines:
        per.setdefault(rec["source"], []).append(rec["frame"])
    assert sorted(len(v) for v in per.values()) == [12, 40, 90]
    assert all(v == list(range(len(v))) for v in per.values())
    for name in per:  # the summary names each source
        assert name in res.stderr
    res = CliRunner().invoke(cli, ["run", str(googlenet_bundle), "--source", str(slow), "--source", str(fast),
                                   "--output", str(tmp_path / "o.avi")])
    assert res.exit_code != 0 and "--output" in str(res.exception) and "one source" in str(res.exception)


def test_run_cli_serves_the_live_view_while_it_runs(media, googlenet_bundle, tmp_path):
    """`edgekit run` with two sources and --serve: the page, /metrics and /healthz answer while
    it runs (real process, real sockets); Ctrl-C ends it cleanly with every source summarised."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    long_clip = write_video(tmp_path / "long.avi", 600, 30.0)
    _, fast, _ = media
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "run", str(googlenet_bundle), "--source", str(long_clip),
                             "--source", str(fast), "--serve", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        t0 = time.perf_counter()
        while url is None and time.perf_counter() - t0 < 60:
            line = proc.stderr.readline()
            m = re.search(r"live view: (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "no live view URL printed"
        time.sleep(2.0)
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "/video/0.mjpg" in page
        assert urllib.request.urlopen(url + "healthz", timeout=10).status == 200
        metrics = urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
        results = {s.labels["source"]: s.value for f in text_string_to_metric_families(metrics)
                   for s in f.samples if s.name == "edgekit_results_total"}
        assert any("long.avi" in k for k in results) and all(v > 0 for v in results.values()), results
        stats = json.loads(urllib.request.urlopen(url + "stats.json", timeout=10).read())
        assert len(stats["sources"]) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "long.avi:" in err and "all sources:" in err


def test_only_sinks_that_draw_are_handed_the_frame():
    """A lagging JSON sink's queue must not hold full frames (64 x 6 MB at 1080p)."""
    from edgekit.runtime.classifier import Prediction
    from edgekit.runtime.sink_thread import SinkThread
    from edgekit.runtime.streaming import Result

    class Keeps:
        def __init__(self, draws):
            self.draws, self.got = draws, []

        def write(self, r):
            self.got.append(r.frame)

        def close(self):
            pass

    plain, drawing = Keeps(False), Keeps(True)
    frame = np.zeros((1080, 1920, 3), np.uint8)
    writer = SinkThread([plain, drawing])
    for i in range(3):
        writer.put(Result(i, 0.0, 0.0, 1.0, Prediction(("a",), (0,), (1.0,), 1.0), frame, None, "cam"))
    writer.close()
    assert plain.got == [None] * 3 and all(f is frame for f in drawing.got)


def test_readme_python_example_works_twice(media, clf):
    """`edgekit.stream` stays the function after the first call (no submodule of that name
    shadows it), for one source and for a list."""
    slow, fast, _ = media
    for _ in range(2):
        for r in edgekit.stream(str(slow), clf, max_frames=2):
            assert r.source
        rs = list(edgekit.stream([str(slow), str(fast)], clf, max_frames=4))
        assert len(rs) == 4 and callable(edgekit.stream)


def test_json_lines_to_dev_null_and_to_a_file_cut_by_logrotate(media, googlenet_bundle, tmp_path):
    """`--json > /dev/null` (always at offset 0) and `>> app.jsonl` truncated under the run
    (logrotate's copytruncate) are not a full disk."""
    import subprocess
    import sys

    slow, fast, _ = media
    cmd = [sys.executable, "-m", "edgekit", "run", str(googlenet_bundle), "--source", str(slow), "--every-frame",
           "--json"]
    with open(os.devnull, "w") as null:
        assert subprocess.run(cmd, stdout=null, stderr=subprocess.PIPE, text=True).returncode == 0
    log = tmp_path / "app.jsonl"
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd[:-2] + ["--json"], stdout=f, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        os.truncate(log, 0)  # copytruncate
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    data = log.read_bytes()
    assert data and b"\0" not in data  # O_APPEND: the lines after the cut start the file again
    assert all(json.loads(ln) for ln in data.splitlines())


def test_summary_of_many_sources_says_which_file_skipped_frames(media, clf, tmp_path):
    """Each source's own line: a file played faster than the model says it skipped frames; a folder does not."""
    from edgekit.runtime.counters import PerSource

    _, _, folder = media
    video = write_video(tmp_path / "thousand.avi", 200, 1000.0)
    ms = MultiStream([str(video), str(folder)], clf, StreamOptions(topk=1))
    per = PerSource()
    for r in ms:
        per.write(r)
    assert ms.played is None  # the all-sources line: each file says it in its own line
    lines = per.summary(ms.status())
    name = ms.sources[0].name
    assert ms.sources[0].dropped > 0
    (hint,) = [ln for ln in lines if "skipped" in ln]
    assert hint.startswith(f"{name}: skipped {ms.sources[0].dropped} of 200 frames: the model ("), lines
    assert hint.endswith("; --every-frame classifies them all") and "(1000 fps, 1 ms a frame)" in hint
