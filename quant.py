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
   ptq.py measures every mode on a trained run (size on disk, val SER, CPU speed).

A library: it imports only torch. lora.py wraps its NF4 modules; model.build_model applies them.
"""

import math
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
