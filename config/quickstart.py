# quickstart: the CPU reader's recipe (config/reader.py) on a quick corpus, trained from nothing on a
# 2-core CPU in under 15 minutes, data preparation included. Expect a quarter of the symbols wrong
# (README: measured numbers); the full reader in reader/ trains 74 minutes for 1.4%.
#   python train.py config/quickstart.py
#   torchrun --standalone --nproc_per_node=2 train.py config/quickstart.py --cpu_threads=1   # 2 processes: faster
#   python sample.py --out_dir=out-quickstart --image=<a .png of one line of music>
out_dir = 'out-quickstart'
data_dir = 'data/m21/quick'
prepare_args = '--max_tunes=1000'  # missing? build it: 1,000 real tunes -> ~3,150 excerpts (~2.5 minutes)
augment = True
cache_images = True  # the quick corpus at 64 px is ~100 MB: decoded once, so both cores compute
num_workers = 0
cpu_threads = 2
channels_last = True
device = 'cpu'
compile = False

# the reader's model: cnn_line (H/16 x W/8, rows collapsed to one vector per column), joint
# CTC/attention (0.3), a 512-piece BPE of its own, a 3-layer decoder with d_model 192: 2.83M params
backbone = 'cnn_line'
img_height = 64
max_width = 1024
collapse_height = True
ctc_weight = 0.3
tokenizer_vocab = 512
n_layer = 3
n_head = 4
d_model = 192
d_ff = 768
max_seq_len = 256
dropout = 0.1

# 32 x 1 accum = 32 images per step; 900 steps = 28,800 images (~10 epochs of ~2,850), cosine to the end
batch_size = 32
gradient_accumulation_steps = 1
max_iters = 900
max_time_minutes = 13.5  # a busy machine: training stops cleanly 13.5 minutes after launch
learning_rate = 1e-3
min_lr = 1e-4
warmup_frac = 0.03

eval_interval = 300
eval_iters = 4  # 4 x 32 = 128 val images for the val loss
eval_decode_samples = 64
eval_test_samples = -1  # final_eval.json: the whole test split (~160 images)
