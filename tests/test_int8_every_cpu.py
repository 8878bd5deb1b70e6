"""The shipped INT8 file computes the same logits on a CPU without AVX-512/VNNI as on this one.

onnxruntime picks its INT8 kernels by CPUID; under QEMU's AVX2-only CPU (tests/_emulated.py) it takes the
kernels a lab PC without VNNI takes, whatever CPU runs the test. With 7-bit weights (the default) no
16-bit pair sum can saturate and the logits must be bit-identical; with 8-bit weights they are not. Skips
where QEMU is not installed (`.ci/run` installs it) or the machine is not x86-64.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from _emulated import MARKS, run_script
from test_export_support import (
    NORMALIZATION,
    SMALL_EXPORT_ARGS,
    UNTRAINED_GATE_ARGS,
    make_checkpoint,
    make_dataset,
    run_cli,
)

pytestmark = MARKS

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import onnxruntime as ort
    from numpy._core._multiarray_umath import __cpu_features__ as cpu
    batch = np.load(sys.argv[1])
    out = {"avx512vnni": np.asarray(cpu.get("AVX512VNNI", False)), "avx2": np.asarray(cpu.get("AVX2", False))}
    for i, path in enumerate(sys.argv[3:]):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out[f"m{i}"] = session.run(None, {"image": batch})[0]
    np.savez(sys.argv[2], **out)
    """
)


def _logits(tmp_path: Path, batch: np.ndarray, models: list[Path], emulate: bool) -> dict:
    script = tmp_path / "run_models.py"
    script.write_text(SCRIPT, encoding="utf-8")
    np.save(tmp_path / "batch.npy", batch)
    out = tmp_path / ("emulated.npz" if emulate else "native.npz")
    run_script(script, [tmp_path / "batch.npy", out, *models], emulate, {"OMP_NUM_THREADS": "1"})
    return dict(np.load(out))


def test_int8_logits_are_bit_identical_on_an_avx2_only_cpu(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", groups=3, size=64)
    checkpoint = tmp_path / "best.pt"
    make_checkpoint(checkpoint)
    common = ["--calib", data, *SMALL_EXPORT_ARGS, "--no-fp16"]
    models = []
    for name, extra in (("seven", []), ("eight", ["--int8-full-range"])):
        out = tmp_path / name
        # the gates are not what this test is about; an 8-bit file may miss them and still be compared
        code, _, err = run_cli(
            ["export", checkpoint, "--out", out, *common, *UNTRAINED_GATE_ARGS, *extra], capsys
        )
        assert code in (0, 1), err
        models.append(out / "model.int8.onnx")
    images = np.stack([_gray(p) for p in _images(data)])
    batch = ((images[:, None] / 255.0 - NORMALIZATION["mean"][0]) / NORMALIZATION["std"][0]).astype(
        np.float32
    )
    native = _logits(tmp_path, batch, models, emulate=False)
    emulated = _logits(tmp_path, batch, models, emulate=True)
    if not bool(emulated["avx2"]):
        pytest.skip("this QEMU cannot emulate AVX2 (QEMU 7.2 or newer can)")
    assert not bool(emulated["avx512vnni"])  # the emulated CPU is AVX2-only
    assert np.array_equal(native["m0"], emulated["m0"]), "7-bit INT8 logits differ on an AVX2-only CPU"
    if bool(native["avx512vnni"]):
        # The control: 8-bit weights saturate VPMADDUBSW's 16-bit sums, so its logits move.
        assert not np.array_equal(native["m1"], emulated["m1"])


def _images(data: Path) -> list[Path]:
    return sorted((data / "AugmentedImages").iterdir())[:4]


def _gray(path: Path) -> np.ndarray:
    from semphase.imageio import read_gray, to_uint8

    return to_uint8(read_gray(path))
