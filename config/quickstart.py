# quickstart: a small MusicTrOCR trained from scratch on a 2-core CPU in under 15 minutes,
# data preparation included. It shows the whole pipeline learning, not a usable transcriber:
# expect an error rate of tens of percent (accuracy targets belong to GPU runs).
#   python train.py config/quickstart.py
#   python sample.py --out_dir=out-quickstart --image=<a .png of one line of music>
out_dir = 'out-quickstart'
data_dir = 'data/m21/quick'
prepare_args = '--max_tunes=600'  # missing? build it: 600 real tunes -> ~1,800 excerpts (a few minutes)

# model: cnn_tiny (~1.1M params) on 64 px high images (4 rows of features at stride 16) and a
# 3-layer decoder, d_model 192: ~4M parameters in all
backbone = 'cnn_tiny'
img_height = 64
n_layer = 3
n_head = 4
d_model = 192
d_ff = 768
max_seq_len = 256  # tokens; the quick corpus' labels are ~35 tokens on average, ~130 at most
dropout = 0.1

# 16 x 1 accum = 16 images per step; 600 steps = 9,600 images (~5.7 epochs of ~1,700): measured
# 10.4 minutes in all (prep 2 min, ~22 images/s) on a lightly loaded 2-core box. On a busy one the
# clock stops training cleanly 13.5 minutes after launch (measured: 14.4 minutes in all, 213 steps)
batch_size = 16
gradient_accumulation_steps = 1
max_iters = 600
max_time_minutes = 13.5
learning_rate = 1e-3  # a small model trained for few steps takes a higher peak lr than the seed 3e-4
min_lr = 1e-4
warmup_frac = 0.03

eval_interval = 100
eval_iters = 6  # 6 x 16 = 96 val images: the whole val split of the quick corpus (~90)
eval_decode_samples = 48
eval_test_samples = -1  # final_eval.json: the whole test split (~90 images)
# one core trains (one torch thread), the other decodes PNGs (one loader process). On a busy machine
# two compute threads measured 7x slower than one: they spin waiting for each other.
cpu_threads = 1
num_workers = 1
device = 'cpu'
compile = False
