"""README's "From Python" example runs as printed, on a model and micrographs made here."""

from __future__ import annotations

import re
from pathlib import Path

import tifffile

from _runtime_models import micrograph, model_with_reference
from semphase.imageio import write_image

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- python-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its python-example block"
    return match.group(1)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    model = model_with_reference(tmp_path / "m", "good")
    (tmp_path / "models" / "ni-wc").mkdir(parents=True)
    (tmp_path / "models" / "ni-wc" / "model.int8.onnx").write_bytes(model.read_bytes())
    (tmp_path / "micrographs").mkdir()
    sixteen_bit = micrograph(200, 260, seed=1).astype("uint16") * 257
    tifffile.imwrite(tmp_path / "micrographs" / "sample_01.tif", sixteen_bit)
    write_image(tmp_path / "micrographs" / "sample_02.png", micrograph(120, 150, seed=2))
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.count(" %\n") == 5 and "(120, 150)" in out and "2 done []" in out
    assert (tmp_path / "results" / "sample_01_mask.png").is_file()
    assert (tmp_path / "results" / "sample_01_uncertainty.png").is_file()
    assert (tmp_path / "batch" / "summary.csv").read_text().count("\n") == 3
    assert (tmp_path / "watched" / "sample_02_mask.png").is_file()
    assert (tmp_path / "watched" / "watch-journal.jsonl").read_text().count('"done"') == 2
