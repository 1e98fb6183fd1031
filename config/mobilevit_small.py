# mobilevit_small: the seed study's recipe at 224 px. MobileViT-Small (Mehta & Rastegari 2021): convs + small Transformer blocks.
# Encoder 4.9M parameters (timm's count, no head) + the 6-layer, d_model 512 decoder.
#   python train.py config/mobilevit_small.py                                   # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/mobilevit_small.py  # 8 GPUs, same global batch
out_dir = 'out-mobilevit_small'
wandb_run_name = 'mobilevit_small'
data_dir = 'data/m21/full'  # python data/m21/prepare.py; or a PDMX-Synth dir from data/pdmx_synth/prepare.py

backbone = 'mobilevit_small'
img_height = 224  # images are resized to 224 px high, width follows the aspect ratio (<= max_width)
# The seed study started from ImageNet weights. They need the Hugging Face hub once, so they are
# opt-in: add --pretrained=timm (online) or --pretrained=/path/to/mobilevit_small.safetensors (offline).
pretrained = None

# 8 x 4 accum = 32 images per optimizer step (with torchrun the 4 accumulation steps are global:
# they are divided among the processes, so 2 GPUs do 2 each and the step stays 32 images)
batch_size = 8
gradient_accumulation_steps = 4
epochs = 10  # max_iters = 10 x (train images // 32)

# AdamW 3e-4, betas (0.9, 0.99), weight decay 0.01; 3% linear warmup, cosine decay to 3e-5
learning_rate = 3e-4
beta1, beta2 = 0.9, 0.99
weight_decay = 0.01
warmup_frac = 0.03
decay_lr = 'cosine'
min_lr = 3e-5

eval_interval = 500  # ~every 16k images
eval_iters = 50  # 50 x 8 = 400 val images for the val loss
eval_decode_samples = 200  # greedy-decoded val images for SER/CER
