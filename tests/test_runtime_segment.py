"""segment_file and the runtime's inputs: outputs and phase tables, data bars, bit depths and colour,
pixel sizes from vendor metadata, atomic writes, model loading, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from _runtime_models import build_blur_classifier, micrograph
from semphase.data.synth.large import write_large
from semphase.errors import InputError
from semphase.imageio import read_gray, read_label, read_micrograph, write_image
from semphase.phases import IGNORE
from semphase.rowwriters import PngRowWriter, TiffPlaneWriter
from semphase.runtime.databar import detect_databar, resolve_databar
from semphase.runtime.inputs import expand_inputs, output_stems
from semphase.runtime.model import choose_providers, load_model
from semphase.runtime.segment import SegmentOptions, segment_file
from semphase.runtime.sliding import segment_array


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16))


def test_outputs_phase_table_and_mask_agree(tmp_path, model):
    image = micrograph(150, 170, seed=5)
    write_image(tmp_path / "m.png", image)
    result = segment_file(model, tmp_path / "m.png", tmp_path / "out", SegmentOptions(uncertainty=True))
    out = tmp_path / "out"
    mask = read_label(out / "m_mask.png")
    assert mask.shape == image.shape and mask.dtype == np.uint8
    assert (mask == segment_array(model, image, tile=64, overlap=16)).all()
    overlay = cv2.imread(str(out / "m_overlay.png"))
    assert overlay.shape == (150, 170, 3)
    stored = json.loads((out / "m.json").read_text())
    assert stored == json.loads(json.dumps(result))
    counts = np.bincount(mask.ravel(), minlength=5)
    assert [p["pixels"] for p in stored["phases"]] == counts.tolist()
    assert sum(p["fraction"] for p in stored["phases"]) == pytest.approx(1.0)
    assert stored["analysed_pixels"] == 150 * 170 and stored["excluded_pixels"] == 0
    assert stored["pixel_size_um"] is None and all(p["area_um2"] is None for p in stored["phases"])
    assert stored["model"]["variant"] == "fp32" and len(stored["model"]["sha256"]) == 64
    assert stored["tiling"]["tile"] == 64 and stored["tiling"]["overlap"] == 16
    assert stored["seconds"]["total"] > 0
    assert 0.0 <= stored["uncertainty"]["uncertain_fraction"] <= 1.0
    entropy = read_gray(out / "m_uncertainty.png")
    assert entropy.shape == image.shape
    # The PNG stores round(entropy * 255): entropy > 0.5 is a value of 128 or more, up to rounding.
    assert abs(stored["uncertainty"]["uncertain_pixels"] - int((entropy >= 128).sum())) <= 0.01 * entropy.size
    assert sorted(p.name for p in out.iterdir()) == [
        "m.json",
        "m_mask.png",
        "m_overlay.png",
        "m_uncertainty.png",
    ]


def test_probabilities_tiff_sums_to_one_and_matches_the_mask(tmp_path, model):
    image = micrograph(96, 130, seed=6)
    write_image(tmp_path / "p.png", image)
    segment_file(model, tmp_path / "p.png", tmp_path / "out", SegmentOptions(probs=True))
    probs = tifffile.imread(tmp_path / "out" / "p_probs.tif")
    assert probs.shape == (5, 96, 130) and probs.dtype == np.float16
    assert np.allclose(probs.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)
    mask = read_label(tmp_path / "out" / "p_mask.png")
    agree = (probs.argmax(axis=0) == mask).mean()
    assert agree > 0.999  # float16 rounding may flip exact ties only


def test_databar_from_metadata_is_excluded_and_pixel_size_gives_areas(tmp_path, model):
    tif, _ = write_large(tmp_path / "big.tif", (400, 300), seed=1, databar_px=40, pixel_size_um=0.25)
    result = segment_file(model, tif, tmp_path / "out")
    assert result["databar"] == {"rows": 40, "source": "metadata"}
    assert result["excluded_pixels"] == 40 * 400 and result["analysed_pixels"] == 300 * 400
    assert result["pixel_size_um"] == 0.25 and result["pixel_size_source"] == "FEI/Thermo"
    for phase in result["phases"]:
        assert phase["area_um2"] == pytest.approx(phase["pixels"] * 0.0625)
    mask = read_label(tmp_path / "out" / "big_mask.png")
    assert mask.shape == (340, 400)
    assert (mask[300:] == IGNORE).all() and mask[:300].max() < 5


def test_databar_is_detected_without_metadata_and_options_override(tmp_path, model):
    tif, _ = write_large(tmp_path / "bar.tif", (256, 200), seed=2, databar_px=33)
    gray, info = read_micrograph(tif)
    assert info.image_height is None and info.pixel_size_um is None
    assert detect_databar(gray) == 33
    assert resolve_databar("auto", gray, None) == (33, "detected")
    assert resolve_databar("none", gray, None) == (0, "none")
    assert resolve_databar("10", gray, None) == (10, "option")
    with pytest.raises(ValueError, match="leaves no image"):
        resolve_databar(233, gray, None)
    result = segment_file(model, tif, tmp_path / "out", SegmentOptions(databar="none", pixel_size_um=0.5))
    assert result["excluded_pixels"] == 0 and result["pixel_size_source"] == "option"


def test_no_databar_is_found_in_plain_micrographs():
    for seed in range(4):
        assert detect_databar(micrograph(300, 260, seed=seed)) == 0
    assert detect_databar(np.zeros((100, 100), np.uint8)) == 0  # a blank frame is not a bar


def test_sixteen_bit_and_rgb_inputs_give_the_same_phases(tmp_path, model):
    image = micrograph(128, 160, seed=7)
    tifffile.imwrite(tmp_path / "deep.tif", image.astype(np.uint16) * 257)
    write_image(tmp_path / "colour.png", np.dstack([image, image, image]))
    rgba = np.dstack([image, image, image, np.full_like(image, 255)])
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    write_image(tmp_path / "plain.bmp", image)
    masks = {}
    for name in ("deep.tif", "colour.png", "alpha.png", "plain.bmp"):
        result = segment_file(model, tmp_path / name, tmp_path / "out")
        masks[name] = read_label(result["outputs"]["mask"])
    assert result["bit_depth"] == 8
    assert json.loads((tmp_path / "out" / "deep.json").read_text())["bit_depth"] == 16
    for mask in masks.values():
        assert (mask == masks["plain.bmp"]).all()


def test_percentile_normalization_stretches_a_dim_sixteen_bit_image(tmp_path, model):
    image = micrograph(96, 96, seed=8)
    tifffile.imwrite(tmp_path / "dim.tif", (image.astype(np.uint16) * 16))  # uses 1/16 of the range
    linear = segment_file(model, tmp_path / "dim.tif", tmp_path / "a")
    stretched = segment_file(
        model, tmp_path / "dim.tif", tmp_path / "b", SegmentOptions(normalize="percentile")
    )
    assert linear["phases"][0]["fraction"] > 0.9  # all dark: matrix
    assert stretched["phases"][0]["fraction"] < 0.7


def test_zeiss_and_resolution_tag_pixel_sizes(tmp_path):
    image = micrograph(64, 64, seed=9)
    zeiss = "\r\n0\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 12.5 nm\r\nAP_MAG\r\nMag = 10.00 K X\r\n"
    tifffile.imwrite(tmp_path / "zeiss.tif", image, extratags=[(34118, "s", 0, zeiss, True)])
    _, info = read_micrograph(tmp_path / "zeiss.tif")
    assert info.vendor == "Zeiss" and info.pixel_size_um == pytest.approx(0.0125)
    tifffile.imwrite(
        tmp_path / "cm.tif", image, resolution=(1e4 / 0.2, 1e4 / 0.2), resolutionunit="CENTIMETER"
    )
    _, info = read_micrograph(tmp_path / "cm.tif")
    assert info.pixel_size_um == pytest.approx(0.2) and info.notes
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72, 72), resolutionunit="INCH")
    _, info = read_micrograph(tmp_path / "dpi.tif")
    assert info.pixel_size_um is None  # 72 dpi says nothing about the sample


def test_tescan_pixel_size_and_a_broken_vendor_header(tmp_path):
    image = micrograph(64, 64, seed=9)
    header = "[MAIN]\r\nDevice=MIRA3\r\nPixelSizeX=4.5e-09\r\nPixelSizeY=4.5e-09\r\n"
    tifffile.imwrite(tmp_path / "tescan.tif", image, extratags=[(50431, "B", 0, header.encode(), True)])
    _, info = read_micrograph(tmp_path / "tescan.tif")
    assert info.vendor == "TESCAN" and info.pixel_size_um == pytest.approx(0.0045)
    tifffile.imwrite(tmp_path / "nosize.tif", image, extratags=[(50431, "B", 0, b"[MAIN]\r\nDevice=x", True)])
    pixels, info = read_micrograph(tmp_path / "nosize.tif")
    assert info.vendor == "TESCAN" and info.pixel_size_um is None and pixels.shape == (64, 64)


def test_multi_page_tiff_takes_the_first_page(tmp_path, model):
    first, second = micrograph(64, 96, seed=1), micrograph(64, 96, seed=2)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([first, second]))
    write_image(tmp_path / "first.png", first)
    a = segment_file(model, tmp_path / "stack.tif", tmp_path / "out")
    b = segment_file(model, tmp_path / "first.png", tmp_path / "out")
    assert a["phases"] == b["phases"]


def test_a_failed_input_leaves_no_partial_files_and_keeps_earlier_outputs(tmp_path, model, monkeypatch):
    write_image(tmp_path / "x.png", micrograph(100, 100, seed=3))
    out = tmp_path / "out"
    segment_file(model, tmp_path / "x.png", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(self, band):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing the overlay

    monkeypatch.setattr(PngRowWriter, "write", broken)
    with pytest.raises(KeyboardInterrupt):
        segment_file(model, tmp_path / "x.png", out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # no .part files, finished outputs untouched


def test_outputs_never_overwrite_the_input(tmp_path, model):
    write_image(tmp_path / "a_overlay.png", micrograph(64, 64))
    with pytest.raises(InputError, match="overwrite the input"):
        segment_file(model, tmp_path / "a_overlay.png", tmp_path, SegmentOptions(), stem="a")


def test_row_writers_check_their_rows(tmp_path):
    writer = PngRowWriter(tmp_path / "w.png", 10, 4)
    writer.write(np.zeros((3, 10), np.uint8))
    with pytest.raises(ValueError, match="rows"):
        writer.write(np.zeros((2, 10), np.uint8))
    with pytest.raises(ValueError, match="of 4 rows written"):
        writer.commit()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    planes = TiffPlaneWriter(tmp_path / "p.tif", 7, 5, 3)
    planes.write(np.ones((3, 2, 7), np.float16))
    planes.write(np.zeros((3, 3, 7), np.float16))
    planes.commit()
    data = tifffile.imread(tmp_path / "p.tif")
    assert data.shape == (3, 5, 7) and data[:, :2].min() == 1 and data[:, 2:].max() == 0


def test_png_writer_output_decodes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cases = (("g.png", gray, 1, False), ("c.png", rgb, 3, False), ("l.png", gray % 5, 1, True))
    for name, image, channels, label_image in cases:
        writer = PngRowWriter(tmp_path / name, 53, 37, channels, label_image=label_image)
        for y in range(0, 37, 10):
            writer.write(image[y : y + 10])
        writer.commit()
        decoded = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        if channels == 3:
            decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        assert (decoded == image).all()


def test_overlay_is_a_palette_png_that_shows_the_tinted_micrograph(tmp_path):
    from semphase.runtime.outputs import OverlayPainter

    colors = [(255, 0, 0), (0, 0, 255)]
    painter = OverlayPainter(["a", "b"], colors, 400, 300, alpha=0.5)
    gray = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (4, 1))
    labels = np.zeros_like(gray)
    labels[1], labels[2], labels[3] = 1, 255, 7  # 255 (no data) and ids without a colour stay grey
    rgb = painter.to_rgb(painter.paint(gray, labels, y0=1000)).astype(int)  # below the legend box
    tinted, plain = gray[0] * 0.5 + 127.5, gray[0] * 0.5  # half colour, half micrograph
    assert np.abs(rgb[0] - np.stack([tinted, plain, plain], axis=1)).max() <= 5
    assert np.abs(rgb[1] - np.stack([plain, plain, tinted], axis=1)).max() <= 5
    for row in (2, 3):
        assert np.abs(rgb[row] - gray[row][:, None]).max() <= 5  # grey, quantized to a few levels
    legend = painter.to_rgb(painter.paint(np.zeros((10, 400), np.uint8), np.zeros((10, 400), np.uint8), 0))
    assert (legend[:3, :40] == 255).all()  # the white legend box in the top-left corner
    writer = PngRowWriter(tmp_path / "o.png", 128, 4, 1, palette=painter.palette)
    writer.write(painter.paint(gray, labels, y0=1000))
    writer.commit()
    decoded = cv2.cvtColor(cv2.imread(str(tmp_path / "o.png")), cv2.COLOR_BGR2RGB)
    assert (decoded == rgb).all()


def test_input_expansion_and_distinct_output_stems(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a/x.tif", "a/x.png", "b/x.tif", "a/notes.txt", "a/.hidden.png"):
        (tmp_path / name).write_bytes(b"0")
    (tmp_path / "a" / "out").mkdir()
    (tmp_path / "a" / "out" / "y_mask.png").write_bytes(b"0")
    files, problems = expand_inputs(
        [
            tmp_path / "a",
            str(tmp_path / "b" / "*.tif"),
            tmp_path / "a" / "x.png",
            str(tmp_path / "none*.tif"),
        ],
        exclude=[tmp_path / "a" / "out"],
    )
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a/x.png", "a/x.tif", "b/x.tif"]
    assert problems == [(str(tmp_path / "none*.tif"), "pattern matches no image files")]
    assert output_stems(files) == ["x_png", "a_x_tif", "b_x_tif"]
    assert output_stems([Path("p/q.tif"), Path("r.png")]) == ["q", "r"]


def test_model_loading_refuses_what_is_not_a_semphase_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(InputError, match="no such model"):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_model(tmp_path / "empty.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(InputError, match="cannot load"):
        load_model(tmp_path / "junk.onnx")
    node = helper.make_node("Identity", ["image"], ["logits"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, "H", "W"])],
    )
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    foreign.ir_version = 8
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(InputError, match="not a semphase model") as info:
        load_model(tmp_path / "foreign.onnx")
    assert str(tmp_path / "foreign.onnx") in str(info.value)


def test_a_model_whose_logits_are_not_the_tile_size_is_refused_at_load(tmp_path, capsys):
    # A strided graph (half-size logits) loads in onnxruntime; the runtime probes one tile and refuses it
    # in one line naming the file, before any micrograph is touched.
    import json as _json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((5, 1, 2, 2), np.float32) / 4, "w")
    node = helper.make_node("Conv", ["image", "w"], ["logits"], strides=[2, 2], kernel_shape=[2, 2])
    graph = helper.make_graph(
        [node],
        "strided",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5, "h", "w"])],
        [weights],
    )
    strided = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    strided.ir_version = 8
    meta = {
        "semphase.classes": ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"],
        "semphase.colors": [[1, 2, 3]] * 5,
        "semphase.input": {
            "channels": 1,
            "scale": 1 / 255,
            "mean": [0.5],
            "std": [0.25],
            "size_multiple": 32,
        },
        "semphase.variant": "fp32",
        "semphase.tile": {"size": 64, "overlap": 16},
    }
    for key, value in meta.items():
        strided.metadata_props.add(key=key, value=_json.dumps(value))
    path = tmp_path / "strided.onnx"
    onnx.save(strided, path)
    with pytest.raises(
        InputError, match=r"returns logits of shape \(1, 5, 32, 32\) for a 64 x 64 tile"
    ) as info:
        load_model(path)
    assert str(info.value).startswith(str(path))
    image = tmp_path / "m.png"
    write_image(image, micrograph(64, 64))
    from semphase.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(path), str(image), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "strided.onnx" in err
    assert not (tmp_path / "out" / "m_mask.png").exists()


def test_providers():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(InputError, match="unknown provider"):
        choose_providers("tpu")
    if "CUDAExecutionProvider" not in choose_providers("auto"):
        with pytest.raises(InputError, match="not installed"):
            choose_providers("cuda")


# The child reports its own high-water mark (VmHWM): Linux's ru_maxrss would include this test process's
# size at spawn time (see semphase.benchmarks.rss), which could hide any growth.
PEAK_RSS = """
import sys
from semphase.benchmarks.rss import own_peak_rss_mb
from semphase.runtime.model import load_model
from semphase.runtime.segment import segment_file
model = load_model(sys.argv[1], threads=1)
segment_file(model, sys.argv[2], sys.argv[3])
peak, source = own_peak_rss_mb()
print(peak, source)
"""


@pytest.mark.slow
def test_peak_memory_grows_with_the_width_not_the_area(tmp_path, model):
    """Four times the rows of a 1024-wide micrograph may add at most 4 bytes per extra pixel.

    A behaviour check, not a speed or memory target (those are in benchmarks/RESULTS.md): VmHWM is exact
    accounting, not timing, and the margin is wide. Measured on the 2-core Xeon: 1.7 bytes per extra pixel
    (the decoded uint8 image and its padded copy are held whole). Any float32 plane held whole (logits are
    5 of them, probabilities too) adds 4 or more, an RGB overlay 3: each lands well above the bound. A
    whole uint8 mask (+1) would not; streaming of the mask is checked by the band tests instead."""
    peaks = {}
    for rows in (1024, 4096):
        tif, _ = write_large(tmp_path / f"r{rows}.tif", (1024, rows), seed=rows)
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(model.path), str(tif), str(tmp_path / f"o{rows}")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        peak, source = done.stdout.split()
        if source not in ("VmHWM", "PeakWorkingSetSize"):
            pytest.skip(f"no per-process peak memory on this platform ({source})")
        peaks[rows] = float(peak) * 2**20
    extra_pixels = 1024 * (4096 - 1024)
    growth = peaks[4096] - peaks[1024]
    print(f"peak RSS 1024 rows {peaks[1024] / 2**20:.0f} MiB, 4096 rows {peaks[4096] / 2**20:.0f} MiB")
    assert growth < 4 * extra_pixels, f"peak RSS grew by {growth / extra_pixels:.1f} bytes per extra pixel"


def test_segment_file_reports_its_tiles_through_the_progress_protocol(tmp_path, model):
    from semphase.imageio import write_image as write

    class Recorder:
        def __init__(self):
            self.events = []

        def start(self, key, description, total):
            self.events.append(("start", key, description, total))

        def advance(self, key, steps=1):
            self.events.append(("advance", key, steps))

        def say(self, message):
            self.events.append(("say", message))

    write(tmp_path / "m.png", micrograph(200, 300))
    recorder = Recorder()
    result = segment_file(model, tmp_path / "m.png", tmp_path / "out", progress=recorder)
    starts = [e for e in recorder.events if e[0] == "start"]
    assert starts == [("start", "tiles", "  m.png", result["tiling"]["tiles"])]
    assert sum(e[2] for e in recorder.events if e[0] == "advance") == result["tiling"]["tiles"]
