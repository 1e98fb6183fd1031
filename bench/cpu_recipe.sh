#!/usr/bin/env bash
# bench/cpu_recipe.sh: the CPU-recipe ablation behind results/cpu_recipe.md. Every variant is
# config/reader.py plus a few --key=value overrides of train.py's one loop, trained for the same
# number of samples (ITERS steps of 32) on one torch thread, two variants at a time on the 2-core
# machine; each run logs its own samples/s. The budget is in samples, not minutes, because the machine
# is shared (a wall-clock budget would rank variants by what else happened to run beside them). The
# learning rate is constant after a warmup, so no variant is favoured by where a schedule happens to
# end. A finished variant is skipped.
#   bash bench/cpu_recipe.sh && python -m bench.cpu_recipe_report --runs='out-recipe/*'
set -uo pipefail
cd "$(dirname "$0")/../.."
ITERS=${ITERS:-450}  # 450 x 32 = 14,400 samples, ~10 min per pair when nothing else runs
mkdir -p out-recipe
run() {  # name, overrides...
  local name=$1; shift
  [ -f "out-recipe/$name/final_eval.json" ] && return 0
  python train.py config/reader.py --cpu_threads=1 --max_time_minutes=60 --max_iters="$ITERS" \
    --decay_lr=none --lr_decay_iters=2000 --eval_interval=150 --eval_iters=4 --eval_decode_samples=96 \
    --eval_test_samples=512 --out_dir="out-recipe/$name" "$@" > "out-recipe/$name.log" 2>&1
}
export -f run; export ITERS
# the 96 px image cache is built before any clock starts, as the 64 px one was (by config/reader.py)
python -c "import data; t = data.Tokenizer('data/m21/full/tokenizer.model'); [data.OMRDataset('data/m21/full', s, t, \
  img_height=96, max_width=1024, cache=True) for s in ('train', 'val', 'test')]" > out-recipe/cache96.log 2>&1
# one variant per line: a name, then its overrides of config/reader.py (the recipe is b); two at a time
xargs -P 2 -L 1 bash -c 'run "$@"' _ <<'VARIANTS'
a_old_quickstart_model --backbone=cnn_tiny --collapse_height=False --ctc_weight=0 --tokenizer_vocab=0 --channels_last=False
b_reader_recipe
c_no_ctc --ctc_weight=0
d_bpe_4096 --tokenizer_vocab=0
e_char --tokenizer_type=char
f_label_smoothing --label_smoothing=0.1
g_height_96 --img_height=96
h_lr_2e-3 --learning_rate=2e-3
i_no_augment --augment=False
j_nchw --channels_last=False
VARIANTS
