"""The package stays importable on Python 3.8, JetPack 5's system Python (Xavier NX and AGX
Xavier stop at JetPack 5.1): syntax, standard library and the runtime uses of newer typing.

No Python 3.8 runs here, so three checks stand in for it: ``ast.parse(feature_version=(3, 8))``
for the grammar, vermin for the standard library (``str.removeprefix``, ``zip(strict=)``,
``functools.cache``, dict ``|`` ...), and a visitor for what vermin misses: generics
subscripted at run time (``list[int]``, ``Callable[[int], None]`` from collections.abc outside
an annotation) and ``X | Y`` unions evaluated at run time (``isinstance(x, int | str)``).
Annotations are strings under ``from __future__ import annotations``, which every module has.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"
MODULES = sorted(PACKAGE.rglob("*.py"))
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
TYPE_NAMES = BUILTIN_GENERICS | {"int", "float", "str", "bytes", "bool", "None", "complex"}


class _RuntimeTyping(ast.NodeVisitor):
    """Subscripted generics and ``|`` unions outside annotations."""

    def __init__(self, abc_names: set[str]) -> None:
        self.abc_names = abc_names
        self.found: list[str] = []

    def _skip_annotations(self, node: ast.AST) -> None:
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns"):
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    self.visit(child)

    visit_arg = _skip_annotations  # type: ignore[assignment]
    visit_AnnAssign = _skip_annotations  # type: ignore[assignment]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._skip_annotations(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Subscript(self, node: ast.Subscript) -> None:
        v = node.value
        name = v.id if isinstance(v, ast.Name) else ""
        if isinstance(v, ast.Attribute) and ast.unparse(v.value) in ("collections.abc", "abc"):
            name = v.attr  # collections.abc.Callable[...]; typing.Callable[...] is fine on 3.8
            self.abc_names = self.abc_names | {name}
        if name in BUILTIN_GENERICS or name in self.abc_names:
            self.found.append(f"line {node.lineno}: {name}[...] at run time needs Python 3.9")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.BitOr):
            sides = [s for s in (node.left, node.right) if isinstance(s, (ast.Name, ast.Constant))]
            if len(sides) == 2 and all(getattr(s, "id", repr(getattr(s, "value", 0))) in TYPE_NAMES
                                       for s in sides):
                self.found.append(f"line {node.lineno}: a | union at run time needs Python 3.10")
        self.generic_visit(node)


def _abc_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "collections.abc":
            names.update(a.asname or a.name for a in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_module_parses_and_types_at_run_time_on_python_38(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=(3, 8))
    has_annotations = any(isinstance(n, (ast.AnnAssign, ast.arg)) and getattr(n, "annotation", None)
                          or isinstance(n, ast.FunctionDef) and n.returns for n in ast.walk(tree))
    if has_annotations:
        assert "from __future__ import annotations" in source, f"{path.name}: annotations need the future import"
    v = _RuntimeTyping(_abc_imports(tree))
    v.visit(tree)
    assert not v.found, f"{path.relative_to(PACKAGE)}: " + "; ".join(v.found)


def test_the_checker_catches_what_it_is_for():
    bad = ast.parse("from collections.abc import Callable\nP = Callable[[int], None]\nX = list[int]\n"
                    "def f(x):\n    return isinstance(x, int | None)\n"
                    "def g(a: list[int]) -> dict[str, int]:\n    return {}\n")
    v = _RuntimeTyping(_abc_imports(bad))
    v.visit(bad)
    assert len(v.found) == 3  # the annotations of g are strings, fine on 3.8


def test_standard_library_use_is_python_38():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.fail("vermin is missing: it is a dev dependency (pip install -e '.[dev]')")
    res = subprocess.run([vermin, "-t=3.8-", "--violations", "--no-tips", "--no-parse-comments", str(PACKAGE)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
