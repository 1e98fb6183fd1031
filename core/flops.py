"""
core/flops.py: FLOP accounting for MusicTrOCR.estimate_mfu (model FLOPs utilization, Chowdhery et al. 2022):
the training FLOPs of one sample (the encoder measured with torch's FlopCounterMode, the decoder
counted PaLM-style), and the peak they are compared with: a GPU's datasheet number, or on a CPU
this machine's own fp32 matmul rate.
"""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# GPU peak dense bf16 (fp16 on V100/T4, which lack bf16) tensor-core FLOP/s, from NVIDIA datasheets.
# Matched by substring of torch.cuda.get_device_name(), first hit wins (so 'H100 PCIe' before 'H100').
GPU_PEAK_FLOPS = [
    ('B200', 2250e12), ('H200', 989e12), ('H100 PCIe', 756e12), ('H100', 989e12), ('H800', 989e12),
    ('A100', 312e12), ('A800', 312e12), ('L40S', 362e12), ('L40', 181e12), ('L4', 121e12),
    ('A10G', 125e12), ('A10', 125e12), ('RTX 4090', 165e12), ('RTX 3090', 71e12),
    ('A6000', 155e12), ('V100', 125e12), ('T4', 65e12),
]


def gpu_peak(device):
    """The datasheet peak of the GPU `device` is on (GPU_PEAK_FLOPS), or None (a CPU, an unknown GPU)."""
    if torch.device(device).type != 'cuda' or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((f for key, f in GPU_PEAK_FLOPS if key in name), None)


def cpu_peak_flops():
    """A CPU has no datasheet peak: MFU there is measured against this machine's 1024^2 fp32 matmul rate."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    t = time.perf_counter()
    for _ in range(8):
        a @ b
    return 8 * 2 * 1024 ** 3 / (time.perf_counter() - t)


def encoder_flops(model, img_height, img_width):
    """Forward FLOPs of the backbone on ONE (3, H, W) image, measured once with
    torch.utils.flop_counter.FlopCounterMode (counts matmuls/convs as 2*MACs) and cached."""
    key = (int(img_height), int(img_width))
    if key not in model._encoder_flops:
        m, mw = model.backbone.pad_multiple, model.backbone.pad_multiple_w
        H, W = key[0] + (-key[0]) % m, key[1] + (-key[1]) % mw
        p = next(model.backbone.parameters())
        x = torch.zeros(1, 3, H, W, device=p.device, dtype=p.dtype)
        was_training = model.backbone.training
        model.backbone.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.backbone(x)
        model.backbone.train(was_training)
        model._encoder_flops[key] = counter.get_total_flops()
    return model._encoder_flops[key]


def per_sample(model, img_width, seq_len, img_height=None):
    """Training FLOPs (forward + backward) for one image of the given size and T tokens.
    Encoder: measured forward FLOPs x3 (x1 when the backbone is frozen: no backward through it).
    Decoder (PaLM appendix B style): 6 x params applied per token x T, 6 x params applied per memory
    position (the input projection, the cross-attention K/V) x S, plus the attention score/value
    matmuls 12*L*D*T per token for self-attention (T keys) and 12*L*D*S for cross-attention."""
    cfg = model.config
    H = img_height or cfg.img_height
    enc = encoder_flops(model, H, img_width)
    enc_trainable = any(p.requires_grad for p in model.backbone.parameters())
    bb = model.backbone
    rows = 1 if cfg.collapse_height else (H + (-H) % bb.pad_multiple) // bb.stride
    S = rows * ((img_width + (-img_width) % bb.pad_multiple_w) // bb.stride_w)  # memory length
    T, L, D = seq_len, cfg.n_layer, cfg.d_model
    n_mem = model.proj.weight.numel() + sum(b.cross.kv_proj.weight.numel() for b in model.blocks)
    n_tok = sum(p.numel() for n, p in model.named_parameters()
                if n.startswith('blocks.') and p.dim() >= 2) - (n_mem - model.proj.weight.numel())
    n_tok += model.lm_head.weight.numel()  # the tied head is a matmul per token (the embedding lookup is free)
    if hasattr(model, 'ctc_head'):
        n_mem += model.ctc_head.weight.numel()  # one CTC distribution per memory column
    dec = 6 * n_tok * T + 6 * n_mem * S + 12 * L * D * T * T + 12 * L * D * T * S
    return (3 if enc_trainable else 1) * enc + dec
