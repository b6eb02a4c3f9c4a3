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

    assert sorted(edgekit.__all__) == sorted(["Classifier", "Prediction", "Result", "StreamOptions", "__version__",
                                              "load", "stream"])
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
