"""
lora.py: Low-Rank Adaptation, written by hand (no peft).

LoRA (Hu et al. 2021, arXiv:2106.09685) freezes a pretrained weight W (out, in) and learns a low-rank
update instead:      y = W x + scale * B A dropout(x),    A: (r, in), B: (out, r), r << min(in, out)
B starts at zero, so a freshly wrapped model computes exactly what it computed before; A starts like an
nn.Linear weight (Kaiming-uniform, a=sqrt(5)) so gradients reach B from the first step.
scale = alpha / r (original), or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023, arXiv:2312.03732),
which keeps the update's magnitude stable as r grows.

Convolutions (needed for the CNN backbones) use the weight-space view of a conv: its weight
(out, in/groups, kh, kw) is a matrix (out, in/groups*kh*kw), and A: (r, in/groups*kh*kw), B: (out, r)
give the low-rank update dW = (B @ A).view(weight shape). For groups == 1 the forward runs it cheaply
as two convs: A as a (kh, kw) conv in -> r with the base stride/padding/dilation, then B as a 1x1 conv
r -> out (the same as peft's conv LoRA). Grouped/depthwise convs run conv(x, dW) with the base groups.
Either way merging is exact: W' = W + scale * dW.

The base may also be a frozen NF4 module from quant.py (QLoRA, Dettmers et al. 2023): the adapter only
sees base(x), so nothing changes, except that merging into 4-bit weights is refused (see merge_lora).

State-dict keys: a wrapped module `m` becomes `m.base.<original keys>` + `m.lora_A` + `m.lora_B`
(e.g. backbone.blocks.0.attn.qkv.weight -> backbone.blocks.0.attn.qkv.base.weight). Therefore:
  - load pretrained/base weights BEFORE apply_lora;
  - to load a LoRA checkpoint, rebuild the model, (quantize_model_nf4 if QLoRA,) apply_lora with the
    same settings, then load_state_dict. model.build_model does the rebuild, checkpoint.load_model the
    loading, from config.json. Adapters alone are saved and loaded by checkpoint.save_adapter / load_adapter.
"""

import fnmatch
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import quant


def _device_of(module):
    """Device of a module's first parameter or buffer (NF4 bases hold only buffers, plus maybe a bias)."""
    t = next(iter(list(module.parameters()) + list(module.buffers())), None)
    return None if t is None else t.device


class LoRALinear(nn.Module):
    def __init__(self, base, rank, alpha, dropout=0.0, rslora=False):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.rslora = rank, alpha, rslora
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        dev = _device_of(base)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=dev))   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self):
        return self.scale * (self.lora_B @ self.lora_A)  # (out, in)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        a = self.lora_dropout(x).to(self.lora_A.dtype) @ self.lora_A.t()  # (..., r)
        return y + (self.scale * (a @ self.lora_B.t())).to(y.dtype)       # (..., out)

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, rslora={self.rslora}, merged={self.merged}"


class LoRAConv2d(nn.Module):
    def __init__(self, base, rank, alpha, dropout=0.0, rslora=False):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            setattr(self, k, getattr(base, k))
        self.rank, self.alpha, self.rslora = rank, alpha, rslora
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        dev = _device_of(base)
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in, device=dev))              # (r, in/g*kh*kw)
        self.lora_B = nn.Parameter(torch.zeros(self.out_channels, rank, device=dev))   # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self):
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        return (self.scale * (self.lora_B @ self.lora_A)).view(shape)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        x = self.lora_dropout(x).to(self.lora_A.dtype)
        kh, kw = self.kernel_size
        if self.groups == 1:
            # factorized: (B, in, H, W) -> A conv -> (B, r, H', W') -> 1x1 B conv -> (B, out, H', W')
            a = F.conv2d(x, self.lora_A.view(self.rank, self.in_channels, kh, kw), None,
                         self.stride, self.padding, self.dilation)
            d = F.conv2d(a, self.lora_B[:, :, None, None]) * self.scale
        else:
            # grouped / depthwise: one conv with the (small) low-rank weight update
            d = F.conv2d(x, self.delta_weight(), None, self.stride, self.padding, self.dilation, self.groups)
        return y + d.to(y.dtype)

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, rslora={self.rslora}, merged={self.merged}"


LORA_TYPES = (LoRALinear, LoRAConv2d)


def _matches(name, targets):
    """A module name matches a target if it starts with it ('backbone.') or fnmatch-es it ('decoder.*.mlp.*')."""
    return any(name.startswith(t) or fnmatch.fnmatchcase(name, t) for t in targets)


def parse_targets(targets):
    """Accept a tuple/list of patterns or one comma-separated string ('backbone.,decoder.')."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",")]
    targets = tuple(t for t in targets if t)
    if not targets:
        raise ValueError("lora targets are empty: give module-name prefixes or globs, e.g. ('backbone.',)")
    return targets


def apply_lora(model, rank=8, alpha=16, dropout=0.0, targets=("backbone.",), rslora=False):
    """Wrap every nn.Linear / nn.Conv2d (or quant.NF4Linear / NF4Conv2d) whose full module name matches
    `targets` with a LoRA adapter, in place. The wrapped base weights are frozen; everything else keeps
    its requires_grad (freezing the rest of the backbone is the caller's decision).
    Returns the list of wrapped module names (raises ValueError if nothing matched).
    Not wrapped: children of nn.MultiheadAttention (its forward reads out_proj.weight directly, so an
    adapter there would be silently bypassed) and modules that already are LoRA wrappers."""
    targets = parse_targets(targets)
    linear_types = (nn.Linear, quant.NF4Linear)
    conv_types = (nn.Conv2d, quant.NF4Conv2d)
    wrapped = []
    skip = set()  # names of modules inside nn.MultiheadAttention or an existing LoRA wrapper
    for name, child in list(model.named_modules()):  # parent-first, definition order
        if isinstance(child, (nn.MultiheadAttention,) + LORA_TYPES):
            skip.update(f"{name}.{n}" for n, _ in child.named_modules() if n)
        if name in skip or not name or not _matches(name, targets):
            continue
        if isinstance(child, linear_types):
            new = LoRALinear(child, rank, alpha, dropout, rslora)
        elif isinstance(child, conv_types) and getattr(child, "padding_mode", "zeros") == "zeros":
            new = LoRAConv2d(child, rank, alpha, dropout, rslora)  # (the factorized path assumes zero padding)
        else:
            continue
        child.requires_grad_(False)
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, new)
        wrapped.append(name)
    if not wrapped:
        raise ValueError(f"apply_lora: no nn.Linear/nn.Conv2d module matched targets {targets}")
    return wrapped


def lora_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LORA_TYPES)]


def lora_config(model):
    """dict(rank, alpha, rslora, dropout, n_modules) of the adapters in `model` (for checkpoint metadata)."""
    mods = lora_modules(model)
    if not mods:
        return None
    m = mods[0][1]
    p = m.lora_dropout.p if isinstance(m.lora_dropout, nn.Dropout) else 0.0
    return dict(rank=m.rank, alpha=m.alpha, rslora=m.rslora, dropout=p, n_modules=len(mods))


def _merge(model, sign):
    count = 0
    for name, m in lora_modules(model):
        if m.merged == (sign > 0):
            continue
        if not isinstance(m.base, (nn.Linear, nn.Conv2d)):
            raise RuntimeError(f"cannot merge LoRA into the 4-bit base of {name}: "
                               "call quant.dequantize_model_nf4(model) first (merging into NF4 would re-round)")
        with torch.no_grad():
            m.base.weight += sign * m.delta_weight().to(m.base.weight.dtype)
        m.merged = sign > 0
        count += 1
    return count


def merge_lora(model):
    """Fold scale*B@A into each base weight (inference needs no extra matmuls). Returns the count.
    Adapters stay in place (flagged merged), so unmerge_lora can undo it exactly up to rounding.
    NF4 bases are refused with RuntimeError: dequantize first (quant.dequantize_model_nf4)."""
    return _merge(model, +1)


def unmerge_lora(model):
    """Subtract the adapters again (resume training after merge_lora). Returns the count."""
    return _merge(model, -1)


def merge_and_unload(model):
    """Export: merge every adapter and put the plain base module back in its place, so the model has
    no LoRA code left (and the original state-dict keys). NF4 bases: dequantize first. Returns the count."""
    merge_lora(model)
    mods = lora_modules(model)
    for name, m in mods:
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, m.base)
    return len(mods)


def lora_state_dict(model):
    """Only the adapter tensors: {name: tensor} for every lora_A / lora_B."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}
