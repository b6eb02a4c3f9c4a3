"""The runtime side imports and classifies with torch (and timm, torchvision) made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_runtime_modules_work_without_torch(googlenet_bundle):
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "timm"):
                    raise ImportError("blocked by test: " + name)
        sys.meta_path.insert(0, Block())
        import edgekit, edgekit.cli, edgekit.classifier, edgekit.manifest, edgekit.bundle
        import edgekit.preprocess, edgekit.labels, edgekit.images, edgekit.inspect, edgekit.runners.ort
        import edgekit.zoo, edgekit.trt.parse, edgekit.trt.compat, edgekit.profiles, edgekit.engine
        import edgekit.sources, edgekit.streaming, edgekit.sinks, edgekit.calibcache, edgekit.gate
        import edgekit.multistream, edgekit.serve
        import edgekit.runners.trt, edgekit.runners.cuda, edgekit.bench, edgekit.deepstream, edgekit.triton
        from edgekit.zoo import list_models
        assert len(list_models()) == 6
        from edgekit.images import read_image, sample_images
        clf = edgekit.load({str(googlenet_bundle)!r})
        pred = clf.classify(read_image(sample_images()[0]))
        assert len(pred.labels) == 5
        from edgekit.inspect import describe
        describe(clf.path)
        assert not any(m.split(".")[0] in ("torch", "torchvision", "timm") for m in sys.modules)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_export_without_torch_names_the_extra():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("blocked by test")
        sys.meta_path.insert(0, Block())
        from edgekit.cli import main
        main(["export", "-m", "googlenet", "-w", "random", "-o", "/tmp/never-written"])
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 3
    assert 'pip install "edgekit[export]"' in res.stderr and "Traceback" not in res.stderr
