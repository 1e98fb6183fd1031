# A frozen encoder: only the decoder (and the grid projection) learn; a linear-probe-like baseline.
#   python train.py config/resnet50.py config/frozen_backbone.py --pretrained=timm
# BatchNorm statistics are frozen too, and no activations are kept for the encoder's backward,
# so it also trains faster and in less memory. Pointless without pretrained weights.
freeze_backbone = True
out_dir = out_dir + '-frozen'
wandb_run_name = wandb_run_name + '-frozen'
