"""Nothing lost, nothing leaked (issue 14, the bundle side), on real files and real processes.

Every reader of a bundle file is confined to the bundle and checks sha256; names from a
manifest never become paths outside the output; edgekit's outputs follow the umask; a
bundle killed with SIGKILL at any step of a replacement or a calibration is the complete old
or the complete new one (or comes back by itself), and what a killed run left is removed by
the next; a bundle being changed is locked; a full disk is one line saying how much to free.
Kills are placed with EDGEKIT_TEST_PAUSE_AT=<step>: the process stops itself (SIGSTOP) there.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import BundleError, UsageError

pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def small(export_bundle) -> Path:
    """A 64x64 GoogLeNet bundle (random weights): small and quick to calibrate."""
    return export_bundle("googlenet", input_size=64)


@pytest.fixture()
def b(small, tmp_path) -> Path:
    dst = tmp_path / "root" / "b"
    shutil.copytree(small, dst)
    return dst


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k in range(24):
        d = root / str(k % 2)
        d.mkdir(exist_ok=True)
        cv2.imwrite(str(d / f"{k:03d}.png"), rng.integers(0, 256, (72, 72, 3), dtype=np.uint8))
    return root


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def ek(*args: str, preexec=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True,
                          env=_env(**env), timeout=600, preexec_fn=preexec)


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), res.stderr
    return last


def paused(args: list[str], step: str) -> subprocess.Popen:
    """``edgekit ARGS`` stopped at ``step`` (it printed 'paused at STEP' and sent itself SIGSTOP)."""
    p = subprocess.Popen([sys.executable, "-m", "edgekit", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=_env(EDGEKIT_TEST_PAUSE_AT=step))
    return _until_paused(p, step, f"edgekit {' '.join(args)}")


def _until_paused(p: subprocess.Popen, step: str, what: str) -> subprocess.Popen:
    """``p`` once it says 'paused at STEP' on stderr; the test fails if it ends first."""
    assert p.stderr is not None
    seen = []
    for line in p.stderr:
        seen.append(line)
        if f"paused at {step}" in line:
            return p
    p.wait()
    pytest.fail(f"{what} never paused at {step} (exit {p.returncode}): {''.join(seen)[-800:]}")


def kill9(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait()  # reaped: its PID is dead, not a zombie


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


def verify(bundle: Path) -> mf.Manifest:
    """Every sha256 matches and the bundle loads and classifies."""
    from edgekit.runtime.loader import load

    man = mf.read(bundle)
    for art in man.artifacts:
        bundle_mod.artifact_path(bundle, art)
    with load(bundle, backend="onnxruntime") as clf:
        clf.classify(np.zeros((80, 80, 3), np.uint8))
    return man


def hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def _edit(bundle: Path, fn) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    fn(data)
    (bundle / "manifest.json").write_text(json.dumps(data))


def _rehash(bundle: Path, rel: str) -> None:
    """Make the manifest agree with the file now at ``rel`` (as a careless or hostile writer would)."""
    f = bundle / rel

    def fix(d):
        for a in d["artifacts"]:
            if a["path"] == rel:
                a["sha256"], a["bytes"] = bundle_mod.sha256(f), f.stat().st_size
    _edit(bundle, fix)


# ------------------------------------------------------------------ 1. confinement of every reader


def test_labels_symlink_to_a_secret_is_not_exported(b, tmp_path):
    from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream
    from edgekit.deploy.triton import TritonRequest, export_triton

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET\n" * 1000)  # as many lines as classes: only confinement can refuse it
    secret.chmod(0o600)
    (b / "labels.txt").unlink()
    (b / "labels.txt").symlink_to(secret)
    _rehash(b, "labels.txt")  # even a manifest that agrees with the secret's sha256
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        export_triton(TritonRequest(b, tmp_path / "repo"))
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        export_deepstream(DeepStreamRequest(b, tmp_path / "ds", "fp32", "desktop-ada"))
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p != secret
              and b"TOP-SECRET" in p.read_bytes()]
    assert leaked == []
    _one_line_error(ek("export-triton", str(b), "-o", str(tmp_path / "repo2")))


def test_a_wrong_labels_sha256_is_refused_by_every_reader(b, tmp_path, photos):
    from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream
    from edgekit.deploy.triton import TritonRequest, export_triton
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle
    from edgekit.quant.evaluate import evaluate

    with open(b / "labels.txt", "a") as f:
        f.write("extra\n")
    for call in (lambda: export_triton(TritonRequest(b, tmp_path / "repo")),
                 lambda: export_deepstream(DeepStreamRequest(b, tmp_path / "ds", "fp32", "desktop-ada")),
                 lambda: evaluate(b, photos),
                 lambda: calibrate_bundle(CalibrateRequest(b, photos, min_agreement=0.0))):
        with pytest.raises(BundleError, match="labels.txt does not match its sha256"):
            call()
    assert not (tmp_path / "repo").exists() and not (tmp_path / "ds").exists()


def test_an_engine_symlinked_out_of_the_bundle_is_refused(b, tmp_path):
    outside = tmp_path / "outside.plan"
    outside.write_bytes(b"plan")
    (b / "engines").mkdir()
    (b / "engines" / "x.plan").symlink_to(outside)
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        bundle_mod.engine_path(b, {"path": "engines/x.plan", "sha256": bundle_mod.sha256(outside)})


def test_a_manifest_symlinked_out_of_the_bundle_is_refused(b, tmp_path):
    shutil.move(str(b / "manifest.json"), tmp_path / "m.json")
    (b / "manifest.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        mf.read(b)


# ------------------------------------------------------------------ 2. names from a manifest are not paths


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "", "x" * 101, "a\\b", ".hidden", "a..b"])
def test_model_names_are_checked_when_the_manifest_is_read(b, name):
    _edit(b, lambda d: d["model"].__setitem__("name", name))
    with pytest.raises(BundleError, match=r"key 'model.name' must be a plain name"):
        mf.read(b)


def test_a_hostile_model_name_writes_nothing_outside_the_output(b, tmp_path):
    from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream
    from edgekit.deploy.triton import TritonRequest, export_triton

    victim = tmp_path / "a" / "escape_onnx_fp32"  # where ../../escape_onnx_fp32 from the repository leads
    victim.mkdir(parents=True)
    (victim / "keep").write_text("mine")
    _edit(b, lambda d: d["model"].__setitem__("name", "../../escape"))
    out = tmp_path / "a" / "b" / "repo"
    with pytest.raises(BundleError, match="model.name"):
        export_triton(TritonRequest(b, out, force=True))
    with pytest.raises(BundleError, match="model.name"):
        export_deepstream(DeepStreamRequest(b, tmp_path / "a" / "b" / "ds", "fp32", "desktop-ada"))
    _one_line_error(ek("export-triton", str(b), "-o", str(out), "--force"))
    assert (victim / "keep").read_text() == "mine" and [p.name for p in victim.iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "root"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["escape_onnx_fp32"]


def test_triton_names_from_options_and_engine_entries_stay_inside(b, tmp_path):
    from edgekit.deploy.triton import TritonRequest, export_triton

    with pytest.raises(UsageError, match="--name"):
        export_triton(TritonRequest(b, tmp_path / "repo", name="../up"))
    (b / "engines").mkdir()
    (b / "engines" / "x.plan").write_bytes(b"plan")
    entry = {"path": "engines/x.plan", "sha256": bundle_mod.sha256(b / "engines" / "x.plan"),
             "precision": "fp16", "device": "../../../evil", "trt_flavour": "tensorrt", "trt_version": "10.3",
             "batch": {"min": 1, "opt": 1, "max": 1}}
    _edit(b, lambda d: d["engines"].append(entry))
    with pytest.raises(BundleError, match="not a plain directory name|must be a plain name"):
        export_triton(TritonRequest(b, tmp_path / "repo"))
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))


# ------------------------------------------------------------------ 3. modes follow the umask


def _modes(root: Path) -> set[tuple[str, int]]:
    out = set()
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            out.add(("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode)))
    return out


@pytest.mark.parametrize("mask, dmode, fmode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_outputs_follow_the_umask(small, tmp_path, photos, mask, dmode, fmode):
    from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream
    from edgekit.deploy.triton import TritonRequest, export_triton
    from edgekit.export.torch_onnx import ExportRequest, export
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    old = os.umask(mask)
    try:
        b = export(ExportRequest("googlenet", tmp_path / "b", "random", input_size=64)).bundle
        assert _modes(b) == {("d", dmode), ("f", fmode)}
        calibrate_bundle(CalibrateRequest(b, photos, min_agreement=0.0))  # rewrites manifest.json
        assert _modes(b) == {("d", dmode), ("f", fmode)}
        # from a bundle whose files have other modes (made under another umask): the umask decides
        src = tmp_path / "src"
        shutil.copytree(small, src)
        for p in src.iterdir():
            p.chmod(0o640)
        export_triton(TritonRequest(src, tmp_path / "repo"))
        assert _modes(tmp_path / "repo") == {("d", dmode), ("f", fmode)}
        export_deepstream(DeepStreamRequest(src, tmp_path / "ds", "fp32", "desktop-ada"))
        assert _modes(tmp_path / "ds") == {("d", dmode), ("f", fmode)}
    finally:
        os.umask(old)


# ------------------------------------------------------------------ 4. kills, recovery, leftovers


CALIBRATE_STEPS = [("calibrate.locked", False), ("update.linked", False), ("swap.staged", False),
                   ("swap.exchanged", True)]


@pytest.mark.parametrize("step, new", CALIBRATE_STEPS, ids=[s for s, _ in CALIBRATE_STEPS])
def test_calibrate_killed_at_any_step_leaves_a_whole_bundle_and_the_next_run_tidies(b, photos, step, new):
    before = (b / "manifest.json").read_bytes()
    args = ["calibrate", str(b), "--data", str(photos), "--min-agreement", "0"]
    kill9(paused(args, step))
    man = verify(b)  # every sha256 matches and it loads
    assert (man.artifact("onnx", "int8") is not None) == new
    if not new:
        assert (b / "manifest.json").read_bytes() == before and not (b / "model.int8.onnx").exists()
    res = ek(*args)
    assert res.returncode == 0, res.stderr
    assert verify(b).artifact("onnx", "int8") is not None
    assert hidden(b.parent) == [] and hidden(b) == []  # staging, old copy and lock of the killed run: gone


def test_export_force_killed_mid_swap_leaves_a_whole_bundle(b, tmp_path):
    first = mf.read(b).created
    args = ["export", "-m", "googlenet", "-w", "random", "--input-size", "64", "-o", str(b), "--force"]
    kill9(paused(args, "swap.exchanged"))
    assert verify(b).created != first  # the new one is in place; the old one waits in a hidden directory
    assert hidden(b.parent)
    kill9(paused(args, "swap.staged"))
    verify(b)
    res = ek("calibrate", str(b), "--data", str(tmp_path / "none"))  # any change in that root tidies it
    assert hidden(b.parent) == [], res.stderr


def test_a_bundle_killed_between_the_two_renames_comes_back(b, tmp_path, monkeypatch):
    """Where the filesystem cannot exchange two directories, a replacement renames twice; killed in between,
    the old bundle is ``.NAME.old-PID``: the next edgekit that looks for it puts it back."""
    old = b.parent / f".b.old-{dead_pid()}"
    os.replace(b, old)
    res = ek("inspect", str(b))
    assert res.returncode == 0, res.stderr
    verify(b)
    assert hidden(b.parent) == []
    os.replace(b, b.parent / f".b.old-{dead_pid()}")
    monkeypatch.setenv("EDGEKIT_BUILD_DIR", str(b.parent))
    assert bundle_mod.find_latest() == b  # and with no bundle named, the latest is found again
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a replacement still under way (its process alive) is left alone
        os.replace(b, b.parent / f".b.old-{live.pid}")
        with pytest.raises(BundleError, match="is not a bundle"):
            mf.read(b)
    finally:
        live.kill()
        live.wait()
    verify(b)


def test_find_latest_ignores_staging_directories(b, tmp_path, monkeypatch):
    stage = b.parent / f".b.tmp-{os.getpid()}-abcd1234"
    shutil.copytree(b, stage)
    os.utime(b / "manifest.json", (1, 1))
    monkeypatch.setenv("EDGEKIT_BUILD_DIR", str(b.parent))
    assert bundle_mod.find_latest() == b


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(b, photos):
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root = b.parent
        for name in (f".b.tmp-{dead}-0a1b2c3d", f".b.old-{dead}", f".other.tmp-{dead}-0a1b2c3d", ".b.tmp-x8k2_q0z",
                     f".other.tmp-{live.pid}-0a1b2c3d"):
            (root / name).mkdir()
            (root / name / "model.onnx").write_bytes(b"\0" * 1000)
            if not name.startswith(f".b.tmp-{dead}"):  # another bundle's, or a replaced one: a manifest shows it
                (root / name / mf.MANIFEST).write_text("{}")
        (b / ".calibrate-abc123").mkdir()
        (b / ".calibrate-abc123" / "model-inferred.onnx").write_bytes(b"\0" * 1000)
        (b / f".manifest.json.tmp-{dead}-0a1b2c3d").write_text("{")
        res = ek("calibrate", str(b), "--data", str(photos), "--min-agreement", "0")
        assert res.returncode == 0, res.stderr
        assert hidden(root) == [f".other.tmp-{live.pid}-0a1b2c3d"] and hidden(b) == []
        verify(b)
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------ 5. one change at a time


def test_a_second_change_of_a_locked_bundle_fails_fast_naming_the_first(b, photos):
    first = paused(["calibrate", str(b), "--data", str(photos), "--min-agreement", "0"], "calibrate.locked")
    try:
        res = ek("build", str(b), "--int8", "--calib-data", str(photos), "--min-agreement", "0")
        line = _one_line_error(res)
        assert f"{b} is being changed by PID {first.pid}" in line and "wait for it to finish" in line
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert verify(b).artifact("onnx", "int8") is not None
    assert hidden(b.parent) == [] and hidden(b) == []


def test_two_builds_at_once_never_crash(b, photos):
    """Free-running: whichever comes second fails with the lock's message or finds the work done (a regression
    guard; the crash reported in the issue did not reproduce here, so the paused test above is the sharp one)."""
    args = [sys.executable, "-m", "edgekit", "build", str(b), "--int8", "--calib-data", str(photos),
            "--min-agreement", "0"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.communicate(timeout=600)[1], p.returncode)[::-1] for p in procs]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert "Traceback" not in err, err
        # "by PID N", or "by another process" when the holder has locked but not yet written its PID
        assert rc == 0 or "is being changed by" in err.strip().splitlines()[-1], err
    assert verify(b).artifact("onnx", "int8") is not None
    assert hidden(b.parent) == [] and hidden(b) == []


# ------------------------------------------------------------------ 6. a full disk


def _file_size_limit(nbytes: int):
    """RLIMIT_FSIZE with SIGXFSZ ignored: a write past ``nbytes`` fails with EFBIG. It stands in for a full
    disk (ENOSPC), which needs root to set up (a small tmpfs); edgekit treats EFBIG, ENOSPC and EDQUOT alike."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def test_calibrate_on_a_full_disk_is_one_line_and_leaves_the_bundle_as_it_was(b, photos):
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    res = ek("calibrate", str(b), "--data", str(photos), "--min-agreement", "0",
             preexec=_file_size_limit(10_000_000))  # the INT8 models fit, the FP16 one (13 MB) does not
    line = _one_line_error(res)
    assert res.returncode == 1  # the disk, not what was given (README, "Exit codes")
    assert "could not write" in line and f" MB at {b.parent}" in line, line
    assert int(line.split("free at least ")[1].split(" MB")[0]) >= 14  # the FP16 model alone is 13 MB
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before
    assert hidden(b.parent) == []
    verify(b)


def _mb_to_free(line: str, where: Path) -> int:
    assert "could not write" in line and f" MB at {where} " in line, line
    return int(line.split("free at least ")[1].split(f" MB at {where} ")[0])


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(b, tmp_path):
    """A brand-new export too says how much to free: the ONNX and its simplified copy, 4 bytes a weight each
    (GoogLeNet: 6.6 M weights, a 26 MB model)."""
    args = ["export", "-m", "googlenet", "-w", "random", "--input-size", "64", "-o"]
    line = _one_line_error(ek(*args, str(b.parent / "new"), preexec=_file_size_limit(8_000_000)))
    assert 52 <= _mb_to_free(line, b.parent) <= 60, line
    assert [p.name for p in b.parent.iterdir()] == ["b"]
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    line = _one_line_error(ek(*args, str(b), "--force", preexec=_file_size_limit(8_000_000)))
    assert _mb_to_free(line, b.parent) >= 26, line  # at least what it replaces
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before and hidden(b.parent) == []


def test_an_atomic_write_on_a_full_disk_leaves_no_temporary_file(tmp_path):
    script = ("import sys; from pathlib import Path; from edgekit import bundle as b\n"
              "try:\n    b.write_bytes_atomic(Path(sys.argv[1]), b'x' * 2_000_000)\n"
              "except b.DiskFullError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "f.bin")], capture_output=True, text=True,
                         preexec_fn=_file_size_limit(1_000_000), timeout=120)
    assert "free at least 2 MB" in res.stdout, res.stdout + res.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 7. clear errors


@pytest.mark.parametrize("lines, what", [(999, "has 999 names"), (1001, "has 1001 names")])
def test_labels_that_do_not_match_the_classes_are_refused_at_load(b, lines, what):
    from edgekit.runtime.loader import load

    names = (b / "labels.txt").read_text().splitlines()
    (b / "labels.txt").write_text("\n".join((names + ["more"])[:lines]) + "\n")
    _rehash(b, "labels.txt")
    with pytest.raises(BundleError, match=what + " but the model has 1000 classes"):
        load(b, backend="onnxruntime")
    _one_line_error(ek("classify", str(b)))


def test_non_utf8_manifest_and_labels_are_clear_errors(b):
    (b / "labels.txt").write_bytes(b"\xff\xfe caf\xe9\n" * 1000)
    _rehash(b, "labels.txt")
    with pytest.raises(BundleError, match="labels.txt is not UTF-8"):
        mf.read(b)
    (b / "manifest.json").write_bytes((b / "manifest.json").read_bytes().replace(b'"googlenet"', b'"googlen\xe9t"'))
    with pytest.raises(BundleError, match="manifest.json is not UTF-8"):
        mf.read(b)
    assert "not UTF-8" in _one_line_error(ek("inspect", str(b)))


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0])
def test_schema_version_must_be_a_positive_int(b, version):
    _edit(b, lambda d: d.__setitem__("schema_version", version))
    with pytest.raises(BundleError, match="schema_version"):
        mf.read(b)


def test_calibrating_garbage_with_a_matching_sha_names_the_file(b, photos):
    (b / "model.onnx").write_bytes(os.urandom(4096))
    _rehash(b, "model.onnx")
    line = _one_line_error(ek("calibrate", str(b), "--data", str(photos), "--min-agreement", "0"))
    assert f"{b / 'model.onnx'} is not a readable ONNX model" in line, line
    (b / "model.onnx").write_bytes(b"")  # parses as an empty model
    _rehash(b, "model.onnx")
    assert "model.onnx is not a readable ONNX model" in _one_line_error(ek("calibrate", str(b), "--data",
                                                                         str(photos)))
    assert hidden(b.parent) == [] and hidden(b) == []


# ------------------------------------------------------------------ 8. engine builds (the fake TensorRT: no GPU here)
# edgekit build on tests/trt/fake.py's TensorRT 10.3 posing as desktop-ada: a real manifest, real plan files
# (the fake's), a real lock and real kills; the engine then loads through the fake runtime on host memory.

ROOT = Path(__file__).resolve().parents[1]

_FAKE_BUILD = """
import sys
from pathlib import Path

from edgekit import profiles as prof_mod
from edgekit.trt.engine import EngineRequest, build
from edgekit.trt import build as trt_build
from edgekit.trt import parse as trt_parse
from tests.trt.fake import HostCuda, fake_tensorrt

fake = fake_tensorrt("10.3.0", HostCuda())
trt_parse.load_trt = trt_build.load_trt = lambda prefer=None: fake
ada = prof_mod.get("desktop-ada")
prof_mod.detect = lambda *a, **k: (ada, prof_mod.Device(compute_capability="8.9"))
lo, opt, hi = (int(x) for x in sys.argv[2].split(":"))
print(build(EngineRequest(Path(sys.argv[1]), "fp32", "desktop-ada", batch=prof_mod.Batch(lo, opt, hi))).path)
"""


@pytest.fixture()
def device(monkeypatch, tmp_path):
    """This process poses as desktop-ada with the fake TensorRT 10.3 and a host-memory GPU."""
    from tests.trt.fake import pose_as

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))

    def pose(version: str = "10.3.0", profile: str = "desktop-ada", cc: str = "8.9"):
        return pose_as(monkeypatch, version, profile, cc)[0]

    return pose


def _engine(b: Path, batch: tuple[int, int, int] = (1, 1, 2), **kw):
    from edgekit.profiles import Batch
    from edgekit.trt.engine import EngineRequest, build

    kw.setdefault("precision", "fp32")
    kw.setdefault("profile", "desktop-ada")
    return build(EngineRequest(b, batch=Batch(*batch), **kw))


def paused_build(b: Path, batch: str, step: str, tmp_path: Path) -> subprocess.Popen:
    """``_FAKE_BUILD`` (edgekit build on the fake TensorRT) in a child, stopped at ``step``."""
    p = subprocess.Popen([sys.executable, "-c", _FAKE_BUILD, str(b), batch], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env=_env(EDGEKIT_TEST_PAUSE_AT=step, EDGEKIT_CACHE=str(tmp_path / "cache"),
                                  PYTHONPATH=str(ROOT)))
    return _until_paused(p, step, "the engine build")


def verify_engines(b: Path) -> mf.Manifest:
    """verify(), and every engine entry's plan is there with its sha256, nothing else is in engines/, and
    the engine loads and classifies (the fake runtime)."""
    from edgekit.runtime.loader import load

    man = verify(b)
    for e in man.engines:
        assert bundle_mod.engine_path(b, e) is not None, f"{e['path']} is missing or changed"
    listed = sorted(str(e["path"]) for e in man.engines)
    assert sorted(f"engines/{p.name}" for p in (b / "engines").iterdir() if not p.name.startswith(".")) == listed
    with load(b, backend="tensorrt") as clf:
        assert clf.runner.backend == "tensorrt"
        clf.classify(np.zeros((80, 80, 3), np.uint8))
    return man


def _holding_lock(b: Path) -> subprocess.Popen:
    """A child process holding ``b``'s lock until its stdin closes."""
    code = ("import sys; from pathlib import Path; from edgekit import bundle\n"
            "with bundle.lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(b)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_an_engine_build_on_a_locked_bundle_fails_fast_naming_the_holder(b, device):
    import re

    from edgekit.trt.engine import build_bare

    device()
    holder = _holding_lock(b)
    try:
        said = f"{re.escape(str(b))} is being changed by PID {holder.pid}.*wait for it to finish"
        with pytest.raises(BundleError, match=said):
            _engine(b)
        with pytest.raises(BundleError, match=said):  # a bare build whose plan would land in the bundle
            build_bare(b / "model.onnx", "fp32", "desktop-ada")
        assert not (b / "engines").exists() and mf.read(b).engines == ()
        assert not list(b.glob("*.plan"))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    _engine(b)
    verify_engines(b)
    assert hidden(b.parent) == [] and hidden(b) == []


ENGINE_STEPS = [("engine.locked", False), ("engine.plan-written", False), ("engine.manifest-written", True)]


@pytest.mark.parametrize("step, new", ENGINE_STEPS, ids=[s for s, _ in ENGINE_STEPS])
def test_an_engine_build_killed_at_any_step_lists_only_whole_plans(b, device, tmp_path, step, new):
    """A rebuild for other shapes replaces the device's engine: killed after the manifest names the new plan
    but before the old one is deleted (or at any other step), every listed plan is there and loads; the next
    build removes what the killed one left."""
    device()
    first = _engine(b, (1, 1, 2))
    kill9(paused_build(b, "1:2:4", step, tmp_path))
    man = mf.read(b)
    for e in man.engines:
        assert bundle_mod.engine_path(b, e) is not None, f"{e['path']} is listed but missing or changed"
    assert len(man.engines) == 1
    assert man.engines[0]["batch"] == ({"min": 1, "opt": 2, "max": 4} if new else {"min": 1, "opt": 1, "max": 2})
    verify(b)
    again = _engine(b, (1, 2, 4))
    assert again.reused == new
    assert not first.path.exists()
    verify_engines(b)
    assert hidden(b.parent) == [] and hidden(b) == [] and hidden(b / "engines") == []


def test_a_forced_rebuild_never_writes_over_the_plan_the_manifest_lists(b, device):
    device()
    first = _engine(b)
    again = _engine(b, force=True)
    assert not again.reused and again.entry["key"] == first.entry["key"]
    assert again.path != first.path and not first.path.exists()
    assert [e["path"] for e in verify_engines(b).engines] == [again.entry["path"]]
    third = _engine(b, force=True)  # the first name is free again
    assert third.path == first.path and not again.path.exists()
    verify_engines(b)


def test_a_dla_build_reads_the_calibration_cache_as_checked_text(b, device):
    """The implicit-INT8 cache is read like every artifact: a non-UTF-8 one (sha256 matching) is one line."""
    device("8.5.2", "jetson-xavier-nx", "7.2")
    (b / "calibration.cache").write_bytes(b"TRT-8502-EntropyCalibration2\n\xff\xfe: 3c000000\n")
    art = mf.Artifact("calibration.cache", "calibration", bundle_mod.sha256(b / "calibration.cache"),
                      (b / "calibration.cache").stat().st_size, None)
    (b / "manifest.json").write_text(mf.read(b).with_artifact(art).to_json())
    with pytest.raises(BundleError, match="calibration.cache is not UTF-8") as err:
        _engine(b, (1, 1, 1), precision="int8", profile="jetson-xavier-nx", dla=0)
    assert "\n" not in str(err.value)


def _set_pre(d: dict, size: int) -> None:
    d["preprocess"]["height"] = d["preprocess"]["width"] = size


def _set_pre_and_input(d: dict, size: int) -> None:
    _set_pre(d, size)
    d["input"]["shape"][1] = d["input"]["shape"][2] = size


@pytest.mark.parametrize("edit, needle", [
    (_set_pre, "its input shape in manifest.json takes 64x64"),
    (_set_pre_and_input, "the model file takes 64x64"),
], ids=["manifest-input", "model-file"])
def test_calibrating_a_bundle_whose_preprocessing_disagrees_with_its_model_is_one_line(b, photos, edit, needle):
    _edit(b, lambda d: edit(d, 48))
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    line = _one_line_error(ek("calibrate", str(b), "--data", str(photos), "--min-agreement", "0"))
    assert f"{b}: manifest.json's preprocessing makes 48x48 images but {needle}" in line, line
    assert "re-export the bundle" in line, line
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before
    assert hidden(b.parent) == [] and hidden(b) == []


# ------------------------------------------------------------------ hostile lock files and leftovers


@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo", "devnull", "dir", "hardlink"])
def test_a_lock_file_that_is_not_a_plain_file_is_refused_and_nothing_outside_is_touched(b, tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    lock = bundle_mod.lock_path(b)
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "dangling":
        lock.symlink_to(tmp_path / "created-outside")
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "devnull":
        lock.symlink_to("/dev/null")
    elif kind == "dir":
        lock.mkdir()
    else:
        os.link(victim, lock)
    with pytest.raises(BundleError) as exc:
        with bundle_mod.lock(b):
            pass
    msg = str(exc.value)
    assert "\n" not in msg and str(lock) in msg and "remove it" in msg
    assert victim.read_text() == "keep me\n"
    assert not (tmp_path / "created-outside").exists()


def test_tidying_touches_only_edgekits_own_leftovers(b, photos):
    root, dead = b.parent, dead_pid()
    (root / f".notes.tmp-{dead}-x").write_text("notes")
    (root / f".b.tmp-{dead}-0a1b2c3d.txt").write_text("mine")
    (root / ".cache.tmp-abcdefgh").mkdir()
    (root / ".cache.tmp-abcdefgh" / "data").write_text("cache")
    (root / ".other.lock").write_text("not a bundle's\n")
    (root / f".bashrc.old-{dead}").write_text("alias x=y\n")
    (root / f".dir.old-{dead}-0a1b2c3d").mkdir()  # no manifest.json: not a replaced bundle
    before = hidden(root)
    res = ek("calibrate", str(b), "--data", str(photos), "--min-agreement", "0")
    assert res.returncode == 0, res.stderr
    assert hidden(root) == before and not (root / "bashrc").exists() and not (root / "dir").exists()
    assert (root / f".bashrc.old-{dead}").read_text() == "alias x=y\n"


def test_a_symlinked_engines_folder_is_refused_before_anything_is_deleted_or_written(b, device, tmp_path):
    device()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "desktop-ada-fp32-0123456789ab.plan"
    victim.write_bytes(b"someone else's")
    (b / "engines").symlink_to(outside)
    with pytest.raises(BundleError, match="symlink or not a directory inside the bundle"):
        _engine(b)
    assert sorted(p.name for p in outside.iterdir()) == [victim.name] and victim.read_bytes() == b"someone else's"


def test_a_replaced_engine_entry_naming_a_bundle_file_does_not_delete_it(b, device):
    device()
    entry = {"path": "model.onnx", "sha256": "0" * 64, "bytes": 1, "key": "x", "precision": "fp32",
             "device": "desktop-ada", "dla_core": None, "batch": {"min": 1, "opt": 1, "max": 2}}
    _edit(b, lambda d: d.__setitem__("engines", [entry]))
    _engine(b)
    assert (b / "model.onnx").is_file()


def test_labels_with_control_characters_are_refused(b, tmp_path):
    from edgekit import labels

    lines = (b / "labels.txt").read_text().splitlines()
    lines[0] = "cat\x1b]0;owned\x07"
    (b / "labels.txt").write_text("\n".join(lines) + "\n")
    _edit(b, lambda d: [a.__setitem__("sha256", bundle_mod.sha256(b / "labels.txt")) for a in d["artifacts"]
                        if a["path"] == d["labels"]])
    with pytest.raises(BundleError, match="line 1 has control characters"):
        mf.read(b)
    with pytest.raises(UsageError, match="line 1 has control characters"):
        labels.read(b / "labels.txt")


def test_a_symlinked_bundle_is_locked_and_changed_as_its_target(googlenet_bundle, tmp_path):
    """current -> v1: changing it through the link took a different lock than v1 (two changers at
    once), and the swap replaced the link with a directory, leaving v1 stale."""
    from edgekit import bundle as bundle_mod

    v1 = tmp_path / "v1"
    shutil.copytree(googlenet_bundle, v1)
    current = tmp_path / "current"
    current.symlink_to(v1, target_is_directory=True)
    assert bundle_mod.lock_path(current) == bundle_mod.lock_path(v1)
    with bundle_mod.lock(v1):  # held here: a change through the link is refused as for v1 itself
        code = ("import sys; from edgekit import bundle as b\n"
                "with b.lock(b.Path(sys.argv[1])): pass")
        res = subprocess.run([sys.executable, "-c", code, str(current)], capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and "being changed" in res.stderr
    with bundle_mod.updating(current) as tmp:
        (tmp / "note.txt").write_text("new")
    assert current.is_symlink() and (v1 / "note.txt").read_text() == "new"
