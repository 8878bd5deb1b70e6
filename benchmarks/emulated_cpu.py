"""Each backend's phases on an AVX2-only CPU, emulated: agreement with onnxruntime FP32 and the self-check.

The runtime picks kernels by CPUID, and so do onnxruntime's INT8 and OpenVINO (which also drops bf16 where
the CPU has none). QEMU user mode (`qemu-x86_64 -cpu EPYC-Rome`, Debian's qemu-user) runs this machine's
Python with the CPUID of an AVX2-only AMD Zen 2, so a lab PC's kernels run here, about 100-1000x slower.
For each ``--files`` x ``--backends`` this loads the file the way `semphase segment` does (``load_model``,
self-check on) in an emulated child, runs the centre ``--crop`` of the first ``--images`` held-out images,
and compares the classes with onnxruntime FP32's on this machine's own CPU; the same child runs natively
too, so each row has its native twin. No timing (an emulator's seconds say nothing)::

    python benchmarks/emulated_cpu.py --models demo/model --data demo/data --split demo/split.json \\
        --files model.int8.onnx --backends onnxruntime,openvino --out bench/avx2-emulated

Writes ``emulated_cpu.json`` (every run's self-check verdict and agreement) and ``emulated_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = """
import json, sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as cpu
from semphase.runtime.model import load_model
model = load_model(sys.argv[1], backend=sys.argv[2], threads=2, streams=1)
np.save(sys.argv[4], model.logits(np.load(sys.argv[3])).argmax(1).astype(np.uint8))
described = model.describe()
print(json.dumps({"cpuid": {"avx2": bool(cpu.get("AVX2")), "avx512f": bool(cpu.get("AVX512F")),
                            "avx512vnni": bool(cpu.get("AVX512VNNI"))},
                  "backend": described["backend"], "self_check": described["self_check"]}))
"""


def crops(data: Path, split: Path, images: int, crop: int) -> np.ndarray:
    """The centre ``crop`` x ``crop`` of the first ``images`` test images, one from each group in turn."""
    from semphase.imageio import read_gray, to_uint8

    names = json.loads(split.read_text())["test"]
    step = max(1, len(names) // images)
    out = []
    for name in names[::step][:images]:
        image = to_uint8(read_gray(data / "AugmentedImages" / name))
        y, x = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        out.append(image[y : y + crop, x : x + crop])
    return np.stack(out)


def run_child(work: Path, model: Path, backend: str, batch: Path, emulate: bool, timeout: int) -> dict:
    """Run :data:`CHILD` (written to ``work/child.py`` by :func:`main`) on one file and backend."""
    tag = f"{model.stem}-{backend}-{'emulated' if emulate else 'native'}"
    script = work / "child.py"
    labels = work / f"{tag}.npy"
    command = [sys.executable, str(script), str(model), backend, str(batch), str(labels)]
    if emulate:
        command = [shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu", "EPYC-Rome", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if "TCG doesn't support" not in line]
        raise SystemExit(f"{tag} failed:\n" + "\n".join(said[-20:]))
    return {"tag": tag, **json.loads(done.stdout.strip().splitlines()[-1]), "labels": np.load(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="the folder semphase export wrote")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--files", default="model.int8.onnx", help="comma-separated files in --models")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per emulated child")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if shutil.which("qemu-x86_64") is None:
        raise SystemExit("qemu-x86_64 not found (apt-get install qemu-user)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "child.py").write_text(CHILD, encoding="utf-8")
    batch = args.out / "crops.npy"
    np.save(batch, crops(args.data, args.split, args.images, args.crop))
    reference = run_child(args.out, args.models / "model.onnx", "onnxruntime", batch, False, args.timeout)
    truth = reference["labels"]
    rows = []
    for name in args.files.split(","):
        for backend in args.backends.split(","):
            for emulate in (False, True):
                got = run_child(args.out, args.models / name, backend, batch, emulate, args.timeout)
                check = got["self_check"] or {}
                rows.append(
                    {
                        "file": name,
                        "backend": backend,
                        "cpu": "emulated AVX2-only (EPYC-Rome)" if emulate else "native",
                        "cpuid": got["cpuid"],
                        "ran_on": got["backend"]["name"],
                        "precision": got["backend"]["precision"],
                        "self_check": check.get("status"),
                        "self_check_pct": check.get("agreement_pct"),
                        "agreement_with_ort_fp32_pct": float((got["labels"] == truth).mean() * 100),
                        "pixels": int(truth.size),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    (args.out / "emulated_cpu.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    lines = [
        "| file | backend (ran on) | CPU | float precision | self-check | agreement with onnxruntime FP32 |",
        "|:--|:--|:--|:--|--:|--:|",
    ]
    for r in rows:
        pct = "-" if r["self_check_pct"] is None else f"{r['self_check_pct']:.3f} %"
        lines.append(
            f"| {r['file']} | {r['backend']} ({r['ran_on']}) | {r['cpu']} | {r['precision']} | "
            f"{r['self_check']} {pct} | {r['agreement_with_ort_fp32_pct']:.3f} % |"
        )
    (args.out / "emulated_cpu.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
