"""The CPU paths: OpenVINO beside ONNX Runtime, and backend auto's measured, cached choice.

Real OpenVINO and ONNX Runtime on a real (random-weight, calibrated) GoogLeNet bundle. Which
path wins depends on this CPU, so the tests check the rules (only gated paths, the measurement
cached and keyed, the reasons said), never a winner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgekit import manifest as mf
from edgekit.cpuinfo import CpuKind
from edgekit.errors import MissingDependencyError, UsageError
from edgekit.runners.ort import OrtRunner
from edgekit.runtime import cpu_cache, cpu_choice
from edgekit.runtime.loader import load
from tests.inproc import edgekit

pytest.importorskip("openvino")

from edgekit.runners.openvino import OpenVinoRunner, capabilities  # noqa: E402

VNNI = CpuKind("x86_64", "test CPU", frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"}))
AVX2 = CpuKind("x86_64", "test CPU", frozenset({"avx2", "fma"}))


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cpu-choice"


def _photos(b: Path) -> np.ndarray:
    return cpu_choice._photos(b, mf.read(b))


def test_openvino_fp32_matches_onnxruntime_on_the_bundles_file(googlenet_bundle):
    x = _photos(googlenet_bundle)
    with OrtRunner(googlenet_bundle / "model.onnx", threads=2) as ort_r, \
            OpenVinoRunner(googlenet_bundle / "model.onnx", "f32", threads=2) as ov:
        ref, got = ort_r.infer(x), ov.infer(x)
        assert ov.input_shape[1:] == (224, 224, 3) and "f32" in ov.description
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() <= cpu_choice.PARITY_RTOL and (got.argmax(1) == ref.argmax(1)).all()


def test_openvino_runner_gives_each_thread_its_own_request(googlenet_bundle):
    x = _photos(googlenet_bundle)
    with OpenVinoRunner(googlenet_bundle / "model.onnx", "f32", threads=1) as ov:
        want = [ov.infer(x[i:i + 1]) for i in range(len(x))]
        got: dict[tuple[int, int], np.ndarray] = {}
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for k in range(6):
                    i = (t + k) % len(x)
                    got[(t, k)] = ov.infer(x[i:i + 1])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for (t, k), out in got.items():
            np.testing.assert_array_equal(out, want[(t + k) % len(x)])
        assert ov.requests_made == 5  # this thread's and one per worker
    with pytest.raises(UsageError, match="closed"):
        ov.infer(x[:1])


def test_auto_measures_once_keeps_the_fastest_and_reads_it_back(calibrated_googlenet, cache):
    said: list[str] = []
    with load(calibrated_googlenet, log=said.append) as clf:
        assert clf.backend in ("onnxruntime", "openvino")
        first = clf.why
    assert any("measuring" in s for s in said), said
    bf16 = "BF16" in capabilities()
    n = 5 if bf16 else 4
    assert f"the fastest of {n} gated CPU paths measured on this CPU (batch 1, 2 threads)" in first, first
    for name in ("ONNX Runtime fp32", "OpenVINO fp32", "ONNX Runtime int8-cpu", "OpenVINO int8-cpu"):
        assert name in first
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    chosen = (data["route"]["backend"], data["route"]["precision"])
    timed = {(t["route"]["backend"], t["route"]["precision"]): t["ms"] for t in data["trials"]}
    assert timed[chosen] == min(timed.values())  # the fastest measured is the one kept
    assert all(t["startup_s"] > 0 for t in data["trials"])

    said.clear()
    with load(calibrated_googlenet, log=said.append) as clf:
        assert (clf.backend, clf.precision) == chosen
        assert "cached measurement of" in clf.why
    assert not said  # nothing measured again

    with load(calibrated_googlenet, threads=1, log=said.append):  # another thread count: another measurement
        pass
    assert any("measuring" in s for s in said) and len(list(cache.glob("*.json"))) == 2


def test_a_damaged_cache_measures_again_and_an_unwritable_one_only_costs_time(calibrated_googlenet, tmp_path,
                                                                             monkeypatch, cache):
    with load(calibrated_googlenet):
        pass
    (f,) = cache.glob("*.json")
    f.write_text('{"key": {"version": 1}, "route": ')  # cut short, as by a full disk
    said: list[str] = []
    with load(calibrated_googlenet, log=said.append) as clf:
        assert "cached" not in clf.why
    assert any("measuring" in s for s in said)
    json.loads(f.read_text())  # rewritten whole

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKIT_CACHE", str(blocker))
    said.clear()
    with load(calibrated_googlenet, backend="openvino", precision="fp32", log=said.append) as clf:
        assert clf.backend == "openvino"  # one path: checked, not timed; the same cache code
    assert any("not cached" in s and "runs at every start" in s for s in said), said


ORT_FP32, ORT_INT8 = cpu_choice.Route("onnxruntime", "fp32"), cpu_choice.Route("onnxruntime", "int8-cpu")


def _kept(key: dict, route=ORT_INT8, candidates=(ORT_FP32, ORT_INT8)) -> dict:
    """A choice as measure() writes it: a trial per candidate, ``route`` the fastest."""
    trials = tuple(cpu_choice.Trial(r, 0.2, 4.0 if r == route else 9.0, 0.0, 1.0, 16, 16) for r in candidates)
    assert not cpu_cache.write_cached(key, cpu_choice.Choice(route, trials, 1, 2, "test CPU", "2026-11-28 10:00",
                                                              False))
    return json.loads(cpu_cache.cache_file(key).read_text())


def test_a_crafted_cache_is_measured_again_never_trusted(cache):
    """A cache file edited by hand or by another program: anything but a timed choice among this
    bundle's gated paths is ignored (measured again), never run and never a traceback."""
    key, candidates = {"version": 1, "test": "crafted"}, [ORT_FP32, ORT_INT8]
    good = _kept(key)
    assert cpu_cache.read_cached(key, candidates).route == ORT_INT8
    assert cpu_cache.read_cached(key, [ORT_FP32]) is None  # int8-cpu is no longer gated here
    f = cpu_cache.cache_file(key)

    def crafted(change) -> cpu_choice.Choice | None:
        data = json.loads(json.dumps(good))
        change(data)
        f.write_text(json.dumps(data))
        return cpu_cache.read_cached(key, candidates)

    assert crafted(lambda d: None) is not None
    assert crafted(lambda d: d.update(route={"backend": "openvino", "precision": "bf16"})) is None  # not a candidate
    assert crafted(lambda d: d["trials"][1].update(ms=None, failed="cosine 0.5")) is None  # its check failed
    assert crafted(lambda d: d["trials"][1].update(ms="4.0")) is None
    assert crafted(lambda d: d["trials"][1].update(ms=float("nan"))) is None
    assert crafted(lambda d: d["trials"][0].update(route={"backend": "tvm", "precision": "fp32"})) is None
    assert crafted(lambda d: d.update(route={"backend": "onnxruntime", "precision": "int8-cpu", "x": 1})) is None
    assert crafted(lambda d: d.update(trials={})) is None
    assert crafted(lambda d: d["trials"].append(7)) is None
    assert crafted(lambda d: d["trials"].insert(0, {**d["trials"][1], "ms": None})) is None  # the chosen one twice
    assert crafted(lambda d: d.update(trials=d["trials"][1:])) is None  # not every candidate: not what was measured
    assert crafted(lambda d: d["trials"][1].update(failed="x")) is None  # the chosen one failed its check
    assert crafted(lambda d: d["trials"][1].update(ms=1e308)) is None
    assert crafted(lambda d: d["trials"][0].update(images=-1)) is None
    assert crafted(lambda d: d.update(measured_at="\x1b[2J")) is None
    f.write_text(json.dumps(good).replace('"ms": 4.0', '"ms": 1' + "0" * 400))  # float() overflows
    assert cpu_cache.read_cached(key, candidates) is None
    f.write_text("[" * 200_000 + "]" * 200_000)  # deeper than Python's stack, under the size cap
    assert cpu_cache.read_cached(key, candidates) is None
    # only figures come from the file: escapes in a reason are dropped, CPU and threads are this process's
    said = crafted(lambda d: d.update(cpu="\x1b[31mEVIL", threads=10**6, batch=10**9)
                   or d["trials"][0].update(ms=None, failed="\x1b[2Jcosine\n0.5"))
    assert said is not None and said.trials[0].failed == "[2Jcosine0.5" and said.cpu == ""
    f.write_text(json.dumps(good) + " " * cpu_cache.MAX_CACHE_BYTES)  # too big to be ours: not even parsed
    assert cpu_cache.read_cached(key, candidates) is None
    f.write_bytes(b"\xff\xfe{")
    assert cpu_cache.read_cached(key, candidates) is None
    f.unlink()
    os.mkfifo(f)  # a FIFO where the file was: read at once as nothing, no waiting for a writer
    t0 = time.monotonic()
    assert cpu_cache.read_cached(key, candidates) is None and time.monotonic() - t0 < 1.0


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(cache):
    key = {"version": 1, "test": "leftover"}
    cache.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    name = cpu_cache.cache_file(key).name
    stale, live = cache / f".{name}.tmp-{dead}-0123abcd", cache / f".{name}.tmp-{os.getpid()}-0123abcd"
    recent = cache / f".{name}.tmp-{dead}-4567cdef"  # its PID may be another container's: young, so kept
    for f in (stale, live, recent):
        f.write_text("{")
    hour_ago = time.time() - 3600
    for f in (stale, live):
        os.utime(f, (hour_ago, hour_ago))
    _kept(key)
    assert not stale.exists() and live.exists() and recent.exists()  # live: a writer still running


def test_a_full_disk_at_the_cache_only_costs_the_measurement(cache, monkeypatch):
    """write_bytes_atomic's DiskFullError (ENOSPC) is the cache's note, not the load's error."""
    from edgekit import bundle
    from edgekit.bundle import atomic

    def full(path, data):
        raise bundle.disk_full(OSError(28, "No space left on device"), path, len(data))

    monkeypatch.setattr(atomic, "write_bytes_atomic", full)  # write_text_atomic reads it there
    key = {"version": 1, "test": "full"}
    trials = (cpu_choice.Trial(ORT_FP32, 0.2, 9.0, 0.0, 1.0, 16, 16),)
    why = cpu_cache.write_cached(key, cpu_choice.Choice(ORT_FP32, trials, 1, 2, "test CPU", "2026-11-28 10:00", False))
    assert why.startswith("the measurement was not cached (the disk is full: ") and "runs at every start" in why
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".x.json.tmp-99999999999999999999-deadbeef").write_text("{")  # a PID no process can have
    bundle.remove_dead_temp_files(cache, older_than_s=-1)
    assert not list(cache.glob(".x.json.tmp-*"))
    cpu_cache.cache_file(key).with_suffix(".lock").mkdir()  # a folder where the lock goes: no lock, still kept
    said: list[str] = []
    with cpu_cache.measuring(key, said.append) as where:
        assert where == cache
    assert len(said) == 1 and "cannot be used as a lock" in said[0]


def test_processes_starting_together_measure_once(calibrated_googlenet, cache, monkeypatch):
    """While one process measures (holding the key's lock), another waits and then takes its result."""
    man = mf.read(calibrated_googlenet)
    from edgekit import cpuinfo

    cpu = cpuinfo.detect()
    candidates, _ = cpu_choice.routes(calibrated_googlenet, man, "auto", "auto", cpu, capabilities())
    key = cpu_cache.cache_key(man, candidates, cpu, 2)
    said: list[str] = []
    got: list = []
    with cpu_cache.measuring(key, said.append) as where:  # this test is the first process, measuring
        assert where == cache
        waiter = threading.Thread(target=lambda: got.append(
            cpu_choice.choose(calibrated_googlenet, man, candidates, cpu, 2, said.append)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and any("another process is measuring" in s for s in said), said
        _kept(key, ORT_FP32, candidates)  # the first process's result
    waiter.join(30)
    runner, choice = got[0]
    runner.close()
    assert choice.cached and choice.route == ORT_FP32 and not any(s.startswith("measuring") for s in said), said

    monkeypatch.setattr(cpu_cache, "LOCK_WAIT_S", 0.3)  # a holder that hangs is not waited for forever
    said.clear()
    with cpu_cache.measuring(key, said.append), cpu_cache.measuring(key, said.append):
        pass
    assert any("measuring here as well" in s for s in said), said

    import errno
    import fcntl

    def no_locks(fd, op):  # a home folder on NFS without a lock daemon
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    said.clear()
    t0 = time.monotonic()
    with cpu_cache.measuring(key, said.append) as where:
        assert where == cache and time.monotonic() - t0 < 0.2  # not taken for a holder: no wait
    assert said == [f"note: {cache} cannot be locked (No locks available); measuring without waiting for others"]


def test_cache_key_changes_with_cpu_library_versions_and_files(calibrated_googlenet):
    man = mf.read(calibrated_googlenet)
    routes = [cpu_choice.Route("onnxruntime", "fp32"), cpu_choice.Route("openvino", "int8-cpu")]
    base = cpu_cache.cache_key(man, routes, VNNI, 2)
    assert cpu_cache.cache_key(man, routes, VNNI, 2) == base
    assert cpu_cache.cache_key(man, routes, AVX2, 2) != base
    assert cpu_cache.cache_key(man, routes, VNNI, 1) != base
    assert cpu_cache.cache_key(man, routes[:1], VNNI, 2) != base
    assert base["openvino"] and base["onnxruntime"]
    other = replace(man, artifacts=tuple(replace(a, sha256="0" * 64) if a.precision == "int8-cpu" else a
                                         for a in man.artifacts))
    assert cpu_cache.cache_key(other, routes, VNNI, 2) != base


def _with_validation(man: mf.Manifest, **changes) -> mf.Manifest:
    v = json.loads(json.dumps(man.validation))
    for key, val in changes.items():
        if val is None:
            v.pop(key, None)
        else:
            v[key] = val
    return replace(man, validation=v)


def test_only_gated_paths_are_candidates(calibrated_googlenet):
    b = calibrated_googlenet
    man = mf.read(b)
    caps_bf16 = frozenset({"FP32", "INT8", "BF16"})
    caps = frozenset({"FP32", "INT8"})
    names = lambda rs: {r.name for r in rs}  # noqa: E731

    got, notes = cpu_choice.routes(b, man, "auto", "auto", VNNI, caps_bf16)
    assert names(got) == {"ONNX Runtime fp32", "OpenVINO fp32", "ONNX Runtime int8-cpu", "OpenVINO int8-cpu",
                          "OpenVINO bf16"} and not notes
    got, notes = cpu_choice.routes(b, man, "auto", "auto", VNNI, caps)  # no bf16 on this CPU: no word about it
    assert "OpenVINO bf16" not in names(got) and not notes
    failed = dict(man.validation["bf16"], status="fail")
    got, notes = cpu_choice.routes(b, _with_validation(man, bf16=failed), "auto", "auto", VNNI, caps_bf16)
    assert "OpenVINO bf16" not in names(got) and "bf16 left out: its bf16 figures failed the accuracy gate" in notes[0]
    got, notes = cpu_choice.routes(b, _with_validation(man, bf16=failed), "openvino", "bf16", VNNI, caps_bf16)
    assert names(got) == {"OpenVINO bf16"} and notes[0].startswith("bf16 as asked, but")
    got, notes = cpu_choice.routes(b, _with_validation(man, bf16=None), "auto", "auto", VNNI, caps_bf16)
    assert "OpenVINO bf16" not in names(got) and "has no bf16 figures" in notes[0]
    # an 8-bit CPU form (calibrated before 7-bit weights) on a CPU that saturates: neither backend runs it
    old = _with_validation(man, int8=dict(man.validation["int8"], cpu_weight_bits=None))
    got, notes = cpu_choice.routes(b, old, "auto", "auto", AVX2, caps)
    assert names(got) == {"ONNX Runtime fp32", "OpenVINO fp32"} and "saturate" in notes[0]
    got, _ = cpu_choice.routes(b, old, "auto", "auto", VNNI, caps)
    assert "OpenVINO int8-cpu" in names(got)
    got, _ = cpu_choice.routes(b, man, "openvino", "auto", VNNI, caps)
    assert names(got) == {"OpenVINO fp32", "OpenVINO int8-cpu"}


def test_the_cosine_floor_follows_the_gates_own_figure(calibrated_googlenet):
    man = mf.read(calibrated_googlenet)
    int8, bf16 = cpu_choice.Route("openvino", "int8-cpu"), cpu_choice.Route("openvino", "bf16")
    assert cpu_choice.cosine_floor(man, int8) == pytest.approx(
        max(0.98, man.validation["int8"]["cpu"]["cosine"] - 0.01))
    assert cpu_choice.cosine_floor(man, bf16) == pytest.approx(max(0.98, man.validation["bf16"]["cosine"] - 0.01))
    assert cpu_choice.cosine_floor(_with_validation(man, bf16=None), bf16) == cpu_choice.MIN_COSINE


def test_a_path_that_computes_something_else_is_left_out():
    ref = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    fp32, int8 = cpu_choice.Route("openvino", "fp32"), cpu_choice.Route("openvino", "int8-cpu")
    assert cpu_choice._check(fp32, ref, ref * (1 + 1e-5))[3] == ""
    assert "differ from ONNX Runtime's" in cpu_choice._check(fp32, ref, ref + 0.1)[3]
    assert cpu_choice._check(int8, ref, ref + 0.01)[3] == ""
    assert "cosine" in cpu_choice._check(int8, ref, -ref)[3]
    assert "inf/NaN" in cpu_choice._check(int8, ref, np.full_like(ref, np.nan))[3]
    # a path at cosine 0.985 passes the bare floor but not one near the gate's own figure (0.9999 - 0.01)
    off = ref + np.random.default_rng(1).normal(size=ref.shape).astype(np.float32) * 0.15
    cos = cpu_choice._check(int8, ref, off)[1]
    assert 0.98 < cos < 0.9899
    assert cpu_choice._check(int8, ref, off, cpu_choice.MIN_COSINE)[3] == ""
    assert "the accuracy gate's figure" in cpu_choice._check(int8, ref, off, 0.9899)[3]


def test_forced_backends_and_precisions(calibrated_googlenet, cache):
    with load(calibrated_googlenet, backend="openvino", precision="fp32") as clf:
        assert (clf.backend, clf.precision) == ("openvino", "fp32")
        assert re.search(r"^OpenVINO fp32 as asked; checked against ONNX Runtime FP32 on \d+ photographs", clf.why)
    with load(calibrated_googlenet, backend="onnxruntime") as clf:  # as before: no measurement
        assert clf.backend == "onnxruntime" and "measured" not in clf.why
    with pytest.raises(UsageError, match="bf16 runs on OpenVINO only"):
        load(calibrated_googlenet, backend="onnxruntime", precision="bf16")
    with pytest.raises(UsageError, match="not int8 \\(TensorRT's form\\)"):
        load(calibrated_googlenet, backend="openvino", precision="int8")
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        load(calibrated_googlenet, precision="int4")
    if "BF16" in capabilities():
        with load(calibrated_googlenet, precision="bf16") as clf:
            assert (clf.backend, clf.precision) == ("openvino", "bf16") and "f32" not in clf.runner.description


def test_without_openvino_auto_is_onnxruntime_and_says_how_to_add_it(calibrated_googlenet, monkeypatch, cache):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: importing it raises ImportError
    assert capabilities() == frozenset()
    with load(calibrated_googlenet) as clf:
        assert clf.backend == "onnxruntime" and clf.precision == "int8-cpu"
        assert 'pip install "edgekit[openvino]"' in clf.why
    with pytest.raises(MissingDependencyError, match='edgekit\\[openvino\\]'):
        load(calibrated_googlenet, backend="openvino")
    res = edgekit("classify", str(calibrated_googlenet), "--backend", "openvino")
    assert res.returncode == 3 and 'pip install "edgekit[openvino]"' in res.stderr
    assert not list(cache.glob("*.json"))


def test_classify_and_bench_say_which_path_and_how_it_stands(calibrated_googlenet, tmp_path, cache):
    b = tmp_path / "b"
    shutil.copytree(calibrated_googlenet, b)
    res = edgekit("classify", str(b), "--backend", "openvino", "--precision", "int8-cpu")
    assert res.returncode == 0, res.stderr
    assert "backend: OpenVINO" in res.stderr and "OpenVINO int8-cpu as asked" in res.stderr
    res = edgekit("bench", str(b), "--runs", "2", "--seconds", "0", "--warmup", "1")
    assert res.returncode == 0, res.stderr
    rows = {tuple(line.split()[:2]) for line in res.stdout.splitlines()}
    assert {("openvino", "fp32"), ("openvino", "int8-cpu"), ("onnxruntime", "int8-cpu")} <= rows
    auto = [r for r in rows if r[0].startswith("auto:")]
    assert len(auto) == 1, res.stdout
    assert "note: auto (the default backend) chose" in res.stdout
    assert "x ONNX Runtime fp32" in res.stdout and "OpenVINO's best" in res.stdout
    assert "CPU: " in res.stdout  # the CPU's kind and flags beside the figures
