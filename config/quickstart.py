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
# CTC/attention, a 512-piece BPE of its own, a 3-layer decoder with d_model 192: 2.83M params.
# With ReLU instead of GELU in the encoder: the same weights' shapes, ~9% faster steps on a CPU
backbone = 'cnn_line_relu'
img_height = 64
max_width = 1024
collapse_height = True
ctc_weight = 0.5  # 0.5, not the reader's 0.3: the quick start reads with its CTC head (23.7% vs 25.3% test SER)
tokenizer_vocab = 512
n_layer = 3
n_head = 4
d_model = 192
d_ff = 768
max_seq_len = 256
dropout = 0.1

# 32 x 1 accum = 32 images per step; 1100 steps = 35,200 images (~12.5 epochs of ~2,800), cosine to the end
batch_size = 32
gradient_accumulation_steps = 1
max_iters = 1100
max_time_minutes = 13.5  # counted from launch, data preparation included: training stops cleanly by then
fit_to_time = True  # a slower machine: fewer steps (measured after 20), so the lr schedule still ends
learning_rate = 1e-3
min_lr = 1e-4
warmup_frac = 0.03

eval_interval = 300
eval_iters = 4  # 4 x 32 = 128 val images for the val loss
eval_decode_samples = 64
eval_test_samples = -1  # final_eval.json: the whole test split (~160 images)
