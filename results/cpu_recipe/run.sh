#!/usr/bin/env bash
# results/cpu_recipe/run.sh: the CPU-recipe ablation behind results/cpu_recipe.md. Every variant is
# config/reader.py plus a few --key=value overrides of train.py's one loop, trained for the same
# wall-clock budget (MIN minutes from launch, evals included) on one torch thread, two variants side
# by side on the 2-core machine. The learning rate is constant after a 60-step warmup, so no variant
# is favoured by where a schedule happens to end. A finished variant is skipped.
#   bash results/cpu_recipe/run.sh && python results/cpu_recipe/report.py --runs='out-recipe/*'
set -uo pipefail
cd "$(dirname "$0")/../.."
MIN=${MIN:-7}
mkdir -p out-recipe
run() {  # name, overrides...
  local name=$1; shift
  [ -f "out-recipe/$name/final_eval.json" ] && return 0
  python train.py config/reader.py --cpu_threads=1 --max_time_minutes="$MIN" --max_iters=100000 \
    --decay_lr=none --lr_decay_iters=2000 --eval_interval=100 --eval_iters=4 --eval_decode_samples=128 \
    --eval_test_samples=512 --out_dir="out-recipe/$name" "$@" > "out-recipe/$name.log" 2>&1
}
# round 1: the old quick-start model (cnn_tiny grid, attention only) against joint CTC/attention on
# cnn_line's collapsed columns, both with the corpus' own 4,096-piece BPE
run a_cnn_tiny_attn --backbone=cnn_tiny --collapse_height=False --ctc_weight=0 --tokenizer_vocab=0 &
run b_line_ctc_v4096 --tokenizer_vocab=0 &
wait
# round 2: a 512-piece BPE, with and without the CTC loss
run c_line_ctc_v512 &
run d_line_attn_v512 --ctc_weight=0 &
wait
