# LoRA rank 16 on the encoder (Hu et al. 2021): layered on top of a backbone config.
#   python train.py config/resnet50.py config/lora_r16.py --pretrained=timm
# Same as config/lora_r8.py with another rank; alpha = 2 x rank keeps scale = alpha / rank = 2,
# so the three ranks differ only in capacity, not in the size of the update.
lora_rank = 16
lora_alpha = 32.0  # scale = 32 / 16 = 2
lora_dropout = 0.0
lora_targets = ('backbone.',)  # every Linear/Conv2d under model.backbone
out_dir = out_dir + '-lora_r16'  # a config file sees the values set before it
wandb_run_name = wandb_run_name + '-lora_r16'
