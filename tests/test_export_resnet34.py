"""The product's network, smp's U-Net with a ResNet34 encoder, through the whole export (slow: ~100 MB)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from semphase.imageio import read_gray
from test_export_support import (
    NORMALIZATION,
    SMALL_EXPORT_ARGS,
    UNTRAINED_GATE_ARGS,
    make_checkpoint,
    make_dataset,
    run_cli,
    torch_logits,
)

FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@pytest.mark.slow
def test_resnet34_unet_exports_and_every_file_matches_torch_at_two_sizes(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", groups=4, size=128)
    checkpoint = tmp_path / "best.pt"
    make_checkpoint(checkpoint, arch="unet-resnet34")
    out = tmp_path / "model"
    code, stdout, err = run_cli(
        [
            "export",
            checkpoint,
            "--out",
            out,
            "--calib",
            data,
            *SMALL_EXPORT_ARGS,
            *UNTRAINED_GATE_ARGS,
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads((out / "export_report.json").read_text())
    # No training dataset in the config: whole crop groups of --calib were set aside for validation.
    assert report["heldout"]["source"].startswith("crop groups of")
    assert report["heldout"]["images"] % 9 == 0 and report["heldout"]["images"] > 0
    assert report["export"]["simplified"] is True
    sizes = {v: report["variants"][v]["size_bytes"] for v in FILES}
    assert sizes["fp32"] > 90e6
    assert sizes["fp16"] < 0.55 * sizes["fp32"] and sizes["int8"] < 0.3 * sizes["fp32"]

    # Micrographs like the calibration tiles (an untrained network on noise is no test of INT8).
    micrographs = np.stack([read_gray(p) for p in sorted((data / "AugmentedImages").iterdir())[:2]])
    batches = []
    for image in (micrographs[:1, None, 32:96, :64], micrographs[:, None, :96, :128]):
        batch = ((image / 255.0 - NORMALIZATION["mean"][0]) / NORMALIZATION["std"][0]).astype(np.float32)
        batches.append((batch, torch_logits(checkpoint, batch)))
    # Mean |logit difference| relative to the mean |logit|, and least argmax agreement. The untrained
    # ResNet34 has logits in the hundreds, so INT8's absolute errors are large while the argmax holds.
    limits = {"fp32": (1e-5, 0.9999), "fp16": (2e-3, 0.999), "int8": (0.5, 0.95)}
    for variant, (tolerance, agreement) in limits.items():
        session = ort.InferenceSession(str(out / FILES[variant]), providers=["CPUExecutionProvider"])
        for batch, expected in batches:
            (got,) = session.run(["logits"], {"image": batch})
            assert got.shape == (batch.shape[0], 5, *batch.shape[2:]) and got.dtype == np.float32
            assert np.abs(got - expected).mean() <= tolerance * np.abs(expected).mean(), (
                variant,
                batch.shape,
            )
            assert (got.argmax(1) == expected.argmax(1)).mean() >= agreement, (variant, batch.shape)
