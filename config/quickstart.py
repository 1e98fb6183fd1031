# quickstart: the CPU reader's recipe (config/reader.py) on a quick corpus, trained from nothing on a
# 2-core CPU in under 15 minutes, data preparation included. Expect a quarter of the symbols wrong
# (README: measured numbers); the full reader in reader/ trains 74 minutes for 1.4%.
#   python train.py config/quickstart.py
#   torchrun --standalone --nproc_per_node=2 train.py config/quickstart.py --cpu_threads=1   # 2 processes: faster
#   python sample.py --out_dir=out-quickstart --image=<a .png of one line of music>
import os

# the reader's model (cnn_line, joint CTC/attention, 512-piece BPE, 3-layer decoder: 2.83M params),
# its image cache and its 2-thread CPU setup; below, only what differs
exec(open(os.path.join(os.path.dirname(__file__), 'reader.py')).read())

out_dir = 'out-quickstart'
data_dir = 'data/m21/quick'
prepare_args = '--max_tunes=1000'  # missing? build it: 1,000 real tunes -> ~3,150 excerpts (~2 minutes)
compile = False
backbone = 'cnn_line_relu'  # ReLU for GELU: the same weights' shapes, ~9% faster steps on a CPU
ctc_weight = 0.5  # 0.5, not the reader's 0.3: the quick start reads with its CTC head (23.7% vs 25.3% test SER)

# 32 per step; 1100 steps = 35,200 images (~12.5 epochs of ~2,800), cosine to the end
max_iters = 1100
max_time_minutes = 13.5  # counted from launch, data preparation included: training stops cleanly by then
fit_to_time = True  # a slower machine: fewer steps (measured after 20), so the lr schedule still ends
eval_interval = 300
eval_iters = 4  # 4 x 32 = 128 val images for the val loss
eval_decode_samples = 64
