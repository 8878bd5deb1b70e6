#!/usr/bin/env bash
# The main job end to end on a 2-core CPU: synthesize a labelled dataset, check it, train the study's
# ResNet34 U-Net, export FP32/FP16/INT8 ONNX with validation, segment a large micrograph with INT8 (torch
# not involved), score it against its truth, and write a benchmark report. Called by `make demo`; every
# step is a plain `semphase` command, so this file doubles as a worked example.
#
# The demo is sized by the machine: it first times a few training steps and inference passes, estimates
# the steps after training, and gives training the rest of a time budget (DEMO_BUDGET_MIN, 15 minutes) as
# `semphase train --time-budget`, which plans optimizer steps, crop size and a cosine schedule from the
# speed it measures itself and re-plans after every epoch. A fast 2-core machine trains the demo's full
# 504 steps well within the budget; a slow one trains smaller crops within it, and the later steps shrink
# when the budget is tight. At the end a table shows how the budget was spent against the plan
# (scripts/demo_plan.py holds the arithmetic).
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-demo}
DEMO_GROUPS=${DEMO_GROUPS:-12}
BUDGET_MIN=${DEMO_BUDGET_MIN:-15}
semphase() { "$PY" -m semphase "$@"; }
start=$(date +%s)
# each banner shows the seconds since the start: where the budget went
step() { printf '\n\033[1;36m== %s\033[0m  [%s s]\n' "$*" "$(($(date +%s) - start))"; }
# the seconds of each phase, for the table at the end: `phase NAME` closes the phase running since the last
last_mark=$start
phase() { local now; now=$(date +%s); echo "$1 $((now - last_mark))" >>"$DEMO_DIR/timings.txt"; last_mark=$now; }

if [ -e "$DEMO_DIR/run" ]; then
    echo "$DEMO_DIR/run exists from an earlier demo; remove $DEMO_DIR (or set DEMO_DIR) to run it again" >&2
    exit 2
fi
mkdir -p "$DEMO_DIR"
rm -f "$DEMO_DIR/timings.txt"

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
    --budget-min "$BUDGET_MIN" --spent "$(($(date +%s) - start))" --out "$DEMO_DIR/plan.json" \
    ${DEMO_LARGE:+--large "$DEMO_LARGE"})
eval "$plan"
phase "before training"

step "5/12 train the ResNet34 U-Net for ${TRAIN_MINUTES} min at most (no internet here: --encoder-weights none)"
# --time-budget plans the steps from the speed the run measures itself and re-plans after every epoch;
# --max-steps stops a fast machine at the demo's full training
semphase train "$DEMO_DIR/data" --out "$DEMO_DIR/run" --split-file "$DEMO_DIR/split.json" \
    --encoder-weights none --time-budget "$TRAIN_MINUTES" --max-steps "$MAX_STEPS" --seed 0
phase "training"
trained=$(date +%s)
reached=$("$PY" scripts/demo_plan.py reached "$DEMO_DIR/run" --budget-min "$BUDGET_MIN" --max-steps "$MAX_STEPS")
printf '\033[1m%s\033[0m\n' "$reached"

step "6/12 export FP32, FP16 and INT8 ONNX and prove they give the same phases"
exported=0
semphase export "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/model" || exported=$?
trained_steps=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["time_budget"]["steps_trained"])' \
    "$DEMO_DIR/run/config.json")
# Exit code 1 is a failed validation gate with every file kept. A network trained briefly has flat,
# uncertain logits whose INT8 argmax can flip on a few % of the pixels: expected when the budget cut
# training short, so the demo goes on with the files; after the full training it is a real failure.
if [ "$exported" -eq 1 ] && [ "$trained_steps" -lt "$MAX_STEPS" ]; then
    note="note: after only $trained_steps of $MAX_STEPS steps the INT8 model misses the export gates"
    printf '\033[1m%s (see above);\nthe demo goes on with the files export kept\033[0m\n' "$note"
elif [ "$exported" -ne 0 ]; then
    exit "$exported"
fi
semphase info "$DEMO_DIR/model/model.int8.onnx" --verify
phase "after: export"

if [ "$PACKAGE" -eq 1 ]; then
    step "7/12 package the FP32 model for other tools: bioimage.io (ilastik, deepImageJ, BiaPy) and ZEISS ZEN (CZANN)"
    semphase package "$DEMO_DIR/model/model.onnx" --out "$DEMO_DIR/package" --author "semphase demo" --czann
    phase "after: package"
else
    step "7/12 packaging for bioimage.io and ZEN skipped: the ${BUDGET_MIN}-minute budget leaves no room (see the plan)"
fi

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
phase "after: large"

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
phase "after: quantify"

step "12/12 benchmark every variant against the PyTorch checkpoint: same phases? how fast?"
semphase benchmark "$DEMO_DIR/model" --data "$DEMO_DIR/data" --split-file "$DEMO_DIR/split.json" \
    --checkpoint "$DEMO_DIR/run/best.pt" --out "$DEMO_DIR/bench" --sizes "$BENCH_SIZES" \
    --repeat "$BENCH_REPEAT" --max-images "$BENCH_MAX_IMAGES"
phase "after: benchmark"

end=$(date +%s)
step "done in $((end - start)) s, budget ${BUDGET_MIN} min (end of training at $((trained - start)) s)"
printf '%s\n' "$reached"
"$PY" scripts/demo_plan.py spent "$DEMO_DIR/plan.json" "$DEMO_DIR/timings.txt" --budget-min "$BUDGET_MIN"
if [ "$PACKAGE" -eq 1 ]; then
    packages="$DEMO_DIR/package  (model.bioimageio.zip, model.czann, model.package_report.json)"
else  # the summary names only what this run made
    packages="not made (no room in ${BUDGET_MIN} minutes): semphase package $DEMO_DIR/model/model.onnx --out $DEMO_DIR/package --author NAME --czann"
fi
cat <<MSG
Training run:      $DEMO_DIR/run    (metrics_test.json, history.csv, confusion.png, overlays/, best.pt)
Training speed:    $DEMO_DIR/speed.json
ONNX models:       $DEMO_DIR/model  (model.onnx, model.fp16.onnx, model.int8.onnx, export_report.json)
Packages:          $packages
Large micrograph:  $DEMO_DIR/large/large.tif
  mask:            $DEMO_DIR/segmented/large_mask.png
  overlay:         $DEMO_DIR/segmented/large_overlay.png
  phase table:     $DEMO_DIR/segmented/large.json   (every input: $DEMO_DIR/segmented/summary.csv)
  score vs truth:  $DEMO_DIR/large_score.json
Quantification:    $DEMO_DIR/quantified  (samples.csv, fields.csv, features.csv, quantify.json)
Benchmark report:  $DEMO_DIR/bench/report.html
MSG
