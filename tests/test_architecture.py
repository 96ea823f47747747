"""The house rules, checked by walking every import of the package with ``ast`` (see docs/architecture.md).

- Layers, low to high; a module imports only from its own layer or below, and two packages never import each
  other (so a same-layer pair cannot form a cycle).
- A module whose name starts with an underscore is private to the package that holds it.
- No module of the package is over MAX_LINES lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"

#: top-level name under edgekit -> layer (low to high). A new top-level module or package must be placed here.
LAYERS = {
    "": 0, "_version": 0, "errors": 0, "fileio": 0, "lazy": 0, "limits": 0, "environment": 0, "timing": 0,
    "contract": 1,
    "pixels": 2,
    "data": 3,
    "runtime": 4, "report": 4,
    "train": 5,
    "convert": 6,
    "bench": 7, "demo": 7,
    "cli": 8, "__main__": 8,
}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module or module.name) for every import in the file, nested ones included."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m == "edgekit" or m.startswith("edgekit.")]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _edges() -> list[tuple[str, int, str]]:
    return [(_module_name(p), line, target) for p in _modules() for line, target in _imports(p)]


def _layer(top: str, module: str) -> int:
    if top not in LAYERS:
        pytest.fail(f"{module}: the top-level name {top!r} has no layer; add it to LAYERS and docs/architecture.md")
    return LAYERS[top]


def _is_package(module: str) -> bool:
    return (PACKAGE.parent.joinpath(*module.split(".")) / "__init__.py").is_file()


def _is_module(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private_owner(target: str) -> str | None:
    """The package a private module or name belongs to (None if public): edgekit.convert._source and
    edgekit.convert.pipeline._helper both belong to edgekit.convert, so only that package may import them."""
    parts = target.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            parent = ".".join(parts[:i])
            if _is_module(".".join(parts[: i + 1])) or _is_package(parent):
                return parent  # a private module (or a private name of a package's facade)
            return parent.rpartition(".")[0]  # a private name of a module: private to that module's package
    return None


def test_every_module_imports_only_downwards():
    bad = []
    for module, line, target in _edges():
        src, dst = _top(module), _top(target)
        if dst.startswith("__") and dst != "__main__":
            dst = ""  # from edgekit import __version__: the package root
        if src != dst and _layer(dst, target) > _layer(src, module):
            bad.append(f"{module}:{line} imports {target} (layer {LAYERS[dst]} > {LAYERS[src]})")
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_no_two_packages_import_each_other():
    pairs = {(_top(m), _top(t)) for m, _, t in _edges() if _top(m) != _top(t)}
    cycles = sorted(f"{a} <-> {b}" for a, b in pairs if (b, a) in pairs and a < b)
    assert not cycles, "packages that import each other: " + ", ".join(cycles)


def test_no_package_imports_another_packages_private_module():
    bad = []
    for module, line, target in _edges():
        owner = _private_owner(target)
        if owner is not None and not (module == owner or module.startswith(owner + ".")):
            bad.append(f"{module}:{line} imports {target}, private to {owner}")
    assert not bad, "private modules used from outside their package:\n" + "\n".join(bad)


def test_no_module_is_over_the_line_limit():
    long = [f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


def test_the_checker_sees_a_violation(tmp_path):
    """The walk itself can fail: a relative import up the layers and a reach into a private module are found."""
    global PACKAGE
    fake = tmp_path / "edgekit"
    (fake / "contract").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "contract" / "__init__.py").write_text("def f():\n    from ..convert._source import load\n")
    saved, PACKAGE = PACKAGE, fake
    try:
        edges = _edges()
    finally:
        PACKAGE = saved
    assert edges == [("edgekit.contract", 2, "edgekit.convert._source.load")]
    assert _private_owner("edgekit.convert._source.load") == "edgekit.convert"
    assert _private_owner("edgekit.runtime.derive._layout") == "edgekit.runtime"
    assert _private_owner("edgekit.runtime.derive.derive_contract") is None
    assert _layer("convert", "x") > _layer("contract", "y")
