# tiny_test: the smallest useful run, for tests/test_train.py and smoke tests on any CPU.
# Seconds per run; it checks the machinery (resume, DDP, logs), not transcription quality.
#   python train.py config/tiny_test.py --data_dir=<a prepared dir> --out_dir=out-tiny
out_dir = 'out-tiny'
backbone = 'cnn_tiny'  # ~1M params, stride 16
img_height = 32  # 2 rows of features
max_width = 512
n_layer = 1
n_head = 2
d_model = 32
d_ff = 64
max_seq_len = 256
dropout = 0.0
batch_size = 2
gradient_accumulation_steps = 2  # 2 x 2 accum = 4 images per step
max_iters = 4
learning_rate = 1e-3
min_lr = 1e-4
eval_interval = 2
eval_iters = 2  # 2 x 2 = 4 val images for the val loss
eval_decode_samples = 2
eval_test_samples = 2
num_workers = 0  # no worker processes: fastest start
device = 'cpu'
compile = False
