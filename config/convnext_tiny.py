# convnext_tiny: the seed study's recipe at 224 px. ConvNeXt-Tiny (Liu et al. 2022): a CNN modernized with Transformer design choices.
# Encoder 27.8M parameters (timm's count, no head) + the 6-layer, d_model 512 decoder.
#   python train.py config/convnext_tiny.py                                   # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/convnext_tiny.py  # 8 GPUs x 4 images = the same 32/step
# train.py's defaults ARE the seed recipe, so only the encoder is named here:
#   8 x 4 accum = 32 images/step (accumulation is global: under torchrun it is split among the GPUs);
#   AdamW 3e-4, betas (0.9, 0.99), wd 0.01; 3% linear warmup, cosine decay to 3e-5; 10 epochs;
#   images 224 px high, aspect kept (<= 2048 px wide); data_dir = 'data/m21/full' (python data/m21/prepare.py).
# The seed study started from ImageNet weights; they need the Hugging Face hub once, so they are opt-in:
#   --pretrained=timm (online) or --pretrained=/path/to/convnext_tiny.safetensors (offline).
out_dir = 'out-convnext_tiny'
wandb_run_name = 'convnext_tiny'
backbone = 'convnext_tiny'
