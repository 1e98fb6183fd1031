"""tests/test_distill.py: the KD loss against hand computations and its limits (alpha=1 is CE, alpha=0 with
student == teacher is 0, pad positions ignored), and load_teacher on a tiny real checkpoint."""

import os

import pytest
import torch
import torch.nn.functional as F

import distill
from training import checkpoint


def _logits(seed, B=3, T=5, V=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * 2


def _targets(B=3, T=5, V=11):
    g = torch.Generator().manual_seed(99)
    y = torch.randint(0, V, (B, T), generator=g)
    y[0, 3:] = -1  # padding
    y[2, 1:] = -1
    return y


def test_alpha_one_is_cross_entropy():
    s, t, y = _logits(0), _logits(1), _targets()
    ce = F.cross_entropy(s.view(-1, 11), y.view(-1), ignore_index=-1)
    assert torch.equal(distill.kd_loss(s, t, y, alpha=1.0, T=2.0), ce)


def test_alpha_zero_student_equals_teacher_is_zero():
    s, y = _logits(0), _targets()
    assert distill.kd_loss(s, s.clone(), y, alpha=0.0, T=3.0).item() == 0.0
    # and positive for a different teacher
    assert distill.kd_loss(s, _logits(1), y, alpha=0.0, T=3.0).item() > 0.01


def test_matches_hand_formula_and_ignores_padding():
    s, t, y = _logits(0), _logits(1), _targets()
    alpha, T = 0.3, 2.0
    got = distill.kd_loss(s, t, y, alpha, T)
    # by hand, position by position over the real (non-pad) positions
    kls, ces = [], []
    for b in range(3):
        for i in range(5):
            if y[b, i] == -1:
                continue
            p_t = torch.softmax(t[b, i] / T, -1)
            p_s = torch.softmax(s[b, i] / T, -1)
            kls.append((p_t * (p_t.log() - p_s.log())).sum())
            ces.append(-torch.log_softmax(s[b, i], -1)[y[b, i]])
    want = alpha * torch.stack(ces).mean() + (1 - alpha) * T * T * torch.stack(kls).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # whatever the teacher says at padded positions does not matter
    t2 = t.clone()
    t2[y == -1] = 1000.0
    assert distill.kd_loss(s, t2, y, alpha, T).item() == pytest.approx(got.item(), rel=1e-6)


def test_gradients_flow_to_student_only_and_errors():
    s, t, y = _logits(0).requires_grad_(), _logits(1).requires_grad_(), _targets()
    distill.kd_loss(s, t, y, 0.5, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    assert torch.all(s.grad[y == -1] == 0)
    with pytest.raises(ValueError, match="same tokenizer"):
        distill.kd_loss(_logits(0), _logits(1, V=12), _targets(), 0.5, 2.0)
    with pytest.raises(ValueError):
        distill.kd_loss(_logits(0), _logits(1), _targets(), 1.5, 2.0)
    with pytest.raises(ValueError):
        distill.kd_loss(_logits(0), _logits(1), _targets(), 0.5, 0.0)


def test_load_teacher_tiny_checkpoint(tmp_path):
    import model as M
    cfg = M.MusicTrOCRConfig(backbone="cnn_tiny", vocab_size=40, n_layer=1, n_head=2, d_model=32, d_ff=64,
                             max_seq_len=32, dropout=0.0, img_height=32)
    torch.manual_seed(0)
    m = M.MusicTrOCR(cfg).eval()
    checkpoint.save_checkpoint(str(tmp_path / "ckpt"), m, dict(iter_num=1, best_val_loss=1.0, lora=None, quant=None))
    img, idx = torch.rand(2, 3, 32, 64), torch.randint(3, 40, (2, 7))
    ref = m(img, idx)[0]
    t = distill.load_teacher(str(tmp_path / "ckpt"), "cpu")
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    out = t(img, idx)[0]
    assert ((out - ref).norm() / ref.norm()).item() < 1e-6
    distill.check_compatible(t.config, cfg)
    with pytest.raises(ValueError, match="vocab_size"):
        distill.check_compatible(t.config, M.MusicTrOCRConfig(backbone="cnn_tiny", vocab_size=41))
    with pytest.raises(FileNotFoundError):
        distill.load_teacher(str(tmp_path / "nope"), "cpu")
    # a run dir resolves to its ckpt_best/ (else ckpt_last/)
    os.rename(tmp_path / "ckpt", tmp_path / "ckpt_last")
    assert checkpoint.find_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt_last")
    # the same weights; not bit-equal on every CPU (kernel choice can depend on buffer alignment)
    torch.testing.assert_close(distill.load_teacher(str(tmp_path), "cpu")(img, idx)[0], ref, rtol=0, atol=1e-6)
