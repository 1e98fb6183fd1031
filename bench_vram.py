"""
bench_vram.py: the VRAM budget guide. Measured memory and throughput of one real training step
per backbone x training mode x micro-batch x image height, the memory breakdown behind each peak,
the largest micro-batch that fits a 16 / 24 / 48 GB card, Pareto plots against the SER of real
runs, and a recommendation per memory tier.

    # on a GPU: the seven backbones, full / LoRA r8 / QLoRA r8, at 224 px, with the batch search
    python bench_vram.py --modes=full,lora_r8,qlora_r8 --img_heights=224 --batch_sizes=8,16 --search
    # add the Pareto plots and the per-tier SER from finished training runs
    python bench_vram.py --modes=full,lora_r8,qlora_r8 --search --runs='out-study/*'
    # on a CPU (CI, this laptop): a tiny configuration; exact static bytes, activations estimated
    python bench_vram.py

Where the bytes of a training step go (mixed precision, AdamW):
  parameters   every parameter and buffer the model holds (NF4 packed weights + absmax included)
  gradients    one tensor per trainable parameter, same shape and dtype (fp32 master weights)
  optimizer    AdamW's exp_avg + exp_avg_sq per trainable parameter, plus a scalar `step` each
  activations  what the forward pass saves for backward, plus cuBLAS/cuDNN workspaces and the
               allocator's transients: measured as  peak - (parameters + gradients + optimizer)
The first three are counted exactly, tensor by tensor. The last one needs a GPU: on a CPU the
script prints that no GPU was present and gives an *estimate* of it from the tensors autograd saves
(torch.autograd.graph.saved_tensors_hooks), which misses workspaces and transients.

The step is train.py's own (step.train_step: forward under autocast, GradScaler'd backward, clip,
AdamW step), on a synthetic batch of the right shape: memory and speed depend on shapes, not on pixel
values. The model is built by model.build_model, as train.py builds it (NF4 and LoRA for the QLoRA and
LoRA modes), the optimizer by model.configure_optimizers, the precision by step.amp_context.
"""

import argparse
import contextlib
import gc
import json
import sys
import time

import torch

import backbones
import model as M
from bench.vram_report import GIB, write_report
from training import step
from training.runlog import expand, read_run
from training.step import amp_context, resolve_dtype  # train.py's precision

ALL_MODES = ['full', 'frozen', 'lora_r4', 'lora_r8', 'lora_r16', 'qlora_r8']
# the CPU smoke configuration: cnn_tiny under a one-layer decoder, small enough for CI
CPU_TINY = dict(n_layer=1, n_head=2, d_model=64, d_ff=128, vocab_size=256, max_seq_len=64)

# -----------------------------------------------------------------------------
# building the model of one configuration, the way train.py does


def parse_mode(mode):
    """'full' | 'frozen' | 'lora_r8' | 'qlora_r8' -> (freeze_backbone, lora_rank, quant_backbone)."""
    if mode == 'full':
        return False, 0, None
    if mode == 'frozen':
        return True, 0, None
    for prefix, quant in (('qlora_r', 'nf4'), ('lora_r', None)):
        if mode.startswith(prefix) and mode[len(prefix):].isdigit() and int(mode[len(prefix):]) > 0:
            return False, int(mode[len(prefix):]), quant
    raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(ALL_MODES)} (any lora_rN / qlora_rN)")


def build_model(backbone, mode, img_height, model_args=None, device='cpu'):
    """MusicTrOCR for one (backbone, mode) through model.build_model; on `device`, in train mode."""
    freeze, rank, quant = parse_mode(mode)
    args = dict(backbone=backbone, pretrained=None, img_height=img_height, freeze_backbone=freeze)
    args.update(model_args or {})
    model = M.build_model(args, lora_args=dict(rank=rank, targets=('backbone.',)) if rank else None,
                          quant_args=dict(backbone=quant) if quant else None)
    return model.to(device).train()


def make_optimizer(model, device_type, lr=3e-4, weight_decay=0.01, betas=(0.9, 0.99)):
    """AdamW through the model's own recipe (decay on matrices only; fused on CUDA), called as train.py
    calls it with the config/*.py values. The values change no byte and no FLOP, only the numbers."""
    return model.configure_optimizers(weight_decay, lr, betas, device_type)


def synthetic_batch(batch_size, img_height, img_width, seq_len, vocab_size, device, seed=0):
    """A batch shaped like data.collate's: random pixels and token ids, every image full width.
    Memory and speed depend on the shapes, not the values."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, img_height, img_width, generator=g)   # (B, 3, H, W)
    ids = torch.randint(3, vocab_size, (batch_size, seq_len + 1), generator=g)  # (B, T+1)
    idx, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()           # (B, T) each
    widths = torch.full((batch_size,), img_width, dtype=torch.long)
    return [t.to(device) for t in (images, idx, targets, widths)]


def train_step(model, optimizer, scaler, ctx, batch, grad_clip=1.0, zero_grad=True):
    """One optimizer step on one micro-batch: train.py's step.train_step. Returns the loss."""
    loss, _ = step.train_step(model, optimizer, scaler, ctx, iter([batch]), 1, grad_clip, zero_grad=zero_grad)
    return loss.item()

# -----------------------------------------------------------------------------
# exact static bytes


def nbytes(t):
    return t.numel() * t.element_size()


def static_breakdown(model, optimizer, device):
    """Bytes held on `device` by parameters (+ buffers), gradients and optimizer state.

    Counted tensor by tensor. Gradients: the real .grad tensors when they exist, else the bytes
    they will take (a grad always has its parameter's shape and dtype). Optimizer: every tensor in
    optimizer.state (AdamW: exp_avg, exp_avg_sq, step), so call it after at least one step.
    Tensors elsewhere (AdamW's scalar `step` stays on the host unless fused/capturable) are
    reported apart, in optimizer_host_bytes, since they take no GPU memory."""
    device = torch.device(device)
    on_dev = lambda t: t.device.type == device.type
    params = list(model.parameters())
    out = dict(param_bytes=sum(nbytes(p) for p in params if on_dev(p)),
               buffer_bytes=sum(nbytes(b) for b in model.buffers() if on_dev(b)),
               trainable_params=sum(p.numel() for p in params if p.requires_grad),
               total_params=sum(p.numel() for p in params))
    out['grad_bytes'] = sum(nbytes(p.grad if p.grad is not None else p)
                            for p in params if p.requires_grad and on_dev(p))
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    if not state:
        raise RuntimeError("optimizer has no state yet: run one step before static_breakdown")
    out['optimizer_bytes'] = sum(nbytes(t) for t in state if on_dev(t))
    out['optimizer_host_bytes'] = sum(nbytes(t) for t in state if not on_dev(t))
    out['static_bytes'] = (out['param_bytes'] + out['buffer_bytes'] + out['grad_bytes']
                           + out['optimizer_bytes'])
    return out


def estimate_saved_activations(model, ctx, batch):
    """ESTIMATE of activation memory: bytes of the tensors autograd saves during one forward.

    Distinct storages are counted once; parameters and buffers are excluded (counted as static).
    Misses the temporaries freed inside the forward, the backward's own transients and library
    workspaces, so the real peak is higher: this is a lower bound, labelled as an estimate."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    own |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            seen[s.data_ptr()] = s.nbytes()
        return t

    images, idx, targets, widths = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        _, loss = model(images, idx, targets, widths=widths)
    del loss
    return sum(seen.values())

# -----------------------------------------------------------------------------
# the largest micro-batch that fits


def is_oom(err):
    """torch.cuda.OutOfMemoryError, or a library's allocation failure that surfaces as a plain
    RuntimeError (cuBLAS/cuDNN workspaces: 'CUDA error: out of memory')."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or 'out of memory' in str(err).lower()


def fits(step_at, batch_size, budget_bytes):
    """True if one step at `batch_size` runs and peaks within budget; an OOM means False.

    The OOM handler only records the failure: the exception's traceback pins the step's
    activations, so the cache is cleared after leaving the except block (PyTorch FAQ)."""
    peak, oom = None, False
    try:
        peak = step_at(batch_size)
    except RuntimeError as err:
        if not is_oom(err):
            raise
        oom = True
    if oom:
        if torch.cuda.is_available():
            gc.collect()
            torch.cuda.empty_cache()
        return False
    return peak <= budget_bytes


def largest_batch(step_at, budget_bytes, start=1, limit=4096):
    """Largest batch size b in [1, limit] with fits(step_at, b, budget), assuming fit is monotone.

    Starts at `start` (a prediction, see predict_batch), doubles up or halves down to bracket the
    boundary, then bisects: about 2 log2(error) steps from a good guess. Returns (best, tried) with
    best = 0 when not even batch 1 fits; tried maps every probed size to True/False."""
    tried = {}

    def ok(b):
        if b not in tried:
            tried[b] = fits(step_at, b, budget_bytes)
        return tried[b]

    start = max(1, min(int(start), limit))
    if ok(start):
        lo, hi = start, None
        while hi is None:
            if lo == limit:
                return lo, tried
            nxt = min(lo * 2, limit)
            if ok(nxt):
                lo = nxt
            else:
                hi = nxt
    else:
        lo, hi = None, start
        while lo is None:
            if hi == 1:
                return 0, tried
            nxt = hi // 2
            if ok(nxt):
                lo = nxt
            else:
                hi = nxt
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried


def predict_batch(b1, peak1, b2, peak2, budget_bytes):
    """ESTIMATE from two measured points: peak(b) ~ static + b * per_sample, solved for the budget."""
    if b1 == b2:
        raise ValueError("predict_batch needs two different batch sizes")
    per_sample = (peak2 - peak1) / (b2 - b1)
    static = peak1 - b1 * per_sample
    if per_sample <= 0:
        return None
    return max(0, int((budget_bytes - static) // per_sample))

# -----------------------------------------------------------------------------
# one configuration, measured


def measure(backbone, mode, img_height, batch_sizes, args, device):
    """All figures of one (backbone, mode, height): a row per batch size + the tier search."""
    device_type = torch.device(device).type
    cuda = device_type == 'cuda'
    img_width = int(round(img_height * args.aspect))
    with contextlib.redirect_stdout(sys.stderr):  # configure_optimizers prints; stdout is the table's
        model = build_model(backbone, mode, img_height, model_args=args.model_args, device=device)
        optimizer = make_optimizer(model, device_type)
    ctx, scaler = amp_context(device_type, args.dtype)
    amp = [ctx, scaler]
    vocab = model.config.vocab_size
    rows = []

    held = {}  # the synthetic batch of the current size, already on the device: its bytes count toward the
    # peak (a real step holds its batch too), its creation and upload do not count toward the step time

    def step_at(b, zero_grad=True):
        """Run one step at batch b and return the peak allocated bytes (None on CPU)."""
        if b not in held:
            held.clear()
            held[b] = synthetic_batch(b, img_height, img_width, args.seq_len, vocab, device)
        batch = held[b]
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        try:
            train_step(model, optimizer, amp[1], amp[0], batch, zero_grad=zero_grad)
        except RuntimeError as err:
            if is_oom(err):
                # leave the model as a fresh step expects it: no half-written grads, and a new
                # GradScaler, since the old one may have unscaled this step already
                optimizer.zero_grad(set_to_none=True)
                amp[:] = amp_context(device_type, args.dtype)
            raise
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return None

    for b in batch_sizes:
        for _ in range(args.warmup):  # first step allocates AdamW state; cuDNN picks algorithms
            step_at(b)
        times, peak = [], 0
        for i in range(args.iters):
            t0 = time.perf_counter()
            p = step_at(b, zero_grad=(i < args.iters - 1))  # keep the last grads to count them
            times.append(time.perf_counter() - t0)
            peak = max(peak, p or 0)
        row = dict(backbone=backbone, mode=mode, img_height=img_height, img_width=img_width,
                   seq_len=args.seq_len, batch_size=b)
        row.update(static_breakdown(model, optimizer, device))
        optimizer.zero_grad(set_to_none=True)
        dt = sorted(times)[len(times) // 2]  # median step: robust to one slow step
        row.update(step_ms=1000 * dt, samples_per_sec=b / dt, tokens_per_sec=b * args.seq_len / dt)
        if cuda:
            row.update(peak_bytes=peak, activation_bytes=peak - row['static_bytes'],
                       activation_source='measured: peak - static')
        else:
            est = estimate_saved_activations(model, amp[0], held[b])
            row.update(peak_bytes=None, activation_bytes=est,
                       activation_source='estimate: tensors saved for backward (no GPU)')
        rows.append(row)

    # the largest batch per tier: first predicted from the first and last measured points...
    peak_of = lambda r: r['peak_bytes'] if cuda else r['static_bytes'] + r['activation_bytes']
    fit = {}
    for tier in args.tiers:
        budget = tier * GIB - args.context_bytes
        guess = None
        if len(rows) >= 2:
            r1, r2 = rows[0], rows[-1]
            guess = predict_batch(r1['batch_size'], peak_of(r1), r2['batch_size'], peak_of(r2), budget)
        entry = dict(budget_bytes=budget, predicted=guess,
                     predicted_source='estimate: linear fit of ' + ('measured peaks' if cuda else
                                                                   'static + estimated activations'))
        if cuda and args.search:
            # ...then verified by trying. This card plays the smaller one: the caching allocator refuses
            # to grow past the fraction, so an OOM here is the OOM the smaller card would raise
            index = torch.cuda.current_device()  # the fraction API wants an index, not 'cuda'
            total = torch.cuda.get_device_properties(index).total_memory
            if budget <= total:
                # the cap only binds new cudaMallocs: blocks cached from bigger steps would slip past it
                held.clear()
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), index)
                try:
                    best, tried = largest_batch(step_at, budget, start=guess or batch_sizes[0],
                                                limit=args.max_batch)
                finally:
                    torch.cuda.set_per_process_memory_fraction(1.0, index)
                entry.update(measured=best, tried={str(k): v for k, v in sorted(tried.items())})
            else:
                entry.update(measured=None, note=f'card has only {total / GIB:.1f} GiB')
        fit[str(tier)] = entry
    for row in rows:
        row['fit'] = fit
    del model, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows

# -----------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--backbones', default=None, help='comma list; default: the seven on CUDA, cnn_tiny on CPU')
    p.add_argument('--modes', default=None, help=f"comma list of {','.join(ALL_MODES)}; default: all "
                   "on CUDA, full,frozen,lora_r8,qlora_r8 on CPU")
    p.add_argument('--batch_sizes', default=None, help='micro-batches to measure, e.g. 8,16 (two give the '
                   'linear fit that seeds the search); default 8,16 on CUDA, 1,2 on CPU')
    p.add_argument('--img_heights', default=None, help='e.g. 128,224,320; default 224 on CUDA, 32 on CPU')
    p.add_argument('--aspect', type=float, default=4.0, help='image width / height (224 -> 896)')
    p.add_argument('--seq_len', type=int, default=None, help='target tokens per sample; default 256 (CPU 32)')
    p.add_argument('--model', default=None, help='decoder overrides as JSON, e.g. \'{"n_layer": 2}\'; '
                   'default: MusicTrOCRConfig defaults on CUDA, a tiny decoder on CPU')
    p.add_argument('--device', default='auto', help="'auto' (cuda if present), 'cuda', 'cpu'")
    p.add_argument('--dtype', default='auto', help="'auto' (bfloat16 if supported, else float16), "
                   "'bfloat16', 'float16', 'float32'; CPU always runs float32, as train.py does")
    p.add_argument('--warmup', type=int, default=None, help='untimed steps per point; default 2 (CPU 1)')
    p.add_argument('--iters', type=int, default=None, help='timed steps per point, median reported; '
                   'default 3 (CPU 1)')
    p.add_argument('--search', action='store_true', help='CUDA: find the largest batch per tier by trying')
    p.add_argument('--tiers', default='16,24,48', help='memory tiers in GB (GiB)')
    p.add_argument('--max_batch', type=int, default=1024)
    p.add_argument('--runs', default='', help="run dirs for SER: 'out-a,out-b' or 'out-study/*'")
    p.add_argument('--results_dir', default='results')
    p.add_argument('--from_json', default=None, help="measure nothing: re-render bench_vram_*.json file(s), "
                   "comma-separated (e.g. from a GPU machine, one per call), with the SER of --runs")
    p.add_argument('--seed', type=int, default=1337)
    return p.parse_args(argv)


def measure_all(args, argv):
    """Every configuration on this machine -> the measurement record (what --from_json reads back)."""
    cuda = torch.cuda.is_available() if args.device == 'auto' else args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("--device=cuda asked for, but torch sees no CUDA device")
    device = 'cuda' if cuda else 'cpu'
    split = lambda s, f=str: [f(x) for x in s.split(',') if x]
    names = split(args.backbones) if args.backbones else (backbones.STUDY_BACKBONES if cuda else ['cnn_tiny'])
    modes = split(args.modes) if args.modes else (ALL_MODES if cuda else ['full', 'frozen', 'lora_r8', 'qlora_r8'])
    for m in modes:
        parse_mode(m)
    batch_sizes = split(args.batch_sizes, int) if args.batch_sizes else ([8, 16] if cuda else [1, 2])
    heights = split(args.img_heights, int) if args.img_heights else ([224] if cuda else [32])
    args.tiers = split(args.tiers, int)
    args.seq_len = args.seq_len or (256 if cuda else 32)
    args.warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    args.iters = max(1, args.iters if args.iters is not None else (3 if cuda else 1))
    args.model_args = json.loads(args.model) if args.model else ({} if cuda else dict(CPU_TINY))
    args.dtype = resolve_dtype(device, 'bfloat16' if args.dtype == 'auto' else args.dtype)  # as train.py
    torch.manual_seed(args.seed)
    gpu = torch.cuda.get_device_name(0) if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as train.py
        torch.backends.cudnn.allow_tf32 = True
        # the CUDA context and driver take memory outside PyTorch's allocator; a smaller card pays the
        # same, so each tier's budget for the allocator is the tier minus this measured overhead
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info()
        args.context_bytes = total - free - torch.cuda.memory_reserved()
    else:
        args.context_bytes = 0
        print("NO GPU PRESENT: this is a CPU run. Parameter, gradient and AdamW bytes are exact; "
              "activation memory and the batch that fits each tier are ESTIMATES, and no peak memory "
              "was measured.", flush=True)
    rows = []
    for bb in names:
        for mode in modes:
            for h in heights:
                print(f"measuring {bb} / {mode} / {h}px on {gpu or 'cpu'} ...", file=sys.stderr, flush=True)
                rows += measure(bb, mode, h, batch_sizes, args, device)
    cmd = 'python bench_vram.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    return dict(device=device, gpu=gpu, no_gpu=not cuda, dtype=args.dtype, torch=torch.__version__, command=cmd,
                seq_len=args.seq_len, iters=args.iters, tiers=args.tiers, context_bytes=args.context_bytes,
                model_args=args.model_args, rows=rows)


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:  # re-render measurements (e.g. a GPU machine's) with the SER of runs finished since
        meas = None
        for path in [p for p in args.from_json.split(',') if p]:  # several: a sweep split over calls
            with open(path) as f:
                part = json.load(f)
            keys = ('device', 'gpu', 'no_gpu', 'dtype', 'torch', 'command', 'seq_len', 'iters', 'tiers',
                    'context_bytes', 'model_args', 'rows')
            missing = [k for k in keys if k not in part]
            if missing:
                raise ValueError(f"{path} is not a bench_vram JSON: it lacks {', '.join(missing)}")
            if meas is None:
                meas = {k: part[k] for k in keys}
                continue
            if (part['gpu'], part['dtype'], part['seq_len']) != (meas['gpu'], meas['dtype'], meas['seq_len']):
                raise ValueError(f"{path} was measured on another device or setting than {args.from_json.split(',')[0]}")
            meas['rows'] += part['rows']
            meas['command'] += ' ; ' + part['command']
    else:
        meas = measure_all(args, argv)
    runs = []
    if args.runs:
        runs = [read_run(d) for d in expand(args.runs)]
    write_report(meas, runs, args.results_dir)


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        sys.exit(f"error: {e}")
