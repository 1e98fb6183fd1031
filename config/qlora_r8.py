# QLoRA (Dettmers et al. 2023): the frozen encoder stored in 4-bit NormalFloat, rank-8 LoRA on top.
#   python train.py config/resnet50.py config/qlora_r8.py --pretrained=timm
# Weights are quantized after loading the pretrained ones; the adapters and the decoder train
# in full precision. Saves encoder weight memory, costs a dequantize per forward.
quant_backbone = 'nf4'
nf4_double_quant = True  # quantize the per-block absmax constants too (~0.37 bits/param saved)
lora_rank = 8
lora_alpha = 16.0
lora_dropout = 0.0
lora_targets = ('backbone.',)
out_dir = out_dir + '-qlora_r8'
wandb_run_name = wandb_run_name + '-qlora_r8'
