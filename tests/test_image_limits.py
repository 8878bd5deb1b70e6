"""Decompression bombs: one size limit for every reader, checked before decoding, one bad file at a time.

A 70-byte PNG (or 17-byte JPEG, 1 kB BMP, 138-byte TIFF) declaring 100000 x 100000 pixels once made
OpenCV raise inside ``imdecode``: "internal error", exit 1, and the rest of the batch never ran; `score`
and `data check` did the same. Each is now a one-line reason naming the file, and the others are done.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _bombs import BOMBS
from _cli import run_semphase
from _runtime_models import build_blur_classifier, micrograph
from semphase.errors import InputError
from semphase.imageio import read_gray, read_label, write_image
from semphase.limits import set_max_megapixels


@pytest.fixture(autouse=True)
def _default_limit():
    set_max_megapixels(None)
    yield
    set_max_megapixels(None)


run = run_semphase


@pytest.mark.parametrize("suffix", sorted(BOMBS))
def test_every_reader_refuses_a_declared_size_over_the_limit_before_decoding(tmp_path, suffix):
    side = 65000 if suffix == "jpg" else 100000
    path = tmp_path / f"bomb.{suffix}"
    path.write_bytes(BOMBS[suffix](side, side))
    assert path.stat().st_size < 1200
    for reader in (read_gray, read_label):
        with pytest.raises(InputError) as info:
            reader(path)
        message = str(info.value)
        assert message.startswith(f"{path}: image declares {side} x {side} pixels")
        assert "\n" not in message
        # a library user raises the limit with the function, not with a flag of the command line
        assert message.endswith("raise it with set_max_megapixels() (or SEMPHASE_MAX_MEGAPIXELS)")
        assert "--max-megapixels" not in message


@pytest.mark.parametrize("suffix", ["png", "tif", "bmp"])
def test_the_limit_is_exact_and_can_be_raised_or_lowered(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"m.{suffix}"
    write_image(path, micrograph(100, 100))  # exactly 0.01 MP
    set_max_megapixels(0.01)
    assert read_gray(path).shape == (100, 100)
    set_max_megapixels(0.0099)
    with pytest.raises(InputError, match="0.0099 MP limit"):
        read_gray(path)
    set_max_megapixels(None)
    monkeypatch.setenv("SEMPHASE_MAX_MEGAPIXELS", "0.005")
    with pytest.raises(InputError, match="0.005 MP limit"):
        read_gray(path)
    set_max_megapixels(1.0)  # the option wins over the environment
    assert read_gray(path).shape == (100, 100)


def test_opencvs_own_limit_is_no_longer_a_crash(tmp_path):
    # A user (or a site policy) may set OpenCV's own limit lower; its cv2.error must become one reason too.
    # (PNGs are decoded by imagecodecs' libpng, BMPs and JPEGs by OpenCV.)
    path = tmp_path / "m.bmp"
    write_image(path, micrograph(64, 64))
    code = "from semphase.imageio import read_gray; import sys; read_gray(sys.argv[1])"
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS="100")
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "InputError" in done.stderr and "cv2.error" not in done.stderr
    assert f"{path}: cannot decode image" in done.stderr


def _fresh_python(code: str, *args: object) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter whose environment leaves OpenCV's own limit unset."""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    argv = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_importing_semphase_leaves_the_environment_alone():
    code = "import os, sys; before = dict(os.environ); import semphase; print(dict(os.environ) == before)"
    done = _fresh_python(code)
    assert done.stdout.split() == ["True"], done.stderr


@pytest.mark.parametrize("entry", ["semphase.imageio", "semphase.cli.main"])
def test_opencv_does_not_refuse_what_a_raised_limit_allows(tmp_path, entry):
    # One column over OpenCV's own 2**30-pixel default, and its pixel data missing: with semphase's limit
    # raised, OpenCV must get past its size check and find the data short, not refuse the size.
    path = tmp_path / "wide.bmp"
    path.write_bytes(BOMBS["bmp"](32769, 32768))
    code = (
        f"import sys, {entry}\n"
        "from semphase.imageio import read_gray\n"
        "from semphase.limits import set_max_megapixels\n"
        "set_max_megapixels(1100)\n"
        "try:\n    read_gray(sys.argv[1])\nexcept Exception as exc:\n    print(exc)"
    )
    done = _fresh_python(code, path)
    assert done.stdout.strip() == f"{path}: cannot decode image (corrupt, truncated or not an image)", (
        done.stdout + done.stderr
    )


def test_a_corrupt_png_is_one_line_without_libpng_chatter(tmp_path, capfd):
    path = tmp_path / "broken.png"
    path.write_bytes(BOMBS["png"](4, 4))  # complete, but its pixel data is 16 bytes short
    with pytest.raises(InputError) as info:
        read_gray(path)
    assert str(info.value) == f"{path}: cannot decode image (libpng: Not enough image data)"
    assert capfd.readouterr().err == ""  # libpng's own "libpng error: ..." line no longer leaks
    cut = tmp_path / "cut.png"
    write_image(tmp_path / "whole.png", micrograph(64, 64))
    cut.write_bytes((tmp_path / "whole.png").read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated PNG"):
        read_gray(cut)
    assert capfd.readouterr().err == ""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16)


def _batch_with_bombs(folder: Path) -> list[str]:
    write_image(folder / "a_good.png", micrograph(64, 64, seed=1))
    for suffix, make in BOMBS.items():
        (folder / f"bomb_{suffix}.{suffix}").write_bytes(make(65000, 65000))
    write_image(folder / "z_good.tif", micrograph(64, 64, seed=2))
    return [f"bomb_{s}.{s}" for s in BOMBS]


def test_segment_names_each_bomb_and_finishes_the_batch(tmp_path, capsys, model):
    bombs = _batch_with_bombs(tmp_path / "in")
    code, _, err = run(["segment", model, tmp_path / "in", "--out", tmp_path / "out", "-q"], capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == len(bombs) + 1 and lines[-1].startswith("error: 4 input(s) failed, 2 succeeded")
    for name in bombs:
        # the command line's own way to raise the limit, where the library names set_max_megapixels()
        assert sum(name in line and "MP limit" in line and "--max-megapixels" in line for line in lines) == 1
    rows = {
        Path(r["input"]).name: r["status"] for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())
    }
    assert rows == {"a_good.png": "done", "z_good.tif": "done", **{name: "failed" for name in bombs}}
    assert (tmp_path / "out" / "z_good_mask.png").is_file()
    # raised on the command line, the limit lets a small image through that a tiny limit refuses
    code, _, err = run(
        [
            "segment",
            model,
            tmp_path / "in" / "a_good.png",
            "--out",
            tmp_path / "o2",
            "--max-megapixels",
            "0.001",
        ],
        capsys,
    )
    assert code == 2 and "0.001 MP limit" in err


def test_score_and_data_check_list_bombs_as_problems_and_score_the_rest(tmp_path, capsys):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    labels = np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2), np.ones((16, 16), np.uint8))
    for name in ("a", "c"):
        write_image(truth / f"{name}.png", labels)
        write_image(pred / f"{name}.png", labels)
    (truth / "b.png").write_bytes(BOMBS["png"](100000, 100000))
    write_image(pred / "b.png", labels)
    code, out, err = run(["score", pred, truth, "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["images"] == 2
    assert [p["name"] for p in result["problems"]] == ["b.png"] and "MP limit" in result["problems"][0][
        "problem"
    ]

    root = tmp_path / "ds"
    for name in ("a", "b"):
        write_image(root / "images" / f"{name}.png", np.full((16, 16), 90, np.uint8))
        write_image(root / "masks" / f"{name}.png", np.ones((16, 16), np.uint8))
    (root / "masks" / "b.png").write_bytes(BOMBS["png"](100000, 100000))
    code, out, err = run(["data", "check", root, "--json", tmp_path / "d.json"], capsys)
    assert code == 1, err
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["n_images"] == 1
    assert [Path(p["path"]).name for p in report["problems"]] == ["b.png"]
    assert "MP limit" in report["problems"][0]["reason"]


def test_watch_fails_the_bomb_and_does_the_rest(tmp_path, capsys, model):
    bombs = _batch_with_bombs(tmp_path / "in")
    argv = ["watch", tmp_path / "in", "--model", model, "--out", tmp_path / "out", "--once"]
    code, _, err = run([*argv, "--settle", "0", "--fail-after", "0", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "4 file(s) failed" in err
    notes = {p.name: p.read_text() for p in (tmp_path / "out" / "failed").iterdir()}
    assert sorted(notes) == sorted(f"{name}.txt" for name in bombs)
    assert all("MP limit" in text for text in notes.values())
    assert (tmp_path / "out" / "a_good_mask.png").is_file() and (
        tmp_path / "out" / "z_good_mask.png"
    ).is_file()
