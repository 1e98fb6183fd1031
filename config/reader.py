# reader: the CPU reader shipped in reader/ (python sample.py --image=x.png uses it), trained on the
# full embedded corpus on a 2-core CPU. The levers that won the ablation (results/cpu_recipe.md):
#   python data/m21/prepare.py && python train.py config/reader.py
out_dir = 'out-reader'
data_dir = 'data/m21/full'
augment = True  # blur, noise, contrast, +-0.5 degree rotation: fonts and scans it never saw
cache_images = True  # 64 px images decoded once into data_dir/cache/ (~1 GB): no PNG work per step
num_workers = 0  # ... so no loader processes: both cores compute
cpu_threads = 2
channels_last = True  # NHWC convolutions: measured 2.4x faster fwd+bwd for cnn_line on this CPU
device = 'cpu'

# cnn_line: H/16 x W/8, the 4 rows collapsed into one 512-dim vector per 8 px column (CRNN); joint
# CTC/attention on those columns, a small BPE vocabulary (the CTC head is one matmul per column)
backbone = 'cnn_line'
img_height = 64
max_width = 1024  # 16:1 at 64 px, the widest an excerpt is engraved
collapse_height = True
ctc_weight = 0.3
tokenizer_vocab = 512
n_layer = 3
n_head = 4
d_model = 192
d_ff = 768
max_seq_len = 256
dropout = 0.1

batch_size = 32  # 32 x 1 accum = 32 images per step
gradient_accumulation_steps = 1
learning_rate = 1e-3
min_lr = 1e-4
warmup_frac = 0.03
max_iters = 6000  # 6000 x 32 = 192k samples (5.3 epochs): ~95 minutes at the ~36 samples/s measured here
max_time_minutes = 120  # the budget; resume with --init_from=resume if stopped
eval_interval = 500
eval_iters = 8  # 8 x 32 = 256 val images for the val loss
eval_decode_samples = 256
eval_test_samples = -1
