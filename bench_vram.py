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

The step is the one train.py runs (forward under autocast, GradScaler'd backward, clip, AdamW step),
on a synthetic batch of the right shape: memory and speed depend on shapes, not on pixel values.
Model and optimizer are built exactly as train.py builds them: MusicTrOCR(config), lora.apply_lora /
quant.quantize_model_nf4 for the LoRA and QLoRA modes, model.configure_optimizers.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import tempfile
import time

import torch

GIB = 1024 ** 3
MIB = 1024 ** 2
ALL_BACKBONES = ['resnet50', 'efficientnet_b0', 'convnext_tiny', 'vit_small', 'deit_small',
                 'swin_tiny', 'mobilevit_small']
ALL_MODES = ['full', 'frozen', 'lora_r4', 'lora_r8', 'lora_r16', 'qlora_r8']
# the CPU smoke configuration: cnn_tiny under a one-layer decoder, small enough for CI
CPU_TINY = dict(n_layer=1, n_head=2, d_model=64, d_ff=128, vocab_size=256, max_seq_len=64)
TIERS_GB = (16, 24, 48)  # consumer / prosumer / datacenter cards; treated as GiB, as vendors sell them

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
    """MusicTrOCR for one (backbone, mode); returns the model on `device`, in train mode."""
    from model import MusicTrOCR, MusicTrOCRConfig
    freeze, rank, quant = parse_mode(mode)
    # as train.py: LoRA / QLoRA train the encoder through the adapters only, so the rest of the
    # backbone (norms, biases, layers too small to quantize) is frozen too, BatchNorm in eval mode
    freeze = freeze or rank > 0 or quant is not None
    args = dict(backbone=backbone, pretrained=None, img_height=img_height, freeze_backbone=freeze)
    args.update(model_args or {})
    model = MusicTrOCR(MusicTrOCRConfig(**args))
    # QLoRA = NF4-frozen backbone + LoRA on top (Dettmers et al. 2023): quantize first, then wrap,
    # so the adapters sit beside the 4-bit weights, which never receive a gradient.
    if quant == 'nf4':
        import quant as nf4
        nf4.quantize_model_nf4(model.backbone)
    if rank:
        import lora
        lora.apply_lora(model, rank=rank, targets=('backbone.',))
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


def amp_context(device_type, dtype):
    """train.py's precision: autocast bf16 (fp16 + GradScaler where bf16 is missing), fp32 on CPU."""
    if device_type == 'cpu' or dtype == 'float32':
        return contextlib.nullcontext(), torch.amp.GradScaler(device_type, enabled=False)
    ptdtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    return (torch.amp.autocast(device_type=device_type, dtype=ptdtype),
            torch.amp.GradScaler(device_type, enabled=(dtype == 'float16')))


def train_step(model, optimizer, scaler, ctx, batch, grad_clip=1.0, zero_grad=True):
    """One micro-step + optimizer step, the same calls in the same order as train.py."""
    images, idx, targets, widths = batch
    with ctx:
        _, loss = model(images, idx, targets, widths=widths)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
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
# SER of real runs, Pareto frontiers, recommendations


def pareto_front(points, maximize_x=False):
    """Indices of the non-dominated points (x, ser): lower SER, and lower x (or higher x)."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0] if maximize_x else points[i][0],
                                                      points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def recommend(rows, runs):
    """Per tier: among configurations whose largest batch was MEASURED to fit, the lowest SER of a
    matching run (same backbone and mode); ties and SER-less candidates ranked by samples/s."""
    ser = {}
    for r in runs:
        if r.get('ser') is not None:
            k = (r['backbone'], r['mode'])
            ser[k] = min(ser.get(k, math.inf), r['ser'])
    recs = {}
    for tier in {t for row in rows for t in row['fit']}:
        cands = [row for row in rows if (row['fit'][tier].get('measured') or 0) >= 1]
        if not cands:
            recs[tier] = dict(note='no GPU measurement of a fitting batch for this tier: no recommendation')
            continue
        best = min(cands, key=lambda r: (ser.get((r['backbone'], r['mode']), math.inf), -r['samples_per_sec']))
        s = ser.get((best['backbone'], best['mode']))
        recs[tier] = dict(backbone=best['backbone'], mode=best['mode'], img_height=best['img_height'],
                          batch_size=best['fit'][tier]['measured'], samples_per_sec=best['samples_per_sec'],
                          expected_ser=s, ser_note=None if s is not None else
                          'no run of this configuration given (--runs): SER unknown, picked by samples/s')
    return dict(sorted(recs.items(), key=lambda kv: int(kv[0])))

# -----------------------------------------------------------------------------
# writers


def fmt_mib(b):
    return '-' if b is None else f'{b / MIB:,.1f}'


def markdown_table(rows, cuda):
    act = 'act+workspace MiB' if cuda else 'activations MiB (estimate)'
    head = ['backbone', 'mode', 'H x W', 'batch', 'trainable params', 'params+buffers MiB', 'grads MiB',
            'AdamW MiB', act, 'peak MiB', 'step ms', 'samples/s', 'tokens/s']
    tiers = sorted({t for r in rows for t in r['fit']}, key=int)
    head += [f'max batch {t} GB' for t in tiers]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['backbone'], r['mode'], f"{r['img_height']} x {r['img_width']}", str(r['batch_size']),
                 f"{r['trainable_params']:,}", fmt_mib(r['param_bytes'] + r['buffer_bytes']),
                 fmt_mib(r['grad_bytes']), fmt_mib(r['optimizer_bytes']), fmt_mib(r['activation_bytes']),
                 fmt_mib(r['peak_bytes']), f"{r['step_ms']:.1f}", f"{r['samples_per_sec']:.1f}",
                 f"{r['tokens_per_sec']:,.0f}"]
        for t in tiers:  # measured by trying where the search ran, else '~' + the linear-fit estimate
            f = r['fit'][t]
            if f.get('measured') is not None:
                cells.append(str(f['measured']))
            else:
                cells.append('-' if f.get('predicted') is None else f"~{f['predicted']}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def recommendation_table(recs):
    lines = ['| tier | backbone | mode | H | max batch (measured) | samples/s | expected SER |',
             '|---|---|---|---|---|---|---|']
    for tier, r in recs.items():
        if 'backbone' not in r:
            lines.append(f"| {tier} GB | {r['note']} | | | | | |")
            continue
        s = f"{100 * r['expected_ser']:.2f}%" if r['expected_ser'] is not None else 'unknown (no run given)'
        lines.append(f"| {tier} GB | {r['backbone']} | {r['mode']} | {r['img_height']} | {r['batch_size']} "
                     f"| {r['samples_per_sec']:.1f} | {s} |")
    return '\n'.join(lines)


def atomic_write(path, data, mode='w'):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + '.tmp-')
    with os.fdopen(fd, mode) as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_savefig(fig, path):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + '.tmp-', suffix='.png')
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches='tight')
    os.replace(tmp, path)


def plot_memory(rows, path, title, tiers=TIERS_GB):
    """Stacked bars: params / grads / AdamW / activations per configuration, tier lines on top."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ref = {}
    for r in rows:  # one bar per (backbone, mode, height): the largest measured batch
        k = (r['backbone'], r['mode'], r['img_height'])
        if k not in ref or r['batch_size'] > ref[k]['batch_size']:
            ref[k] = r
    bars = list(ref.values())
    # a tiny CPU configuration takes megabytes: drawn in GiB next to 16 GB it would be invisible
    top = max(r['static_bytes'] + max(0, r['activation_bytes']) for r in bars)
    unit, uname = (GIB, 'GiB') if top > 0.5 * GIB else (MIB, 'MiB')
    parts = [('parameters + buffers', lambda r: r['param_bytes'] + r['buffer_bytes'], '#4c72b0'),
             ('gradients', lambda r: r['grad_bytes'], '#dd8452'),
             ('AdamW state', lambda r: r['optimizer_bytes'], '#55a868'),
             ('activations + workspace', lambda r: max(0, r['activation_bytes']), '#c44e52')]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(bars) + 2), 5))
    x = range(len(bars))
    bottom = [0.0] * len(bars)
    for label, get, color in parts:
        h = [get(r) / unit for r in bars]
        ax.bar(x, h, bottom=bottom, label=label, color=color)
        bottom = [a + b for a, b in zip(bottom, h)]
    if unit == GIB:
        for t in tiers:
            ax.axhline(t, color='k', ls='--', lw=0.8)
            ax.text(len(bars) - 0.5, t, f' {t} GB', va='bottom', ha='right', fontsize=8)
    else:
        title += f"\n(MiB scale: the {'/'.join(map(str, tiers))} GB lines lie far above it)"

    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{r['backbone']}\n{r['mode']} b{r['batch_size']}" for r in bars],
                       rotation=60, ha='right', fontsize=7)
    ax.set_ylabel(uname)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc='upper left')
    atomic_savefig(fig, path)
    plt.close(fig)


def plot_pareto(runs, path, title):
    """SER vs peak memory and SER vs samples/s of the given runs, frontier drawn as a step line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, xlabel, maximize in ((axes[0], 'peak_mem_mb', 'peak memory (MiB, from the run log)', False),
                                      (axes[1], 'samples_per_sec', 'samples/s (from the run log)', True)):
        pts = [(r[key], 100 * r['ser'], r['name']) for r in runs
               if r.get(key) is not None and r.get('ser') is not None]
        for x, y, name in pts:
            ax.scatter(x, y, color='#4c72b0')
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords='offset points')
        if pts:
            front = [pts[i] for i in pareto_front([(p[0], p[1]) for p in pts], maximize_x=maximize)]
            ax.step([p[0] for p in front], [p[1] for p in front], where='post', color='#c44e52', marker='o',
                    mfc='none', ms=11, label='Pareto frontier')
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f'no run logged {key}', transform=ax.transAxes, ha='center')
        ax.set_xlabel(xlabel)
        ax.set_ylabel('SER (%)')
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    atomic_savefig(fig, path)
    plt.close(fig)

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
    backbones = split(args.backbones) if args.backbones else (ALL_BACKBONES if cuda else ['cnn_tiny'])
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
    if args.dtype == 'auto':
        args.dtype = 'bfloat16' if cuda and torch.cuda.is_bf16_supported() else 'float16'
    if not cuda:
        args.dtype = 'float32'
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
    for bb in backbones:
        for mode in modes:
            for h in heights:
                print(f"measuring {bb} / {mode} / {h}px on {gpu or 'cpu'} ...", file=sys.stderr, flush=True)
                rows += measure(bb, mode, h, batch_sizes, args, device)
    cmd = 'python bench_vram.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    return dict(device=device, gpu=gpu, no_gpu=not cuda, dtype=args.dtype, torch=torch.__version__, command=cmd,
                seq_len=args.seq_len, iters=args.iters, tiers=args.tiers, context_bytes=args.context_bytes,
                model_args=args.model_args, rows=rows)


def write_report(meas, runs, results_dir):
    """Tables, plots and the JSON of one measurement record (+ the runs' SER) into results_dir."""
    cuda, rows = meas['device'] == 'cuda', meas['rows']
    recs = recommend(rows, runs) if cuda else {str(t): dict(
        note='no GPU was present: nothing measured, no recommendation') for t in meas['tiers']}
    tag = 'cuda' if cuda else 'cpu'
    where = meas['gpu'] or 'CPU (no GPU present; tiny configuration)'
    table = markdown_table(rows, cuda)
    md = [f'# bench_vram: {where}', '', f"Command: `{meas['command']}`  ",
          f"dtype {meas['dtype']}, torch {meas['torch']}, synthetic batch (image H x W, {meas['seq_len']} target "
          f"tokens per sample), one optimizer step per point, median of {meas['iters']}.", '']
    if not cuda:
        md += ['**No GPU was present.** Activations are an estimate (tensors saved for backward); '
               'the max-batch columns are estimates from a linear fit, not measured.', '']
    md += [table, '', 'max batch N: the largest micro-batch that ran within the tier (--search, OOM caught); '
           '~N: an estimate from a linear fit of two measured points, not tried.', '',
           '## Recommendation per memory tier', '',
           'Among configurations measured to fit, the lowest SER of a matching run (--runs: ' +
           (', '.join(r['name'] for r in runs) or 'none given') + ').', '', recommendation_table(recs), '']
    os.makedirs(results_dir, exist_ok=True)
    files = dict(table=os.path.join(results_dir, f'bench_vram_{tag}.md'),
                 json=os.path.join(results_dir, f'bench_vram_{tag}.json'),
                 memory_png=os.path.join(results_dir, f'bench_vram_memory_{tag}.png'))
    plot_memory(rows, files['memory_png'], f'memory breakdown per training step: {where}'
                + ('' if cuda else ' (activations ESTIMATED)'), meas['tiers'])
    if runs:
        files['pareto_png'] = os.path.join(results_dir, f'bench_vram_pareto_{tag}.png')
        plot_pareto(runs, files['pareto_png'], 'SER vs memory and throughput of the given runs')
    atomic_write(files['table'], '\n'.join(md))
    report = dict(meas, runs=[{k: v for k, v in r.items() if k != 'log'} for r in runs],
                  recommendations=recs, files=files)
    atomic_write(files['json'], json.dumps(report, indent=1))
    print(table)
    print()
    print(recommendation_table(recs))
    print(json.dumps(report))


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
        from study import expand, read_run
        runs = [read_run(d) for d in expand(args.runs)]
    write_report(meas, runs, args.results_dir)


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        sys.exit(f"error: {e}")
