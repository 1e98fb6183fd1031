# LoRA rank 8 on the encoder (Hu et al. 2021): layered on top of a backbone config.
#   python train.py config/resnet50.py config/lora_r8.py --pretrained=timm
# The backbone's own weights stay frozen (BatchNorm in eval mode); rank-8 adapters on its
# Linear/Conv2d layers and the whole decoder (trained from scratch) are trained.
# LoRA adapts *pretrained* weights: on a random encoder it only measures the decoder.
lora_rank = 8
lora_alpha = 16.0  # scale = alpha / rank = 2
lora_dropout = 0.0
lora_targets = ('backbone.',)  # every Linear/Conv2d under model.backbone
out_dir = out_dir + '-lora_r8'  # a config file sees the values set before it
wandb_run_name = wandb_run_name + '-lora_r8'
