"""
tests/test_recipe.py: the levers of the CPU reader recipe (issue: a model that reads on 2 cores).
Joint CTC/attention (the loss on hand-computable alignments, best-path decoding), the
height-collapsed memory of cnn_line, tokenizer variants, the decoded-image cache, and the
held-out-font split.
"""

import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones as B
import data
import model as M

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/conftest.py

PAD, BOS, EOS = 0, 2, 3
A, Bt = 5, 6  # two label tokens


def ctc_model(**kw):
    cfg = dict(backbone='cnn_line', vocab_size=8, n_layer=1, n_head=2, d_model=32, d_ff=64, max_seq_len=32,
               dropout=0.0, img_height=32, pad_id=PAD, bos_id=BOS, eos_id=EOS, collapse_height=True, ctc_weight=0.3)
    cfg.update(kw)
    torch.manual_seed(0)
    return M.MusicTrOCR(M.MusicTrOCRConfig(**cfg))


class FixedLogits(nn.Module):
    """Stands in for the CTC head: the same logits for every image, (B, S, V)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, memory):
        return self.logits.expand(memory.size(0), -1, -1)


def uniform_over(tokens, S, V=8):
    """Logits giving probability 1/len(tokens) to each of `tokens` in every frame, ~0 to the rest."""
    lg = torch.full((1, S, V), -1e4)
    lg[:, :, tokens] = 0.0
    return lg


def test_ctc_loss_on_known_alignments():
    m = ctc_model()
    # 3 frames, label "a b", each frame uniform over {blank, a, b}: the paths that collapse to "ab"
    # are aab, abb, ab_, a_b, _ab -> p = 5 / 27; the loss is divided by the label length (2)
    m.ctc_head = FixedLogits(uniform_over([PAD, A, Bt], 3))
    mem = torch.zeros(1, 3, 32)
    targets = torch.tensor([[A, Bt, EOS, -1]])  # eos and padding are not part of the CTC label
    got = m.ctc_loss(mem, None, targets).item()
    assert abs(got - (-math.log(5 / 27) / 2)) < 1e-4
    # the memory mask shortens the input: with 2 real frames only the path "ab" remains, p = 1/9
    got = m.ctc_loss(mem, torch.tensor([[True, True, False]]), targets).item()
    assert abs(got - (-math.log(1 / 9) / 2)) < 1e-4
    # a label with no alignment (longer than the frames) contributes 0, not inf
    long = torch.tensor([[A, Bt, A, Bt, EOS]])
    assert m.ctc_loss(mem, None, long).item() == 0.0


def test_ctc_best_path_decoding_merges_repeats_and_drops_blanks():
    m = ctc_model()
    path = [A, A, PAD, A, Bt, Bt, PAD]  # -> a a b
    lg = torch.full((1, len(path), 8), -5.0)
    lg[0, torch.arange(len(path)), torch.tensor(path)] = 5.0
    m.ctc_head = FixedLogits(lg)
    m.encode = lambda images, widths=None: (torch.zeros(images.size(0), len(path), 32),
                                            None if widths is None else torch.arange(len(path))[None] < widths[:, None])
    imgs = torch.ones(2, 3, 32, 56)
    assert m.ctc_decode(imgs) == [[A, A, Bt], [A, A, Bt]]
    # a shorter image only decodes its own frames
    assert m.ctc_decode(imgs, torch.tensor([7, 4])) == [[A, A, Bt], [A, A]]


def test_joint_loss_is_the_weighted_sum():
    m = ctc_model(ctc_weight=0.3, label_smoothing=0.1).eval()
    imgs = torch.rand(2, 3, 32, 96)
    widths = torch.tensor([96, 64])
    idx = torch.tensor([[BOS, A, Bt, A], [BOS, Bt, PAD, PAD]])
    tgt = torch.tensor([[A, Bt, A, EOS], [Bt, EOS, -1, -1]])
    logits, loss = m(imgs, idx, tgt, widths)
    mem, mask = m.encode(imgs, widths)
    ce = F.cross_entropy(logits.view(-1, 8), tgt.view(-1), ignore_index=-1, label_smoothing=0.1)
    want = 0.7 * ce + 0.3 * m.ctc_loss(mem, mask, tgt)
    assert abs(loss.item() - want.item()) < 1e-5
    # ctc_weight = 0: the plain (smoothed) cross-entropy, and no CTC head at all
    m0 = ctc_model(ctc_weight=0.0, label_smoothing=0.1).eval()
    assert not hasattr(m0, 'ctc_head')


def test_collapse_height_memory_is_one_vector_per_column():
    m = ctc_model()
    assert (m.backbone.stride, m.backbone.stride_w) == (16, 8) and m.grid_rows == 2
    assert m.proj.in_features == 2 * B.BACKBONES['cnn_line'].out_dim  # 2 rows x 128 channels
    mem, mask = m.encode(torch.rand(2, 3, 32, 100), torch.tensor([100, 41]))
    assert mem.shape == (2, 13, 32)  # 100 px padded to 104 -> 13 columns of 8 px
    assert mask.sum(1).tolist() == [13, 6]  # column j is real if pixel 8j is inside the image
    with pytest.raises(ValueError, match='32 px high'):
        m.encode(torch.rand(1, 3, 64, 100))
    with pytest.raises(ValueError, match='collapse_height'):
        ctc_model(collapse_height=False)


def test_flop_count_with_ctc_head_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    m = ctc_model().eval()
    W, T = 192, 10
    idx = torch.randint(4, 8, (1, T))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(torch.rand(1, 3, 32, W), idx, idx)  # with targets: the CTC head runs too
    est_fwd = m.flops_per_sample(W, T, 32) / 3
    assert abs(est_fwd - counter.get_total_flops()) / counter.get_total_flops() < 0.05
    # and the MFU against a given peak is achieved / peak
    assert abs(m.estimate_mfu(1, 1.0, W, T, 32, peak_flops=m.flops_per_sample(W, T, 32)) - 1.0) < 1e-9


@pytest.mark.parametrize('model_type, vocab', [('char', 0), ('bpe', 320), ('bpe', 512)])
def test_tokenizer_variants_round_trip(tiny_corpus, tmp_path, model_type, vocab):
    texts = [t for s in ('train', 'val', 'test') for t in data.load_split(tiny_corpus, s)['transcription']]
    path = data.train_tokenizer(data.load_split(tiny_corpus, 'train')['transcription'], tmp_path / 'tok',
                                vocab, model_type=model_type)
    tok = data.Tokenizer(path)
    assert all(tok.decode(tok.encode(t)) == t for t in texts)
    if model_type == 'char':  # one piece per character, plus the specials and byte pieces
        assert all(len(tok.encode(t)) == len(t) for t in texts[:50])
    else:
        assert tok.vocab_size <= vocab


def test_tokenizer_too_small_is_a_clear_error(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match='below the .* pieces'):
        data.train_tokenizer(data.load_split(tiny_corpus, 'train')['transcription'], tmp_path / 'tok', 128)


def test_image_cache_serves_the_same_items(tiny_corpus, tmp_path):
    import shutil
    d = str(tmp_path / 'corpus')
    shutil.copytree(tiny_corpus, d)
    tok = data.Tokenizer(os.path.join(d, 'tokenizer.model'))
    plain = data.OMRDataset(d, 'train', tok, img_height=48, max_width=400)
    cached = data.OMRDataset(d, 'train', tok, img_height=48, max_width=400, cache=True)
    assert os.listdir(os.path.join(d, 'cache'))  # written once, beside the corpus
    again = data.OMRDataset(d, 'train', tok, img_height=48, max_width=400, cache=True)  # read back
    for i in range(len(plain)):
        a, b, c = plain[i], cached[i], again[i]
        assert torch.equal(a['image'], b['image']) and torch.equal(a['image'], c['image'])
        assert a['ids'] == b['ids'] and a['text'] == b['text']


def test_holdout_font_leaves_that_font_out(tiny_corpus, tmp_path):
    tok = data.Tokenizer(os.path.join(tiny_corpus, 'tokenizer.model'))
    full = data.OMRDataset(tiny_corpus, 'train', tok, img_height=32)
    font = max(set(full.fonts), key=full.fonts.count)
    held = data.OMRDataset(tiny_corpus, 'train', tok, img_height=32, exclude_fonts=(font,))
    assert font not in {held.fonts[r] for r in held.rows}
    assert len(held) == len(full) - full.fonts.count(font) > 0
    assert {held[i]['index'] for i in range(len(held))} == {r for r in range(len(full)) if full.fonts[r] != font}


def test_holdout_ratio_and_its_bootstrap_interval():
    from training import evaluation
    refs = ['M:4/4\nL:1/8\nK:G\nGABc d2 e2|', 'M:3/4\nL:1/8\nK:D\nFGA2 d2|', 'M:6/8\nL:1/8\nK:A\nABc cBA|']
    fonts = ['Leipzig', 'Petaluma'] * 3  # each excerpt in a seen font and in the held-out one: paired
    wrong = lambda t: t.replace('G', 'F', 1)  # one symbol wrong
    rows = []
    for i, ref in enumerate(refs):
        rows.append((2 * i, ref, ref, ref))                                   # seen: attention right
        rows.append((2 * i + 1, wrong(ref) if i < 2 else ref, ref, ref))      # unseen: wrong on two
    rows[0] = (0, wrong(refs[0]), refs[0], refs[0])                           # seen: wrong on one
    ds = type('DS', (), {'fonts': fonts, 'groups': [None] * 6})()
    h = evaluation.holdout_scores(rows, ds, 'Petaluma')
    assert h['holdout_font']['n'] == h['seen_fonts']['n'] == 3
    assert h['ratio']['value'] == pytest.approx(h['holdout_font']['ser'] / h['seen_fonts']['ser']) == pytest.approx(2.0)
    lo, hi = h['ratio']['ci95']
    assert lo <= 2.0 <= hi and lo < hi  # resampling 3 excerpts: a wide interval, around the point
    assert h['ratio_ctc']['value'] == 0.0 and h['ratio_ctc']['ci95'] == [0.0, 0.0]  # CTC right everywhere
    assert evaluation.holdout_scores(rows, ds, 'Petaluma') == h  # seeded: the same interval every time
