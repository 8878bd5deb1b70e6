"""`--backend openvino` on a CPU without AVX-512: it compiles, runs the float layers in f32 (there is no
bf16 there), passes its self-check and gives onnxruntime's labels.

OpenVINO picks its kernels and its default precision by CPUID: on this project's machines (AVX-512, some
with AMX) it runs float layers in bf16, on a lab PC with AVX2 alone in f32. Under QEMU's AVX2-only CPU
(tests/_emulated.py) the test sees what such a PC sees, whatever CPU runs it. Skips where QEMU or the
openvino extra is missing, or the machine is not x86-64; OpenVINO only ever runs in child processes.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _emulated import MARKS, run_script
from _runtime_models import micrograph, model_with_reference

ROOT = Path(__file__).resolve().parents[1]
pytestmark = MARKS

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from numpy._core._multiarray_umath import __cpu_features__ as cpu
    from semphase.runtime.model import load_model
    from semphase.runtime.sliding import segment_array

    model = load_model(sys.argv[1], backend=sys.argv[2], threads=2)
    np.save(sys.argv[4], segment_array(model, np.load(sys.argv[3]), tile=128))
    described = model.describe()
    print(json.dumps({
        "avx2": bool(cpu.get("AVX2")), "avx512f": bool(cpu.get("AVX512F")),
        "backend": described["backend"], "self_check": described["self_check"],
    }))
    """
)


def _run(tmp_path: Path, model: Path, backend: str, emulate: bool) -> tuple[dict, np.ndarray]:
    script = tmp_path / "run_model.py"
    script.write_text(SCRIPT, encoding="utf-8")
    labels = tmp_path / f"{backend}-{'emulated' if emulate else 'native'}.npy"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env["SEMPHASE_CACHE_DIR"] = str(tmp_path / "cache")
    said = run_script(script, [model, backend, tmp_path / "image.npy", labels], emulate, env)
    return json.loads(said.strip().splitlines()[-1]), np.load(labels)


def test_openvino_on_an_avx2_only_cpu_runs_f32_passes_its_check_and_agrees(tmp_path):
    pytest.importorskip("openvino")
    model = model_with_reference(tmp_path, "model", variant="fp32")
    np.save(tmp_path / "image.npy", micrograph(200, 240, seed=4))
    said, ov = _run(tmp_path, model, "openvino", emulate=True)
    if not said["avx2"]:
        pytest.skip("this QEMU cannot emulate AVX2 (QEMU 7.2 or newer can)")
    assert not said["avx512f"]  # the emulated CPU is AVX2-only
    assert said["backend"]["name"] == "openvino", said  # not fallen back to onnxruntime
    assert said["backend"]["precision"] == "f32", said
    assert said["self_check"]["status"] == "passed", said
    assert said["self_check"]["agreement_pct"] >= said["self_check"]["required_pct"]
    _, ort = _run(tmp_path, model, "onnxruntime", emulate=False)
    assert ov.shape == ort.shape == (200, 240)
    assert (ov == ort).mean() > 0.999
