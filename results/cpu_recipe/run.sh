#!/usr/bin/env bash
# results/cpu_recipe/run.sh: the CPU-recipe ablation behind results/cpu_recipe.md. Every variant is
# config/reader.py plus a few --key=value overrides of train.py's one loop, trained for the same
# wall-clock budget (MIN minutes from launch, evals included) on one torch thread, two variants side
# by side on the 2-core machine. The learning rate is constant after a 60-step warmup, so no variant
# is favoured by where a schedule happens to end. A finished variant is skipped.
#   bash results/cpu_recipe/run.sh && python results/cpu_recipe/report.py --runs='out-recipe/*'
set -uo pipefail
cd "$(dirname "$0")/../.."
MIN=${MIN:-12}
mkdir -p out-recipe
run() {  # name, overrides...
  local name=$1; shift
  [ -f "out-recipe/$name/final_eval.json" ] && return 0
  python train.py config/reader.py --cpu_threads=1 --max_time_minutes="$MIN" --max_iters=100000 \
    --decay_lr=none --lr_decay_iters=2000 --eval_interval=100 --eval_iters=4 --eval_decode_samples=128 \
    --eval_test_samples=512 --out_dir="out-recipe/$name" "$@" > "out-recipe/$name.log" 2>&1
}
# each pair shares the 2 cores (one thread each); the first row is the recipe of config/reader.py
run b_reader_recipe &
run a_old_quickstart_model --backbone=cnn_tiny --collapse_height=False --ctc_weight=0 --tokenizer_vocab=0 \
  --channels_last=False &
wait
run c_no_ctc --ctc_weight=0 &
run d_ctc_0.5 --ctc_weight=0.5 &
wait
run e_bpe_4096 --tokenizer_vocab=0 &
run f_bpe_1024 --tokenizer_vocab=1024 &
wait
run g_char_attention --tokenizer_type=char --ctc_weight=0 &
run h_label_smoothing --label_smoothing=0.1 &
wait
run i_height_96 --img_height=96 &
run j_lr_2e-3 --learning_rate=2e-3 &
wait
run k_no_augment --augment=False &
run l_nchw --channels_last=False &
wait
