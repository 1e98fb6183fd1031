"""
inference/attention.py: where the decoder looks. The cross-attention weights of a MusicTrOCR for a sequence it
generated, and a picture of them: the line image once per generated token, the attention overlaid in
red, the token written above (sample.py --attention=DIR).

model.py is not changed: cross_attention re-runs the decoder with teacher forcing on [bos] + ids,
block by block with the modules' own layers, and computes softmax(q k^T / sqrt(d_head)) from each
CrossAttention's own q_proj and kv_proj (masked like scaled_dot_product_attention there). The query
at position t is the one that predicted token t, so row t is where the model looked to write it.
Tested: weights @ v equals the module's attention output, and the teacher-forced argmax equals ids.

Which weights are drawn: layer='last' (the default, sample.py --attention_layer) is the mean over
the heads of the LAST decoder layer; layer='all' averages every layer's heads. The last layer is the
default because it localizes better: on the shipped reader (`python -m inference.attention --out_dir=reader
--data_dir=data/m21/full --n=64`, numbers in the README) its peaks are sharper and move left to right
more often than the average of all layers.

Memory layout (model.encode): with collapse_height=True the memory is one vector per image column,
S = w, column j covering pixels [j*stride_w, (j+1)*stride_w) over the full height; otherwise it is
the h x w grid flattened row-major, s = row*w + col, cell (r, c) covering rows [r*stride, (r+1)*stride)
and columns [c*stride_w, (c+1)*stride_w). Both are mapped back onto the (padded) image pixels.
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import data
from inference import pages


@torch.no_grad()
def cross_attention(model, images, ids, widths=None):
    """images (B, 3, H, W), ids (B, T) generated token ids (no bos) -> list over layers of
    (B, n_head, T, S) cross-attention weights, the row for token t being the query that predicted it;
    and the teacher-forced logits (B, T, V) (a check that this re-run is the model's own)."""
    was_training = model.training
    model.eval()
    try:
        cfg = model.config
        memory, mem_mask = model.encode(images, widths)  # (B, S, D), (B, S) or None
        B, T = ids.shape
        idx = torch.cat([torch.full((B, 1), cfg.bos_id, dtype=ids.dtype, device=ids.device), ids[:, :-1]], 1)
        x = model.tok_emb(idx) + model.pos_emb(torch.arange(T, device=ids.device))  # (B, T, D)
        out = []
        for blk in model.blocks:
            x = x + blk.attn(blk.ln_1(x))
            h = blk.ln_2(x)
            cross = blk.cross
            k, v = cross.memory_kv(memory)  # (B, nh, S, hs) each
            nh, hs = cross.n_head, k.size(-1)
            q = cross.q_proj(h).view(B, T, nh, hs).transpose(1, 2)  # (B, T, D) -> (B, nh, T, hs)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, S)
            if mem_mask is not None:
                att = att.masked_fill(~mem_mask[:, None, None, :], float('-inf'))
            out.append(F.softmax(att.float(), dim=-1))
            x = x + cross(h, (k, v), mem_mask)
            x = x + blk.mlp(blk.ln_3(x))
        logits = model.lm_head(model.ln_f(x))
    finally:
        model.train(was_training)
    return out, logits


def select(weights, layer='last'):
    """list of (B, nh, T, S) -> (B, T, S): the last layer's heads averaged, or all layers' ('all')."""
    if layer == 'last':
        return weights[-1].mean(1)
    if layer == 'all':
        return torch.stack(weights).mean((0, 2))
    raise ValueError(f"attention layer must be 'last' or 'all', got {layer!r}")


def to_pixels(model, w, H, W):
    """(T, S) weights of one image -> (T, H, W) maps over its H x W pixels (see the docstring); S may
    cover a wider, batch-padded image: the padding's columns are cut off."""
    bb, T = model.backbone, w.size(0)
    sh, sw = bb.stride, bb.stride_w
    if model.config.collapse_height:
        cols = w.size(1)
        grid = w.view(T, 1, cols)
        rows_px = H  # one vector covers the whole height
        up = grid.repeat_interleave(sw, dim=2).expand(T, rows_px, cols * sw)
    else:
        rows = (H + (-H) % bb.pad_multiple) // sh  # the grid's rows; its columns cover the (batch-)padded width
        cols = w.size(1) // rows
        grid = w.view(T, rows, cols)  # row-major: s = r * cols + c
        up = grid.repeat_interleave(sh, dim=1).repeat_interleave(sw, dim=2)
    return up[:, :H, :W]


def attention_picture(model, x, ids, tok, layer='last', max_width=900):
    """One line image x (3, H, W) and the ids generated for it -> RGB PIL picture: one panel per
    generated token (the line image, the token's attention in red, the token's text above)."""
    ids = list(ids) or [tok.eos_id]
    H, W = x.shape[-2:]
    idt = torch.tensor([ids], device=x.device)
    weights, _ = cross_attention(model, x.unsqueeze(0).to(next(model.parameters()).device), idt)
    w = select(weights, layer)[0].cpu()  # (T, S)
    maps = to_pixels(model, w, H, W).numpy()  # (T, H, W)
    maps = maps / np.maximum(maps.reshape(len(ids), -1).max(1), 1e-12)[:, None, None]  # each in [0, 1]
    gray = (x[0].cpu().numpy() * 255).astype(np.float32)  # (H, W)
    scale = min(1.0, max_width / W)
    pw, ph, label = max(1, int(W * scale)), max(1, int(H * scale)), 14
    sheet = Image.new('RGB', (pw, len(ids) * (ph + label)), 'white')
    draw = ImageDraw.Draw(sheet)
    for t, tid in enumerate(ids):
        a = maps[t]
        rgb = np.stack([gray * (1 - a) + 255 * a, gray * (1 - a), gray * (1 - a)], -1)  # ink darkens, attention reddens
        panel = Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).resize((pw, ph))
        y = t * (ph + label)
        sheet.paste(panel, (0, y + label))
        piece = tok.sp.id_to_piece(int(tid)) if 0 <= int(tid) < tok.vocab_size else str(int(tid))
        draw.text((2, y), f'{t + 1}: {piece}', fill=(0, 0, 0))
    return sheet


def localization(model, xs, seqs, layer):
    """(mean peak weight, share of consecutive tokens whose peak column does not move left): two
    numbers for 'how well does this choice localize' over line images xs and their generated ids."""
    peaks, forward, steps = [], 0, 0
    for x, ids in zip(xs, seqs):
        if len(ids) < 2:
            continue
        weights, _ = cross_attention(model, x.unsqueeze(0), torch.tensor([ids]))
        w = select(weights, layer)[0]  # (T, S)
        m = to_pixels(model, w, x.shape[-2], x.shape[-1]).sum(1)  # (T, W): mass per pixel column
        peaks.append(w.max(1).values.mean().item())
        col = m.argmax(1)
        forward += int((col[1:] >= col[:-1]).sum())
        steps += len(ids) - 1
    return sum(peaks) / max(1, len(peaks)), forward / max(1, steps)


def main():
    """python -m inference.attention --out_dir=CKPT --data_dir=data/m21/quick [--n=32]: localization of the
    last layer vs all layers on the first n test images."""
    ROOT = os.path.dirname(os.path.abspath(__file__))
    cfg = dict(out_dir='reader', data_dir='data/m21/quick', n=32, split='test')
    for a in sys.argv[1:]:
        k, _, v = a.lstrip('-').partition('=')
        if k not in cfg:
            sys.exit(f"error: unknown option --{k} (options: {', '.join(cfg)})")
        cfg[k] = type(cfg[k])(v)
    torch.set_num_threads(1)
    reader = pages.Reader(cfg['out_dir'])
    ds = data.load_split(cfg['data_dir'], cfg['split'])
    ims = [ds[i]['image'] for i in range(min(cfg['n'], len(ds)))]
    xs = [pages.to_tensor(im, reader.img_height, reader.max_width) for im in ims]
    seqs = reader.decode(xs)
    for layer in ('last', 'all'):
        peak, fwd = localization(reader.model, xs, seqs, layer)
        print(f'{layer}: mean peak weight {peak:.3f}, peak moves left-to-right {fwd:.1%} of steps ({len(xs)} images)')


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        sys.exit(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
