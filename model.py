"""
model.py: the MusicTrOCR model (image of one system of engraved music -> ABC tokens).

An image encoder (any backbone from backbones.py) turns the picture into a grid of feature
vectors; a small hand-written Transformer decoder reads that grid through cross-attention and
writes the ABC transcription one BPE token at a time. This is the TrOCR recipe
(Li et al. 2021, https://arxiv.org/abs/2109.10282) with the decoder written nanoGPT-style:

    images (B,3,H,W) in [0,1] --normalize, pad--> backbone --> (B,C,h,w) grid
      --linear--> (B,h,w,D) --+2D sin/cos (if the backbone has no positions)--> flatten
      --LayerNorm--> memory (B, S=h*w, D)   (+ a key padding mask from the image widths)
    idx (B,T) --tok emb + learned pos--> N x [causal self-attn, cross-attn, SwiGLU MLP]
      --LayerNorm--> tied head --> logits (B,T,V)

Also here: configure_optimizers (AdamW), estimate_mfu (the FLOP accounting is in flops.py),
generate (greedy / sampling / beam search with a KV cache; the loop is in
decoding.py) and build_model, the one way to build a model with its plug-ins (NF4, LoRA).
Checkpoints are checkpoint.py's job.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones
import lora
import quant
from core import decoding, flops


@dataclass
class MusicTrOCRConfig:
    backbone: str = 'resnet50'
    pretrained: str = None   # None = random init; otherwise whatever backbones.build_backbone accepts
    vocab_size: int = 4096
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 512
    d_ff: int = 2048         # hidden size of the SwiGLU MLP
    max_seq_len: int = 2048  # positions of the decoder, bos included
    dropout: float = 0.1
    img_height: int = 224    # recorded for the data pipeline / MFU estimate; the model accepts any H
    pad_id: int = 0          # the ids data.train_tokenizer assigns (unk is 1)
    bos_id: int = 2
    eos_id: int = 3
    freeze_backbone: bool = False
    grad_checkpointing: bool = False
    # one memory vector per image column: the backbone's h rows are concatenated, (C*h) -> D (CRNN,
    # Shi et al. 2015). Needs a fixed img_height; the memory is w long instead of h*w
    collapse_height: bool = False
    # joint CTC/attention (Kim, Hori & Watanabe 2017): loss = (1-w) CE(decoder) + w CTC(columns).
    # CTC aligns the columns with the label monotonically, which cross-attention otherwise learns slowly
    ctc_weight: float = 0.0
    label_smoothing: float = 0.0  # of the decoder's cross-entropy (Szegedy et al. 2016)


# -----------------------------------------------------------------------------
# decoder building blocks

class SelfAttention(nn.Module):
    """Causal multi-head self-attention, with an optional KV cache for decoding."""

    def __init__(self, config):
        super().__init__()
        assert config.d_model % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=False)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if cache is None or cache.pos == 0:
            # no past: ordinary causal attention over these T positions
            if cache is not None:
                cache.append(k, v)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T > 1)
        else:
            pos = cache.pos
            k, v = cache.append(k, v)  # (B, nh, pos+T, hs): everything seen so far
            if T == 1:
                mask = None  # the newest token may look at every cached key
            else:
                # query i sits at absolute position pos+i and sees keys 0..pos+i
                mask = (torch.arange(pos + T, device=x.device)[None, :]
                        <= (pos + torch.arange(T, device=x.device))[:, None])  # (T, pos+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class CrossAttention(nn.Module):
    """Multi-head attention from the text positions to the image memory."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.kv_proj = nn.Linear(config.d_model, 2 * config.d_model, bias=False)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def memory_kv(self, memory):
        """Keys and values of the memory, (B, nh, S, hs) each. Computed once per image when decoding."""
        B, S, C = memory.size()
        k, v = self.kv_proj(memory).split(C, dim=2)
        k = k.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)
        return k, v

    def forward(self, x, mem_kv, mem_mask):
        B, T, C = x.size()
        q = self.q_proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k, v = mem_kv
        # mem_mask (B, S) bool, True = real image column -> (B, 1, 1, S) broadcast over heads and queries.
        # Masked keys get weight exactly 0, so right-padding an image with white changes nothing.
        mask = None if mem_mask is None else mem_mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020, https://arxiv.org/abs/2002.05202): down(silu(gate(x)) * up(x))."""

    def __init__(self, config):
        super().__init__()
        self.w_gate = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.w_up = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.c_proj = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.silu(self.w_gate(x)) * self.w_up(x)))


class Block(nn.Module):
    """One pre-norm decoder layer: x + SelfAttn(LN x), + CrossAttn(LN x, memory), + MLP(LN x)."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.cross = CrossAttention(config)
        self.ln_3 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x, mem_kv, mem_mask, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.cross(self.ln_2(x), mem_kv, mem_mask)
        x = x + self.mlp(self.ln_3(x))
        return x


def sincos_2d(h, w, dim, device):
    """Fixed 2D sin/cos position code (B-free), (h, w, dim): half the channels encode the row and
    half the column, each with the 1D code of Vaswani et al. 2017 (as in MAE, He et al. 2021)."""
    assert dim % 4 == 0, "d_model must be a multiple of 4 for the 2D position code"
    d4 = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(d4, device=device, dtype=torch.float32) / d4))  # (d4,)
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None] * omega[None, :]  # (h, d4)
    x = torch.arange(w, device=device, dtype=torch.float32)[:, None] * omega[None, :]  # (w, d4)
    pe_y = torch.cat([y.sin(), y.cos()], dim=1)[:, None, :].expand(h, w, 2 * d4)  # (h, w, D/2)
    pe_x = torch.cat([x.sin(), x.cos()], dim=1)[None, :, :].expand(h, w, 2 * d4)  # (h, w, D/2)
    return torch.cat([pe_y, pe_x], dim=2)  # (h, w, D)


def count_params(module, trainable_only=False):
    """Parameter count of any module (a tied matrix counted once). Weights that quant.py stores as
    4-bit NF4 buffers (QLoRA) are frozen parameters too, so the total counts them."""
    n = sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
    if not trainable_only:
        n += sum(m.quantized_numel() for m in module.modules() if isinstance(m, quant._NF4Mixin))
    return n


# -----------------------------------------------------------------------------
# the model

class MusicTrOCR(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        # --- encoder
        self.backbone = backbones.build_backbone(config.backbone, config.pretrained)
        bb = self.backbone
        # rows of the grid at img_height (after padding to the backbone's multiple)
        self.grid_rows = (config.img_height + (-config.img_height) % bb.pad_multiple) // bb.stride
        in_dim = bb.out_dim * (self.grid_rows if config.collapse_height else 1)
        self.proj = nn.Linear(in_dim, config.d_model)  # grid channels C (or C*h) -> D
        if config.ctc_weight > 0:
            if not config.collapse_height:
                raise ValueError("ctc_weight > 0 needs collapse_height=True: CTC reads one frame per image column")
            # blank = pad_id, an id that never occurs inside a label (its own head: CTC wants a
            # frame-level distribution with a blank, unlike the tied token head)
            self.ctc_head = nn.Linear(config.d_model, config.vocab_size)
        self.mem_norm = nn.LayerNorm(config.d_model)
        # --- decoder
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # weight tying (Press & Wolf 2017): the output head and the token embedding are one matrix
        self.tok_emb.weight = self.lm_head.weight
        # buffers for input normalization; not persistent, so they never appear in checkpoints
        # with the statistics the backbone's ImageNet checkpoint was trained with: ImageNet mean/std
        # for most, 0.5/0.5 for ViT-S (AugReg), raw [0,1] for MobileViT (see backbones.PRETRAIN_NORM)
        self.register_buffer('img_mean', torch.tensor(self.backbone.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('img_std', torch.tensor(self.backbone.input_std).view(1, 3, 1, 1), persistent=False)

        # init everything except the backbone (which may be pretrained) like GPT-2 / nanoGPT
        for name, module in self.named_modules():
            if not name.startswith('backbone'):
                self._init_weights(module)
        # residual projections get a smaller std: each block adds 3 branches to the residual stream
        for pn, p in self.named_parameters():
            if pn.startswith('blocks.') and pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(3 * config.n_layer))

        if config.grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self._encoder_flops = {}  # (H, W) -> forward FLOPs of the backbone on one image, see flops.py
        self._channels_last = False

    def to_channels_last(self):
        """NHWC memory for the backbone's weights and inputs. On a CPU, oneDNN's convolutions run
        several times faster in this layout than in NCHW for the thin, wide maps of a music line;
        the numbers are the same up to float rounding. A runtime choice, not saved in checkpoints."""
        self.backbone.to(memory_format=torch.channels_last)
        self._channels_last = True
        return self

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def train(self, mode=True):
        # a frozen backbone keeps its BatchNorm layers in eval mode, so their running stats never
        # move; only those: LoRA adapters inside it (lora.py) still get their dropout in training
        super().train(mode)
        if self.config.freeze_backbone:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def get_num_params(self, trainable_only=False):
        """Parameter count (see count_params): all of them, or the trainable ones."""
        return count_params(self, trainable_only)

    # --- encoder ------------------------------------------------------------

    def encode(self, images, widths=None):
        """images (B,3,H,W) in [0,1], paper = 1.0; widths (B,) real widths or None (= all W).
        Returns memory (B, S, D) and mem_mask (B, S) bool (True = real image) or None.
        With the mask, how much white padding follows an image does not matter (tests/test_model.py).
        One caveat for CNN backbones: the last real columns see, through their receptive field,
        either white padding (in a batch) or the conv's zero padding at the tensor edge (alone),
        so an image alone and the same image padded differ slightly; data.collate always pads
        with white, as sample.py does."""
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"images must be (B,3,H,W), got {tuple(images.shape)}")
        B, _, H, W = images.shape
        # pad right/bottom with white paper up to the backbone's multiple (e.g. 32 for ResNet, 16 for ViT)
        pad_h, pad_w = (-H) % self.backbone.pad_multiple, (-W) % self.backbone.pad_multiple_w
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), value=1.0)
        x = (images - self.img_mean) / self.img_std
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # (B, 3, H, W) stored as (B, H, W, 3)
        if self.config.freeze_backbone and not any(p.requires_grad for p in self.backbone.parameters()):
            with torch.no_grad():  # nothing to train in there: don't keep activations for backward
                grid = self.backbone(x)
        else:
            grid = self.backbone(x)  # (B, C, h, w)
        _, C, h, w = grid.shape
        if self.config.collapse_height:
            if h != self.grid_rows:
                raise ValueError(f"collapse_height: images must be {self.config.img_height} px high "
                                 f"(got {H}: {h} grid rows, not {self.grid_rows})")
            grid = grid.reshape(B, C * h, 1, w)  # (B, C, h, w) -> (B, C*h, 1, w): a column is one vector
            h = 1
        mem = self.proj(grid.permute(0, 2, 3, 1))  # (B, h, w, C) -> (B, h, w, D)
        if not self.backbone.has_pos_embed:
            mem = mem + sincos_2d(h, w, mem.size(-1), mem.device).to(mem.dtype)
        mem = self.mem_norm(mem.reshape(B, h * w, -1))  # (B, S=h*w, D), row-major: s = row*w + col
        mem_mask = None
        if widths is not None:
            # (widths must be >= 1, as data.collate guarantees; not checked here, since that check
            # would be a host-device sync on every training step)
            widths = torch.as_tensor(widths, device=images.device).view(B)
            # grid column j starts at pixel j*stride; it is real if that pixel is inside the image
            cols = torch.arange(w, device=images.device) * self.backbone.stride_w  # (w,)
            valid = cols[None, :] < widths[:, None]  # (B, w)
            mem_mask = valid[:, None, :].expand(B, h, w).reshape(B, h * w)  # (B, S)
        return mem, mem_mask

    # --- decoder ------------------------------------------------------------

    def decode(self, idx, memory, mem_mask, mem_kv=None, caches=None):
        """idx (B,T) token ids -> final hidden states (B,T,D) (before the head).
        mem_kv: per-layer cross-attention (k, v) computed once (else computed here from memory);
        caches: per-layer KVCache (decoding), then idx holds only the new positions."""
        B, T = idx.size()
        pos0 = 0 if caches is None else caches[0].pos
        if pos0 + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {pos0 + T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        pos = torch.arange(pos0, pos0 + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, D)
        for i, block in enumerate(self.blocks):
            kv = mem_kv[i] if mem_kv is not None else block.cross.memory_kv(memory)
            x = block(x, kv, mem_mask, None if caches is None else caches[i])
        return self.ln_f(x)

    def forward(self, images, idx, targets=None, widths=None):
        """Returns (logits (B,T,V), loss or None). Unlike nanoGPT, logits are for EVERY position even
        without targets: distillation needs the teacher's full distribution, and generate() has its
        own cheaper path. loss = mean cross-entropy over targets != -1."""
        memory, mem_mask = self.encode(images, widths)
        x = self.decode(idx, memory, mem_mask)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                                   label_smoothing=self.config.label_smoothing)
            if self.config.ctc_weight > 0:
                w = self.config.ctc_weight
                loss = (1 - w) * loss + w * self.ctc_loss(memory, mem_mask, targets)
        return logits, loss

    def ctc_loss(self, memory, mem_mask, targets):
        """CTC (Graves et al. 2006) of the label under the per-column distributions. memory (B, S, D)
        with S = image columns (collapse_height), targets (B, T) = label ids, eos, then -1 padding.
        Mean over the batch of the per-label loss divided by its length (a per-token scale, like CE)."""
        B, S, _ = memory.shape
        log_probs = self.ctc_head(memory).float().log_softmax(-1).transpose(0, 1)  # (S, B, V)
        keep = (targets >= 0) & (targets != self.config.eos_id)  # the label itself: no eos, no padding
        in_lens = mem_mask.sum(1) if mem_mask is not None else torch.full((B,), S, device=memory.device)
        # zero_infinity: a label longer than its image has columns has no alignment; it adds nothing
        # (instead of inf) and the decoder's loss still trains on it
        return F.ctc_loss(log_probs, targets[keep], in_lens, keep.sum(1), blank=self.config.pad_id,
                          reduction='mean', zero_infinity=True)

    @torch.no_grad()
    def ctc_decode(self, images, widths=None):
        """Greedy CTC decoding (best path: the argmax of every column, repeats merged, blanks dropped):
        one encoder pass, no autoregressive loop. Returns one list of token ids per image."""
        was_training = self.training
        self.eval()
        try:
            memory, mem_mask = self.encode(images, widths)
            best = self.ctc_head(memory).argmax(-1)  # (B, S)
        finally:
            self.train(was_training)
        lens = mem_mask.sum(1).tolist() if mem_mask is not None else [best.size(1)] * best.size(0)
        return decoding.ctc_best_path(best, lens, blank=self.config.pad_id)

    # --- optimizer & MFU ------------------------------------------------------

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on every parameter with >= 2 dims (Linear weights, conv kernels, and,
        as in nanoGPT, the embedding tables: they are matrices too), none on biases and norm gains.
        Frozen parameters (frozen backbone, LoRA/NF4 base weights) are left out."""
        params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay},
                  {'params': no_decay, 'weight_decay': 0.0}]
        n_decay, n_no_decay = sum(p.numel() for p in decay), sum(p.numel() for p in no_decay)
        print(f"num decayed parameter tensors: {len(decay)}, with {n_decay:,} parameters")
        print(f"num non-decayed parameter tensors: {len(no_decay)}, with {n_no_decay:,} parameters")
        use_fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        print(f"using fused AdamW: {use_fused}")
        extra = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_sample(self, img_width, seq_len, img_height=None):
        """Training FLOPs (forward + backward) for one image and T tokens: flops.per_sample."""
        return flops.per_sample(self, img_width, seq_len, img_height)

    def estimate_mfu(self, fwdbwd_per_iter, dt, img_width, seq_len, img_height=None, peak_flops=None):
        """Model FLOPs utilization (Chowdhery et al. 2022): achieved model FLOP/s over the GPU's peak
        dense bf16 FLOP/s (flops.GPU_PEAK_FLOPS), or over `peak_flops` if given (on a CPU, train.py passes
        the fp32 matmul rate it measured on this machine: no datasheet number fits every CPU).
        fwdbwd_per_iter = images processed by this process in one iteration (batch_size *
        gradient_accumulation_steps), dt = seconds per iteration, img_width and seq_len = the (padded)
        batch width and T. Returns a fraction (0.4 = 40%), or None without a known peak."""
        peak = peak_flops if peak_flops is not None else flops.gpu_peak(next(self.parameters()).device)
        if peak is None:
            return None
        return self.flops_per_sample(img_width, seq_len, img_height) * fwdbwd_per_iter / dt / peak

    # --- generation -----------------------------------------------------------

    @torch.no_grad()
    def generate(self, images, max_new_tokens, temperature=0.0, top_k=None, beam_size=1,
                 use_cache=True, widths=None, ignore_eos=False):
        """Transcribe a batch of images: returns one list of token ids per image, without bos/eos.

        temperature == 0: greedy; > 0: sampling from softmax(logits / temperature), restricted to the
        top_k tokens if given. beam_size > 1: beam search (deterministic; temperature must be 0), all
        beams of all images decoded as one batch of B*beam_size rows. Beams are ranked by their total
        log-probability, WITHOUT length normalization (the objective greedy decoding approximates; a
        finished beam keeps its score). A sequence stops at eos (unless ignore_eos, for benchmarks);
        at most min(max_new_tokens, max_seq_len) tokens are produced (bos takes position 0, the last
        token is never fed back). The encoder runs once; with use_cache the self-attention keys/values
        live in a KV cache and the cross-attention keys/values are computed once per image; without it
        every step re-runs the decoder on the whole prefix (the reference, for tests and benchmarks)."""
        if beam_size > 1 and temperature > 0:
            raise ValueError("beam search is deterministic: use temperature=0 with beam_size > 1")
        was_training = self.training
        self.eval()
        try:
            return decoding.generate(self, images, max_new_tokens, temperature, top_k, max(1, beam_size),
                                   use_cache, widths, ignore_eos)
        finally:
            self.train(was_training)


# -----------------------------------------------------------------------------
# the one way to build a model: train.py, checkpoint.load_model and bench_vram.py all come here

# the model-defining config keys of train.py; the rest of the config may change between runs of one model
MODEL_KEYS = ('backbone', 'pretrained', 'n_layer', 'n_head', 'd_model', 'd_ff', 'max_seq_len', 'dropout', 'img_height',
              'freeze_backbone', 'grad_checkpointing', 'collapse_height', 'ctc_weight', 'label_smoothing')


def config_args(config, tokenizer):
    """train.py's config and tokenizer -> (model_args, lora_args or None, quant_args or None), the
    arguments of build_model, as checkpoints record them (model_args with plugin_args applied)."""
    model_args = {k: config[k] for k in MODEL_KEYS}
    model_args.update(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                      eos_id=tokenizer.eos_id)
    lora_args = (dict(rank=config['lora_rank'], alpha=config['lora_alpha'], dropout=config['lora_dropout'],
                      targets=list(config['lora_targets']), rslora=config['lora_rslora'])
                 if config['lora_rank'] > 0 else None)
    quant_args = (dict(backbone=config['quant_backbone'], double_quant=config['nf4_double_quant'])
                  if config['quant_backbone'] else None)
    return plugin_args(model_args, lora_args, quant_args), lora_args, quant_args


def plugin_args(model_args, lora_args=None, quant_args=None):
    """The rule the plug-ins impose on the model: LoRA on the backbone, or an NF4 backbone (QLoRA),
    fine-tune the encoder through the adapters only, so the rest of the backbone is frozen
    (freeze_backbone=True, its BatchNorm kept in eval mode). The decoder is trained from scratch and
    stays trainable. Returns model_args with that applied."""
    targets = (lora_args or {}).get('targets', ('backbone.',))
    if quant_args or (lora_args and any(t.startswith('backbone') for t in targets)):
        return dict(model_args, freeze_backbone=True)
    return dict(model_args)


def build_model(model_args, lora_args=None, quant_args=None, verbose=False):
    """MusicTrOCR(MusicTrOCRConfig(**plugin_args(...))), then the plug-ins, in this order:
      quant_args, e.g. dict(backbone='nf4', double_quant=False): the backbone's Linear/Conv2d weights
        stored in 4-bit NormalFloat (quant.quantize_model_nf4);
      lora_args, the keywords of lora.apply_lora (rank, alpha, dropout, targets, rslora): adapters on
        top, beside the 4-bit weights for QLoRA (Dettmers et al. 2023).
    Returns the model, on the CPU. Bad arguments raise ValueError / KeyError (FileNotFoundError for a
    missing pretrained file)."""
    model = MusicTrOCR(MusicTrOCRConfig(**plugin_args(model_args, lora_args, quant_args)))
    if quant_args:
        if quant_args.get('backbone', 'nf4') != 'nf4':
            raise ValueError(f"unknown backbone quantization {quant_args.get('backbone')!r}")
        n = quant.quantize_model_nf4(model.backbone, double_quant=bool(quant_args.get('double_quant', False)))
        if verbose:
            print(f"NF4: quantized {n} backbone modules")
    if lora_args:
        kw = dict(lora_args)
        if 'targets' in kw:
            kw['targets'] = tuple(kw['targets'])  # config.json stores a list
        wrapped = lora.apply_lora(model, **kw)
        if verbose:
            print(f"LoRA: rank {kw['rank']} adapters on {len(wrapped)} modules")
    return model
