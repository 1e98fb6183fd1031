"""
quant.py: weight quantization for nanoOMR, written by hand (no bitsandbytes).

Two jobs live here, both about storing weights in fewer bits:

1. NF4 (4-bit NormalFloat, Dettmers et al. 2023, "QLoRA", arXiv:2305.14314) for *training*:
   the backbone is frozen in NF4 and LoRA adapters (lora.py) learn on top of it. The storage
   format follows bitsandbytes bit for bit, so the tensors are interchangeable with that library:
     - the 16-value NF4 code book below (bitsandbytes `get_4bit_type('nf4')`);
     - blocks of `blocksize`=64 consecutive elements of the *flattened* weight, one fp32 absmax each;
     - each element -> nearest code of w / absmax (ties go to the lower code, like argmin);
     - two 4-bit codes per byte, the FIRST element in the HIGH nibble;
     - a short final block is quantized with its own absmax; if the element count is odd the
       last byte's low nibble is padding (0) and is ignored by the decoder.
     - bitsandbytes stores the packed bytes as shape (n_bytes, 1); ours is 1-D (n_bytes,): same bytes.
     - all-zero blocks: absmax = 0, every element gets code 7 (the exact 0.0) and decodes to 0, no NaN.
   Optional double quantization ("DQ", QLoRA section 3): the fp32 absmaxes are themselves stored in
   8 bits: subtract their mean, split into blocks of 256, divide each block by its own fp32 absmax and
   round to the nearest value of bitsandbytes' signed *dynamic* 8-bit map (Dettmers 2015,
   arXiv:1511.04561; `create_dynamic_map(signed=True)`, rebuilt in `dynamic_map()` below).

   Storage per quantized parameter (exact arithmetic, tested against the real buffers):
     single:  4 bits + 32/64 bits             = 0.5625  bytes/param   (blocksize 64)
     double:  4 bits + 8/64 + 32/(64*256) bits = 0.51587 bytes/param  (blocksize 64)
     double, blocksize 128                     = 0.50794 bytes/param
   (So the fixed bitsandbytes layout cannot go below 0.5 + 1/blocksize bytes/param.)

2. Post-training quantization (PTQ) for *inference*: fp16/bf16 casts, INT8 weight-only (symmetric,
   one scale per output channel, our own modules) and INT8 dynamic (activations quantized on the fly
   per batch, PyTorch's own `torch.ao.quantization.quantize_dynamic` on nn.Linear, fbgemm/x86 kernels).

Run as a script it measures every PTQ mode on a trained run:
    python quant.py --out_dir=out-quickstart --mode=all        # or e.g. --mode=fp16,int8
and prints (and writes to <out_dir>/quant.md + quant.json) size on disk, val SER, CPU speed.
"""

import math
import os
import sys
import json
import time
import tempfile
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# NF4 code book: the 16 quantiles of N(0,1), normalized to [-1, 1], with an exact 0.
# Copied from the bitsandbytes table (also in its CUDA kernels), so codes are interchangeable.
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=torch.float32)
# decision thresholds: nearest-code rounding == bucketize against the midpoints between codes
# (bitsandbytes' CUDA `dQuantizeNF4` hard-codes exactly these midpoints, e.g. 0.8614784 = (0.72296+1)/2)
NF4_MIDPOINTS = (NF4_CODE[:-1] + NF4_CODE[1:]) / 2
# byte -> (value of high nibble, value of low nibble): decoding becomes a single table gather
NF4_BYTE_LUT = torch.stack([NF4_CODE[torch.arange(256) >> 4], NF4_CODE[torch.arange(256) & 15]], dim=1)  # (256, 2)


def dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes' dynamic 8-bit data type (create_dynamic_map), used for double quantization.
    Each 'exponent' i covers one decade 10^(i-6) .. 10^(i-5), and inside it the fraction gets
    2^i evenly spaced bins (their midpoints are the values). Small numbers get fine resolution
    relative to their size, which is what absmax statistics spread over decades need."""
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        n = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        bounds = torch.linspace(0.1, 1, n)  # fp32, like the original
        means = ((bounds[:-1] + bounds[1:]) / 2.0).tolist()
        data += [10 ** (-(max_exponent_bits - 1) + i) * m for m in means]
        if signed:
            data += [-10 ** (-(max_exponent_bits - 1) + i) * m for m in means]
    data += [0.0, 1.0]
    data += [0.0] * (2 ** total_bits - len(data))  # no-op for the signed 8-bit map (already 256)
    return torch.tensor(sorted(data), dtype=torch.float32)


DYN_CODE = dynamic_map()  # (256,) sorted, from about -0.993 to 1.0
DYN_MIDPOINTS = (DYN_CODE[:-1] + DYN_CODE[1:]) / 2


_TABLES = {}


def _table(t, device):
    """A constant table (code book, LUT) on `device`, copied there once: a fresh host-to-device copy
    in every forward of every layer would stall the GPU."""
    key = (id(t), device)
    if key not in _TABLES:
        _TABLES[key] = t.to(device)
    return _TABLES[key]


def _blockify(flat, blocksize):
    """(n,) -> (n_blocks, blocksize), zero-padding the short final block (zeros never raise an absmax)."""
    n = flat.numel()
    n_blocks = -(-n // blocksize)  # ceil
    if n_blocks * blocksize != n:
        flat = F.pad(flat, (0, n_blocks * blocksize - n))
    return flat.view(n_blocks, blocksize)


def _blockwise_codes(flat, blocksize, midpoints):
    """Shared by NF4 and the 8-bit absmax quantizer: absmax per block, nearest code per element."""
    blocks = _blockify(flat.float(), blocksize)                       # (n_blocks, bs)
    absmax = blocks.abs().amax(dim=1)                                 # (n_blocks,) fp32
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))   # all-zero block: divide by 1, not 0
    scaled = (blocks / safe[:, None]).clamp_(-1, 1)                   # (n_blocks, bs) in [-1, 1]
    # bucketize(right=False) puts x exactly on a midpoint into the lower bucket: same as argmin's first hit
    codes = torch.bucketize(scaled, _table(midpoints, scaled.device)).view(-1)[: flat.numel()]
    return codes.to(torch.uint8), absmax


def quantize_nf4(w, blocksize=64):
    """Any-shaped float tensor -> (packed uint8 (ceil(n/2),), absmax fp32 (ceil(n/blocksize),))."""
    flat = w.detach().reshape(-1)
    codes, absmax = _blockwise_codes(flat, blocksize, NF4_MIDPOINTS)   # codes: (n,) in 0..15
    if codes.numel() % 2:
        codes = F.pad(codes, (0, 1))  # odd count: the padding nibble is 0, never decoded
    packed = (codes[0::2] << 4) | codes[1::2]  # first element of each pair -> high nibble
    return packed, absmax


def dequantize_nf4(packed, absmax, shape, blocksize=64, dtype=torch.float32):
    """Inverse of quantize_nf4: (packed, absmax) -> tensor of `shape` in `dtype`."""
    n = math.prod(shape)
    vals = _table(NF4_BYTE_LUT, packed.device)[packed.long()].view(-1)[:n]  # (n,) codes in [-1, 1]
    blocks = _blockify(vals, blocksize) * absmax[:, None]             # (n_blocks, bs)
    return blocks.view(-1)[:n].view(shape).to(dtype)


def quantize_absmax_dq(absmax, blocksize=256):
    """Double quantization of the NF4 absmaxes: (absmax fp32 (m,)) -> (codes uint8 (m,), absmax2 fp32
    (ceil(m/256),), offset fp32 ()). The mean is removed first so the signed 8-bit map is used fully."""
    offset = absmax.mean()
    codes, absmax2 = _blockwise_codes(absmax - offset, blocksize, DYN_MIDPOINTS)
    return codes, absmax2, offset


def dequantize_absmax_dq(codes, absmax2, offset, blocksize=256):
    m = codes.numel()
    vals = _table(DYN_CODE, codes.device)[codes.long()]                     # (m,)
    return (_blockify(vals, blocksize) * absmax2[:, None]).view(-1)[:m] + offset


# -----------------------------------------------------------------------------
# NF4 modules: weights live in uint8 buffers (not Parameters: they are never trained) and are
# dequantized on every forward to the activation dtype; bias stays a frozen fp32 Parameter.
# State-dict keys: <name>.weight_packed, <name>.weight_absmax (single) or
# <name>.weight_absmax_q / .weight_absmax2 / .weight_absmax_offset (double), <name>.bias.

class _NF4Mixin:
    def _store(self, weight, blocksize, double_quant):
        self.weight_shape = tuple(weight.shape)
        self.blocksize = blocksize
        self.double_quant = double_quant
        packed, absmax = quantize_nf4(weight, blocksize)
        self.register_buffer("weight_packed", packed)
        if double_quant:
            q, absmax2, offset = quantize_absmax_dq(absmax)
            self.register_buffer("weight_absmax_q", q)
            self.register_buffer("weight_absmax2", absmax2)
            self.register_buffer("weight_absmax_offset", offset)
        else:
            self.register_buffer("weight_absmax", absmax)

    def dequantized_weight(self, dtype=torch.float32):
        if self.double_quant:
            absmax = dequantize_absmax_dq(self.weight_absmax_q, self.weight_absmax2, self.weight_absmax_offset)
        else:
            absmax = self.weight_absmax
        return dequantize_nf4(self.weight_packed, absmax, self.weight_shape, self.blocksize, dtype)

    def quantized_numel(self):
        return math.prod(self.weight_shape)

    def weight_storage_bytes(self):
        """Bytes actually held for the weight (code bytes + absmax statistics), bias excluded."""
        names = ["weight_packed"] + (["weight_absmax_q", "weight_absmax2", "weight_absmax_offset"]
                                     if self.double_quant else ["weight_absmax"])
        return sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in names)


class NF4Linear(_NF4Mixin, nn.Module):
    def __init__(self, linear, blocksize=64, double_quant=False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._store(linear.weight.data, blocksize, double_quant)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.data.clone(), requires_grad=False)

    def forward(self, x):
        w = self.dequantized_weight(x.dtype)  # (out, in)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, nf4, blocksize={self.blocksize}, double_quant={self.double_quant}"


class NF4Conv2d(_NF4Mixin, nn.Module):
    def __init__(self, conv, blocksize=64, double_quant=False):
        super().__init__()
        # same attribute names as nn.Conv2d so lora.py can wrap either one
        for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            setattr(self, k, getattr(conv, k))
        if conv.padding_mode != "zeros":
            raise ValueError(f"NF4Conv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        self._store(conv.weight.data, blocksize, double_quant)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.data.clone(), requires_grad=False)

    def forward(self, x):
        w = self.dequantized_weight(x.dtype)  # (out, in/groups, kh, kw)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, nf4, double_quant={self.double_quant}")


def _replace_modules(root, make, min_numel, kinds):
    """Replace every module of `kinds` under `root` with make(module), in place. Returns the count.
    Skipped on purpose:
      - children of nn.MultiheadAttention: its forward reads out_proj.weight directly instead of
        calling out_proj(x), so a replacement would be silently bypassed (or crash);
      - modules with fewer than `min_numel` weights (RGB stems, depthwise convs, tiny heads): they
        save almost nothing and are the most quantization-sensitive layers."""
    count = 0
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            continue
        for child_name, child in list(module.named_children()):
            if type(child) in kinds and child.weight.numel() >= min_numel:
                setattr(module, child_name, make(child))
                count += 1
    return count


def quantize_model_nf4(module, double_quant=False, blocksize=64, min_numel=4096):
    """Replace nn.Linear / nn.Conv2d inside `module` with frozen NF4 modules, in place. Returns the count.
    Call it on the part to freeze (QLoRA: model.backbone) BEFORE lora.apply_lora, both in training and
    when rebuilding a model to load a checkpoint, so the state-dict keys line up."""
    make_lin = lambda m: NF4Linear(m, blocksize, double_quant)
    make_conv = lambda m: NF4Conv2d(m, blocksize, double_quant)
    n = _replace_modules(module, make_lin, min_numel, {nn.Linear})
    n += _replace_modules(module, make_conv, min_numel, {nn.Conv2d})
    return n


def dequantize_model_nf4(module):
    """Turn NF4 modules back into plain nn.Linear / nn.Conv2d (fp32, frozen), e.g. before lora.merge_lora."""
    count = 0
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, NF4Linear):
                new = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            elif isinstance(child, NF4Conv2d):
                new = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                child.padding, child.dilation, child.groups, bias=child.bias is not None)
            else:
                continue
            new = new.to(child.weight_packed.device)
            new.weight.data.copy_(child.dequantized_weight())
            if child.bias is not None:
                new.bias.data.copy_(child.bias.data)
            new.requires_grad_(False)
            setattr(parent, child_name, new)
            count += 1
    return count


def nf4_bytes_per_param(module):
    """(weight storage bytes) / (quantized parameters) over all NF4 modules in `module`, from the buffers."""
    mods = [m for m in module.modules() if isinstance(m, _NF4Mixin)]
    if not mods:
        raise ValueError("no NF4 modules found (call quantize_model_nf4 first)")
    return sum(m.weight_storage_bytes() for m in mods) / sum(m.quantized_numel() for m in mods)


# -----------------------------------------------------------------------------
# INT8 weight-only PTQ: w ~= q * scale[out], q = round(w / scale) in [-127, 127], scale = max|w_row| / 127.
# Symmetric (no zero point) because weights are centred on 0; per output channel because rows differ
# in range by orders of magnitude and one tensor-wide scale would waste most of the 8 bits on small rows.

def quantize_int8_per_channel(w):
    """(out, ...) float -> (int8 (out, ...), fp32 scale (out,)). All-zero rows get scale 1 (decode to 0)."""
    w2 = w.detach().float().reshape(w.shape[0], -1)               # (out, rest)
    scale = w2.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w2 / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.view(w.shape), scale


class Int8Linear(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, s = quantize_int8_per_channel(linear.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", s)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.data.clone(), requires_grad=False)

    def forward(self, x):
        w = self.weight_int8.to(x.dtype) * self.weight_scale.to(x.dtype)[:, None]  # (out, in)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))


class Int8Conv2d(nn.Module):
    def __init__(self, conv):
        super().__init__()
        for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            setattr(self, k, getattr(conv, k))
        if conv.padding_mode != "zeros":
            raise ValueError(f"Int8Conv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        q, s = quantize_int8_per_channel(conv.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", s)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.data.clone(), requires_grad=False)

    def forward(self, x):
        w = self.weight_int8.to(x.dtype) * self.weight_scale.to(x.dtype)[:, None, None, None]
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


def quantize_model_int8(module, min_numel=0):
    """INT8 weight-only PTQ of every nn.Linear / nn.Conv2d in `module` (in place). Returns the count.
    Embeddings and norms stay in float (embeddings are lookups; norms are tiny)."""
    n = _replace_modules(module, Int8Linear, min_numel, {nn.Linear})
    n += _replace_modules(module, Int8Conv2d, min_numel, {nn.Conv2d})
    return n


def quantize_model_int8_dynamic(model):
    """INT8 dynamic PTQ (Jacob et al. 2018 style): weights int8 per tensor, activations quantized per
    batch at run time, int8 GEMMs from PyTorch's fbgemm/x86 backend. nn.Linear only (the decoder and
    transformer backbones); convolutions stay fp32. CPU inference only. Returns a new model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        from torch.ao.quantization import quantize_dynamic
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


# -----------------------------------------------------------------------------
# measuring storage: serialize the state dict as it would be shipped, then read the file size

def plain_state_dict(model):
    """state_dict -> {name: plain tensor} that safetensors can write: quantized tensors (torch.qint8, from
    quantize_dynamic) become their int8 values + scale + zero point, packed (weight, bias) tuples are
    split, and tensors sharing storage (tied embedding / lm_head) are written once."""
    out, seen = {}, set()

    def add(k, v):
        if isinstance(v, (tuple, list)):
            for i, x in enumerate(v):
                add(f"{k}.{i}", x)
        elif torch.is_tensor(v):
            if v.is_quantized:
                add(f"{k}.int_repr", v.int_repr())
                if v.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    add(f"{k}.scale", torch.tensor(v.q_scale(), dtype=torch.float32))
                    add(f"{k}.zero_point", torch.tensor(v.q_zero_point(), dtype=torch.int32))
                else:
                    add(f"{k}.scale", v.q_per_channel_scales().float())
                    add(f"{k}.zero_point", v.q_per_channel_zero_points().int())
                return
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype) if v.numel() else None
            if key is not None and key in seen:
                return
            seen.add(key)
            out[k] = v.detach().contiguous().cpu()
        # other entries (e.g. a torch.dtype) carry no data

    for k, v in model.state_dict().items():
        add(k, v)
    return out


def serialized_size(model, path=None):
    """Bytes on disk of the model's weights saved as safetensors (to `path` if given, else a temp file)."""
    from safetensors.torch import save_file
    sd = plain_state_dict(model)
    if path is not None:
        save_file(sd, path)
        return os.path.getsize(path)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "model.safetensors")
        save_file(sd, p)
        return os.path.getsize(p)


# -----------------------------------------------------------------------------
# the CLI: python quant.py --out_dir=<run> --mode=fp32|fp16|bf16|int8|int8_dynamic|nf4|all

MODES = ("fp32", "fp16", "bf16", "int8", "int8_dynamic", "nf4")


def prepare_for_inference(model, mode):
    """A loaded model -> the model to run for `mode` (may be a new object) and the input dtype.
    LoRA adapters are merged first (an NF4 backbone is dequantized for that), so every mode starts
    from the same plain fp32 network. nf4 here is PTQ of every Linear/Conv2d >= 4096 weights."""
    import lora
    if lora.lora_modules(model):
        dequantize_model_nf4(model)
        lora.merge_and_unload(model)
    elif any(isinstance(m, _NF4Mixin) for m in model.modules()):
        dequantize_model_nf4(model)
    dtype = torch.float32
    if mode == "fp16":
        model, dtype = model.half(), torch.float16
    elif mode == "bf16":
        model, dtype = model.to(torch.bfloat16), torch.bfloat16
    elif mode == "int8":
        quantize_model_int8(model)
    elif mode == "int8_dynamic":
        model = quantize_model_int8_dynamic(model)
    elif mode == "nf4":
        quantize_model_nf4(model)
    return model.eval(), dtype


def decode_pass(model, dtype, batches, max_new_tokens):
    """Greedy-decode every batch once -> (seconds per batch, predicted ids per image)."""
    times, outs = [], []
    with torch.inference_mode():
        for images, widths, _ in batches:
            t0 = time.perf_counter()
            outs += model.generate(images.to(dtype), max_new_tokens=max_new_tokens, widths=widths)
            times.append(time.perf_counter() - t0)
    return times, outs


def evaluate_modes(ckpt_dir, modes, batches, tokenizer, max_new_tokens, repeats=1):
    """Every mode: load + quantize (size on disk), decode the batches (val SER), and time them.
    The timing passes are interleaved (mode 1, mode 2, ..., then again) and each batch keeps its
    fastest time, so a burst of load from other processes cannot favour one mode over another."""
    import data
    from model import load_model
    rows, models = {}, {}
    for mode in modes:
        try:
            model, dtype = prepare_for_inference(load_model(ckpt_dir, device="cpu")[0], mode)
            decode_pass(model, dtype, batches[:1], max_new_tokens)  # warm-up, untimed; fails early if unsupported
        except (RuntimeError, NotImplementedError) as e:  # e.g. a dtype/op this CPU build lacks
            rows[mode] = dict(mode=mode, error=str(e).strip().splitlines()[0][:120])
            continue
        models[mode] = (model, dtype)
        rows[mode] = dict(mode=mode, size_bytes=serialized_size(model))
    best = {mode: [float("inf")] * len(batches) for mode in models}
    refs = [t for _, _, texts in batches for t in texts]
    for rep in range(repeats):
        for mode, (model, dtype) in models.items():
            times, outs = decode_pass(model, dtype, batches, max_new_tokens)
            best[mode] = [min(a, b) for a, b in zip(best[mode], times)]
            if rep == 0:  # greedy decoding is deterministic: score the first pass
                preds = [tokenizer.decode(o) for o in outs]
                s = data.score(preds, refs)
                rows[mode].update(ser=s["ser"], cer=s["cer"], seq_acc=s["seq_acc"], n_images=len(refs),
                                  mean_pred_tokens=sum(len(o) for o in outs) / len(refs))
    for mode in models:
        rows[mode]["ms_per_image"] = 1000 * sum(best[mode]) / len(refs)
    return [rows[m] for m in modes]


def markdown_table(rows, base, header):
    lines = [header, "",
             "| mode | size on disk | vs fp32 | val SER | ΔSER vs fp32 | CPU ms/image | speed-up | tokens/image |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error']} | | | | | | |")
            continue
        rel = lambda k: f"{base[k] / r[k]:.2f}x" if base else "n/a"
        dser = f"{100 * (r['ser'] - base['ser']):+.2f} pts" if base else "n/a"
        lines.append(f"| {r['mode']} | {r['size_bytes'] / 1e6:.2f} MB | {rel('size_bytes')} smaller "
                     f"| {100 * r['ser']:.2f}% | {dser} | {r['ms_per_image']:.1f} | {rel('ms_per_image')} "
                     f"| {r['mean_pred_tokens']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, no usage dump
            sys.exit(f"error: {message}")

    p = Parser(description="post-training quantization report for a trained nanoOMR run")
    p.add_argument("--out_dir", required=True, help="the training run's directory (holds ckpt_best/ or ckpt_last/)")
    p.add_argument("--mode", default="all", help=f"'all' or a comma-separated list of {', '.join(MODES)}")
    p.add_argument("--ckpt", default="best", choices=("best", "last"))
    p.add_argument("--data_dir", default=None, help="default: the run's own data_dir")
    p.add_argument("--n_samples", type=int, default=100, help="val images to decode")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=0, help="0 = the model's max_seq_len - 1")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--repeats", type=int, default=1, help="time each batch this many times, keep the fastest")
    a = p.parse_args(argv)

    bad = [m for m in a.mode.split(",") if m not in MODES] if a.mode != "all" else []
    if bad:
        raise ValueError(f"unknown --mode {bad[0]!r}: use 'all' or a comma-separated list of {', '.join(MODES)}")
    if not os.path.isdir(a.out_dir):
        raise FileNotFoundError(f"run directory {a.out_dir} does not exist (train one with python train.py ...)")
    import data  # (after the cheap checks: a typo fails before the heavy imports)
    from model import read_meta
    ckpt_dir = os.path.join(a.out_dir, f"ckpt_{a.ckpt}")
    if not os.path.isdir(ckpt_dir) and a.ckpt == "best":
        ckpt_dir = os.path.join(a.out_dir, "ckpt_last")
    meta = read_meta(ckpt_dir)  # FileNotFoundError with one line if there is no checkpoint
    tc, margs = meta.get("train_config") or {}, meta["model_args"]
    data_dir = a.data_dir or tc.get("data_dir")
    if not data_dir:
        raise ValueError(f"{ckpt_dir}/config.json names no data_dir: pass --data_dir")
    tok_path = os.path.join(a.out_dir, "tokenizer.model")
    tokenizer = data.Tokenizer(tok_path if os.path.isfile(tok_path) else os.path.join(data_dir, "tokenizer.model"))
    if tokenizer.vocab_size != margs["vocab_size"]:
        raise ValueError(f"tokenizer of {data_dir} has {tokenizer.vocab_size} tokens, the model {margs['vocab_size']}")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ds = data.OMRDataset(data_dir, "val", tokenizer, img_height=margs.get("img_height", 224),
                         max_width=tc.get("max_width", 2048), max_len=margs.get("max_seq_len"))
    n = min(a.n_samples, len(ds))
    if n == 0:
        raise ValueError(f"the val split of {data_dir} is empty")
    collate = data.Collate(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
    batches = []
    for i in range(0, n, a.batch_size):  # the first n val images, prepared once and shared by all modes
        b = collate([ds[j] for j in range(i, min(n, i + a.batch_size))])
        batches.append((b["images"], b["widths"], b["text"]))
    max_new = a.max_new_tokens or margs["max_seq_len"] - 1

    load = os.getloadavg()[0]  # other processes on the machine skew the CPU timings: say how busy it was
    modes = MODES if a.mode == "all" else tuple(dict.fromkeys(["fp32"] + a.mode.split(",")))  # fp32: the reference
    rows = evaluate_modes(ckpt_dir, modes, batches, tokenizer, max_new, max(1, a.repeats))
    for r in rows:
        print(f"{r['mode']:>12}: " + (f"error: {r['error']}" if "error" in r else
              f"{r['size_bytes'] / 1e6:8.2f} MB  SER {100 * r['ser']:6.2f}%  {r['ms_per_image']:8.1f} ms/image"))
    base = next((r for r in rows if r["mode"] == "fp32" and "error" not in r), None)
    header = (f"Post-training quantization of `{ckpt_dir}` (backbone {margs.get('backbone')}, iter {meta.get('iter_num')}): "
              f"{n} val images of `{data_dir}`, greedy decoding, batch {a.batch_size}, CPU with "
              f"{torch.get_num_threads()} threads, fastest of {max(1, a.repeats)} interleaved passes (load average before: {load:.2f}). Size = the weights as safetensors. "
              "int8 (weight-only) and nf4 are storage formats, dequantized on the fly, so they save memory, "
              "not CPU time; int8_dynamic runs int8 GEMMs (nn.Linear only, convolutions stay fp32).")
    table = markdown_table(rows, base, header)
    print("\n" + table)
    _write_atomic(os.path.join(a.out_dir, "quant.md"), table)
    _write_atomic(os.path.join(a.out_dir, "quant.json"),
                  json.dumps(dict(ckpt_dir=ckpt_dir, data_dir=data_dir, n_images=n, batch_size=a.batch_size,
                                  threads=torch.get_num_threads(), load_avg=load, rows=rows), indent=2))
    print(f"wrote {a.out_dir}/quant.md and quant.json")


if __name__ == "__main__":
    # run main() from the importable module `quant`, not from `__main__`: model.py and lora.py import
    # `quant`, and isinstance checks must see one set of NF4 classes, not two copies
    import quant
    try:
        quant.main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
