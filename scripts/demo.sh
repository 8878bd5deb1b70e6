#!/usr/bin/env bash
# The main job end to end on a 2-core CPU: synthesize a labelled dataset, check it, train the study's
# ResNet34 U-Net, export FP32/FP16/INT8 ONNX with validation, segment a large micrograph with INT8 (torch
# not involved), score it against its truth, and write a benchmark report. Called by `make demo`; every
# step is a plain `semphase` command, so this file doubles as a worked example.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-demo}
DEMO_GROUPS=${DEMO_GROUPS:-12}
EPOCHS=${DEMO_EPOCHS:-14}
LARGE=${DEMO_LARGE:-4096}
semphase() { "$PY" -m semphase "$@"; }
step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }
start=$(date +%s)

if [ -e "$DEMO_DIR/run" ]; then
    echo "$DEMO_DIR/run exists from an earlier demo; remove $DEMO_DIR (or set DEMO_DIR) to run it again" >&2
    exit 2
fi
mkdir -p "$DEMO_DIR"

step "1/8 synthesize a Ni-WC-like SEM dataset ($DEMO_GROUPS base crops x 9 variants, Zenodo layout)"
semphase synth "$DEMO_DIR/data" --groups "$DEMO_GROUPS" --size 512 --seed 0

step "2/8 check the dataset: integrity, class frequencies, overlays, leak-free grouped split"
semphase data check "$DEMO_DIR/data" --json "$DEMO_DIR/data_check.json" --overlays "$DEMO_DIR/overlays" \
    --n-overlays 4 --split-out "$DEMO_DIR/split.json"

step "3/8 train the ResNet34 U-Net (no internet here: --encoder-weights none; $EPOCHS epochs at most)"
semphase train "$DEMO_DIR/data" --out "$DEMO_DIR/run" --split-file "$DEMO_DIR/split.json" \
    --encoder-weights none --epochs "$EPOCHS" --seed 0
trained=$(date +%s)

step "4/8 export FP32, FP16 and INT8 ONNX and prove they give the same phases"
semphase export "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/model"
semphase info "$DEMO_DIR/model/model.int8.onnx"

step "5/8 synthesize a large ${LARGE} x ${LARGE} micrograph with an SEM data bar and its pixel size"
semphase synth "$DEMO_DIR/large/large.tif" --large "$LARGE" --databar 96 --pixel-size-um 0.12 --seed 7
mkdir -p "$DEMO_DIR/large_truth"
mv "$DEMO_DIR/large/large_truth.png" "$DEMO_DIR/large_truth/large.png"

step "6/8 segment it with the INT8 model (the torch-free runtime a microscope PC runs)"
semphase segment "$DEMO_DIR/model/model.int8.onnx" "$DEMO_DIR/large/large.tif" --out "$DEMO_DIR/segmented" \
    --uncertainty

step "7/8 score the large segmentation against its truth (the data bar is excluded from both)"
semphase score "$DEMO_DIR/segmented" "$DEMO_DIR/large_truth" --pred-contiguous --truth-contiguous \
    --json "$DEMO_DIR/large_score.json"

step "8/8 benchmark every variant against the PyTorch checkpoint: same phases? how fast?"
semphase benchmark "$DEMO_DIR/model" --data "$DEMO_DIR/data" --split-file "$DEMO_DIR/split.json" \
    --checkpoint "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/bench" --sizes 1024,2048 --repeat 3

end=$(date +%s)
step "done in $((end - start)) s (training $((trained - start)) s including steps 1-2)"
cat <<MSG
Training run:      $DEMO_DIR/run    (metrics_test.json, history.csv, confusion.png, overlays/, best.pt)
ONNX models:       $DEMO_DIR/model  (model.onnx, model.fp16.onnx, model.int8.onnx, export_report.json)
Large micrograph:  $DEMO_DIR/large/large.tif
  mask:            $DEMO_DIR/segmented/large_mask.png
  overlay:         $DEMO_DIR/segmented/large_overlay.png
  phase table:     $DEMO_DIR/segmented/large.json   (every input: $DEMO_DIR/segmented/summary.csv)
  score vs truth:  $DEMO_DIR/large_score.json
Benchmark report:  $DEMO_DIR/bench/report.html
MSG
