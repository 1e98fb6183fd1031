"""
train.py: train MusicTrOCR (image of one line of engraved music -> ABC), after nanoGPT's train.py.

One file, one loop, no Trainer class and no callbacks; its machinery is in training/ (step.py: one
optimizer step). One device, or DDP under torchrun (nodes, SLURM, requeueing: docs/multi-gpu.md):

    $ python train.py config/quickstart.py                       # a 2-core CPU
    $ python train.py config/resnet50.py --batch_size=16         # one GPU
    $ torchrun --standalone --nproc_per_node=8 train.py config/deit_small.py   # 8 GPUs x 4 = 32/step

Every config key is a global below, with its default; config files and --key=value overrides replace
them (configurator.py). Outputs in out_dir: a line per iteration on stdout, log.jsonl (one JSON object
per eval), loss.png, ckpt_last/ and ckpt_best/ (model.safetensors, config.json, state.pt), tokenizer.model
and final_eval.json (the test split, best checkpoint). SIGTERM/SIGUSR1: ckpt_last written, exit 75.
"""

import functools
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import distill
from core import files, flops
from model import build_model, config_args
from training import evaluation, preempt, runlog, step
from training.checkpoint import (all_rng_states, copy_tokenizer, has_checkpoint, load_init, load_model, load_resume,
                                 resume_mismatch, save_checkpoint, set_rng_state)

# -----------------------------------------------------------------------------
# default config values: the seed recipe, ResNet-50 encoder at 224 px
# I/O
out_dir = 'out'
data_dir = 'data/m21/full'
prepare_args = None  # e.g. '--max_tunes=1000': data_dir missing? build it with data/m21/prepare.py and these
data_mix = ''  # more prepared dirs (comma-separated) whose splits join data_dir's; needs tokenizer_vocab
eval_interval = 500  # iterations between evals (and ckpt_last saves)
log_interval = 1
eval_iters = 50  # val batches for the val loss (the same fixed batches at every eval)
eval_decode_samples = 200  # val images greedy-decoded at each eval for SER / CER / sequence accuracy
eval_test_samples = -1  # test images decoded at the end for final_eval.json (-1 = all of them)
always_save_checkpoint = True  # write ckpt_last at every eval (ckpt_best is written whenever val loss improves)
init_from = 'scratch'  # 'scratch', 'resume' (continue out_dir/ckpt_last exactly), 'auto' (resume if out_dir has one)
init_weights = ''  # with 'scratch': a run or checkpoint dir (reader/): its weights+tokenizer (not tokenizer_vocab's)
max_time_minutes = 0.0  # > 0: stop cleanly (eval + ckpt_last) once this many minutes have passed since launch
fit_to_time = False  # with max_time_minutes: after 20 steps, shorten max_iters (and the lr schedule) to what fits
nan_loss = 'skip'  # a step with inf/NaN gradients: 'skip' it (no update, a warning) or 'stop' the run
# wandb logging (optional, imported only when on)
wandb_log = False
wandb_project = 'nanoomr'
wandb_run_name = 'run'
# data
batch_size = 8  # micro-batch size per process
gradient_accumulation_steps = 4  # GLOBAL: split over the DDP processes; 8 x 4 = 32 images per optimizer step
epochs = 10  # used to derive max_iters when max_iters = 0
max_iters = 0  # optimizer steps; 0 = epochs x (train images // 32)
max_samples = 0  # > 0: train on this many images instead, max_iters = ceil(max_samples / images per step)
img_height = 224
max_width = 2048  # wider images are scaled down to this width
num_workers = 4  # DataLoader worker processes (0 = load in the main process)
augment = False  # data.py's light augmentation (blur, noise, small rotation, contrast)
augment_shape = False  # with augment: also stroke weight, elastic warp and width (images.shape_augment)
augment_scan = 0.0  # > 0: this share of train images printed and scanned per step (degrade.py: paper, blur, JPEG, ...)
augment_scan_preset = 'medium'  # degrade.PRESETS: 'light', 'medium' or 'heavy'
augment_clutter = 0.0  # > 0: this share of train images get page text around the staff (core/clutter.py), before the scan
cache_images = False  # decode + resize every image once into data_dir/cache/ (a memory map): no PNG work per step
holdout_font = None  # a font ('Petaluma'), engraver ('lilypond') or source ('parts'): train and val never see it
tokenizer_vocab = 0  # 0 = data_dir's tokenizer; > 0 = train a BPE of this size on the train labels into out_dir
tokenizer_type = 'bpe'  # with tokenizer_vocab: 'bpe', or 'char' (one piece per character, any tokenizer_vocab > 0)
bucket_by_width = True  # batches of images of similar width (less padding); still a fresh random order every epoch
# model
backbone = 'resnet50'  # any name in backbones.BACKBONES
pretrained = None  # None: random init; 'timm': ImageNet weights from the HF hub (online); or a .safetensors/.pth
freeze_backbone = False
grad_checkpointing = False
n_layer = 6
n_head = 8
d_model = 512
d_ff = 2048  # SwiGLU hidden size
max_seq_len = 2048  # decoder positions, bos included; longer labels are cut by data.py
dropout = 0.1
collapse_height = False  # one memory vector per image column (CRNN): needed by the CTC head
ctc_weight = 0.0  # joint CTC/attention: loss = (1 - w) CE + w CTC (ESPnet uses 0.3); 0 = attention only
label_smoothing = 0.0
# AdamW optimizer
learning_rate = 3e-4  # peak learning rate
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0  # clip the global gradient norm at this value (0 = off)
# learning rate schedule
warmup_frac = 0.03  # linear warmup over this fraction of lr_decay_iters
decay_lr = 'cosine'  # 'cosine', 'linear' or 'none' (constant after warmup)
lr_decay_iters = 0  # 0 = max_iters (set it when a run is stopped early on purpose and resumed later)
min_lr = 3e-5  # the floor the decay ends at, ~learning_rate/10 (Chinchilla)
# efficiency plug-ins (lora.py, quant.py, distill.py)
lora_rank = 0  # > 0: LoRA adapters of this rank on the modules named by lora_targets, base weights frozen
lora_alpha = 16.0
lora_dropout = 0.0
lora_targets = ('backbone.',)  # module-name prefixes / fnmatch patterns, see lora.apply_lora
lora_rslora = False  # scale alpha/sqrt(r) instead of alpha/r
quant_backbone = None  # 'nf4': the backbone's Linear/Conv2d weights stored in 4-bit NormalFloat (QLoRA)
nf4_double_quant = False  # also quantize the NF4 absmax constants
teacher_dir = None  # a trained run's checkpoint dir: knowledge distillation from that teacher
distill_alpha = 0.5  # loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student), see distill.py
distill_T = 2.0  # softmax temperature of the KD term
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', ...
# CUDA only (CPU runs fp32)
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float16'
compile = False  # torch.compile: off by default, variable image widths make it recompile often
channels_last = False  # NHWC backbone weights and inputs: several times faster convolutions on a CPU
cpu_threads = 0  # CPU runs: torch compute threads (0 = torch's default, one per core)
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_')
               and isinstance(v, (int, float, bool, str, tuple, list, type(None)))]
exec(open(os.path.join(os.path.dirname(__file__), 'configurator.py')).read())  # overrides: config files, --key=value
config = {k: globals()[k] for k in config_keys}  # will be useful for logging and checkpoints
# -----------------------------------------------------------------------------
t_launch = time.time()  # max_time_minutes counts from here: data preparation and loading included


def die(msg):
    """Bad input: one line on stderr and a non-zero exit, never a traceback."""
    sys.exit(f"error: {msg}")


# cheap checks first, so that a typo fails in a second, not after loading the data
for _k, _ok in (('init_from', ('scratch', 'resume', 'auto')), ('nan_loss', ('skip', 'stop')),
                ('decay_lr', ('cosine', 'linear', 'none')), ('quant_backbone', (None, 'nf4')),
                ('dtype', ('float32', 'bfloat16', 'float16')), ('tokenizer_type', ('bpe', 'char'))):
    if globals()[_k] not in _ok:
        die(f"{_k} must be {', '.join(map(repr, _ok[:-1]))} or {_ok[-1]!r}, got {globals()[_k]!r}")
if batch_size < 1 or gradient_accumulation_steps < 1 or not 0.0 <= ctc_weight <= 1.0:
    die(f"batch_size and gradient_accumulation_steps must be >= 1 and ctc_weight in [0, 1], got {batch_size}, "
        f"{gradient_accumulation_steps}, {ctc_weight}")
if ctc_weight > 0 and not collapse_height:
    die("ctc_weight > 0 needs collapse_height=True (CTC reads one frame per image column)")
if init_from == 'auto':  # one sbatch line for the first launch and every requeue
    init_from = 'resume' if has_checkpoint(out_dir) else 'scratch'
preempt.install()  # SIGTERM / SIGUSR1: finish the step, write ckpt_last, exit with preempt.EXIT_CODE

# various inits, derived attributes, I/O setup
ddp = int(os.environ.get('RANK', -1)) != -1  # is this a ddp run (launched by torchrun)?
if ddp:
    ddp_rank, ddp_local_rank, ddp_world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if device.startswith('cuda'):
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    master_process = ddp_rank == 0  # this process will do logging, checkpointing etc.
    # world_size processes train simultaneously, so each does a share of the (global) accumulation
    try:
        batch_size, gradient_accumulation_steps, note = step.share_batch(batch_size, gradient_accumulation_steps,
                                                                         ddp_world_size)
    except ValueError as e:
        die(e)
    if note and master_process:
        print(note)
    if note:  # re-split: the config records what really ran
        config.update(batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps * ddp_world_size)
else:
    ddp_rank, ddp_local_rank, ddp_world_size, master_process = 0, 0, 1, True
samples_per_iter = batch_size * gradient_accumulation_steps * ddp_world_size  # global images per optimizer step
device_type = 'cuda' if device.startswith('cuda') else 'cpu'  # for later use in torch.autocast
if device_type == 'cuda' and not torch.cuda.is_available():
    die(f"device={device!r} but CUDA is not available; use --device=cpu")
config['dtype'] = dtype = step.resolve_dtype(device_type, dtype)
if master_process:
    print(f"{samples_per_iter} images per iteration: {ddp_world_size} process(es) x batch_size "
          f"{batch_size} x {gradient_accumulation_steps} accumulation step(s)")
if device_type == 'cpu' and cpu_threads > 0:
    torch.set_num_threads(cpu_threads)
cpu_peak_flops = flops.cpu_peak_flops() if device_type == 'cpu' else None  # MFU's peak on a CPU
if cpu_peak_flops is not None and master_process:
    print(f"CPU: {torch.get_num_threads()} torch thread(s), 1024^2 fp32 matmul at {cpu_peak_flops / 1e9:.1f} GFLOP/s "
          f"(the peak MFU is measured against)")
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
ctx, scaler = step.amp_context(device_type, dtype)  # scaler: a no-op GradScaler unless fp16

# -----------------------------------------------------------------------------
# data: a prepared dataset directory (data/m21/prepare.py); the quick start builds its own if missing or half-built
if not os.path.isfile(os.path.join(data_dir, 'dataset_dict.json')) and prepare_args is not None:
    if master_process:
        try:
            data.prepare_missing(data_dir, prepare_args)
        except RuntimeError as e:
            die(e)
    if ddp:
        dist.barrier()
own_tokenizer = tokenizer_vocab > 0 and not init_weights  # this run's own, in out_dir (an ablation, a mix)
data_dirs = [data_dir] + [d for d in data_mix.split(',') if d]
if len(data_dirs) > 1 and not own_tokenizer:
    die("data_mix needs tokenizer_vocab > 0: one tokenizer trained on the train labels of every corpus")
try:  # a missing dir fails in load_split, with the command that prepares it
    train_texts = [t for d in data_dirs for t in data.load_split(d, 'train')['transcription']]
    tok_path = os.path.join(out_dir if own_tokenizer else init_weights or data_dir, 'tokenizer.model')
    if own_tokenizer and init_from == 'scratch' and master_process:
        data.train_tokenizer(train_texts, os.path.join(out_dir, 'tokenizer'), tokenizer_vocab, tokenizer_type)
    if own_tokenizer and ddp:
        dist.barrier()  # everyone reads the tokenizer rank 0 just wrote
    tokenizer = data.Tokenizer(tok_path)
    train_ds, val_ds, test_ds = data.run_splits(data_dirs, tokenizer, img_height, max_width, max_seq_len, cache_images,
                                                augment, augment_shape, seed, holdout_font, augment_scan,
                                                augment_scan_preset, augment_clutter)
except (FileNotFoundError, ValueError) as e:
    die(e)
collate_fn = data.Collate(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
iters_per_epoch = len(train_ds) // samples_per_iter  # the incomplete last global batch of an epoch is dropped
train_widths = train_ds.widths().tolist() if bucket_by_width else None  # from the PNG headers: no decoding
if iters_per_epoch == 0:
    die(f"the train split of {data_dir} has {len(train_ds)} images, fewer than one global batch "
        f"({samples_per_iter}); lower batch_size or gradient_accumulation_steps")
if max_samples > 0:
    max_iters = math.ceil(max_samples / samples_per_iter)
elif max_iters <= 0:
    max_iters = epochs * iters_per_epoch
lr_decay_iters = lr_decay_iters if lr_decay_iters > 0 else max_iters
warmup_iters = int(warmup_frac * lr_decay_iters)
if master_process:
    print(f"data: {' + '.join(data_dirs)}, {len(train_ds)} train / {len(val_ds)} val / {len(test_ds)} test images, "
          f"vocab {tokenizer.vocab_size}; {iters_per_epoch} iterations per epoch, max_iters {max_iters} "
          f"(= {max_iters / iters_per_epoch:.2f} epochs), warmup {warmup_iters}")
    os.makedirs(out_dir, exist_ok=True)
    if not own_tokenizer:
        copy_tokenizer(init_weights or data_dir, out_dir)  # sample.py finds the tokenizer next to the checkpoints


# -----------------------------------------------------------------------------
# model: scratch (+ the plug-ins), or the exact state of out_dir/ckpt_last
model_args, lora_meta, quant_meta = config_args(config, tokenizer)  # LoRA / NF4 on the backbone freeze the rest of it
iter_num, best_val_loss, elapsed_before = 0, float('inf'), 0.0
torch.manual_seed(seed)  # the same initial weights in every process
if init_from == 'scratch':
    if master_process:
        print(f"initializing {backbone} " + (f"from {init_weights}'s weights" if init_weights else
                                             "from scratch" + f" (pretrained={pretrained})" * bool(pretrained)))
    try:
        model = load_init(init_weights, model_args, lora_meta, quant_meta) if init_weights else \
            build_model(model_args, lora_meta, quant_meta, verbose=master_process)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        die(f"cannot build the model: {e}")
    ckpt_state = None
else:
    ckpt_dir = os.path.join(out_dir, 'ckpt_last')
    if master_process:
        print(f"resuming training from {ckpt_dir}")
    if ddp and not master_process:
        dist.barrier()  # rank 0 first: it finishes an interrupted write of ckpt_last (recover_dir)
    try:
        model, meta, ckpt_state = load_resume(out_dir)
    except (ValueError, FileNotFoundError) as e:
        die(e)
    if ddp and master_process:
        dist.barrier()
    why = resume_mismatch(meta, model_args, lora_meta, quant_meta)  # it must be the model this config describes
    if why:
        die(f"{ckpt_dir} was trained with {why}; resume with the run's own config, or start a new out_dir")
    iter_num, best_val_loss = ckpt_state['iter_num'], ckpt_state['best_val_loss']
    elapsed_before = ckpt_state.get('elapsed_s', 0)
fitted = (ckpt_state or {}).get('fitted')  # (max_iters, lr_decay_iters) that fit_to_time chose: a resume keeps them
max_iters, lr_decay_iters = fitted or (max_iters, lr_decay_iters)
model.to(device)
if channels_last:
    model.to_channels_last()
n_params, n_trainable = model.get_num_params(), model.get_num_params(trainable_only=True)
if master_process:
    print(f"parameters: {n_params / 1e6:.2f}M, trainable {n_trainable / 1e6:.2f}M")

# knowledge distillation: a frozen teacher run on the same batch
teacher, kd_loss = None, functools.partial(distill.kd_loss, alpha=distill_alpha, T=distill_T)
if teacher_dir:
    try:
        teacher = distill.load_teacher(teacher_dir, device)
        distill.check_compatible(teacher.config, model.config)  # the same tokenizer, or logits mean different tokens
    except (ValueError, FileNotFoundError) as e:
        die(e)

optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if ckpt_state is not None:
    optimizer.load_state_dict(ckpt_state['optimizer'])
    scaler.load_state_dict(ckpt_state['scaler'])
raw_model = model  # the plain module: checkpoints, eval and generate() use it
if compile:
    if master_process:
        print("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)

# every process has its own random stream (dropout), but its state is restored exactly on resume
if ckpt_state is not None:
    set_rng_state(ckpt_state['rng'][ddp_rank if ddp_rank < len(ckpt_state['rng']) else 0], device_type == 'cuda')
else:
    random.seed(seed + ddp_rank)
    np.random.seed(seed + ddp_rank)
    torch.manual_seed(seed + ddp_rank)


def save(names, elapsed_s, record=None):
    """Append an eval's record to log.jsonl, write ckpt_last / ckpt_best (a collective under DDP: the RNG
    states). A full disk: one line and exit; atomic_dir has left the previous checkpoint whole."""
    if names:
        rng = all_rng_states(device_type == 'cuda', ddp, ddp_world_size)
        state = dict(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng, iter_num=iter_num,
                     epoch=iter_num // iters_per_epoch, window=window, best_val_loss=best_val_loss, elapsed_s=elapsed_s,
                     fitted=fitted,
                     data_position=dict(epoch=iter_num // iters_per_epoch, iter_in_epoch=iter_num % iters_per_epoch))
    if master_process:
        meta = dict(model_args=raw_model.config.__dict__, train_config=config, iter_num=iter_num,
                    best_val_loss=best_val_loss, lora=lora_meta, quant=quant_meta,
                    decode=evaluation.better_decoding(record))
        try:
            if record is not None:
                runlog.append_log(out_dir, record, f"{backbone}: {out_dir}")
            for name in names:
                save_checkpoint(os.path.join(out_dir, name), raw_model, meta, state)
        except OSError as e:
            die(f"cannot write to {out_dir} ({e.strerror or e}); its checkpoints are intact: free some disk "
                f"space, then resume with --init_from=resume")
        if names:
            print(f"saved {' and '.join(names)} to {out_dir}")


def get_lr(it):
    """Learning rate at iteration `it`: linear warmup, then cosine / linear decay to min_lr."""
    if it < warmup_iters:  # 1) linear warmup, 2) after lr_decay_iters min_lr, 3) in between the decay
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if decay_lr == 'none':
        return learning_rate
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) if decay_lr == 'cosine' else 1.0 - decay_ratio
    return min_lr + coeff * (learning_rate - min_lr)


def evaluate(m, ds, n_loss_batches, n_decode):
    """evaluation.evaluate on the first n_loss_batches fixed batches of `ds` (the loss) and its first
    n_decode images (greedy decoding), in a permutation fixed by seed: every eval scores the same images."""
    loss_batches, decode_batches = data.eval_batches(len(ds), batch_size, n_loss_batches, n_decode, seed)
    return evaluation.evaluate(m, ds, loss_batches, decode_batches, collate_fn, tokenizer, ctx, device, max_seq_len - 1,
                               num_workers, seed, ddp, ddp_rank, ddp_world_size)


# logging
if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
if master_process:
    runlog.start_log(out_dir, iter_num if init_from == 'resume' else None)

# -----------------------------------------------------------------------------
# training loop
# this process's micro-batches, (images (B,3,H,W), idx (B,T), targets (B,T), widths (B,)) on the device, forever
batches = (data.to_device(b, device) for b in data.train_loader(
    train_ds, collate_fn, iter_num, batch_size, gradient_accumulation_steps, ddp_world_size, ddp_rank, seed,
    train_widths, num_workers, pin_memory=device_type == 'cuda'))
resume_iter = iter_num if init_from == 'resume' else -1  # that eval is already in the log and the checkpoint
t0 = t_start = time.time()
local_iter_num, running_mfu = 0, -1.0  # local_iter_num: iterations in the lifetime of this process
steps_s = eval_s = 0.0  # seconds in this process's steps so far, and in its latest eval (for fit_to_time)
window = (ckpt_state or {}).get('window') or dict(loss=0.0, n=0, samples=0, time=0.0)  # since the last eval
stop = preempted = False
while True:

    # evaluate the loss on val, write checkpoints (also on the last iteration and on a time stop)
    if (iter_num % eval_interval == 0 or iter_num >= max_iters or stop) and iter_num != resume_iter:
        t_eval = time.time()
        val_loss, scores, rows = evaluate(raw_model, val_ds, eval_iters, eval_decode_samples)
        improved = math.isfinite(val_loss) and val_loss < best_val_loss  # a NaN model is never the best
        best_val_loss = min(best_val_loss, val_loss)
        record = evaluation.eval_record(iter_num, iter_num / iters_per_epoch, window, val_loss, scores,
                                        iter_num * samples_per_iter, get_lr(max(0, iter_num - 1)),
                                        running_mfu if running_mfu >= 0 else None, step.peak_mem_mb(device_type),
                                        elapsed_before + time.time() - t_start)
        window = dict(loss=0.0, n=0, samples=0, time=0.0)
        saved = (['ckpt_last'] if always_save_checkpoint or iter_num >= max_iters or stop or preempted else []) + \
                (['ckpt_best'] if improved else [])
        if master_process:
            print(evaluation.eval_report(record, rows))
            if wandb_log:
                wandb.log(record)
        save(saved, record['elapsed_s'], record)
        if ddp:
            dist.barrier()  # nobody reads a checkpoint that is still being written
        t0 = time.time()  # don't count eval time in the next iteration
        eval_s = t0 - t_eval
    elif preempted:  # off the eval grid: no eval (it would change the RNG stream): a resume continues exactly
        save(['ckpt_last'], elapsed_before + time.time() - t_start)
    if iter_num >= max_iters or stop or preempted:
        break

    # determine and set the learning rate for this iteration
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr

    # forward backward update, with gradient accumulation to simulate a larger batch. step.train_step:
    #   for each of the gradient_accumulation_steps micro-batches: loss = model(images, idx, targets) (+ the
    #   teacher's KD term), scaler.scale(loss / steps).backward() (DDP syncs gradients on the last one only);
    #   then unscale, clip the global norm at grad_clip, optimizer.step() (skipped on inf/NaN), zero_grad
    loss_accum, (images, idx, _, _) = step.train_step(model, optimizer, scaler, ctx, batches,
                                                      gradient_accumulation_steps, grad_clip, teacher, kd_loss, ddp,
                                                      skip_nonfinite=True)

    # timing and logging
    t1 = time.time()
    dt, t0 = t1 - t0, t1
    if ddp:
        dist.all_reduce(loss_accum, op=dist.ReduceOp.AVG)  # the loss of the whole global batch
    lossf = loss_accum.item()
    if not math.isfinite(lossf) and nan_loss == 'stop':  # step.py made no update; all ranks see it (all_reduce)
        die(f"iter {iter_num}: inf/NaN gradients (nan_loss='stop'); lower learning_rate, then --init_from=resume")
    if not math.isfinite(lossf) and master_process:
        print(f"warning: iter {iter_num}: inf/NaN gradients, step skipped (no update)", flush=True)
    window['loss'] += lossf if math.isfinite(lossf) else 0.0
    window['n'] += math.isfinite(lossf)
    window['samples'], window['time'] = window['samples'] + samples_per_iter, window['time'] + dt
    if iter_num % log_interval == 0 and master_process:
        if local_iter_num >= 5:  # let the training loop settle a bit
            mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, images.size(3), idx.size(1),
                                         images.size(2), peak_flops=cpu_peak_flops)
            if mfu is not None:
                running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
        mfu_str = f"{running_mfu * 100:.2f}%" if running_mfu >= 0 else "n/a"
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, time {dt * 1000:.2f}ms, {samples_per_iter / dt:.1f} "
              f"samples/s, mfu {mfu_str}, mem {step.peak_mem_mb(device_type):.0f} MiB", flush=True)
    iter_num += 1
    local_iter_num += 1
    steps_s += dt

    # a slower machine than the recipe's: end the cosine in time instead of being cut off mid-schedule
    if fit_to_time and max_time_minutes > 0 and not fitted and local_iter_num == 20:
        fit = preempt.fit_iters(iter_num, max_iters, steps_s / local_iter_num, eval_s, eval_interval,
                                60 * max_time_minutes - (time.time() - t_launch), device, ddp)
        if fit < max_iters and master_process:
            print(f"fit_to_time: {steps_s / local_iter_num:.2f}s a step, {max_iters} steps would not fit in "
                  f"max_time_minutes={max_time_minutes}: max_iters {fit}, the lr schedule with it")
        lr_decay_iters = fit if lr_decay_iters == max_iters else min(lr_decay_iters, fit)
        max_iters = fit
        fitted = (max_iters, lr_decay_iters)

    # time-boxed runs stop cleanly (eval + ckpt_last at the top of the loop); a cluster's signal saves
    # ckpt_last and exits (preempt.py). Rank 0's clock and signal decide for all ranks
    stop, preempted = preempt.stop_flags(max_time_minutes > 0 and time.time() - t_launch > 60 * max_time_minutes,
                                         device, ddp)
    if stop and master_process:
        print(f"max_time_minutes={max_time_minutes} reached at iter {iter_num}: stopping")

if preempted:
    if master_process:
        print(preempt.report(iter_num, out_dir), flush=True)
    if ddp:
        dist.barrier()  # every rank here before any tears gloo down (else a late peer can SIGABRT)
        dist.destroy_process_group()
    sys.exit(preempt.EXIT_CODE)

# -----------------------------------------------------------------------------
# final evaluation on the test split, with the best checkpoint -> out_dir/final_eval.json
train_time = time.time() - t_start
best_dir = os.path.join(out_dir, 'ckpt_best')
if os.path.isdir(best_dir):
    eval_model, best_meta = load_model(best_dir, device)
    if channels_last:
        eval_model.to_channels_last()
    weights, weights_iter = 'ckpt_best', best_meta['iter_num']
else:
    eval_model, weights, weights_iter = raw_model, 'last', iter_num
n_test = len(test_ds) if eval_test_samples < 0 else min(eval_test_samples, len(test_ds))
t_eval = time.time()
test_loss, test_scores, rows_test = evaluate(eval_model, test_ds, eval_iters, n_test)
if master_process:
    final = evaluation.final_record(
        weights, weights_iter, n_test, test_loss, test_scores, os.path.join(out_dir, 'log.jsonl'),
        holdout_font=holdout_font, best_val_loss=best_val_loss, iters=iter_num,
        mfu=running_mfu if running_mfu >= 0 else None, peak_mem_mb=step.peak_mem_mb(device_type),
        train_time_s=elapsed_before + train_time, test_decode_s=time.time() - t_eval, backbone=backbone,
        img_height=img_height, n_params=n_params, n_trainable=n_trainable, world_size=ddp_world_size,
        device=torch.cuda.get_device_name() if device_type == 'cuda' else 'cpu')
    if holdout_font:  # the held-out-font experiment: the font train never saw, against the four it did
        final['holdout'] = evaluation.holdout_scores(rows_test, test_ds, holdout_font, tokenizer)
    files.atomic_write(os.path.join(out_dir, 'final_eval.json'), json.dumps(final, indent=2))
    print(evaluation.test_report(final, out_dir))
    if wandb_log:
        wandb.log({f'test_{k}': v for k, v in final.items() if isinstance(v, (int, float))})
if ddp:
    dist.barrier()  # rank 0 may still be writing final_eval.json; a peer leaving first can abort its teardown
    dist.destroy_process_group()
