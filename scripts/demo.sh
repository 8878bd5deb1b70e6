#!/usr/bin/env bash
# The main job end to end on a 2-core CPU: synthesize a labelled dataset, check it, train the study's
# ResNet34 U-Net, export FP32/FP16/INT8 ONNX with validation, segment a large micrograph with INT8 (torch
# not involved), score it against its truth, and write a benchmark report. Called by `make demo`; every
# step is a plain `semphase` command, so this file doubles as a worked example.
#
# The demo is sized by the machine: it first times a few training steps, then gives training what a time
# budget (DEMO_BUDGET_MIN, 15 minutes) leaves after the other steps. A fast 2-core machine fits all 14
# epochs in about 8 minutes; a slow one trains fewer epochs, shrinks the later steps, and says what that
# cost (scripts/demo_plan.py holds the arithmetic).
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-demo}
DEMO_GROUPS=${DEMO_GROUPS:-12}
BUDGET_MIN=${DEMO_BUDGET_MIN:-15}
MAX_EPOCHS=${DEMO_EPOCHS:-14}
semphase() { "$PY" -m semphase "$@"; }
start=$(date +%s)
# each banner shows the seconds since the start: where the budget went
step() { printf '\n\033[1;36m== %s\033[0m  [%s s]\n' "$*" "$(($(date +%s) - start))"; }

if [ -e "$DEMO_DIR/run" ]; then
    echo "$DEMO_DIR/run exists from an earlier demo; remove $DEMO_DIR (or set DEMO_DIR) to run it again" >&2
    exit 2
fi
mkdir -p "$DEMO_DIR"

step "1/12 measure this machine's training speed (a few real steps of the demo's ResNet34 U-Net)"
grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: /CPU: /' || true
"$PY" -m semphase.train.probe --json "$DEMO_DIR/speed.json"

step "2/12 synthesize a Ni-WC-like SEM dataset ($DEMO_GROUPS base crops x 9 variants, Zenodo layout)"
semphase synth "$DEMO_DIR/data" --groups "$DEMO_GROUPS" --size 512 --seed 0

step "3/12 check the dataset: integrity, class frequencies, overlays, leak-free grouped split"
semphase data check "$DEMO_DIR/data" --json "$DEMO_DIR/data_check.json" --overlays "$DEMO_DIR/overlays" \
    --n-overlays 4 --split-out "$DEMO_DIR/split.json"

step "4/12 size the rest to the ${BUDGET_MIN}-minute budget (DEMO_BUDGET_MIN) at the measured speed"
plan=$("$PY" scripts/demo_plan.py plan "$DEMO_DIR/speed.json" "$DEMO_DIR/split.json" \
    --budget-min "$BUDGET_MIN" --spent "$(($(date +%s) - start))" --max-epochs "$MAX_EPOCHS" \
    ${DEMO_LARGE:+--large "$DEMO_LARGE"})
eval "$plan"

step "5/12 train the ResNet34 U-Net (no internet here: --encoder-weights none; $EPOCHS epochs at most)"
# --time-limit is the safety net: on a machine slower than measured, training stops in time, and best.pt
# is still tested and reported
semphase train "$DEMO_DIR/data" --out "$DEMO_DIR/run" --split-file "$DEMO_DIR/split.json" \
    --encoder-weights none --epochs "$EPOCHS" --time-limit "$TIME_LIMIT" --seed 0
trained=$(date +%s)
reached=$("$PY" scripts/demo_plan.py reached "$DEMO_DIR/run" --epochs-planned "$EPOCHS" \
    --epochs-fit "$EPOCHS_FIT" --max-epochs "$MAX_EPOCHS" --budget-min "$BUDGET_MIN" \
    --epoch-seconds "$EPOCH_SECONDS")
printf '\033[1m%s\033[0m\n' "$reached"

step "6/12 export FP32, FP16 and INT8 ONNX and prove they give the same phases"
exported=0
semphase export "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/model" || exported=$?
trained_epochs=$(($(wc -l <"$DEMO_DIR/run/history.csv") - 1))
# Exit code 1 is a failed validation gate with every file kept. A network of one or two epochs has flat,
# uncertain logits whose INT8 argmax can flip on a few % of the pixels: expected when the budget cut
# training short, so the demo goes on with the files; after the full training it is a real failure.
if [ "$exported" -eq 1 ] && [ "$trained_epochs" -lt "$MAX_EPOCHS" ]; then
    note="note: after only $trained_epochs of $MAX_EPOCHS epochs the INT8 model misses the export gates"
    printf '\033[1m%s (see above);\nthe demo goes on with the files export kept\033[0m\n' "$note"
elif [ "$exported" -ne 0 ]; then
    exit "$exported"
fi
semphase info "$DEMO_DIR/model/model.int8.onnx" --verify

step "7/12 package the FP32 model for other tools: bioimage.io (ilastik, deepImageJ, BiaPy) and ZEISS ZEN (CZANN)"
semphase package "$DEMO_DIR/model/model.onnx" --out "$DEMO_DIR/package" --author "semphase demo" --czann

step "8/12 synthesize a large ${LARGE} x ${LARGE} micrograph with an SEM data bar and its pixel size"
semphase synth "$DEMO_DIR/large/large.tif" --large "$LARGE" --databar 96 --pixel-size-um 0.12 --seed 7
mkdir -p "$DEMO_DIR/large_truth"
mv "$DEMO_DIR/large/large_truth.png" "$DEMO_DIR/large_truth/large.png"

step "9/12 segment it with the INT8 model (the torch-free runtime a microscope PC runs)"
semphase segment "$DEMO_DIR/model/model.int8.onnx" "$DEMO_DIR/large/large.tif" --out "$DEMO_DIR/segmented" \
    --uncertainty

step "10/12 score the large segmentation against its truth (the data bar is excluded from both)"
semphase score "$DEMO_DIR/segmented" "$DEMO_DIR/large_truth" --pred-contiguous --truth-contiguous \
    --json "$DEMO_DIR/large_score.json"

step "11/12 quantify two specimens as metallographers report them (3 fields each, ASTM E562/E1245)"
for spec in A:11 B:21; do
    name=${spec%%:*}
    for k in 0 1 2; do
        seed=$((${spec##*:} + k))
        semphase synth "$DEMO_DIR/fields/specimen-$name/field$k.tif" --large 768 --pixel-size-um 0.12 \
            --seed "$seed" >/dev/null
        rm -f "$DEMO_DIR/fields/specimen-$name/field${k}_truth.png"
    done
    semphase segment "$DEMO_DIR/model/model.int8.onnx" "$DEMO_DIR/fields/specimen-$name" \
        --out "$DEMO_DIR/fields-segmented/specimen-$name" --quiet
done
semphase quantify "$DEMO_DIR/fields-segmented" --out "$DEMO_DIR/quantified" \
    --features Carbide,Reprecipitate

step "12/12 benchmark every variant against the PyTorch checkpoint: same phases? how fast?"
semphase benchmark "$DEMO_DIR/model" --data "$DEMO_DIR/data" --split-file "$DEMO_DIR/split.json" \
    --checkpoint "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/bench" --sizes "$BENCH_SIZES" \
    --repeat "$BENCH_REPEAT" --max-images "$BENCH_MAX_IMAGES"

end=$(date +%s)
step "done in $((end - start)) s, budget ${BUDGET_MIN} min (end of training at $((trained - start)) s)"
printf '%s\n' "$reached"
cat <<MSG
Training run:      $DEMO_DIR/run    (metrics_test.json, history.csv, confusion.png, overlays/, best.pt)
Training speed:    $DEMO_DIR/speed.json
ONNX models:       $DEMO_DIR/model  (model.onnx, model.fp16.onnx, model.int8.onnx, export_report.json)
Packages:          $DEMO_DIR/package  (model.bioimageio.zip, model.czann, model.package_report.json)
Large micrograph:  $DEMO_DIR/large/large.tif
  mask:            $DEMO_DIR/segmented/large_mask.png
  overlay:         $DEMO_DIR/segmented/large_overlay.png
  phase table:     $DEMO_DIR/segmented/large.json   (every input: $DEMO_DIR/segmented/summary.csv)
  score vs truth:  $DEMO_DIR/large_score.json
Quantification:    $DEMO_DIR/quantified  (samples.csv, fields.csv, features.csv, quantify.json)
Benchmark report:  $DEMO_DIR/bench/report.html
MSG
