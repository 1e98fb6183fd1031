# distill_convnext_to_mobilevit: knowledge distillation (Hinton et al. 2015, see distill.py) from a trained
# ConvNeXt-Tiny run (the teacher, ~28M-parameter encoder) into a MobileViT-Small student (~5M), for phones.
# Train the teacher first, on the same data (the tokenizer must be the same), then the student:
#   python train.py config/convnext_tiny.py                     # -> out-convnext_tiny/ckpt_best
#   python train.py config/distill_convnext_to_mobilevit.py     # -> out-distill-mobilevit_small
# loss = distill_alpha * CE(student, labels) + (1 - distill_alpha) * T^2 * KL(teacher_T || student_T),
# under teacher forcing; the teacher runs frozen (eval mode, no_grad) inside train.py's one loop.
# Everything else is train.py's defaults, the seed recipe of config/mobilevit_small.py (224 px, 8 x 4 images
# per step, AdamW 3e-4, 10 epochs, data_dir 'data/m21/full', which must be the teacher's data_dir: the same
# tokenizer), so that run is the baseline: the SER difference is what KD buys.
out_dir = 'out-distill-mobilevit_small'
wandb_run_name = 'distill-convnext_tiny-to-mobilevit_small'

# the teacher: a run dir (its ckpt_best/ is used, else ckpt_last/) or a checkpoint dir
teacher_dir = 'out-convnext_tiny'
distill_alpha = 0.5  # weight of the hard-label cross-entropy; 1 - alpha goes to the soft teacher term
distill_T = 2.0      # temperature: > 1 exposes the teacher's ranking of the wrong tokens

# the student
backbone = 'mobilevit_small'
