# poly: the CPU reader's recipe (config/reader.py) on the polyphonic corpus: chorales on a grand
# staff and on 4 staves, quartets, madrigals, Palestrina (data/m21_poly/README.md). One hour on a 2-core CPU.
#   python data/m21_poly/prepare.py && python train.py config/poly.py
#   mixed with the one-line corpus: python train.py config/poly.py --data_mix=data/m21/full
out_dir = 'out-poly'
data_dir = 'data/m21_poly/full'
augment = True
cache_images = True  # 8.3k systems at 192 px decoded once (540 MiB, ~20 s): no PNG work per step
num_workers = 0
cpu_threads = 2
channels_last = True
device = 'cpu'

# what changes from the reader, and why:
img_height = 192  # 2-6 staves in one image: at 64 px a staff would be ~10 px high; at 192 a 4-staff system has ~6 px per staff space
max_width = 1024
collapse_height = False  # H/16 x W/8 = 12 rows x W/8 columns: the staves stay apart in the memory the decoder reads
ctc_weight = 0.0  # a label goes voice by voice, not left to right across the image: no monotonic alignment for CTC
max_seq_len = 320  # labels are <= 600 characters, ~250 BPE pieces
# the rest is the reader's: cnn_line, a 512-piece BPE of its own, a 3-layer decoder with d_model 192
backbone = 'cnn_line'
tokenizer_vocab = 512
n_layer = 3
n_head = 4
d_model = 192
d_ff = 768
dropout = 0.1

batch_size = 16  # 16 x 1 accum = 16 images per step (a 4-staff system costs ~3 one-line excerpts)
gradient_accumulation_steps = 1
learning_rate = 1e-3
min_lr = 1e-4
warmup_frac = 0.03
max_iters = 2300  # 2300 x 16 = 36.8k images (5 epochs): ~52 min at the ~12 samples/s measured here, + evals
max_time_minutes = 58  # the budget is one hour; resume with --init_from=resume
eval_interval = 250
eval_iters = 8  # 8 x 16 = 128 val images for the val loss
eval_decode_samples = 48  # greedy decoding of ~250-token labels is the slow part of an eval
eval_test_samples = -1
