"""backbones.py: the vision encoders of nanoOMR, written by hand in plain PyTorch.

One job: turn an ImageNet-normalized image batch (B, 3, H, W) into ONE feature grid
(B, C, H/s, W/s) that the decoder in model.py cross-attends to. Seven ImageNet families
are compared in the backbone study, plus a tiny CNN for the 2-core CPU quick start:

    name             paper                        timm name (weights)            C     s
    cnn_tiny         (ours, CPU tests)            -                              256   16
    cnn_line         (ours, the CPU reader)       -                              128   16 (8 in W)
    cnn_line_relu    cnn_line with ReLU: the CPU quick start, ~9% faster to train on a CPU
    resnet50         He et al. 2016               resnet50                       2048  32
    efficientnet_b0  Tan & Le 2019                efficientnet_b0                1280  32
    convnext_tiny    Liu et al. 2022              convnext_tiny                  768   32
    vit_small        Dosovitskiy et al. 2021      vit_small_patch16_224          384   16
    deit_small       Touvron et al. 2021          deit_small_patch16_224         384   16
    swin_tiny        Liu et al. 2021              swin_tiny_patch4_window7_224   768   32
    mobilevit_small  Mehta & Rastegari 2022       mobilevit_s                    640   32

Why write them ourselves instead of importing timm? So that every line a student trains is
readable in this repo, and because the study only needs the feature extractor. The
parameter names and shapes equal timm's (`timm.create_model(<timm name>, num_classes=0)`,
tests/timm_backbones.json records them), so timm's ImageNet checkpoints load with a strict
state-dict load, and the math follows timm's `forward_features` op for op: with the same
weights the outputs equal timm 1.0.31's (to ~3e-6 for Swin, bit-exact for the others;
tests/test_backbones.py::test_matches_timm_forward_features checks it wherever timm is installed).

Score lines are short and very wide (e.g. 224 x 1792), so every backbone accepts any H x W
that is a multiple of its `pad_multiple` (model.py pads with white). Three places need care:
ViT/DeiT resample their 14x14 position table to the actual grid; Swin pads every stage to
whole windows (and masks the pad); MobileViT resizes maps whose size is not a multiple of
its 2x2 unfolding patch, exactly as timm does. The white right-padding that model.py adds to
batch lines of different widths is ordinary (blank paper) input to the encoder; only the
decoder masks it, through `widths`.

Every backbone has: `out_dim` (C), `stride` (s), `pad_multiple`, `has_pos_embed` (True when
the features already carry absolute position, so model.py skips its 2D sinusoidal encoding)
and `set_grad_checkpointing(enable)`. `stride_w` and `pad_multiple_w` default to the same
values; only cnn_line, which keeps more columns than rows, sets them.

    python backbones.py --bench        # fwd+bwd images/s and #params at 224 x 896
"""

import argparse
import contextlib
import functools
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.checkpoint import checkpoint

# -----------------------------------------------------------------------------
# Shared plumbing: attributes, gradient checkpointing, LayerNorm over channels

@contextlib.contextmanager
def _bn_stats_frozen(module):
    """During checkpoint *recomputation*, BatchNorm must not update its running stats a
    second time (that would silently double the momentum). Momentum 0 keeps them; the
    batch counter is restored afterwards."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, nbt) in zip(bns, saved):
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


class Backbone(nn.Module):
    """Base of every encoder: four attributes and a checkpointing switch. Nothing else."""
    out_dim: int
    stride: int
    pad_multiple: int
    has_pos_embed: bool = False

    @property
    def stride_w(self):  # along the width; a backbone with anisotropic strides overrides these two
        return self.stride

    @property
    def pad_multiple_w(self):
        return self.pad_multiple

    def __init__(self):
        super().__init__()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable=True):
        """Recompute each block's activations in backward instead of storing them
        (Chen et al. 2016): less activation memory for ~30% more compute."""
        self.grad_checkpointing = enable
        return self

    def _run(self, block, *args):
        """Call one block (a ResNet bottleneck, a transformer layer, ...), checkpointed if enabled."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            ctx = lambda: (contextlib.nullcontext(), _bn_stats_frozen(block))
            return checkpoint(block, *args, use_reentrant=False, context_fn=ctx)
        return block(*args)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's stem and downsamplers)."""

    def forward(self, x):  # (B, C, H, W)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


def trunc_normal_init(module):
    """timm's from-scratch init for transformers and ConvNeXt: weights ~ N(0, 0.02) truncated
    at +-2 std, biases 0 (LayerNorms keep 1/0). Only matters when pretrained=None."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Mlp(nn.Module):
    """The transformer feed-forward: Linear -> activation -> Linear (timm's `Mlp`)."""

    def __init__(self, dim, hidden, act=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over a token set (timm's ViT `Attention`, qkv with bias)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, N, C)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, hd)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(hd)) v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer layer (Vaswani 2017; ViT's ordering): x + attn(ln(x)), x + mlp(ln(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, act=nn.GELU, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x):  # (B, N, C)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# -----------------------------------------------------------------------------
# cnn_tiny: ours, ~1M params, for the CPU quick start and the tests (not in the study)

class CNNTiny(Backbone):
    """Four stride-2 3x3 convs (H/16) with cheap residual blocks in between: a depthwise 3x3
    for spatial mixing and a 1x1 MLP for channel mixing (a ConvNeXt-style block with BatchNorm).
    Stride 16 rather than 32 keeps 8 rows at img_height=128, enough to tell staff lines apart."""
    out_dim, stride, pad_multiple = 256, 16, 16
    strides = ((2, 2), (2, 2), (2, 2), (2, 2))  # (height, width) stride of each stage's first conv

    def __init__(self, widths=(32, 64, 128, 256), depths=(0, 1, 2, 2), act=nn.GELU):
        super().__init__()
        layers, c_in = [], 3
        for c, d, s in zip(widths, depths, self.strides):
            stage = [nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(c), act()]
            stage += [CNNTinyBlock(c, act=act) for _ in range(d)]
            layers.append(nn.Sequential(*stage))
            c_in = c
        self.stages = nn.ModuleList(layers)

    def forward(self, x):  # (B, 3, H, W)
        for stage in self.stages:
            x = self._run(stage, x)  # each stage divides H and W by its strides
        return x  # (B, C, H/stride, W/stride_w)


class CNNLine(CNNTiny):
    """cnn_tiny's blocks, narrower (16-128 channels) and anisotropic: H/16 but only W/8, because
    the music runs along the width. Each of the W/8 columns is a CTC frame: CTC needs at least
    as many frames as label tokens (Graves et al. 2006), and at W/16 a dense bar has fewer.
    The two wide, high-resolution stages are the narrowest, so most FLOPs sit where the map is
    small (about a third of cnn_tiny's forward FLOPs at 64 px). With model.py's
    collapse_height the 4 rows at img_height=64 become one (4 x 128)-dim vector per column (CRNN,
    Shi et al. 2015), the memory both the CTC head and the cross-attention read."""
    out_dim, stride, pad_multiple, stride_w, pad_multiple_w = 128, 16, 16, 8, 8
    strides = ((2, 2), (2, 2), (2, 2), (2, 1))

    def __init__(self, act=nn.GELU):
        super().__init__(widths=(16, 32, 64, 128), depths=(0, 1, 2, 2), act=act)


class CNNTinyBlock(nn.Module):
    """x + 1x1(act(BN(1x1(dw3x3(x))))): depthwise for space, pointwise MLP for channels."""

    def __init__(self, c, expand=2, act=nn.GELU):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw1 = nn.Conv2d(c, c * expand, 1, bias=False)
        self.bn = nn.BatchNorm2d(c * expand)
        self.act = act()  # no parameters: the state dict is the same for every activation
        self.pw2 = nn.Conv2d(c * expand, c, 1)

    def forward(self, x):
        return x + self.pw2(self.act(self.bn(self.pw1(self.dw(x)))))


# -----------------------------------------------------------------------------
# ResNet-50 (He et al. 2016, "Deep Residual Learning for Image Recognition").
# The baseline. Pure convolution: each output sees only a local receptive field that grows
# with depth, with translation equivariance and BatchNorm. Hypothesis it anchors for OMR:
# noteheads, stems, clefs and accidentals are local glyphs, so local features plus a global
# decoder may be all that is needed. timm's resnet50 is "ResNet v1.5": the stride-2 sits in
# the 3x3 conv of the bottleneck (not the first 1x1), downsample shortcut = 1x1 conv + BN.

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, c_mid, stride):
        super().__init__()
        c_out = c_mid * self.expansion
        self.conv1 = nn.Conv2d(c_in, c_mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.conv2 = nn.Conv2d(c_mid, c_mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.conv3 = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:  # the shortcut must change shape too
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return F.relu(x + shortcut)


class ResNet50(Backbone):
    out_dim, stride, pad_multiple = 2048, 32, 32

    def __init__(self, depths=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_in = 64
        for i, d in enumerate(depths):
            c_mid = 64 * 2 ** i
            blocks = [Bottleneck(c_in if j == 0 else c_mid * 4, c_mid, 2 if (j == 0 and i > 0) else 1)
                      for j in range(d)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))  # timm names: layer1..layer4
            c_in = c_mid * 4
        for m in self.modules():  # He init; each residual branch starts at zero (Goyal et al. 2017)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x):  # (B, 3, H, W)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = self._run(block, x)
        return x  # (B, 2048, H/32, W/32)


# -----------------------------------------------------------------------------
# EfficientNet-B0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs").
# Still purely local, but built from MobileNetV2 inverted residuals (1x1 expand ->
# depthwise kxk -> squeeze-excite -> 1x1 project, Sandler 2018) found by NAS, SiLU activations.
# Squeeze-excite is the one *global* ingredient: a per-channel gate computed from the mean
# over the whole map. Hypothesis: does a 6x cheaper CNN (4M params) lose accuracy on scores,
# and does the image-wide SE gate help or hurt on a very wide, mostly-white line?
# timm details kept: symmetric padding k//2 (not TF "same"), BN eps 1e-5, SE reduced from the
# block *input* channels (x 0.25), conv_head + bn2 (1280 ch) included in the features.

class SqueezeExcite(nn.Module):
    def __init__(self, c, c_reduced):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, c_reduced, 1)
        self.conv_expand = nn.Conv2d(c_reduced, c, 1)

    def forward(self, x):  # (B, C, H, W)
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1): global context
        s = self.conv_expand(F.silu(self.conv_reduce(s)))
        return x * torch.sigmoid(s)


class DepthwiseSeparable(nn.Module):
    """First EfficientNet block (expansion 1): dw kxk -> SE -> 1x1, residual if shapes allow."""

    def __init__(self, c_in, c_out, k, stride):
        super().__init__()
        self.conv_dw = nn.Conv2d(c_in, c_in, k, stride, k // 2, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.se = SqueezeExcite(c_in, int(c_in * 0.25))
        self.conv_pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.se(F.silu(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))  # linear bottleneck: no activation
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand (x6) -> dw kxk -> SE -> 1x1 project (linear), residual if shapes allow."""

    def __init__(self, c_in, c_out, k, stride, expand):
        super().__init__()
        c_mid = c_in * expand
        self.conv_pw = nn.Conv2d(c_in, c_mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.conv_dw = nn.Conv2d(c_mid, c_mid, k, stride, k // 2, groups=c_mid, bias=False)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.se = SqueezeExcite(c_mid, int(c_in * 0.25))  # reduce from the block INPUT width
        self.conv_pwl = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = F.silu(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return x + y if self.has_skip else y


class EfficientNetB0(Backbone):
    out_dim, stride, pad_multiple = 1280, 32, 32
    # (repeats, kernel, stride, expansion, out channels) per stage, from the paper's Table 1
    STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
              (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]

    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        stages, c_in = [], 32
        for r, k, s, e, c in self.STAGES:
            blocks = []
            for j in range(r):
                stride = s if j == 0 else 1
                blocks.append(DepthwiseSeparable(c_in, c, k, stride) if e == 1
                              else InvertedResidual(c_in, c, k, stride, e))
                c_in = c
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)  # timm names: blocks.<stage>.<block>
        self.conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)

    def forward(self, x):  # (B, 3, H, W)
        x = F.silu(self.bn1(self.conv_stem(x)))  # (B, 32, H/2, W/2)
        for stage in self.blocks:
            for block in stage:
                x = self._run(block, x)
        return F.silu(self.bn2(self.conv_head(x)))  # (B, 1280, H/32, W/32)


# -----------------------------------------------------------------------------
# ConvNeXt-Tiny (Liu et al. 2022, "A ConvNet for the 2020s").
# A CNN "modernized" toward Swin: 4x4 patchify stem, large 7x7 depthwise kernels, inverted
# MLP in channels-last with LayerNorm and GELU, per-channel layer scale, stage ratio 3:3:9:3.
# Hypothesis: if it matches Swin/ViT on scores, OMR gains come from training recipe and
# macro-design, not from attention itself; its 7x7 kernels also see more of a staff at once.
# timm details kept: LayerNorm eps 1e-6; conv_mlp=False (MLP = Linear on NHWC); gamma.
# timm's `head.norm` belongs to the classifier (applied after global pooling), so it is
# kept for strict loading but NOT applied: our output equals timm's forward_features.

class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))  # layer scale (Touvron 2021b)

    def forward(self, x):  # (B, C, H, W)
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # (B, H, W, C) channels-last for the Linear MLP
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)  # (B, C, H, W)
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class ConvNeXtStage(nn.Module):
    def __init__(self, c_in, c_out, depth):
        super().__init__()
        self.downsample = (nn.Identity() if c_in == c_out else
                           nn.Sequential(LayerNorm2d(c_in, eps=1e-6), nn.Conv2d(c_in, c_out, 2, stride=2)))
        self.blocks = nn.Sequential(*[ConvNeXtBlock(c_out) for _ in range(depth)])


class ConvNeXtTiny(Backbone):
    out_dim, stride, pad_multiple = 768, 32, 32

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.stages = nn.Sequential(*[ConvNeXtStage(dims[max(i - 1, 0)], dims[i], depths[i])
                                      for i in range(4)])
        self.head = nn.Module()  # only to hold timm's classifier LayerNorm (see comment above)
        self.head.norm = LayerNorm2d(dims[-1], eps=1e-6)
        self.apply(trunc_normal_init)

    def forward(self, x):  # (B, 3, H, W)
        x = self.stem(x)  # (B, 96, H/4, W/4)
        for stage in self.stages:
            x = stage.downsample(x)  # halves H, W (except stage 0)
            for block in stage.blocks:
                x = self._run(block, x)
        return x  # (B, 768, H/32, W/32)


# -----------------------------------------------------------------------------
# ViT-Small/16 (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") and
# DeiT-Small/16 (Touvron et al. 2021, "Training data-efficient image transformers").
# Global self-attention from the first layer: every 16x16 patch attends to every other,
# so a token can relate a clef or key signature to a note far to its right. Hypothesis: does
# global context from layer 1 help on long score lines, or do the weak locality priors
# (and quadratic cost in the width) hurt? Learned absolute position embeddings =>
# has_pos_embed=True. vit_small and deit_small are the SAME architecture (same class, same
# keys); they differ only in their pretrained weights (ViT: AugReg, ImageNet-21k -> 1k;
# DeiT: ImageNet-1k only, strong augmentation + distillation-era recipe). Comparing them
# measures the effect of the pretraining recipe alone.

class VisionTransformer(Backbone):
    out_dim, stride, pad_multiple, has_pos_embed = 384, 16, 16, True

    def __init__(self, dim=384, depth=12, num_heads=6, patch=16, img_size=224):
        super().__init__()
        self.grid = img_size // patch  # 14: the grid the position table was trained on
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(trunc_normal_init)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def resized_pos_embed(self, gh, gw):
        """The learned 14x14 table, resampled to a gh x gw grid the way timm's
        resample_abs_pos_embed does (bicubic, antialias, in float32). CLS entry unchanged."""
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]  # (1, 1, C), (1, 196, C)
        C = pos.shape[-1]
        pos = pos.float().reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)  # (1, C, 14, 14)
        pos = F.interpolate(pos, size=(gh, gw), mode="bicubic", antialias=True, align_corners=False)
        pos = pos.permute(0, 2, 3, 1).reshape(1, gh * gw, C).to(self.pos_embed.dtype)  # (1, gh*gw, C)
        return torch.cat([cls_pos, pos], dim=1)

    def forward(self, x):  # (B, 3, H, W)
        x = self.patch_embed.proj(x)  # (B, C, H/16, W/16)
        B, C, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, C)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1+gh*gw, C)
        x = x + self.resized_pos_embed(gh, gw)
        for block in self.blocks:
            x = self._run(block, x)
        x = self.norm(x)  # = timm forward_features (tokens incl. CLS)
        x = x[:, 1:]  # drop CLS: the decoder attends to the spatial tokens only
        return x.transpose(1, 2).reshape(B, C, gh, gw)  # (B, 384, H/16, W/16)


# -----------------------------------------------------------------------------
# Swin-Tiny, patch 4, window 7 (Liu et al. 2021, "Swin Transformer: Hierarchical Vision
# Transformer using Shifted Windows").
# Attention restricted to non-overlapping 7x7 windows (linear cost in the width, unlike ViT),
# with a learned relative-position bias; every other block shifts the windows by 3 so
# information crosses window borders; patch merging builds a CNN-like pyramid (H/4..H/32).
# Hypothesis: local attention with a pyramid gets CNN-like inductive bias plus content-
# adaptive mixing; the receptive field grows by shifting, so far-apart context (clef -> note)
# arrives only in deep layers. Relative bias only => has_pos_embed=False.
#
# Variable size, by construction: each block pads ITS OWN input to a multiple of its window
# (every stage, not only the patch embedding), and the attention mask marks padded keys, so
# padding never changes the real tokens' outputs. Like timm, a map side <= 7 uses a window of
# that side and no shift along it (e.g. the 7x7 last stage at 224, or 2..4 rows at small H).

WINDOW = 7


def window_partition(x, wh, ww):  # (B, H, W, C) with H % wh == W % ww == 0
    B, H, W, C = x.shape
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)  # (B * num_windows, wh*ww, C), windows row-major per image


def window_reverse(x, wh, ww, H, W):  # inverse of window_partition
    C = x.shape[-1]
    x = x.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)  # (B, H, W, C)


def relative_position_index(wh, ww, max_w=WINDOW):
    """For each (query, key) pair in a wh x ww window, the row of the (2*7-1)^2 bias table
    holding their relative offset (dy, dx). Windows smaller than 7 use a sub-range of the table."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N) offsets in [-(w-1), w-1]
    return (rel[0] + max_w - 1) * (2 * max_w - 1) + (rel[1] + max_w - 1)  # (N, N)


def swin_attention_mask(H, W, wh, ww, sh, sw, Hp, Wp, device):
    """(num_windows, N, N) additive mask for the padded (Hp, Wp) map rolled by (-sh, -sw):
    a query may only see keys that (a) came from the same region before the cyclic shift
    (the original Swin mask, -100 like timm) and (b) are real tokens, not padding (-1e4:
    much stronger, so even large padded activations cannot leak; finite, so a row that is
    all padding gives a harmless uniform softmax rather than NaN)."""
    rows, cols = torch.arange(Hp, device=device), torch.arange(Wp, device=device)
    # region id in the rolled frame: 3 bands per axis (only 1 when there is no shift)
    band_h = (rows >= Hp - wh).long() + (rows >= Hp - sh).long() if sh else torch.zeros_like(rows)
    band_w = (cols >= Wp - ww).long() + (cols >= Wp - sw).long() if sw else torch.zeros_like(cols)
    region = band_h[:, None] * 3 + band_w[None, :]  # (Hp, Wp)
    # real-token map in the original frame, then rolled like the features
    real = (rows < H)[:, None] & (cols < W)[None, :]
    real = torch.roll(real, shifts=(-sh, -sw), dims=(0, 1))
    region = window_partition(region[None, :, :, None].float(), wh, ww).squeeze(-1)  # (nW, N)
    real = window_partition(real[None, :, :, None].float(), wh, ww).squeeze(-1)  # (nW, N)
    mask = torch.zeros(region.shape[0], region.shape[1], region.shape[1], device=device)  # (nW, N, N)
    mask = mask.masked_fill(region[:, :, None] != region[:, None, :], -100.0)
    return mask.masked_fill(real[:, None, :] == 0, -1e4)  # padded keys, for every query


class WindowAttention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * WINDOW - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self._index = {}  # (wh, ww, device) -> (N, N) table rows; derived data, so not a buffer

    def forward(self, x, wh, ww, mask=None):  # x: (B*nW, N, C), mask: (nW, N, N) or None
        Bw, N, C = x.shape
        key = (wh, ww, x.device)
        if key not in self._index:
            self._index[key] = relative_position_index(wh, ww).to(x.device)
        idx = self._index[key]
        bias = self.relative_position_bias_table[idx.view(-1)].view(N, N, -1).permute(2, 0, 1)  # (heads, N, N)
        bias = bias.unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask[None, :, None]).reshape(-1, self.num_heads, N, N)
            bias = bias.repeat(Bw // nW, 1, 1, 1)  # (B*nW, heads, N, N), windows in image order
        qkv = self.qkv(x).reshape(Bw, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B*nW, heads, N, hd)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(Bw, N, C))


class SwinBlock(nn.Module):
    def __init__(self, dim, num_heads, shift):
        super().__init__()
        self.shift = shift  # 0 or 3 (= 7 // 2) in alternate blocks
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self._masks = {}  # attention masks cached per (H, W, device)

    def forward(self, x):  # (B, H, W, C)
        B, H, W, C = x.shape
        # side <= window: one window covering that side, no shift along it (as timm)
        wh, sh = (H, 0) if H <= WINDOW else (WINDOW, self.shift)
        ww, sw = (W, 0) if W <= WINDOW else (WINDOW, self.shift)
        Hp, Wp = math.ceil(H / wh) * wh, math.ceil(W / ww) * ww
        y = F.pad(self.norm1(x), (0, 0, 0, Wp - W, 0, Hp - H))  # (B, Hp, Wp, C)
        mask = None
        if sh or sw or Hp != H or Wp != W:
            key = (H, W, x.device)
            if key not in self._masks:
                if len(self._masks) >= 16:  # widths vary per batch: keep the cache small
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = swin_attention_mask(H, W, wh, ww, sh, sw, Hp, Wp, x.device)
            mask = self._masks[key]
        y = torch.roll(y, shifts=(-sh, -sw), dims=(1, 2))  # cyclic shift
        y = self.attn(window_partition(y, wh, ww), wh, ww, mask)  # (B*nW, wh*ww, C)
        y = torch.roll(window_reverse(y, wh, ww, Hp, Wp), shifts=(sh, sw), dims=(1, 2))
        x = x + y[:, :H, :W]  # drop the pad
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (4C) -> LayerNorm -> Linear to 2C: the Swin 'pooling'."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):  # (B, H, W, C), H and W even (pad_multiple=32 guarantees it)
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5)  # (B, H/2, W/2, dx, dy, C)
        x = x.flatten(3)  # (B, H/2, W/2, 4C) in timm's order x0=(0,0), x1=(1,0), x2=(0,1), x3=(1,1)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, 2C)


class SwinStage(nn.Module):
    def __init__(self, dim, depth, num_heads, downsample):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[SwinBlock(dim, num_heads, 0 if i % 2 == 0 else WINDOW // 2)
                                      for i in range(depth)])


class SwinTiny(Backbone):
    out_dim, stride, pad_multiple = 768, 32, 32

    def __init__(self, dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24)):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, 4, stride=4)
        self.patch_embed.norm = nn.LayerNorm(dim)
        self.layers = nn.Sequential(*[SwinStage(dim * 2 ** i, depths[i], heads[i], i > 0) for i in range(4)])
        self.norm = nn.LayerNorm(dim * 8)
        self.apply(trunc_normal_init)

    def forward(self, x):  # (B, 3, H, W)
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (B, H/4, W/4, 96) channels-last
        x = self.patch_embed.norm(x)
        for stage in self.layers:
            x = stage.downsample(x)  # (B, H/2^k, W/2^k, C*2)
            for block in stage.blocks:
                x = self._run(block, x)
        x = self.norm(x)  # (B, H/32, W/32, 768) = timm forward_features (NHWC)
        return x.permute(0, 3, 1, 2)  # (B, 768, H/32, W/32)


# -----------------------------------------------------------------------------
# MobileViT-Small (Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose, and
# Mobile-friendly Vision Transformer").
# A MobileNetV2 CNN whose last three stages end in a MobileViT block: a local 3x3 conv,
# then "unfold" the map into 2x2 patches and run a transformer ACROSS patches (pixel (i,j)
# of every patch attends to pixel (i,j) of all others: global reach), fold back, and fuse
# with the input by a 3x3 conv. Hypothesis: the local-global mix at 5M params, i.e. whether a
# tiny model with some global attention rivals much larger pure CNNs/ViTs on scores.
# Details as timm's mobilevit_s: SiLU everywhere (also in the transformer MLP), LayerNorm
# eps 1e-5, 4 heads, MLP ratio 2, no shortcut on blocks that change shape, and maps whose side
# is odd are bilinearly resized to even before unfolding and back afterwards (timm does the
# same; e.g. the 7-row map at H=224). No absolute positions => has_pos_embed=False.

class ConvBN(nn.Module):
    """conv -> BatchNorm -> SiLU (or no activation): timm's ConvNormAct, keys conv/bn."""

    def __init__(self, c_in, c_out, k=1, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.silu(x) if self.act else x


class MV2Block(nn.Module):
    """MobileNetV2 inverted residual (timm byobnet 'bottle', bottle_in, linear_out)."""

    def __init__(self, c_in, c_out, stride, expand=4):
        super().__init__()
        c_mid = c_in * expand
        self.conv1_1x1 = ConvBN(c_in, c_mid)
        self.conv2_kxk = ConvBN(c_mid, c_mid, 3, stride, groups=c_mid)  # depthwise
        self.conv3_1x1 = ConvBN(c_mid, c_out, act=False)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + y if self.has_skip else y


class MobileViTBlock(nn.Module):
    def __init__(self, c, dim, depth, patch=2, num_heads=4):
        super().__init__()
        self.patch = patch
        self.conv_kxk = ConvBN(c, c, 3)
        self.conv_1x1 = nn.Conv2d(c, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[Block(dim, num_heads, 2.0, nn.SiLU, eps=1e-5) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvBN(dim, c)
        self.conv_fusion = ConvBN(2 * c, c, 3)

    def forward(self, x):  # (B, c, H, W)
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))  # (B, C, H, W), C = transformer dim
        B, C, H, W = x.shape
        p = self.patch
        Hn, Wn = math.ceil(H / p) * p, math.ceil(W / p) * p
        if (Hn, Wn) != (H, W):  # timm: resize (not pad) to a multiple of the patch
            x = F.interpolate(x, size=(Hn, Wn), mode="bilinear", align_corners=False)
        nh, nw = Hn // p, Wn // p
        # unfold: (B, C, nh, p, nw, p) -> (B, p, p, nh, nw, C) -> (B*p*p, nh*nw, C)
        # i.e. one sequence per pixel position inside the patch, over all patches
        x = x.reshape(B, C, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(B * p * p, nh * nw, C)
        x = self.norm(self.transformer(x))
        # fold back: (B, p, p, nh, nw, C) -> (B, C, nh, p, nw, p) -> (B, C, Hn, Wn)
        x = x.reshape(B, p, p, nh, nw, C).permute(0, 5, 3, 1, 4, 2).reshape(B, C, Hn, Wn)
        if (Hn, Wn) != (H, W):
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)  # (B, c, H, W)
        return self.conv_fusion(torch.cat([shortcut, x], dim=1))  # local + global fused


class MobileViTSmall(Backbone):
    out_dim, stride, pad_multiple = 640, 32, 32

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 16, 3, stride=2)  # (B, 16, H/2, W/2)
        self.stages = nn.Sequential(
            nn.Sequential(MV2Block(16, 32, 1)),
            nn.Sequential(MV2Block(32, 64, 2), MV2Block(64, 64, 1), MV2Block(64, 64, 1)),
            nn.Sequential(MV2Block(64, 96, 2), MobileViTBlock(96, 144, 2)),
            nn.Sequential(MV2Block(96, 128, 2), MobileViTBlock(128, 192, 4)),
            nn.Sequential(MV2Block(128, 160, 2), MobileViTBlock(160, 240, 3)),
        )
        self.final_conv = ConvBN(160, 640)

    def forward(self, x):  # (B, 3, H, W)
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = self._run(block, x)
        return self.final_conv(x)  # (B, 640, H/32, W/32)


# -----------------------------------------------------------------------------
# The registry is a plain dict; model.py picks a constructor by name.

BACKBONES = {
    "cnn_tiny": CNNTiny,
    "cnn_line": CNNLine,
    # the same net with ReLU: GELU's erf costs a CPU ~9% of a training step (results/quickstart_levers/)
    "cnn_line_relu": functools.partial(CNNLine, act=nn.ReLU),
    "resnet50": ResNet50,
    "efficientnet_b0": EfficientNetB0,
    "convnext_tiny": ConvNeXtTiny,
    "vit_small": VisionTransformer,
    "deit_small": VisionTransformer,  # same architecture as vit_small; only the weights differ
    "swin_tiny": SwinTiny,
    "mobilevit_small": MobileViTSmall,
}

# timm ImageNet checkpoints on the Hugging Face hub (file model.safetensors), for pretrained='timm'
TIMM_HUB = {
    "resnet50": "timm/resnet50.a1_in1k",
    "efficientnet_b0": "timm/efficientnet_b0.ra_in1k",
    "convnext_tiny": "timm/convnext_tiny.fb_in1k",
    "vit_small": "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "deit_small": "timm/deit_small_patch16_224.fb_in1k",
    "swin_tiny": "timm/swin_tiny_patch4_window7_224.ms_in1k",
    "mobilevit_small": "timm/mobilevit_s.cvnets_in1k",
}
# the seven encoders of the backbone study (study.py, bench_vram.py): the ones with ImageNet weights.
# cnn_tiny (the tests) and cnn_line (the CPU reader) are sized for a CPU
STUDY_BACKBONES = [name for name in BACKBONES if name in TIMM_HUB]


# The input normalization each timm checkpoint was trained with. The contract feeds every
# backbone ImageNet-normalized images; model.py may use these to match the pretraining exactly
# (AugReg ViT was trained on [-1, 1] inputs, Apple's MobileViT on raw [0, 1] pixels).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PRETRAIN_NORM = {"vit_small": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                 "mobilevit_small": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}


def build_backbone(name, pretrained=None):
    """Construct backbone `name`; `pretrained` is None (random init), a local
    .safetensors/.pth path, or 'timm' (download timm's ImageNet weights from the HF hub)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    model = BACKBONES[name]()
    model.input_mean, model.input_std = PRETRAIN_NORM.get(name, (IMAGENET_MEAN, IMAGENET_STD))
    if pretrained:
        load_pretrained(model, name, pretrained)
    return model


def _download_timm(name):
    if name not in TIMM_HUB:
        raise ValueError(f"backbone {name!r} has no timm checkpoint; use pretrained=None")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise RuntimeError("pretrained='timm' needs huggingface_hub (pip install huggingface_hub); "
                           "or pass a local .safetensors/.pth path, or pretrained=None") from None
    try:
        return hf_hub_download(TIMM_HUB[name], "model.safetensors")
    except Exception as e:  # offline, DNS failure, HF_HUB_OFFLINE=1 with an empty cache, ...
        raise RuntimeError(f"cannot fetch {TIMM_HUB[name]} from the Hugging Face hub (unreachable/offline: "
                           f"{type(e).__name__}); pass a local .safetensors/.pth path as pretrained=, "
                           f"or pretrained=None to train from scratch") from None


def load_pretrained(model, name, pretrained):
    """Strictly load a timm-format state dict into `model`. Classifier keys (fc., classifier.,
    head.*) and buffers timm no longer stores (Swin's relative_position_index / attn_mask)
    are dropped first; any other missing/unexpected key or shape => one-line ValueError."""
    path = _download_timm(name) if pretrained == "timm" else pretrained
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        if path.endswith(".safetensors"):
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
    except Exception as e:  # truncated file, wrong format, pickle refused by weights_only, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot read pretrained weights {path}: {first}") from None
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    own = model.state_dict()
    if not any(k in own for k in sd) and any(k.startswith("backbone.") for k in sd):
        # a whole nanoOMR checkpoint (model.safetensors): take its encoder
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    sd = {k: v for k, v in sd.items() if k in own or not (
        k.startswith(("fc.", "classifier.", "head.")) or k.endswith(("relative_position_index", "attn_mask")))}
    for k in own:  # BatchNorm's batch counter is optional in checkpoints
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    for k in sorted(set(own) | set(sd)):
        if k not in sd:
            raise ValueError(f"{path}: missing key {k!r} for backbone {name}")
        if k not in own:
            raise ValueError(f"{path}: unexpected key {k!r} for backbone {name}")
        if tuple(sd[k].shape) != tuple(own[k].shape):
            raise ValueError(f"{path}: shape mismatch at {k!r}: checkpoint {tuple(sd[k].shape)} "
                             f"vs {name} {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=True)
    return model


# -----------------------------------------------------------------------------
# Benchmark: forward+backward throughput on this machine's CPU (or --device cuda)

def bench(names, height=224, width=896, batch=2, iters=3, warmup=1, device="cpu"):
    print(f"fwd+bwd at {height} x {width}, batch {batch}, {iters} timed iters after {warmup} warm-up, "
          f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"| backbone | params (M) | out grid | images/s |\n|---|---|---|---|")
    for name in names:
        torch.manual_seed(0)
        model = build_backbone(name).to(device).train()
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        x = torch.randn(batch, 3, height, width, device=device)
        for i in range(warmup + iters):
            if i == warmup:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            out = model(x)
            out.float().mean().backward()
            model.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ips = batch * iters / (time.perf_counter() - t0)
        print(f"| {name} | {n / 1e6:.2f} | {tuple(out.shape[1:])} | {ips:.2f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true", help="time fwd+bwd of each backbone")
    parser.add_argument("--names", default=",".join(BACKBONES), help="comma-separated backbones")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=896)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.names.split(",") if n]
    bad = [n for n in names if n not in BACKBONES]
    if bad:
        sys.exit(f"error: unknown backbone {bad[0]!r}; available: {', '.join(BACKBONES)}")
    if not args.bench:
        for n in names:
            m = build_backbone(n)
            print(f"{n}: {sum(p.numel() for p in m.parameters()) / 1e6:.2f}M params, out_dim {m.out_dim}, "
                  f"stride {m.stride}, pad_multiple {m.pad_multiple}, has_pos_embed {m.has_pos_embed}")
        sys.exit(0)
    bench(names, args.height, args.width, args.batch, args.iters, device=args.device)
