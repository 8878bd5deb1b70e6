"""docs/architecture.md's module map names every module and package of src/semphase/, and nothing else.

The map is the code block that starts with ``src/semphase/``. How it is read:

- a line whose text starts with ``name/`` opens that package: the lines below it that are indented deeper
  are inside it (its description, its continuation lines and its nested entries);
- on every line, ``name.py`` names a module and ``name/`` (followed by a space, a comma, a parenthesis or the
  end of the line) names a package, both inside the innermost package open at that line; the package a
  line opens is itself named in the one around it;
- anything else (``read_raw/read_gray``, ``FP16/INT8``, bare words) names nothing, so every module must be
  written as ``name.py`` in its package's block.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "semphase"
DOC = ROOT / "docs" / "architecture.md"

_MODULE = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*)\.py\b")
_PACKAGE = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*)/(?=[\s,;)]|$)")
_OPENS = re.compile(r"([a-z_][a-z0-9_]*)/(?=[\s,;)]|$)")


def module_map(text: str) -> list[str]:
    """The lines of the fenced block whose first line is ``src/semphase/`` (without that line)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in blocks:
        lines = block.splitlines()
        if lines and lines[0].strip() == "src/semphase/":
            return lines[1:]
    raise AssertionError(f"{DOC.name} has no code block starting with src/semphase/")


def named_in_map(lines: list[str]) -> set[str]:
    """Paths relative to src/semphase/ that the map names: ``train/run.py``, ``runtime/outputs/``."""
    named: set[str] = set()
    open_packages: list[tuple[int, str]] = []  # (indent of the line that opened it, its path with "/")
    for line in lines:
        text = line.strip()
        if not text:
            continue
        indent = len(line) - len(line.lstrip())
        while open_packages and open_packages[-1][0] >= indent:
            open_packages.pop()
        inside = open_packages[-1][1] if open_packages else ""
        opened = _OPENS.match(text)
        if opened:  # the package is named where it stands; the rest of its line is inside it
            named.add(inside + opened.group(0))
            inside += opened.group(0)
            open_packages.append((indent, inside))
            text = text[opened.end() :]
        named.update(inside + m + ".py" for m in _MODULE.findall(text))
        named.update(inside + p + "/" for p in _PACKAGE.findall(text))
    return named


def modules_in_tree(src: Path = SRC) -> set[str]:
    """Every module (but ``__init__.py`` and ``__main__.py``) and every package under ``src``."""
    found = {
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "__pycache__" not in p.parts
    }
    found |= {p.parent.relative_to(src).as_posix() + "/" for p in src.rglob("__init__.py") if p.parent != src}
    return found


def test_the_parse_rule_reads_the_maps_style():
    lines = [
        "  phases.py        ClassTable; read_raw/read_gray, FP16/INT8 (nothing named here)",
        "  metrics.py, metrics_boundary.py   confusion",
        "  data/            layout.py (dataset layouts), labels.py (index and colour",
        "                   label images), split.py",
        "    synth/           domains.py, scene.py",
        "  runtime/         onnxruntime only",
        "    sliding.py       iter_bands, written to the failed folder",
        "    outputs/         sink.py (streaming),",
        "                     writers.py",
        "    suggest.py       what to label next",
        "  cli/             one module per command",
    ]
    assert named_in_map(lines) == {
        "phases.py",
        "metrics.py",
        "metrics_boundary.py",
        "data/",
        "data/layout.py",
        "data/labels.py",
        "data/split.py",
        "data/synth/",
        "data/synth/domains.py",
        "data/synth/scene.py",
        "runtime/",
        "runtime/sliding.py",
        "runtime/outputs/",
        "runtime/outputs/sink.py",
        "runtime/outputs/writers.py",
        "runtime/suggest.py",
        "cli/",
    }


def test_the_module_map_names_every_module_and_package_that_exists():
    named = named_in_map(module_map(DOC.read_text(encoding="utf-8")))
    tree = modules_in_tree()
    missing, gone = sorted(tree - named), sorted(named - tree)
    assert not missing, (
        f"{DOC.name}'s module map does not name (as name.py / name/ in its package): {missing}"
    )
    assert not gone, f"{DOC.name}'s module map names what src/semphase/ does not have: {gone}"
