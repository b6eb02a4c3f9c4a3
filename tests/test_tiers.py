"""The layout's contracts (pyproject.toml [tool.importlinter]): the stages are layers, the device tier never
imports torch or the desktop tier, no import circles; plus what import-linter cannot see (``require("torch")``
strings), the size and docstring of every module, and README's "Where things live" against the tree."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "edgekit"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# what only the desktop tier (edgekit[export]) installs: the device tier may not ask for these by name either
DESKTOP_ONLY = ("torch", "torchvision", "timm", "safetensors", "matplotlib", "onnxslim")


def _contracts() -> list[dict]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the same parser from PyPI
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def _device_contract(contracts: list[dict] | None = None) -> dict:
    return next(c for c in contracts or _contracts()
                if c["type"] == "forbidden" and "edgekit.runtime" in c["source_modules"])


def desktop_tier() -> list[str]:
    """The desktop tier's modules as the device tier's contract names them (the CLI, their caller, is not one)."""
    return [m for m in _device_contract()["forbidden_modules"] if m.startswith("edgekit.") and m != "edgekit.cli"]


def within(module: str, packages: list[str] | tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: import-linter is in the dev extra (make venv installs it)")
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def _lint_with(tmp_path: Path, where: str, line: str) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the package whose module ``where`` gains a function holding ``line``."""
    shutil.copytree(PACKAGE, tmp_path / "edgekit", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    mod = tmp_path / "edgekit" / where
    mod.write_text(mod.read_text(encoding="utf-8") + f"\n\ndef _mutant() -> None:\n    {line}\n", encoding="utf-8")
    return _lint_imports(tmp_path)


def test_the_contracts_hold():
    res = _lint_imports(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in res.stdout


def test_every_module_is_bound_by_a_contract():
    """A new module lands in a package a contract names, or this says where to add it."""
    contracts = _contracts()
    forbidden = [c for c in contracts if c["type"] == "forbidden"]
    device_contract = _device_contract(contracts)
    device = device_contract["source_modules"]
    exact = {m for c in forbidden if c.get("as_packages") is False for m in c["source_modules"]}
    cli = {m for c in forbidden if c is not device_contract and c.get("as_packages") is not False
           for m in c["source_modules"]}
    loose = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if not (within(module, device) or module in exact or within(module, tuple(cli))
                or within(module, desktop_tier())):
            loose.append(module)
    assert not loose, "name these in a contract's source_modules (pyproject.toml), or the desktop tier's list:\n" + \
        "\n".join(loose)


def test_every_forbidden_package_exists():
    """A misspelt name ("troch") forbids nothing: each one the contracts forbid is installed in this environment
    (the dev extra has the desktop tier), and each edgekit one is a module or a package here."""
    import importlib.util

    for c in _contracts():
        for name in c.get("forbidden_modules", []):
            base = name.split(".**")[0].split(".*")[0]
            if base.startswith("edgekit."):
                assert (REPO / (base.replace(".", "/") + ".py")).is_file() or (
                    REPO / base.replace(".", "/") / "__init__.py").is_file(), name
            else:
                assert importlib.util.find_spec(base) is not None, f"{c['name']}: {name} is not installed"


@pytest.mark.parametrize("where, line, broken", [
    ("__init__.py", "from edgekit.export import torch_peer  # noqa: F401", "edgekit -> edgekit.export.torch_peer"),
    ("streaming.py", "import torch  # noqa: F401", "edgekit.streaming -> torch"),
    ("quant/qdq.py", "import onnxslim  # noqa: F401", "edgekit.quant.qdq -> onnxslim"),
    ("runtime/loader.py", "import safetensors  # noqa: F401", "edgekit.runtime.loader -> safetensors"),
    ("runtime/streaming.py", "import torch  # noqa: F401", "edgekit.runtime.streaming -> torch"),
    ("runtime/streaming.py", "from edgekit.export import torch_onnx  # noqa: F401",
     "edgekit.runtime.streaming -> edgekit.export"),
    ("runtime/streaming.py", "from edgekit.cli import options  # noqa: F401",
     "edgekit.runtime.streaming -> edgekit.cli"),
    ("quant/calibrate.py", "import timm  # noqa: F401", "edgekit.quant.calibrate -> timm"),
    ("cli/runtime.py", "from edgekit.export import torch_onnx  # noqa: F401", "edgekit.cli.runtime -> edgekit.export"),
    ("cli/trt.py", "import matplotlib  # noqa: F401", "edgekit.cli.trt -> matplotlib"),
    ("cli/__init__.py", "import onnxslim  # noqa: F401", "edgekit.cli -> onnxslim"),
])
def test_the_contracts_catch_a_device_module_reaching_up(tmp_path, where, line, broken):
    """What CI would say: the same check on a copy of the package with one bad import in a device module."""
    res = _lint_with(tmp_path, where, line)
    assert res.returncode == 1, res.stdout + res.stderr
    assert broken in res.stdout and "BROKEN" in res.stdout


def test_a_circle_between_siblings_is_caught(tmp_path):
    # loader imports classifier: close the circle
    res = _lint_with(tmp_path, "runtime/classifier.py", "from edgekit.runtime import loader  # noqa: F401")
    assert res.returncode == 1 and "No cycles are allowed in edgekit.runtime" in res.stdout, res.stdout


def _module_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string in the code that names a module the way an import would (``"torch"``, ``"torch.nn"``,
    ``"edgekit.export..."``, or ``"import torch"`` for exec): what require(), import_module(), __import__(), exec()
    or resolve_name() would load, written directly, in parts (``"edgekit.export" + "..."``), as a package for a
    relative name, in a variable or in an f-string. Prose (an error message) is not a module name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and len(node.args) >= 2 and all(  # import_module(".weights", "edgekit.zoo")
                isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:2]) \
                and node.args[0].value.startswith("."):
            found.append((node.lineno, node.args[1].value + node.args[0].value))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            m = re.match(r"^(?:import|from)\s+([\w.]+)", text)
            name = m.group(1) if m else text
            if re.fullmatch(r"[A-Za-z_][\w]*(\.[\w]+)*", name):
                found.append((node.lineno, name))
    return found


def _blinds(tree: ast.AST) -> list[tuple[int, str]]:
    """Ways to hide an import from the linter: TYPE_CHECKING set true by hand."""
    return [(n.lineno, "assigns TYPE_CHECKING") for n in ast.walk(tree) if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "TYPE_CHECKING" for t in n.targets)]


def test_the_device_tier_does_not_ask_for_torch_by_name():
    desktop = tuple(desktop_tier())
    # a spec's builder, run only by zoo.weights.build (the contracts' ignore line), asks for these and no more
    builders, builders_may = "edgekit.zoo.models", ("torch", "torchvision", "timm")
    # "torch" as a word, not a module: a backend's name in bench's rows and --compare's choice; deps' extras table
    words = {("edgekit.runtime.bench", "torch"), ("edgekit.cli.runtime", "torch")}
    seen, wrong = set(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, name in _module_strings(tree) + _blinds(tree):
            if name == "assigns TYPE_CHECKING" and not within(module, desktop):
                wrong.append(f"{path.relative_to(REPO)}:{line} {name}")
            elif name.split(".")[0] in DESKTOP_ONLY or within(name, desktop):
                seen.add(module)
                if within(module, desktop) or (module == builders and name.split(".")[0] in builders_may) or \
                        (module, name) in words or (module == "edgekit.deps" and name in DESKTOP_ONLY):
                    continue
                wrong.append(f"{path.relative_to(REPO)}:{line} names {name}")
    assert not wrong, "device-tier modules that would import a desktop-only package:\n" + "\n".join(wrong)
    assert {"edgekit.zoo.weights", "edgekit.export.torch_onnx", "edgekit.export.torch_peer"} <= seen  # it looks


# the lazy edges contract 4 allows, each only inside the command that needs it: (CLI module, target) -> functions
LAZY_EDGES = {
    ("edgekit.cli.trt", "edgekit.export.torch_onnx"): {"build"},
    ("edgekit.cli.trt", "edgekit.export.train_run"): {"build"},
    ("edgekit.cli.runtime", "edgekit.export.torch_peer"): {"bench"},
    ("edgekit.cli.demo", "edgekit.export.torch_onnx"): {"run_demo"},
}


def test_the_cli_reaches_the_desktop_tier_only_inside_the_commands_that_need_it():
    wrong, found = [], set()
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        module = _module(path)
        if module == "edgekit.cli.export":  # every command there is a desktop-tier command
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        command = {}  # import node -> the top-level function it sits in (None: at import time)
        for top in tree.body:
            for node in ast.walk(top):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    command[node] = top.name if isinstance(top, ast.FunctionDef) else None
        for node, fn in command.items():
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                targets = [f"{node.module}.{a.name}" if node.module == "edgekit.export" else str(node.module)
                           for a in node.names]
            for target in (t for t in targets if within(t, ["edgekit.export"])):
                edge = next((k for k in LAZY_EDGES if k[0] == module and within(target, [k[1]])), None)
                if edge is None or fn not in LAZY_EDGES[edge]:
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {target} "
                                 f"{'at import time' if fn is None else 'in ' + fn}")
                else:
                    found.add(edge)
    assert not wrong, "the desktop tier reached outside the commands that export:\n" + "\n".join(sorted(set(wrong)))
    assert found == set(LAZY_EDGES), f"edges no longer there (drop them here and from contract 4): " \
                                     f"{sorted(set(LAZY_EDGES) - found)}"


def test_every_module_has_one_job_in_at_most_400_lines():
    long, bare = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        if path.name != "__main__.py" and not ast.get_docstring(ast.parse(text)):
            bare.append(str(path.relative_to(REPO)))
    assert not long, "split these (a module holds one job):\n" + "\n".join(long)
    assert not bare, "say the module's one job in a docstring:\n" + "\n".join(bare)


def test_where_things_live_matches_the_tree():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `edgekit/([a-z_]+)/`", section, re.M))
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert named == folders, f"README names {sorted(named - folders)} that are not folders, " \
                             f"and misses {sorted(folders - named)}"
    for path in re.findall(r"`(edgekit/[\w/]+\.py)`", readme):
        assert (REPO / path).is_file(), f"README names {path}, which does not exist"
