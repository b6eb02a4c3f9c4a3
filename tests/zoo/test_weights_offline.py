"""Published weights that cannot be downloaded: the command fails within seconds (not after the
hub clients' half minute of retries) and names both ways forward, --weights random and
--weights PATH. Nothing here depends on this machine being offline: the network is made to fail
on purpose (a proxy on a closed port, a proxy that hangs up, a name lookup that never answers),
so the tests pass the same on a machine with internet."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch")

from edgekit.cli import main  # noqa: E402
from edgekit.errors import WeightsError, WeightsUnavailableError  # noqa: E402
from edgekit.zoo import weights, weights_fetch  # noqa: E402

# the old behaviour took 19-30 s offline; a probe takes at most about 3 s, the rest is imports
BOUND_S = 15.0
PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
              "no_proxy", "NO_PROXY")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once we return: a connection is refused at once


@pytest.fixture
def no_cache_online(monkeypatch, tmp_path):
    """Empty caches everywhere, no offline switches, no proxy: a first run on a new machine."""
    for var in ("EDGEKIT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    for var in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "cache" / var.lower()))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache" / "hf_hub"))
    try:  # read once at import; set here too in case huggingface_hub is imported already
        import huggingface_hub.constants as hc

        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "cache" / "hf_hub"))
    except ImportError:
        pass
    return tmp_path


def _export(tmp_path: Path, capsys, model: str) -> tuple[int, str, float]:
    capsys.readouterr()
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        main(["export", "--model", model, "-o", str(tmp_path / "out")])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    return e.value.code, err, elapsed


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def _names_both_ways(msg: str) -> None:
    assert "--weights random" in msg and "--weights PATH" in msg, msg
    assert "labels are meaningless" in msg, msg


@pytest.mark.parametrize("model", ["googlenet", "inception_v4", "bn_inception"])
def test_proxy_down_fails_at_once_naming_both_ways(model, no_cache_online, monkeypatch, capsys):
    port = _closed_port()
    for var in ("HTTPS_PROXY", "HTTP_PROXY"):  # bn_inception's weights are on plain http
        monkeypatch.setenv(var, f"http://alice:s3cret@127.0.0.1:{port}")
    code, err, elapsed = _export(no_cache_online, capsys, model)
    msg = _one_error_line(err)
    assert code == 1, err
    assert elapsed < BOUND_S, elapsed
    _names_both_ways(msg)
    assert f"proxy 127.0.0.1:{port} refused the connection" in msg
    assert "s3cret" not in err and "alice" not in err
    assert not (no_cache_online / "out").exists()


@pytest.fixture
def dead_dns(monkeypatch):
    """Every name lookup hangs, as with an unreachable DNS server (5 s per try, several tries)."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield
    release.set()


@pytest.mark.parametrize("model", ["googlenet", "inception_v4"])
def test_silent_dns_fails_within_the_probe_time(model, no_cache_online, dead_dns, capsys):
    code, err, elapsed = _export(no_cache_online, capsys, model)
    msg = _one_error_line(err)
    assert code == 1, err
    assert elapsed < BOUND_S, elapsed
    _names_both_ways(msg)
    host = "download.pytorch.org" if model == "googlenet" else "huggingface.co"
    assert f"{host} did not resolve within" in msg
    # where to put a copy made on another machine
    cache = no_cache_online / "cache"
    assert str(cache) in msg
    if model == "googlenet":
        assert "googlenet-1378be20.pth" in msg


@pytest.fixture
def hangup_proxy():
    """A proxy that accepts connections and closes them: the probe passes, every request fails
    (the hub client retries such failures five times with back-off, about 25 s)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(1)
                    conn.recv(4096)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    srv.close()


@pytest.mark.parametrize("model", ["googlenet", "inception_v4"])
def test_failed_download_after_the_probe_is_fast_and_names_both_ways(model, no_cache_online, hangup_proxy,
                                                                     monkeypatch, capsys):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{hangup_proxy}")
    # clients made earlier in this process keep the proxy settings they were made with
    monkeypatch.setattr(urllib.request, "_opener", None, raising=False)
    try:
        import huggingface_hub
        import huggingface_hub.utils._http as hf_http

        monkeypatch.setattr(hf_http, "_GLOBAL_CLIENT", None, raising=False)
    except ImportError:
        huggingface_hub = None
    downloads: list[str] = []

    def no_download(repo, *a, **k):
        downloads.append(repo)
        raise RuntimeError("tests download nothing")

    if huggingface_hub is not None:
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    code, err, elapsed = _export(no_cache_online, capsys, model)
    assert not downloads, "the metadata request before the download went past the test's proxy"
    msg = _one_error_line(err)
    assert code == 1, err
    assert elapsed < BOUND_S, elapsed
    host = "download.pytorch.org" if model == "googlenet" else "huggingface.co"
    assert f"cannot download {model} ImageNet weights from {host}: " in msg
    _names_both_ways(msg)


def test_damaged_cached_file_is_not_probed_and_says_delete_it(no_cache_online, monkeypatch, capsys):
    def no_probe(*a, **k):
        raise AssertionError("a cached file needs no network")

    monkeypatch.setattr(weights_fetch, "_probe", no_probe)
    cached = no_cache_online / "cache" / "torch_home" / "hub" / "checkpoints" / "googlenet-1378be20.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"<!DOCTYPE html><html>captive portal</html>")
    code, err, _ = _export(no_cache_online, capsys, "googlenet")
    msg = _one_error_line(err)
    assert code == 1, err
    assert str(cached) in msg and "HTML page" in msg and "delete the file" in msg and "--weights random" in msg


def test_offline_switch_needs_no_network(no_cache_online, monkeypatch):
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    monkeypatch.setattr(weights_fetch, "_probe", lambda *a, **k: pytest.fail("probed although offline"))
    from edgekit.zoo import get_spec

    with pytest.raises(WeightsUnavailableError, match="EDGEKIT_OFFLINE=1 is set") as e:
        weights.build(get_spec("googlenet"), "imagenet")
    _names_both_ways(str(e.value))


def test_probe_refused_is_quick():
    t0 = time.perf_counter()
    assert weights_fetch._probe("127.0.0.1", _closed_port()) == "127.0.0.1 refused the connection"
    assert time.perf_counter() - t0 < 2


def test_probe_gives_up_on_silent_dns(dead_dns):
    t0 = time.perf_counter()
    why = weights_fetch._probe("download.pytorch.org", 443, seconds=0.5)
    assert why == "download.pytorch.org did not resolve within 0.5 s (no DNS answer: offline?)"
    assert time.perf_counter() - t0 < 2


def test_probe_passes_for_a_listening_port():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        assert weights_fetch._probe("127.0.0.1", srv.getsockname()[1]) is None


def test_route_follows_proxy_variables_and_hides_credentials(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    url = "https://download.pytorch.org/models/googlenet-1378be20.pth"
    assert weights_fetch._route(url) == ("download.pytorch.org", 443, "download.pytorch.org")
    assert weights_fetch._route("http://data.lip6.fr/x.pth") == ("data.lip6.fr", 80, "data.lip6.fr")
    monkeypatch.setenv("HTTPS_PROXY", "http://bob:pa%40ss@proxy.corp:3128")
    assert weights_fetch._route(url) == ("proxy.corp", 3128, "the https proxy proxy.corp:3128")
    assert weights_fetch._route("http://data.lip6.fr/x.pth")[0] == "data.lip6.fr"  # no http proxy set
    monkeypatch.setenv("NO_PROXY", ".pytorch.org")
    assert weights_fetch._route(url)[0] == "download.pytorch.org"
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", "socks5://proxy.corp")
    assert weights_fetch._route(url)[0] == "download.pytorch.org"  # urllib (torch.hub) ignores ALL_PROXY
    assert weights_fetch._route(url, all_proxy=True) == ("proxy.corp", 1080, "the https proxy proxy.corp:1080")


def test_unavailable_is_a_weights_error_so_the_demo_falls_back():
    # edgekit.cli.demo catches WeightsError and continues with random weights
    assert issubclass(WeightsUnavailableError, WeightsError) and WeightsUnavailableError.exit_code == 1


def test_hub_tries_the_next_file_name_and_never_retries(tmp_path):
    errors = pytest.importorskip("huggingface_hub.errors")
    calls: list[tuple] = []

    class Hub:  # huggingface_hub's functions as _hf_download calls them
        utils = None

        def __init__(self):
            self.errors = errors

        @staticmethod
        def hf_hub_url(repo, name, revision=None):
            return f"https://huggingface.co/{repo}/resolve/main/{name}"

        @staticmethod
        def get_hf_file_metadata(url, timeout=None, **kw):
            calls.append(("meta", url.rsplit("/", 1)[1], timeout, kw.get("retry_on_errors", False)))
            if url.endswith("model.safetensors"):
                raise errors.EntryNotFoundError("no such file")

        @staticmethod
        def hf_hub_download(repo, name, **kw):
            calls.append(("get", name, kw["etag_timeout"]))
            return str(tmp_path / name)

    fetch = weights_fetch._Fetch("m", "https://huggingface.co/x", "or copy it", hub=True)
    got = weights_fetch._hf_download(Hub(), "timm/x", ["model.safetensors", "pytorch_model.bin"], None, tmp_path, fetch)
    assert got == str(tmp_path / "pytorch_model.bin")
    t = weights_fetch.HF_METADATA_SECONDS
    assert calls == [("meta", "model.safetensors", t, False), ("meta", "pytorch_model.bin", t, False),
                     ("get", "pytorch_model.bin", t)]
