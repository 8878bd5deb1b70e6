"""The layering rules of docs/architecture.md, checked on the source and on a live interpreter."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "semphase"
TORCH_NAMES = ("torch", "torchvision", "segmentation_models_pytorch", "albumentations")

# The only packages that import torch themselves; every other module and package of semphase must never
# import it (the benchmarks and the CLI reach the training side only through semphase.train, lazily).
TORCH_USERS = ("train", "export")
TORCH_FREE = sorted(
    p.name
    for p in SRC.iterdir()
    if p.name not in TORCH_USERS and (p.suffix == ".py" or (p / "__init__.py").is_file())
)


def _module_name(path: Path) -> str:
    """``src/semphase/train/run.py`` -> ``semphase.train.run``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = frozenset(_module_name(p) for p in SRC.rglob("*.py"))


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name.

    ``name`` is the module imported (``from a.b import c`` gives ``a.b.c`` when that is a module of
    semphase, else ``a.b``); ``in_function``: it runs when a function is called, not on import;
    ``type_only``: under ``if TYPE_CHECKING:``.
    """

    name: str
    line: int
    in_function: bool
    type_only: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    """Every import anywhere in a module: at the top, in functions, under if/try, relative or absolute, and
    ``import_module("...")`` / ``__import__("...")`` with a literal name."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self._functions = 0
        self._type_only = 0

    def _add(self, name: str, node: ast.AST) -> None:
        self.found.append(Import(name, node.lineno, self._functions > 0, self._type_only > 0))

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_only += 1
        for child in node.body:
            self.visit(child)
        self._type_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            parts = self.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if full in MODULES else base, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        literal = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if called in ("import_module", "__import__") and isinstance(literal, str):
            self._add(literal, node)
        self.generic_visit(node)


@functools.cache
def _all_imports(path: Path) -> tuple[Import, ...]:
    collector = _ImportCollector(_module_name(path), path.name == "__init__.py")
    collector.visit(ast.parse(path.read_text(encoding="utf-8")))
    return tuple(collector.found)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every import of ``path`` (lazy, type-only and relative ones included) as (absolute name, line)."""
    return [(imp.name, imp.line) for imp in _all_imports(path)]


def _files(entry: str) -> list[Path]:
    p = SRC / entry
    if p.is_dir():
        return sorted(p.rglob("*.py"))
    return [p] if p.exists() else []


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    """The imports that run when ``path`` is imported (not those inside functions)."""
    return [(imp.name, imp.line) for imp in _all_imports(path) if not imp.in_function]


def test_the_torch_free_list_covers_every_module():
    assert {"metrics_boundary.py", "evaluation", "model_format.py", "progress.py", "tables.py"} <= set(
        TORCH_FREE
    )
    assert "runtime" in TORCH_FREE and "cli" in TORCH_FREE and "benchmarks" in TORCH_FREE


@pytest.mark.parametrize("entry", TORCH_FREE)
def test_torch_free_modules_never_import_torch(entry):
    for path in _files(entry):
        for name, line in _imports(path):
            root = name.split(".")[0]
            assert root not in TORCH_NAMES, f"{path.relative_to(SRC)}:{line} imports {name}"


# ------------------------------------------------------------------------------ the import graph
#
# The units are the top-level modules and packages of semphase ("semphase" itself is its __init__: the
# version). docs/architecture.md: data flows dataset -> train -> checkpoint -> export -> .onnx -> runtime,
# and nothing downstream imports anything upstream (runtime never imports train or export). As imports,
# that is the order below, lowest first: every unit may import only units in lower layers, and only the
# edges in ALLOWED, which are the ones the code has (so a new dependency is a decision made here, and one
# against the order cannot be written down at all). data sits below runtime: its label formats and overlays
# are what runtime's suggest writes; evaluation, quantify, cluster and serve use the runtime and nothing of
# training; train tests its best checkpoint with evaluation; export checks its files with the runtime's
# session; the CLI may import anything and nothing imports it but ``python -m semphase``.

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "metrics_boundary", "progress", "tables", "gates", "semphase"),
    ("limits", "phases", "model_format", "machine"),
    ("imageio", "metrics"),
    ("model_package", "rowwriters"),
    ("data",),
    ("runtime",),
    ("evaluation", "quantify", "cluster", "serve"),
    ("train",),
    ("export",),
    ("interop", "benchmarks"),
    ("cli",),
    ("__main__",),
)
UNITS = frozenset(
    {"semphase"}
    | {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    | {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
)
ALLOWED: dict[str, frozenset[str]] = {
    unit: frozenset(targets)
    for unit, targets in {
        "errors": set(),
        "metrics_boundary": set(),
        "progress": set(),
        "tables": set(),
        "gates": set(),
        "semphase": set(),
        "limits": {"errors"},
        "phases": {"errors"},
        "model_format": {"errors"},
        "machine": {"semphase"},
        "imageio": {"errors", "limits"},
        "metrics": {"metrics_boundary", "phases"},
        "model_package": {"errors", "imageio"},
        "rowwriters": {"errors", "imageio"},
        "data": {"errors", "imageio", "phases", "rowwriters", "tables"},
        "runtime": {
            "data",
            "errors",
            "imageio",
            "limits",
            "machine",
            "model_format",
            "model_package",
            "phases",
            "progress",
            "rowwriters",
            "semphase",
        },
        "evaluation": {"data", "errors", "imageio", "metrics", "phases", "progress", "runtime", "tables"},
        "quantify": {"errors", "imageio", "phases", "progress", "semphase", "tables"},
        "cluster": {"errors", "imageio", "machine", "progress", "runtime"},
        "serve": {"data", "errors", "imageio", "limits", "metrics", "phases", "runtime", "semphase"},
        "train": {
            "data",
            "errors",
            "evaluation",
            "imageio",
            "metrics",
            "model_format",
            "phases",
            "progress",
            "semphase",
        },
        "export": {
            "data",
            "errors",
            "gates",
            "imageio",
            "machine",
            "metrics",
            "model_format",
            "model_package",
            "phases",
            "progress",
            "runtime",
            "semphase",
            "tables",
            "train",
        },
        "interop": {"data", "errors", "export", "imageio", "model_format", "model_package", "runtime"},
        "benchmarks": {
            "data",
            "errors",
            "evaluation",
            "gates",
            "imageio",
            "machine",
            "metrics",
            "model_format",
            "model_package",
            "phases",
            "progress",
            "runtime",
            "tables",
            "train",
        },
        "cli": UNITS - {"cli", "__main__"},
        "__main__": {"cli"},
    }.items()
}
# Imports against the order that the code still has, each with the module it comes from and the one it
# reaches; the test fails once one is gone, so the list only shrinks. Empty since the row writers the
# synthetic generator shares with the runtime's outputs moved below both (semphase.rowwriters).
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _unit(name: str) -> str | None:
    """The unit of semphase an absolute module name belongs to (None outside semphase)."""
    parts = name.split(".")
    if parts[0] != "semphase":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in UNITS else "semphase"


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


@functools.cache
def _unit_imports() -> dict[tuple[str, str], tuple[tuple[str, str, str], ...]]:
    """(importing unit, imported unit) -> every (module, target, where) behind that edge."""
    edges = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        for imp in _all_imports(path):
            source, target = _unit(module), _unit(imp.name)
            if target is not None and target != source:
                where = f"{path.relative_to(SRC)}:{imp.line} imports {imp.name}"
                edges[source, target].append((module, imp.name, where))
    return {edge: tuple(found) for edge, found in edges.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_declared_graph_covers_every_unit_once():
    placed = [unit for layer in LAYERS for unit in layer]
    assert len(placed) == len(set(placed)), "a unit is in two layers"
    assert set(placed) == UNITS, (
        f"not in LAYERS: {sorted(UNITS - set(placed))}; gone: {sorted(set(placed) - UNITS)}"
    )
    assert set(ALLOWED) == UNITS


def test_every_allowed_import_goes_down_the_layers():
    for unit, targets in ALLOWED.items():
        for target in targets:
            assert _layer(target) < _layer(unit), f"ALLOWED lets {unit} import {target}, a layer not below it"


def test_the_rules_the_docs_state_are_in_the_declared_graph():
    # architecture.md says these in words; the order above must keep them.
    assert not ALLOWED["runtime"] & {"train", "export", "evaluation", "benchmarks", "cli"}
    assert "train" not in ALLOWED["evaluation"] and "export" not in ALLOWED["evaluation"]
    for unit in ("cluster", "serve", "quantify", "interop"):
        assert "train" not in ALLOWED[unit], unit  # the inference sides of the extras stay torch-free
    assert [unit for unit, targets in ALLOWED.items() if "cli" in targets] == ["__main__"]


def test_every_import_follows_the_declared_graph():
    # Lazy imports inside functions count: they are how a cycle or an upstream dependency hides from
    # import-time checks (evaluation once opened checkpoints through semphase.train this way).
    wrong = [
        f"{where} ({source} -> {target})"
        for (source, target), found in _unit_imports().items()
        if target not in ALLOWED[source]
        for module, name, where in found
        if (module, name) not in UPWARD_EXCEPTIONS
    ]
    assert not wrong, "imports outside docs/architecture.md's layering:\n" + "\n".join(wrong)


def test_the_known_upward_imports_are_still_there_and_still_upward():
    found = {(m, n) for edge in _unit_imports().values() for m, n, _ in edge}
    for (module, name), what in UPWARD_EXCEPTIONS.items():
        assert (module, name) in found, f"{module} no longer imports {name}: drop it from UPWARD_EXCEPTIONS"
        assert _unit(name) not in ALLOWED[_unit(module)], f"{module} -> {name} ({what}) is allowed anyway"


def test_the_units_of_semphase_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for (source, target), found in _unit_imports().items():
        if any((module, name) not in UPWARD_EXCEPTIONS for module, name, _ in found):
            graph[source].add(target)
    cycle = _find_cycle(graph)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_no_module_of_semphase_imports_itself_round_a_cycle():
    # Within a package too (train.inference <-> train.loop was one): a shared piece goes to a third module.
    # Imports under TYPE_CHECKING are for annotations only and never run, so they may close a loop.
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        for imp in _all_imports(path):
            if imp.type_only or _unit(imp.name) is None:
                continue
            target = imp.name
            while target not in MODULES:
                target = target.rpartition(".")[0]
            if target != module:
                graph[module].add(target)
    cycle = _find_cycle(graph)
    assert cycle is None, "module cycle: " + " -> ".join(cycle)


def test_cli_modules_import_heavy_libraries_lazily():
    for path in _files("cli"):
        for name, line in _module_level_imports(path):
            root = name.split(".")[0]
            assert root not in (
                *TORCH_NAMES,
                "onnx",
                "matplotlib",
                "bioimageio",
                "czmodel",
                "dask",
                "distributed",
                "fastapi",
                "uvicorn",
            ), f"{path.relative_to(SRC)}:{line} imports {name} at module level"
            # the interop, cluster and serve extras are optional: `semphase --help` must work without them
            optional = (
                "semphase.train",
                "semphase.export",
                "semphase.interop",
                "semphase.cluster",
                "semphase.serve",
            )
            assert not name.startswith(optional), (
                f"{path.relative_to(SRC)}:{line} imports {name} at module level"
            )


BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {names!r}:
            raise ImportError('blocked for the layering test: ' + name)
sys.meta_path.insert(0, _Block())
"""


def _installed(module: str) -> bool:
    """Whether the optional library an extra's module needs is installed here."""
    import importlib.util

    needs = {
        "semphase.serve.app": "fastapi",
        "semphase.cluster.run": "distributed",
        "semphase.cluster.tasks": "distributed",
    }
    return importlib.util.find_spec(needs[module]) is not None


def test_base_modules_import_with_torch_unavailable():
    modules = [
        "semphase.cli.main",
        "semphase.phases",
        "semphase.imageio",
        "semphase.metrics",
        "semphase.data.layout",
        "semphase.data.check",
        "semphase.data.split",
        "semphase.data.synth",
        "semphase.runtime.model",
        "semphase.runtime.segment",
        "semphase.runtime.suggest",
        "semphase.data.labels",
        "semphase.model_package",
        # the inference sides of the optional extras (imported only when installed)
        *[
            m
            for m in ("semphase.serve.app", "semphase.cluster.run", "semphase.cluster.tasks")
            if _installed(m)
        ],
    ]
    code = BLOCKER.format(names=set(TORCH_NAMES)) + (
        "import importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"leaked = sorted(n for n in sys.modules if n.split('.')[0] in {set(TORCH_NAMES)!r})\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_info_verify_works_without_torch_and_without_the_onnx_package(tmp_path):
    # The base install (a microscope PC) has onnxruntime but neither torch nor onnx; README tells it to run
    # `semphase info MODEL --verify`.
    from _runtime_models import model_with_reference

    model = model_with_reference(tmp_path, "good")
    blocked = {*TORCH_NAMES, "onnx"}
    code = BLOCKER.format(names=blocked) + (
        f"from semphase.cli.main import main\nmain(['info', {str(model)!r}, '--verify'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = " ".join(out.stdout.split())
    assert "self-check passed" in text and "semphase.classes" in text
    assert "not read (the onnx package is not installed) (producer: unknown)" in text  # no int64 garbage


def test_only_the_cli_draws_on_the_console():
    # Library code reports through semphase.progress and returns tables as text; rich is the CLI's.
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "cli":
            continue
        for name, line in _imports(path):
            assert name.split(".")[0] != "rich", f"{path.relative_to(SRC)}:{line} imports {name}"
