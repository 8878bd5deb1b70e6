#!/usr/bin/env bash
# Proves that the base install (`pip install semphase`, what a microscope PC gets: no extras, no torch,
# no onnx, no matplotlib) works on its own. Called by `make base-check` and CI (.ci/run).
#
#   1. a fresh venv (BASE_VENV, default .venv-base; removed and recreated) gets the project installed
#      ALONE from a clean copy of this working tree: `pip install -c constraints.txt .`, not editable;
#   2. torch, onnx, segmentation_models_pytorch, matplotlib and the extras (dask, bioimageio, czmodel) must NOT
#      be importable there, semphase must;
#   3. the FULL development venv (FULL_PY, default .venv/bin/python) makes the test data: a self-checking
#      semphase ONNX model (tests/_runtime_models.py) and micrographs as PNG, LZW TIFF (OpenCV), Deflate
#      TIFF and 16-bit LZW TIFF (tifffile), their truth labels and a small images/+masks/ dataset;
#   4. the base venv's `semphase` alone runs info, info --verify, segment (also with the model as a
#      bioimage.io package, made by the full venv's `semphase package`), suggest, watch --once, score and
#      benchmark (no checkpoint), and every exit code and output is checked;
#   5. the installed size of the base venv is printed (site-packages total and the biggest packages).
#
# Usage: scripts/base_install_check.sh [BASE_VENV]
# Environment: FULL_PY (python of the full venv), PYTHON (makes the base venv, default python3),
#              BASE_VENV, KEEP_WORK=1 (keep the temporary data/output folder).
# Exit code 0 when every step passed; otherwise 1 and one line "base-check FAILED at step ...".
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
FULL_PY=${FULL_PY:-.venv/bin/python}
BASE_VENV=${1:-${BASE_VENV:-.venv-base}}

CURRENT="set-up"
T0=$(date +%s%N)
STEP_T0=$T0
TIMINGS=()
WORK=""
LOG=/dev/null

fail() { # fail MESSAGE...: one clear line naming the step, the step's log tail, exit 1
    trap - ERR
    if [ -s "$LOG" ]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 25 "$LOG" >&2
        echo "----" >&2
    fi
    echo "base-check FAILED at step '$CURRENT': $*" >&2
    [ -n "$WORK" ] && echo "data and outputs kept in $WORK" >&2
    exit 1
}
# any other failing command (-E: in functions too) names itself; in a subshell the parent reports it
trap 'rc=$?; if [ "$BASH_SUBSHELL" -gt 0 ]; then exit "$rc"; fi
      fail "command failed (exit $rc) at ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND"' ERR

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
end_step() { # close the current step: print and record its time
    local now
    now=$(date +%s%N)
    TIMINGS+=("$(printf '  %-34s %6s s' "$CURRENT" "$(secs "$STEP_T0" "$now")")")
    printf '   ok (%s s)\n' "$(secs "$STEP_T0" "$now")"
}
step() { # step NAME: close the previous step, open this one (its log: $WORK/logs/NN-NAME.log)
    local now
    [ "$CURRENT" = "set-up" ] || end_step
    now=$(date +%s%N)
    CURRENT=$1
    STEP_T0=$now
    LOG="$WORK/logs/$(printf '%02d' "${#TIMINGS[@]}")-$(echo "$1" | tr -cs 'a-z0-9' '-' | sed 's/-$//').log"
    printf '\033[1;36m== %s\033[0m\n' "$1"
}
# run EXPECTED_RC CMD...: run CMD (output to the step's log), fail unless it exits with EXPECTED_RC
run() {
    local want=$1 rc=0
    shift
    echo "\$ $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 || rc=$?
    [ "$rc" -eq "$want" ] || fail "exit code $rc (expected $want): $*"
}
need_file() { for f in "$@"; do [ -s "$f" ] || fail "missing or empty output: $f"; done; }

command -v "$PYTHON" >/dev/null || fail "no $PYTHON to create the base venv with (set PYTHON)"
[ -x "$FULL_PY" ] || fail "no full venv python at $FULL_PY (run 'make venv', or set FULL_PY)"
# refuse to delete anything that is not a venv (a mistyped argument)
if [ -e "$BASE_VENV" ] && [ ! -f "$BASE_VENV/pyvenv.cfg" ]; then
    fail "$BASE_VENV exists and is not a venv; not removing it"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/semphase-base-check.XXXXXX")
mkdir -p "$WORK/logs"
FULL_PY=$(cd "$(dirname "$FULL_PY")" && pwd)/$(basename "$FULL_PY")

# the base venv runs with nothing from outside it: no PYTHONPATH, no user site-packages; wide tables in logs
export PYTHONNOUSERSITE=1
base() { env -u PYTHONPATH COLUMNS=160 "$@"; }

# --------------------------------------------------------------------------------------------------------
step "create the base venv"
rm -rf "$BASE_VENV"
run 0 base "$PYTHON" -m venv "$BASE_VENV"
BASE_VENV=$(cd "$BASE_VENV" && pwd)
BPY=$BASE_VENV/bin/python
SEMPHASE=$BASE_VENV/bin/semphase
echo "   $BASE_VENV ($("$BPY" --version))"

step "pip install . (base only)"
# Built from a clean copy of the working tree (tracked and new files, nothing git ignores): an in-tree
# build would write build/ and src/*.egg-info into the checkout, and a stale build/lib from an earlier
# build would put deleted modules into the wheel.
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mkdir -p "$WORK/source"
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
        tar -C "$ROOT" --null -T - -cf - | tar -C "$WORK/source" -xf -
    cd "$WORK/source"
fi
run 0 base "$BPY" -m pip install -q --disable-pip-version-check -c constraints.txt .
cd "$ROOT"
run 0 base "$BPY" -m pip check

step "base venv: imports"
run 0 base "$BPY" - "$BASE_VENV" <<'EOF'
import importlib, sys
venv = sys.argv[1]
bad = []
for name in ("torch", "onnx", "segmentation_models_pytorch", "matplotlib", "distributed", "bioimageio", "czmodel"):
    try:
        importlib.import_module(name)
    except ImportError:
        print(f"{name}: not importable (as it should be)")
    else:
        bad.append(name)
if bad:
    sys.exit(f"the base install can import {', '.join(bad)}: it must not")
import semphase, semphase.cli.main, onnxruntime, cv2, tifffile, imagecodecs
if not semphase.__file__.startswith(venv):
    sys.exit(f"semphase is imported from {semphase.__file__}, not from the base venv {venv}")
print(f"semphase {semphase.__version__} from {semphase.__file__}")
print(f"onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}, tifffile {tifffile.__version__}, "
      f"imagecodecs {imagecodecs.__version__}")
EOF
run 0 base "$SEMPHASE" --version
grep -q '^semphase ' "$LOG" || fail "semphase --version printed no version"

# --------------------------------------------------------------------------------------------------------
step "test data (full venv)"
cd "$WORK"
run 0 env PYTHONPATH="$ROOT/src:$ROOT/tests" "$FULL_PY" - <<'EOF'
"""Model, micrographs in four encodings, their truth, and a small dataset for the benchmark."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import tifffile

from _runtime_models import CENTRES, model_with_reference

# a self-checking model (blur classifier, tile 64, overlap 16, reference tiles + labels in its metadata)
build = Path("build")
made = model_with_reference(build, "model", variant="fp32")
Path("model").mkdir()
shutil.copyfile(made, "model/model.onnx")  # the benchmark's FP32 file name; no checkpoint beside it
# the same model as a bioimage.io package (the full venv has the interop extra; the base venv only reads it)
import subprocess
import sys

package = ["package", "model/model.onnx", "--out", "package", "--author", "base check"]
subprocess.run([sys.executable, "-m", "semphase", *package], check=True)


def scene(height, width, seed):
    """Phases as blocky regions (each of the 5 class grey levels), light noise; returns (uint8, labels)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 5, size=(height // 80 + 1, width // 80 + 1))
    labels = np.kron(cells, np.ones((80, 80), np.int64))[:height, :width].astype(np.uint8)
    grey = np.asarray(CENTRES, np.float64)[labels] + rng.normal(0, 3, labels.shape)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8), labels


inputs, truth = Path("inputs"), Path("truth")
inputs.mkdir()
truth.mkdir()
shapes = {"a_8bit": (300, 344), "b_lzw_cv2": (336, 280), "c_deflate": (270, 310), "d_16bit": (290, 330)}
for seed, (name, (h, w)) in enumerate(shapes.items()):
    image, labels = scene(h, w, seed)
    cv2.imwrite(str(truth / f"{name}.png"), labels)  # class ids 0..4
    if name == "a_8bit":
        assert cv2.imwrite(str(inputs / f"{name}.png"), image)
    elif name == "b_lzw_cv2":
        assert cv2.imwrite(str(inputs / f"{name}.tif"), image)  # OpenCV's default TIFF compression: LZW
    elif name == "c_deflate":
        tifffile.imwrite(inputs / f"{name}.tif", image, compression="zlib")
    else:
        tifffile.imwrite(inputs / f"{name}.tif", image.astype(np.uint16) * 257, compression="lzw")
expected = {"b_lzw_cv2": ("LZW", np.uint8), "c_deflate": ("ADOBE_DEFLATE", np.uint8), "d_16bit": ("LZW", np.uint16)}
for name, (codec, dtype) in expected.items():
    with tifffile.TiffFile(inputs / f"{name}.tif") as tif:
        page = tif.pages[0]
        assert page.compression.name == codec and page.dtype == dtype, (name, page.compression, page.dtype)
        print(f"{name}.tif: {page.compression.name}, {page.dtype}, {page.shape}")

# the benchmark's dataset: images/ + masks/ (raw ids 1..5, the default for a model without a checkpoint)
for sub in ("images", "masks"):
    (Path("data") / sub).mkdir(parents=True)
for seed in (10, 11):
    image, labels = scene(128, 160, seed)
    cv2.imwrite(f"data/images/s{seed}.png", image)
    cv2.imwrite(f"data/masks/s{seed}.png", labels + 1)
print("ok")
EOF
INPUTS=(inputs/a_8bit.png inputs/b_lzw_cv2.tif inputs/c_deflate.tif inputs/d_16bit.tif)
need_file model/model.onnx "${INPUTS[@]}"

# --------------------------------------------------------------------------------------------------------
step "semphase info"
run 0 base "$SEMPHASE" info model/model.onnx
grep -q 'semphase.classes' "$LOG" || fail "info printed no semphase.classes"
grep -q 'not read (the onnx package is not installed)' "$LOG" ||
    fail "info did not say the onnx package is missing (is onnx installed in the base venv?)"
base "$SEMPHASE" info model/model.onnx --json >info.json 2>>"$LOG" || fail "info --json: exit code $?"
run 0 base "$BPY" -c 'import json, sys; d = json.load(open(sys.argv[1])); assert isinstance(d, dict) and d, d' \
    info.json

step "semphase info --verify"
run 0 base "$SEMPHASE" info model/model.onnx --verify
grep -q 'self-check passed' "$LOG" || fail "info --verify did not report 'self-check passed'"

step "semphase segment"
run 0 base "$SEMPHASE" segment model/model.onnx "${INPUTS[@]}" --out out
for f in "${INPUTS[@]}"; do
    stem=$(basename "${f%.*}")
    need_file "out/${stem}_mask.png" "out/${stem}_overlay.png" "out/${stem}.json"
done
need_file out/summary.csv
[ "$(($(wc -l <out/summary.csv) - 1))" -eq ${#INPUTS[@]} ] || fail "summary.csv has not one row per input"
run 0 base "$BPY" - out "${INPUTS[@]}" <<'EOF'
import json, sys
from pathlib import Path
import cv2
out = Path(sys.argv[1])
for f in sys.argv[2:]:
    record = json.loads((out / (Path(f).stem + ".json")).read_text())
    check = record["model"]["self_check"]["status"]
    assert check == "passed", f"{f}: self-check {check!r}, expected 'passed'"
    want_bits = 16 if "16bit" in f else 8
    assert record["bit_depth"] == want_bits, f"{f}: bit_depth {record['bit_depth']}, expected {want_bits}"
    mask = cv2.imread(str(out / (Path(f).stem + "_mask.png")), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (record["height"], record["width"]) and mask.max() <= 4, (f, mask.shape, mask.max())
    print(f, "ok:", record["width"], "x", record["height"], record["bit_depth"], "bit, self-check", check)
EOF

step "semphase segment with a bioimage.io package"
# a package made by `semphase package` segments on the base install (no bioimageio library needed) and
# gives the masks of the ONNX file inside it
run 0 base "$SEMPHASE" segment package/model.bioimageio.zip inputs/a_8bit.png --out out-package -q
cmp -s out-package/a_8bit_mask.png out/a_8bit_mask.png || fail "the package's mask differs from model.onnx's"
run 0 base "$SEMPHASE" info package/model.bioimageio.zip

step "semphase suggest"
# what to label next, on the base install: regions with pre-filled colour labels a paint program edits
run 0 base "$SEMPHASE" suggest model/model.onnx inputs --out suggested --n 2 --region 128
run 0 base "$BPY" - <<'EOF'
import json
from pathlib import Path
import cv2
document = json.loads(Path("suggested/suggest.json").read_text())
assert len(document["picks"]) == 2, document["picks"]
for pick in document["picks"]:
    mask = cv2.imread(f"suggested/masks/{pick['name']}.png", cv2.IMREAD_UNCHANGED)
    assert mask.shape == (128, 128, 4), mask.shape  # RGBA: class colours, transparent = unlabelled
    assert Path(f"suggested/images/{pick['name']}.png").is_file()
print("ok:", [p["name"] for p in document["picks"]])
EOF

step "semphase segment --format ome-tiff"
# montages' pyramidal OME-TIFF outputs need nothing beyond the base install (tifffile + imagecodecs)
run 0 base "$SEMPHASE" segment model/model.onnx inputs/c_deflate.tif --out out-ome --format ome-tiff -q
run 0 base "$BPY" - <<'EOF'
import numpy as np, tifffile, cv2
with tifffile.TiffFile("out-ome/c_deflate_mask.ome.tif") as tif:
    assert tif.is_ome and tif.pages.first.is_tiled, "not a tiled OME-TIFF"
    ome = tif.series[0].levels[0].asarray()
png = cv2.imread("out/c_deflate_mask.png", cv2.IMREAD_UNCHANGED)
assert np.array_equal(ome, png), "OME-TIFF mask differs from the PNG mask"
print("c_deflate_mask.ome.tif ok:", ome.shape, "the PNG mask's labels")
EOF

step "semphase segment: bad input"
# the bad-input promises hold on the base install too: a truncated PNG and a 70-byte PNG that declares
# 100000 x 100000 pixels are each one line naming the file, exit 2, and the good input is still done
"$BPY" - <<'EOF'
import struct, zlib
from pathlib import Path
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(16))) + chunk(b"IEND", b"")
Path("bad").mkdir(exist_ok=True)
Path("bad/bomb.png").write_bytes(bomb)
Path("bad/cut.png").write_bytes(Path("inputs/a_8bit.png").read_bytes()[:200])
EOF
run 2 base "$SEMPHASE" segment model/model.onnx bad/bomb.png bad/cut.png "${INPUTS[0]}" --out out-bad -q
grep -q "bad/bomb.png: image declares 100000 x 100000 pixels" "$LOG" || fail "the bomb was not named in one line"
grep -q "bad/cut.png: truncated PNG" "$LOG" || fail "the truncated PNG was not named in one line"
if grep -q "Traceback\|libpng" "$LOG"; then fail "a traceback or libpng's own line reached the user"; fi
need_file "out-bad/$(basename "${INPUTS[0]%.*}")_mask.png"

step "semphase watch --once"
mkdir inbox
cp "${INPUTS[@]}" inbox/
run 0 base "$SEMPHASE" watch inbox --model model/model.onnx --out out2 --once --settle 0
need_file out2/watch-journal.jsonl
for f in "${INPUTS[@]}"; do
    stem=$(basename "${f%.*}")
    need_file "out2/${stem}_mask.png" "out2/${stem}_overlay.png" "out2/${stem}.json"
done
run 0 base "$BPY" - out2/watch-journal.jsonl ${#INPUTS[@]} <<'EOF'
import json, sys
lines = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
done = sorted(x["file"] for x in lines if x["status"] == "done")
assert len(done) == int(sys.argv[2]) and len(lines) == len(done), lines
print("journal:", ", ".join(done))
EOF
[ ! -e out2/failed ] || [ -z "$(ls -A out2/failed)" ] || fail "watch put files into out2/failed/"
for f in "${INPUTS[@]}"; do
    stem=$(basename "${f%.*}")
    cmp -s "out/${stem}_mask.png" "out2/${stem}_mask.png" || fail "watch and segment masks differ: $stem"
done

step "semphase score"
mkdir pred
cp out/*_mask.png pred/
run 0 base "$SEMPHASE" score pred truth --json score.json --truth-contiguous --pred-contiguous
need_file score.json
run 0 base "$BPY" - score.json <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
names = sorted(x["name"] for x in result["per_image"])
miou = result["summary"]["miou"]
print(f"scored {names}: mIoU mean {miou['mean']:.4f}, min {miou['min']:.4f}")
assert len(names) == 4, names
# the blur classifier misses a band along each phase boundary; 0.80 here with onnxruntime 1.32
assert miou["min"] > 0.75, f"mIoU {miou} of the blur classifier on blocky phases: expected > 0.75"
EOF

step "semphase benchmark (no checkpoint)"
run 0 base "$SEMPHASE" benchmark model --data data --out bench --sizes 256 --repeat 3 --warmup 1 --threads 2
need_file bench/report.json bench/report.md bench/report.html
run 0 base "$BPY" - bench/report.json <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["checkpoint"] is None
bad = [(k, x) for k in ("variants", "accuracy", "speed") for x in r[k] if x.get("status") != "ok"]
assert not bad, bad
assert r["speed"] and r["accuracy"] and r["latency"], "empty benchmark sections"
assert "matplotlib" in r.get("figures_skipped", ""), "figures were not skipped for a missing matplotlib"
speed = r["speed"][0]
print(f"variants {[v['variant'] for v in r['variants']]}, {speed['width']} x {speed['height']}: "
      f"{speed['mpix_per_s']:.2f} MP/s; figures skipped: {r['figures_skipped']}")
EOF

# --------------------------------------------------------------------------------------------------------
step "installed size"
SITE=$(base "$BPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TOTAL_MB=$(du -sm "$SITE" | cut -f1)
SIZES=$(base "$BPY" - "$SITE" <<'EOF'
"""Installed size per distribution: the files its RECORD lists (so numpy.libs counts for numpy)."""
import sys
from importlib.metadata import distributions
from pathlib import Path

site = Path(sys.argv[1])
rows = []
for dist in distributions(path=[str(site)]):
    total = 0
    for f in dist.files or []:
        p = site / f
        if p.is_file():
            total += p.stat().st_size
    rows.append((total, dist.metadata["Name"], dist.version))
rows.sort(reverse=True)
mb = 1024 * 1024  # MB as du -sm counts them
for total, name, version in rows[:8]:
    print(f"  {total / mb:6.1f} MB  {name} {version}")
print(f"  ({len(rows)} distributions, the venv's own pip and setuptools included)")
print("one line: " + ", ".join(f"{name} {total / mb:.0f}" for total, name, _ in rows[:8]) + " (MB)")
EOF
)
end_step
trap - ERR
TOTAL_S=$(secs "$T0" "$(date +%s%N)")
CPU=$(grep -o -w 'avx512_vnni\|avx2' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' || true)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -sr)
cat <<EOF

== base install check passed in $TOTAL_S s
$(printf '%s\n' "${TIMINGS[@]}")

Base install (pip install semphase, no extras) on $(uname -m) $OS, $("$BPY" --version), CPU flags: ${CPU:-none found}
site-packages: $TOTAL_MB MB (du -sm $SITE)
biggest packages (the files each one's RECORD lists):
$SIZES
EOF
if [ "${KEEP_WORK:-0}" = 1 ]; then echo "data and outputs kept in $WORK"; else rm -rf "$WORK"; fi
