"""
core/decoding.py: turning a MusicTrOCR's outputs into token ids. The KV cache the decoder's self-attention
writes into, the autoregressive loop behind model.generate (greedy, sampling, beam search) and
CTC's best path behind model.ctc_decode. Imports only torch: the model is passed in.
"""

import torch
import torch.nn.functional as F


class KVCache:
    """Self-attention keys/values of one layer, preallocated for `max_len` positions.

    Decoding token t then costs O(t) (attend to the cache) instead of O(t^2) (recompute
    the whole prefix), which is what makes long ABC sequences affordable.
    """

    def __init__(self, max_len):
        self.max_len, self.pos, self.k, self.v = max_len, 0, None, None

    def append(self, k, v):
        B, nh, T, hs = k.shape
        if self.k is None:  # allocate on first use, to get device and dtype (autocast) right
            # uninitialized: a position is written (append) before attention reads it ([:pos])
            self.k = k.new_empty(B, nh, self.max_len, hs)
            self.v = v.new_empty(B, nh, self.max_len, hs)
        assert self.pos + T <= self.max_len, "KV cache overflow"
        self.k[:, :, self.pos:self.pos + T] = k
        self.v[:, :, self.pos:self.pos + T] = v
        self.pos += T
        return self.k[:, :, :self.pos], self.v[:, :, :self.pos]

    def reorder(self, index):
        """Row i of the new cache is row index[i] of the old one (beam search: a beam's parent; greedy:
        the rows still decoded, so index may be shorter). Only the positions filled so far are copied,
        in place, into the first len(index) rows: no new max_len buffer per step."""
        if self.k is not None:
            n, p = index.numel(), self.pos
            self.k[:n, :, :p] = self.k[index, :, :p]  # the right side is a copy: no overlap trouble
            self.v[:n, :, :p] = self.v[index, :, :p]
            self.k, self.v = self.k[:n], self.v[:n]


@torch.no_grad()
def generate(model, images, max_new_tokens, temperature, top_k, K, use_cache, widths, ignore_eos, encoded=None,
             prefix=None):
    """The loop of MusicTrOCR.generate (see its docstring), for a model in eval mode; K = beam size.
    encoded: model.encode's (memory, mem_mask) computed already (images and widths are then unused),
    so that images encoded in small batches can be decoded in one big one (inference/pages.Reader).
    prefix: greedy only, one list of token ids per row (may be empty) that the row writes first, whatever
    its logits say; it then goes on by itself (inference/pages.Reader.settle reads a staff again under a
    clef and key given: 'M:3/4\nL:1/8\nK:G\n' encoded, as the labels' headers tokenize alike).

    Greedy decoding with the cache drops a row from the batch once it has ended (eos or the length
    cap): a finished row's later steps were thrown away anyway, and every row's computation is its
    own (its cache, its memory row, its mask), so the others' tokens are the same; only the batch
    shrinks. On the shipped reader this halves the rows computed per 8-image batch, where lengths
    differ 2-3x (tests/test_model.py checks the tokens against the loop without it)."""
    cfg = model.config
    memory, mem_mask = model.encode(images, widths) if encoded is None else encoded  # (B, S, D), (B, S)
    B = memory.size(0)
    n_new = min(max_new_tokens, cfg.max_seq_len)
    if K > 1:  # beams of one image are rows b*K .. b*K+K-1 and share its memory
        memory = memory.repeat_interleave(K, dim=0)
        mem_mask = None if mem_mask is None else mem_mask.repeat_interleave(K, dim=0)
    N = B * K
    dev = memory.device
    caches = [KVCache(n_new) for _ in model.blocks] if use_cache else None
    mem_kv = [blk.cross.memory_kv(memory) for blk in model.blocks] if use_cache else None

    # a line holds at most ~4 tokens per encoder column (measured on data/m21/all's test split: <= 3.2
    # BPE tokens per 8 px column at 64 px, 21% of labels above 1, so CTC cannot align those). Greedy rows
    # stop at 4x, so a decoder caught in a loop (one bar repeated to max_seq_len) costs a line's worth
    cap = None
    if cfg.collapse_height and not ignore_eos and K == 1:  # one memory vector per image column
        cap = 4 * (mem_mask.sum(1) if mem_mask is not None else torch.full((N,), memory.size(1), device=dev))  # (N,)
    seq = torch.full((N, 1), cfg.bos_id, dtype=torch.long, device=dev)  # (N, 1 + t), bos first
    shrink = K == 1 and temperature == 0 and use_cache and not ignore_eos  # drop ended rows (docstring)
    rows = torch.arange(N, device=dev)  # the input row of each row still decoded
    forced = None
    if prefix is not None:
        assert K == 1 and temperature == 0, "a prefix is forced in greedy decoding only"
        P = max(1, max(len(p) for p in prefix))
        forced = torch.full((N, P), -1, dtype=torch.long, device=dev)  # (N, P), -1: the row's own choice
        for i, p in enumerate(prefix):
            forced[i, :len(p)] = torch.tensor(p, dtype=torch.long)
    ended = [None] * N                  # input row -> its finished sequence (bos first), once it ended
    finished = torch.zeros(N, dtype=torch.bool, device=dev)
    scores = torch.zeros(B, K, device=dev)  # beam search: total log-prob of each beam
    scores[:, 1:] = float('-inf')            # at the start only one (the bos-only) beam is alive
    for t in range(n_new):
        if use_cache:
            x = model.decode(seq[:, -1:], memory, mem_mask, mem_kv, caches)  # only the newest position
        else:
            x = model.decode(seq, memory, mem_mask)  # the whole prefix, every step
        logits = model.lm_head(x[:, -1, :]).float()  # (N, V)
        V = logits.size(-1)
        if K == 1:
            if temperature == 0:
                nxt = logits.argmax(dim=-1)  # (N,)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, V))
                    logits[logits < v[:, [-1]]] = float('-inf')
                nxt = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1).view(N)
            if forced is not None and t < forced.size(1):
                f = forced[rows, t]  # (n,) rows still decoded
                nxt = torch.where(f >= 0, f, nxt)
            done = finished if cap is None else finished | (cap <= t)
            nxt = torch.where(done, torch.full_like(nxt, cfg.eos_id), nxt)  # done rows: keep eos
        else:
            logp = F.log_softmax(logits, dim=-1)  # (N, V)
            if not ignore_eos:
                # a finished beam can only "extend" by another eos, at zero cost: its score is final
                logp[finished] = float('-inf')
                logp[finished, cfg.eos_id] = 0.0
            cand = (scores.view(N, 1) + logp).view(B, K * V)  # every (beam, token) continuation
            scores, top = cand.topk(K, dim=1)  # (B, K)
            src = (torch.arange(B, device=dev)[:, None] * K + top // V).view(N)  # parent row of each new beam
            nxt = (top % V).view(N)
            seq, finished = seq[src], finished[src]
            if use_cache:
                for c in caches:
                    c.reorder(src)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if not ignore_eos:
            finished = finished | (nxt == cfg.eos_id)
            if finished.all():
                break
            # a quarter of the rows ended: drop them (each drop copies the caches, so not after every row)
            if shrink and 4 * int(finished.sum()) >= len(finished):
                for i, r in zip(finished.nonzero()[:, 0].tolist(), rows[finished].tolist()):
                    ended[r] = seq[i]
                keep = (~finished).nonzero()[:, 0]  # (n,) rows still decoded
                seq, rows, finished = seq[keep], rows[keep], finished[keep]
                cap = None if cap is None else cap[keep]
                mem_mask = None if mem_mask is None else mem_mask[keep]
                mem_kv = [(k[keep], v[keep]) for k, v in mem_kv]
                for c in caches:
                    c.reorder(keep)

    if K > 1:  # keep the best beam of each image
        best = torch.arange(B, device=dev) * K + scores.argmax(dim=1)
        seq = seq[best]
    if shrink:  # every input row in its place again, ended ones from `ended`
        for i, r in enumerate(rows.tolist()):
            ended[r] = seq[i]
        seq = ended
    out = []
    for row in (r[1:].tolist() for r in seq):  # drop bos, cut at the first eos
        if not ignore_eos and cfg.eos_id in row:
            row = row[:row.index(cfg.eos_id)]
        out.append(row)
    return out


def ctc_best_path(best, lens, blank):
    """CTC greedy decoding (Graves et al. 2006): per image, the argmax label of every real column
    (best (B, S) ids, lens = real columns per image), repeats merged, blanks dropped."""
    out = []
    for row, n in zip(best.tolist(), lens):
        ids, prev = [], None
        for t in row[:n]:
            if t != prev and t != blank:
                ids.append(t)
            prev = t
        out.append(ids)
    return out
