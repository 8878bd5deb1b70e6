#!/usr/bin/env bash
# The main job end to end on a 2-core CPU: synthesize a labelled dataset, check it, train the study's
# ResNet34 U-Net, export FP32/FP16/INT8 ONNX with validation, segment a large micrograph with INT8, and
# write a benchmark report. Called by `make demo`; every step is a plain `semphase` command.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-demo}
GROUPS=${DEMO_GROUPS:-12}
EPOCHS=${DEMO_EPOCHS:-14}
LARGE=${DEMO_LARGE:-4096}
semphase() { "$PY" -m semphase "$@"; }
step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

mkdir -p "$DEMO_DIR"
step "1/7 synthesize a Ni-WC-like SEM dataset ($GROUPS base crops x 9 variants, Zenodo layout)"
semphase synth "$DEMO_DIR/data" --groups "$GROUPS" --size 512 --seed 0

step "2/7 check the dataset: integrity, class frequencies, overlays, leak-free grouped split"
semphase data check "$DEMO_DIR/data" --json "$DEMO_DIR/data_check.json" --overlays "$DEMO_DIR/overlays" \
    --n-overlays 4 --split-out "$DEMO_DIR/split.json"

step "3/7 train the ResNet34 U-Net (no internet here: --encoder-weights none)"
semphase train "$DEMO_DIR/data" --out "$DEMO_DIR/run" --split-file "$DEMO_DIR/split.json" \
    --encoder-weights none --epochs "$EPOCHS" --seed 0

step "4/7 export FP32, FP16 and INT8 ONNX and prove they give the same phases"
semphase export "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/model"
semphase info "$DEMO_DIR/model/model.int8.onnx"

step "5/7 synthesize a large ${LARGE}x${LARGE} micrograph with a data bar and pixel size"
semphase synth "$DEMO_DIR/large.tif" --large "$LARGE" --databar 96 --pixel-size-um 0.12 --seed 7

step "6/7 segment it with the INT8 model (torch-free runtime)"
semphase segment "$DEMO_DIR/model/model.int8.onnx" "$DEMO_DIR/large.tif" --out "$DEMO_DIR/segmented"
semphase score "$DEMO_DIR/segmented" "$DEMO_DIR" --json "$DEMO_DIR/large_score.json" >/dev/null || true

step "7/7 benchmark every variant against PyTorch"
semphase benchmark "$DEMO_DIR/model" --data "$DEMO_DIR/data" --split-file "$DEMO_DIR/split.json" \
    --checkpoint "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/bench" --sizes 1024,2048 --repeat 3

step "done"
cat <<MSG
Training run:        $DEMO_DIR/run   (metrics_test.json, history.csv, confusion.png, best.pt)
ONNX models:         $DEMO_DIR/model (model.onnx, model.fp16.onnx, model.int8.onnx, export_report.json)
Large micrograph:    $DEMO_DIR/large.tif
  mask:              $DEMO_DIR/segmented/large_mask.png
  overlay:           $DEMO_DIR/segmented/large_overlay.png
  phase table:       $DEMO_DIR/segmented/large.json  (all inputs: $DEMO_DIR/segmented/summary.csv)
Benchmark report:    $DEMO_DIR/bench/report.html
MSG
