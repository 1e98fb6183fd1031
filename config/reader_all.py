# reader_all: stage 2 of the shipped reader (issue 24). Stage 1 (config/reader.py) learned verovio's
# folk tunes; this fine-tunes it on three engravers, score parts, transposed and synthetic lines, with
# half of the images printed and scanned per step (core/degrade.py). Same model, same tokenizer.
#   python data/m21/prepare.py --out_dir=data/m21/all --max_tunes=3000 --parts=300 --transpose=0.5 \
#       --synth_share=0.2 --no_meter_share=0.15 --engravers=verovio:0.6,lilypond:0.2,abcm2ps:0.2 --test_all_engravers
#   python train.py config/reader.py                  # stage 1 -> out-reader (74 min)
#   python train.py config/reader_all.py              # stage 2 -> out-reader-all
import os

exec(open(os.path.join(os.path.dirname(__file__), 'reader.py')).read())

out_dir = 'out-reader-all'
data_dir = 'data/m21/all'
init_weights = 'out-reader'  # stage 1's run (reader/ before issue 24 holds its ckpt_best)
augment_scan = 0.5  # half the train images scanned per step, preset 'medium' (paper, blur, JPEG, <=2 deg, ...)

# 2000 x 32 = 64k samples (~3 epochs of the ~21k train excerpts); a fine-tune: half the peak lr
max_iters = 2000
learning_rate = 5e-4
min_lr = 5e-5
max_time_minutes = 110  # a cap; stopped runs continue with --init_from=resume
eval_interval = 250
