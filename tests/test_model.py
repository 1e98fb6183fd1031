"""
tests/test_model.py: MusicTrOCR on CPU with the tiny 'cnn_tiny' backbone and a 2-layer decoder.
Covers the loss, the memory padding mask, causality, the KV cache (identical greedy output),
beam search, eos stopping, the optimizer groups, the FLOP count, and checkpoint round trips.
"""

import json
import os

import pytest
import torch
import torch.nn.functional as F

import model as M
from training import checkpoint

V, EOS, BOS, PAD = 40, 2, 1, 0


pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/conftest.py


def tiny_config(**kw):
    cfg = dict(backbone='cnn_tiny', vocab_size=V, n_layer=2, n_head=4, d_model=64, d_ff=128,
               max_seq_len=48, dropout=0.0, img_height=64, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    cfg.update(kw)
    return M.MusicTrOCRConfig(**cfg)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return M.MusicTrOCR(tiny_config(**kw))


def page(width, seed, height=64):
    """A fake score image: white paper with a few dark random strokes, (1, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    img = torch.ones(1, 3, height, width)
    ink = torch.rand(1, 1, height, width, generator=g) < 0.15
    img[ink.expand_as(img)] = 0.0
    return img


def batch(*imgs):
    """Right-pad with white like data.collate does -> (images (B,3,H,Wmax), widths (B,))."""
    wmax = max(i.shape[-1] for i in imgs)
    out = torch.cat([F.pad(i, (0, wmax - i.shape[-1]), value=1.0) for i in imgs])
    return out, torch.tensor([i.shape[-1] for i in imgs])


# two "tunes" the trained model learns to transcribe (ids, eos appended by the targets)
TUNES = [[5, 9, 11, 7, 20, 13, 8, 30], [17, 6, 6, 25, 12]]


@pytest.fixture(scope='module')
def trained():
    """A tiny model overfitted for a few hundred ms on two images, so greedy decoding produces
    real, eos-terminated sequences (a random model just repeats one token). It trains until it has
    memorized both (at most 300 steps; 60 here), not for a fixed count: another BLAS sums in another
    order, and the exact output after a fixed number of steps is not a property of the model."""
    m = tiny_model(seed=1)
    imgs, widths = batch(page(128, 1), page(96, 2))
    T = max(len(t) for t in TUNES) + 1
    idx = torch.full((2, T), PAD)
    tgt = torch.full((2, T), -1)
    for b, t in enumerate(TUNES):
        idx[b, :len(t) + 1] = torch.tensor([BOS] + t)
        tgt[b, :len(t) + 1] = torch.tensor(t + [EOS])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for step in range(1, 301):
        m.train()
        _, loss = m(imgs, idx, tgt, widths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and loss.item() < 0.05:
            m.eval()
            if m.generate(imgs, 30, widths=widths) == TUNES:
                break
    m.eval()
    return m, imgs, widths, loss.item()


def seq_logprob(m, img, width, ids, ended):
    """Total log-probability of ids (plus eos if the sequence ended) under teacher forcing."""
    full = ids + ([EOS] if ended else [])
    idx = torch.tensor([[BOS] + full[:-1]])
    logits, _ = m(img, idx, widths=torch.tensor([width]))
    logp = F.log_softmax(logits.float(), dim=-1)[0]
    return logp[torch.arange(len(full)), torch.tensor(full)].sum().item()


def test_forward_shapes_and_loss_matches_manual_ce():
    m = tiny_model().eval()
    imgs, widths = batch(page(160, 0), page(100, 1))
    idx = torch.randint(0, V, (2, 12))
    tgt = torch.randint(0, V, (2, 12))
    tgt[1, 7:] = -1  # padded positions
    logits, loss = m(imgs, idx, tgt, widths)
    assert logits.shape == (2, 12, V)
    keep = tgt.view(-1) != -1
    manual = -F.log_softmax(logits.view(-1, V), -1)[keep].gather(1, tgt.view(-1)[keep][:, None]).mean()
    assert torch.isfinite(loss) and abs(loss.item() - manual.item()) < 1e-5
    assert m(imgs, idx)[1] is None  # no targets -> no loss, logits for every position
    assert m(imgs, idx)[0].shape == (2, 12, V)


def test_memory_mask_makes_padding_invisible():
    # the same image batched with a slightly wider and with a much wider neighbour: its logits must
    # not change (padding columns are masked in cross-attention); without widths they do change
    m = tiny_model().eval()
    a = page(96, 3)
    idx = torch.randint(3, V, (1, 10))
    outs, outs_nomask = [], []
    for other in (page(160, 4), page(400, 5)):
        imgs, widths = batch(a, other)
        outs.append(m(imgs, idx.repeat(2, 1), widths=widths)[0][0])
        outs_nomask.append(m(imgs, idx.repeat(2, 1))[0][0])
    # and alone, on a canvas padded with white as data.collate would for a wider neighbour
    alone = F.pad(a, (0, 64), value=1.0)
    outs.append(m(alone, idx, widths=torch.tensor([96]))[0][0])
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    assert (outs[0] - outs[2]).abs().max() < 1e-5
    assert (outs_nomask[0] - outs_nomask[1]).abs().max() > 1e-3  # the mask is what does it


def test_memory_mask_columns():
    m = tiny_model()
    s = m.backbone.stride
    imgs, widths = batch(page(10 * s, 0), page(3 * s + 1, 1))
    mem, mask = m.encode(imgs, widths)
    h = mem.shape[1] // 10
    grid = mask.view(2, h, 10)
    assert grid[0].all()
    assert grid[1, :, :4].all() and not grid[1, :, 4:].any()  # column j valid iff j*stride < width


def test_causal():
    m = tiny_model().eval()
    imgs, widths = batch(page(128, 0))
    idx = torch.randint(3, V, (1, 16))
    idx2 = idx.clone()
    idx2[0, 9] = (idx[0, 9] + 1) % V
    l1, l2 = m(imgs, idx, widths=widths)[0], m(imgs, idx2, widths=widths)[0]
    assert torch.equal(l1[:, :9], l2[:, :9]) or (l1[:, :9] - l2[:, :9]).abs().max() < 1e-6
    assert (l1[:, 9:] - l2[:, 9:]).abs().max() > 1e-4


def test_cache_gives_identical_greedy_output_random_model():
    m = tiny_model(seed=3)
    imgs, widths = batch(page(128, 0), page(80, 1), page(200, 2))
    with_cache = m.generate(imgs, 40, widths=widths, ignore_eos=True)
    without = m.generate(imgs, 40, widths=widths, use_cache=False, ignore_eos=True)
    assert with_cache == without
    assert all(len(s) == 40 for s in with_cache)


def test_cache_identical_and_eos_on_trained_model(trained):
    m, imgs, widths, loss = trained
    assert loss < 0.05, loss
    out = m.generate(imgs, 30, widths=widths)
    assert out == m.generate(imgs, 30, widths=widths, use_cache=False)
    assert out == TUNES  # learned, and stopped at eos (which is not returned)
    # eos stops each sequence on its own; ignoring it runs to max_new_tokens
    assert [len(s) for s in m.generate(imgs, 30, widths=widths, ignore_eos=True)] == [30, 30]


def test_greedy_drops_ended_rows_and_takes_encoded_memory():
    """Greedy decoding with the cache drops rows once they end (core/decoding.py): here they end at
    different steps (length caps of 4 tokens a column, one row by eos), and every row's tokens equal
    the loop without the cache, which keeps every row to the end. Memory encoded beforehand and padded
    with masked columns (inference/pages.Reader's big decoding batches) gives the same tokens too."""
    from core import decoding
    m = tiny_model(seed=4, backbone='cnn_line', collapse_height=True, max_seq_len=96).eval()
    with torch.no_grad():  # eos never wins, but for the last row after 5 tokens (see the hook below)
        m.lm_head.bias = torch.nn.Parameter(torch.zeros(V))
        m.lm_head.bias[EOS] = -1e9
    imgs, widths = batch(page(40, 0), page(96, 1), page(64, 2), page(160, 3), page(48, 4))
    head = m.lm_head

    def lm_head(x):  # the last input row says eos at its 6th step; records the rows of every step
        out = head(x)
        if lm_head.rows == [5] * 5:
            out[4, EOS] = 1e9
        lm_head.rows.append(out.size(0))
        return out
    outs, rows = {}, {}
    for use_cache in (True, False):
        lm_head.rows = []
        object.__setattr__(m, 'lm_head', lm_head)
        outs[use_cache], rows[use_cache] = m.generate(imgs, 96, widths=widths, use_cache=use_cache), lm_head.rows
    assert [len(o) for o in outs[True]] == [20, 48, 32, 80, 5]  # 4 a column (8 px), and eos
    assert outs[True] == outs[False]
    assert set(rows[False]) == {5} and rows[True][-1] == 1 and sum(rows[True]) < 0.6 * sum(rows[False])
    object.__setattr__(m, 'lm_head', head)
    with torch.no_grad():
        want = m.generate(imgs, 96, widths=widths)
        memory, mask = m.encode(imgs, widths)  # (5, S, D), (5, S)
        memory, mask = F.pad(memory, (0, 0, 0, 7)), F.pad(mask, (0, 7), value=False)  # 7 more, masked
        assert decoding.generate(m, None, 96, 0.0, None, 1, True, None, False, encoded=(memory, mask)) == want


def test_prefix_is_written_first_then_the_row_goes_on_greedily(trained):
    """core/decoding.generate's prefix (inference/pages.Reader.settle reads a staff again under a header
    given): each row writes its own prefix (of any length, empty too) whatever its logits say, then
    continues greedily from it, as the step-by-step loop over the whole sequence does. Its own greedy
    start as the prefix changes nothing; in one batch with the cache and rows leaving it, the same."""
    from core import decoding
    m, imgs, widths = trained[:3]
    own = m.generate(imgs, 30, widths=widths)
    assert own == TUNES

    def by_hand(b, prefix):  # no cache: every step re-reads the whole sequence
        seq = [BOS] + list(prefix)
        with torch.no_grad():
            while len(seq) <= 30 and seq[-1] != EOS:
                logits, _ = m(imgs[b:b + 1], torch.tensor([seq]), widths=widths[b:b + 1])
                seq.append(int(logits[0, -1].argmax()))
        return [t for t in seq[1:] if t != EOS]
    prefixes = [TUNES[1][:3], []]  # row 0 starts as tune 1 does; row 1 by itself
    with torch.no_grad():
        got = decoding.generate(m, imgs, 30, 0.0, None, 1, True, widths, False, prefix=prefixes)
        assert decoding.generate(m, imgs, 30, 0.0, None, 1, True, widths, False, prefix=[t[:2] for t in own]) == own
    assert got[0][:3] == TUNES[1][:3] and got[1] == own[1]
    assert got == [by_hand(0, prefixes[0]), by_hand(1, [])]


def test_generate_never_exceeds_max_seq_len():
    m = tiny_model(max_seq_len=20)
    imgs, widths = batch(page(96, 0))
    assert len(m.generate(imgs, 100, widths=widths, ignore_eos=True)[0]) == 20
    assert len(m.generate(imgs, 100, widths=widths, beam_size=3, ignore_eos=True)[0]) == 20


def test_beam_size_one_is_greedy_and_beam_scores_at_least_greedy(trained):
    for m, imgs, widths in ((tiny_model(seed=5), *batch(page(128, 0), page(80, 1))), trained[:3]):
        greedy = m.generate(imgs, 25, widths=widths)
        assert m.generate(imgs, 25, widths=widths, beam_size=1) == greedy
        beam = m.generate(imgs, 25, widths=widths, beam_size=4)
        assert beam == m.generate(imgs, 25, widths=widths, beam_size=4, use_cache=False)
        for b in range(imgs.shape[0]):
            img, w = imgs[b:b + 1], int(widths[b])
            sg = seq_logprob(m, img, w, greedy[b], len(greedy[b]) < 25)
            sb = seq_logprob(m, img, w, beam[b], len(beam[b]) < 25)
            assert sb >= sg - 1e-4, (sb, sg)


def test_beam_search_beats_greedy_on_a_trap():
    # a hand-built distribution where greedy is myopic: after bos, token 3 (p=.6) then anything
    # (uniform), versus token 4 (p=.4) then eos with certainty. Greedy takes 3; beam finds [4].
    m = tiny_model(seed=0)
    imgs, widths = batch(page(96, 0))

    def fake_head(x):  # x (N, D) or (N, T, D): the "last token" is hidden in the model state below
        return fake_head.table[fake_head.last].expand(*x.shape[:-1], V)
    table = torch.full((V + 1, V), -1e4)
    table[BOS, 3], table[BOS, 4] = 0.6, 0.4
    table[3] = torch.full((V,), 1.0 / V)
    table[4, EOS] = 1.0
    table = table.clamp_min(1e-9).log()
    fake_head.table = table
    orig_decode = m.decode

    def decode(idx, *a, **kw):
        fake_head.last = idx[:, -1]
        return orig_decode(idx, *a, **kw)
    m.decode = decode
    object.__setattr__(m, 'lm_head', fake_head)  # shadow the registered submodule with a plain function
    assert m.generate(imgs, 6, widths=widths)[0][0] == 3
    assert m.generate(imgs, 6, widths=widths, beam_size=2) == [[4]]


def test_sampling_respects_top_k_and_is_seeded():
    m = tiny_model(seed=2)
    imgs, widths = batch(page(96, 0), page(64, 1))
    torch.manual_seed(0)
    a = m.generate(imgs, 20, temperature=1.0, top_k=1, widths=widths, ignore_eos=True)
    assert a == m.generate(imgs, 20, widths=widths, ignore_eos=True)  # top_k=1 is greedy
    torch.manual_seed(1)
    s1 = m.generate(imgs, 20, temperature=2.0, widths=widths, ignore_eos=True)
    torch.manual_seed(1)
    assert s1 == m.generate(imgs, 20, temperature=2.0, widths=widths, ignore_eos=True)
    with pytest.raises(ValueError):
        m.generate(imgs, 5, temperature=1.0, beam_size=2)


def test_tied_head_and_configure_optimizers():
    m = tiny_model()
    assert m.lm_head.weight.data_ptr() == m.tok_emb.weight.data_ptr()
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in no_decay['params'])
    n_opt = sum(p.numel() for g in opt.param_groups for p in g['params'])
    assert n_opt == m.get_num_params()  # everything, the tied matrix once

    f = tiny_model(freeze_backbone=True)
    f.train()
    # frozen backbone: its BatchNorm layers stay in eval mode (running stats fixed), the decoder trains
    bns = [mod for mod in f.backbone.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(bn.training for bn in bns) and f.blocks[0].training
    stats = [bn.running_mean.clone() for bn in bns]
    f(torch.rand(2, 3, 32, 96), torch.zeros(2, 4, dtype=torch.long))
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(stats, bns))
    opt = f.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    in_opt = {id(p) for g in opt.param_groups for p in g['params']}
    assert not any(id(p) in in_opt for p in f.backbone.parameters())
    assert sum(p.numel() for p in f.backbone.parameters()) + sum(
        p.numel() for g in opt.param_groups for p in g['params']) == f.get_num_params()


def test_flop_count_matches_flop_counter_and_mfu_is_none_on_cpu():
    from torch.utils.flop_counter import FlopCounterMode
    m = tiny_model().eval()
    W, T = 192, 20
    imgs = page(W, 0)
    idx = torch.randint(3, V, (1, T))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(imgs, idx)
    measured = counter.get_total_flops()
    est_fwd = m.flops_per_sample(W, T, 64) / 3  # trainable backbone: fwd+bwd = 3x forward
    assert abs(est_fwd - measured) / measured < 0.05, (est_fwd, measured)
    assert m.estimate_mfu(8, 0.1, W, T) is None  # no trustworthy peak on CPU


def save(m, d, **meta):
    checkpoint.save_checkpoint(str(d), m, dict(iter_num=3, best_val_loss=1.5, lora=None, quant=None, **meta),
                      {'iter_num': 3, 'rng': RNG})


RNG = torch.Generator().manual_seed(7).get_state()


def test_checkpoint_round_trip(tmp_path, trained):
    m, imgs, widths, _ = trained
    d = tmp_path / 'ckpt_best'
    save(m, d)
    save(m, d)  # overwriting an existing checkpoint swaps it atomically and leaves nothing behind
    assert sorted(os.listdir(tmp_path)) == ['ckpt_best']
    assert sorted(os.listdir(d)) == ['config.json', 'model.safetensors', 'state.pt']
    m2, meta = checkpoint.load_model(str(d))
    assert meta['iter_num'] == 3 and meta['model_args']['d_model'] == 64
    assert m2.lm_head.weight.data_ptr() == m2.tok_emb.weight.data_ptr()
    m2.eval()
    idx = torch.randint(3, V, (2, 9))
    assert torch.equal(m(imgs, idx, widths=widths)[0], m2(imgs, idx, widths=widths)[0])
    assert m2.generate(imgs, 30, widths=widths) == TUNES
    state = checkpoint.load_checkpoint_state(str(d))
    assert state['iter_num'] == 3 and torch.equal(state['rng'], RNG)


def test_checkpoint_mismatch_is_one_line_value_error(tmp_path):
    d = tmp_path / 'ckpt'
    save(tiny_model(), d)
    cfg = json.loads((d / 'config.json').read_text())
    cfg['model_args']['d_ff'] = 96
    (d / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        checkpoint.load_model(str(d))
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {d} does not match this code: shape of ") and '\n' not in msg
    cfg['model_args'].update(d_ff=128, n_layer=1)
    (d / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unexpected key 'blocks\.1\..*' \(and \d+ more\)$"):
        checkpoint.load_model(str(d))
    with pytest.raises(FileNotFoundError):
        checkpoint.load_model(str(tmp_path / 'nope'))


def test_checkpoint_round_trip_with_nf4_backbone_and_lora(tmp_path):
    # QLoRA as train.py builds it: NF4 backbone, then LoRA adapters on it; load_model must rebuild
    # the same module tree (quant first, then lora) before the strict load
    import lora
    import quant
    m = tiny_model(seed=4, freeze_backbone=True)
    n_q = quant.quantize_model_nf4(m.backbone, double_quant=True)
    wrapped = lora.apply_lora(m, rank=4, alpha=8, targets=('backbone.',))
    assert n_q > 0 and wrapped
    for p in m.parameters():  # give the (zero-initialized) adapters something to carry
        if p.requires_grad:
            p.data.add_(0.01 * torch.randn_like(p))
    m.eval()
    d = tmp_path / 'ckpt_last'
    checkpoint.save_checkpoint(str(d), m, dict(iter_num=1, best_val_loss=None, quant=dict(backbone='nf4', double_quant=True),
                                      lora=dict(rank=4, alpha=8, dropout=0.0, targets=['backbone.'], rslora=False)))
    m2, _ = checkpoint.load_model(str(d))
    m2.eval()
    imgs, widths = batch(page(128, 0), page(96, 1))
    idx = torch.randint(3, V, (2, 8))
    assert torch.equal(m(imgs, idx, widths=widths)[0], m2(imgs, idx, widths=widths)[0])
    # the same checkpoint without its LoRA entry no longer matches the code path that loads it
    meta = json.loads((d / 'config.json').read_text())
    meta['lora'] = None
    (d / 'config.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"does not match this code: missing key 'backbone\."):
        checkpoint.load_model(str(d))
