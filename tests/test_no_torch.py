"""The runtime side imports and classifies with torch (and timm, torchvision) made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.test_tiers import DESKTOP_ONLY, desktop_tier


def test_runtime_modules_work_without_torch(googlenet_bundle):
    desktop = tuple(desktop_tier())  # pyproject's contract names them; the rest must import without torch
    assert "edgekit.export" in desktop and "edgekit.zoo.weights" in desktop
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {DESKTOP_ONLY!r}:
                    raise ImportError("blocked by test: " + name)
        sys.meta_path.insert(0, Block())
        import importlib, pathlib
        import edgekit, edgekit.cli
        desktop = {desktop!r}
        root = pathlib.Path(edgekit.__file__).parent
        names = sorted(".".join(("edgekit",) + p.relative_to(root).with_suffix("").parts).replace(".__init__", "")
                       for p in root.rglob("*.py"))
        def inside(m):
            return any(m == d or m.startswith(d + ".") for d in desktop)
        walked = [m for m in names if not inside(m) and m != "edgekit.__main__"]
        for name in walked:  # every module of the device tier, and the CLI's
            importlib.import_module(name)
        assert len(walked) > 60 and "edgekit.runtime.streaming" in walked, walked
        for name in edgekit._LAZY:  # the package's lazy names too
            getattr(edgekit, name)
        # the CLI imports the desktop tier only inside the commands that export (a board never loads it)
        loaded = sorted(m for m in sys.modules if inside(m))
        assert not loaded, loaded
        from edgekit.zoo import list_models
        assert len(list_models()) == 6
        from edgekit.images import read_image, sample_images
        clf = edgekit.load({str(googlenet_bundle)!r})
        pred = clf.classify(read_image(sample_images()[0]))
        assert len(pred.labels) == 5
        from edgekit.runtime.inspect import describe
        describe(clf.path)
        assert not any(m.split(".")[0] in {DESKTOP_ONLY!r} for m in sys.modules)
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
