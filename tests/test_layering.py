"""The layering rules of docs/architecture.md, checked on the source and on a live interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _files(entry: str) -> list[Path]:
    p = SRC / entry
    if p.is_dir():
        return sorted(p.rglob("*.py"))
    return [p] if p.exists() else []


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


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


def test_runtime_never_imports_upstream_packages():
    for path in _files("runtime"):
        for name, line in _imports(path):
            assert not name.startswith(("semphase.train", "semphase.export", "semphase.benchmarks")), (
                f"{path.relative_to(SRC)}:{line} imports {name}: runtime must not depend on upstream code"
            )


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
