"""The public API the README shows stays where it is, whatever the package's layout: edgekit.load, edgekit.stream,
the types a caller names (Classifier, Prediction, StreamOptions, Result), and `import edgekit` stays light."""

from __future__ import annotations

import subprocess
import sys


def test_import_edgekit_loads_no_runtime_until_asked():
    code = ("import sys, edgekit\n"
            "assert not [m for m in sys.modules if m.startswith('edgekit.runtime') or m in ('numpy', 'cv2')], "
            "sorted(m for m in sys.modules if m.startswith(('edgekit', 'numpy')))\n"
            "print(edgekit.Prediction.__module__, edgekit.StreamOptions.__module__)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["edgekit.runtime.classifier", "edgekit.runtime.streaming"]


def test_every_public_name_resolves(googlenet_bundle):
    import edgekit
    from edgekit.runtime.classifier import Classifier, Prediction
    from edgekit.runtime.streaming import Result, StreamOptions

    assert sorted(edgekit.__all__) == sorted(["Classifier", "Prediction", "Reconnect", "Result", "StreamOptions",
                                              "__version__", "load", "stream"])
    assert (edgekit.Classifier, edgekit.Prediction, edgekit.StreamOptions, edgekit.Result) == (
        Classifier, Prediction, StreamOptions, Result)
    with edgekit.load(googlenet_bundle, backend="onnxruntime") as clf:
        assert isinstance(clf, edgekit.Classifier)
        from edgekit.images import read_image, sample_images

        pred = clf.classify(read_image(sample_images()[0]))
        assert isinstance(pred, edgekit.Prediction) and len(pred.labels) == 5
        first = next(iter(edgekit.stream(str(sample_images()[0]), clf)))
        assert isinstance(first, edgekit.Result) and first.prediction.labels == pred.labels
    try:
        edgekit.Nothing  # noqa: B018
    except AttributeError as exc:
        assert "no attribute 'Nothing'" in str(exc)
    else:
        raise AssertionError("edgekit.Nothing resolved")


def test_the_old_paths_still_import_and_warn():
    """Code written against the flat layout (from edgekit.classifier import Classifier ...) keeps working for a
    release, told where each moved; every name those modules offered callers is still there."""
    code = ("import warnings\n"
            "warnings.simplefilter('error', DeprecationWarning)\n"
            "import importlib\n"
            "for old in ('classifier', 'streaming', 'sources', 'sinks'):\n"
            "    try:\n"
            "        importlib.import_module('edgekit.' + old)\n"
            "    except DeprecationWarning as w:\n"
            "        print(old, 'warns:', w)\n"
            "    else:\n"
            "        print(old, 'did not warn')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4 and all(" warns: edgekit." in line and "edgekit.runtime." in line for line in lines), lines
    import warnings

    offered = {  # the names each flat module defined or offered (main before the move), all still there
        "classifier": "BACKENDS Classifier PRECISIONS Prediction check_input_size load profile_threads softmax",
        "streaming": "Classifier Prediction softmax Played Result SinkError SinkThread Stream StreamOptions "
                     "camera_settings played_status sink_error top_k",
        "sources": "DEBUG_ENV Frame LIBRARY_LOG LatestFrame LibraryLog OPEN_WATCHDOG_S POLL_S Reader Reconnect "
                   "SourceError SourceInputError SourceSpec V4L2_NODE csi_pipeline every_frame has_gstreamer "
                   "library_reason parse redact",
        "sinks": "Played Result Callback JsonLines LatencyHistogram PerSource Stats TerminalStatus VIDEO_CODECS "
                 "VideoOutput Window annotate",
    }
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for old, names in offered.items():
            module = importlib.import_module(f"edgekit.{old}")
            assert not [n for n in names.split() if not hasattr(module, n)], old
        from edgekit.classifier import Classifier, Prediction, load
        from edgekit.sinks import Callback, JsonLines
        from edgekit.sources import LatestFrame, Reader, Reconnect
        from edgekit.streaming import Result, Stream, StreamOptions
    from edgekit.runtime import classifier, latest, loader, sinks, sources, streaming

    assert (Classifier, Prediction, load) == (classifier.Classifier, classifier.Prediction, loader.load)
    assert (Callback, JsonLines, LatestFrame, Reader, Reconnect) == (
        sinks.Callback, sinks.JsonLines, latest.LatestFrame, sources.Reader, sources.Reconnect)
    assert (Result, Stream, StreamOptions) == (streaming.Result, streaming.Stream, streaming.StreamOptions)


def test_dir_lists_the_lazy_names():
    import edgekit

    assert {"Classifier", "Prediction", "Reconnect", "Result", "StreamOptions", "load", "stream"} <= set(dir(edgekit))
