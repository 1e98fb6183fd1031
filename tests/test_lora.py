"""tests/test_lora.py: LoRA wrappers on plain modules: identity at init, merge equivalence, gradients only
into the adapters (LoRA and QLoRA), adapter save/load round trip, target patterns, parameter counts."""

import math
import os
import sys

import pytest
import torch
import torch.nn as nn

import lora
import model as M
import quant
from training import checkpoint


class Tiny(nn.Module):
    """A miniature 'backbone + decoder': grouped + plain convs, a linear head, an attention block."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4), nn.ReLU(),
            nn.Conv2d(16, 32, 1), nn.ReLU(),
        )
        self.proj = nn.Linear(32, 24)
        self.attn = nn.MultiheadAttention(24, 4, batch_first=True)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        f = self.backbone(x)                       # (B, 32, H/2, W/2)
        f = self.proj(f.flatten(2).transpose(1, 2))  # (B, HW/4, 24)
        f = f + self.attn(f, f, f, need_weights=False)[0]
        return self.head(f)                        # (B, HW/4, 10)


def _randomize_B(model):
    # B starts at zero; give it values so merge/grad tests are not trivially true
    g = torch.Generator().manual_seed(1)
    for _, m in lora.lora_modules(model):
        m.lora_B.data.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


@pytest.mark.parametrize("rslora", [False, True])
def test_fresh_lora_is_identity_and_shapes(rslora):
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.rand(2, 3, 16, 20)
    y0 = model(x)
    names = lora.apply_lora(model, rank=4, alpha=8, targets=("backbone.", "proj", "head"), rslora=rslora)
    # the three backbone convs + proj + head; attn.out_proj must be left alone
    assert names == ["backbone.0", "backbone.2", "backbone.4", "proj", "head"]
    assert torch.equal(model(x), y0)  # B == 0 -> exactly unchanged
    m = model.proj
    assert m.lora_A.shape == (4, 32) and m.lora_B.shape == (24, 4) and torch.all(m.lora_B == 0)
    assert model.backbone[0].lora_A.shape == (4, 3 * 3 * 3)
    assert model.backbone[2].lora_A.shape == (4, 16 // 4 * 3 * 3)
    assert m.scale == pytest.approx(8 / math.sqrt(4) if rslora else 8 / 4)
    # Kaiming-uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert m.lora_A.abs().max() <= 1 / math.sqrt(32) + 1e-7 and m.lora_A.std() > 0.05
    # state-dict convention: wrapped weights move under .base
    keys = model.state_dict().keys()
    assert "proj.base.weight" in keys and "proj.lora_A" in keys and "proj.weight" not in keys


def test_merge_unmerge_equivalence():
    torch.manual_seed(0)
    model = Tiny().eval()
    lora.apply_lora(model, rank=4, alpha=16, targets=("backbone.", "proj", "head"))
    _randomize_B(model)
    x = torch.rand(2, 3, 16, 20)
    y = model(x)
    w0 = model.proj.base.weight.clone()
    assert lora.merge_lora(model) == 5
    assert (model.proj.base.weight - w0).abs().max() > 1e-3   # really merged
    ym = model(x)
    assert (ym - y).abs().max().item() < 1e-5
    assert lora.merge_lora(model) == 0                         # idempotent
    assert lora.unmerge_lora(model) == 5
    assert (model(x) - y).abs().max().item() < 1e-5
    assert (model.proj.base.weight - w0).abs().max().item() < 1e-6


def test_conv_lora_equals_weight_space_update():
    # the factorized conv path (A conv -> 1x1 B conv) is the same map as conv with W + scale*B@A
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, dilation=1)
    wrapped = lora.LoRAConv2d(conv, rank=3, alpha=6)
    wrapped.lora_B.data.normal_()
    x = torch.randn(2, 6, 11, 13)
    ref = nn.functional.conv2d(x, conv.weight + wrapped.delta_weight(), conv.bias, 2, 1)
    assert (wrapped(x) - ref).abs().max().item() < 1e-5


def _grad_names(model, x):
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_only_lora_params_get_gradients():
    torch.manual_seed(0)
    model = Tiny()
    model.requires_grad_(False)  # 'adapters only' mode: freeze everything, then add adapters
    lora.apply_lora(model, rank=4, alpha=8, dropout=0.1, targets=("backbone.", "proj", "head"))
    _randomize_B(model)
    got = _grad_names(model, torch.rand(2, 3, 16, 20))
    expected = {n for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}
    assert got == expected and len(expected) == 10
    trainable, total = M.count_params(model, trainable_only=True), M.count_params(model)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert total == sum(p.numel() for p in model.parameters())


def test_qlora_nf4_base_only_lora_gets_gradients(capsys):
    torch.manual_seed(0)
    model = Tiny()
    model.backbone[4] = nn.Conv2d(16, 256, 1)   # big enough to be quantized (>= 4096 weights)
    model.proj = nn.Linear(256, 24)
    plain = {n: m.weight.numel() for n, m in model.named_modules() if n in ("backbone.4", "proj")}
    assert quant.quantize_model_nf4(model, double_quant=True) == 2   # backbone.4 + proj; the rest is tiny
    assert isinstance(model.proj, quant.NF4Linear) and isinstance(model.backbone[4], quant.NF4Conv2d)
    model.requires_grad_(False)
    names = lora.apply_lora(model, rank=4, alpha=8, targets=("backbone.", "proj"))
    assert names == ["backbone.0", "backbone.2", "backbone.4", "proj"]
    assert isinstance(model.proj.base, quant.NF4Linear)
    x = torch.rand(2, 3, 16, 20)
    _randomize_B(model)
    got = _grad_names(model, x)
    assert got == {n for n, _ in model.named_parameters() if ".lora_" in n}
    total = M.count_params(model)
    assert total == sum(p.numel() for p in model.parameters()) + sum(plain.values())
    with pytest.raises(RuntimeError, match="dequantize_model_nf4"):
        lora.merge_lora(model)
    # after dequantizing, merging works and matches
    y = model(x)
    assert quant.dequantize_model_nf4(model) == 2
    assert (model(x) - y).abs().max().item() < 1e-5
    lora.merge_lora(model)
    assert (model(x) - y).abs().max().item() < 1e-5


def test_adapter_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    a = Tiny().eval()
    lora.apply_lora(a, rank=8, alpha=16, targets=("backbone.", "head"))
    _randomize_B(a)
    path = tmp_path / "adapter.safetensors"
    checkpoint.save_adapter(a, str(path))
    sd = lora.lora_state_dict(a)
    assert len(sd) == 8 and all(k.endswith((".lora_A", ".lora_B")) for k in sd)
    # adapters are a small fraction of the model
    assert path.stat().st_size < 0.5 * sum(p.numel() * 4 for p in a.parameters())

    torch.manual_seed(0)
    b = Tiny().eval()           # same base weights (same seed), fresh adapters
    lora.apply_lora(b, rank=8, alpha=16, targets=("backbone.", "head"))
    x = torch.rand(1, 3, 16, 20)
    assert not torch.allclose(a(x), b(x))
    meta = checkpoint.load_adapter(b, str(path))
    assert meta["rank"] == 8 and meta["alpha"] == 16
    assert torch.equal(a(x), b(x))

    c = Tiny()
    lora.apply_lora(c, rank=4, alpha=16, targets=("backbone.", "head"))
    with pytest.raises(ValueError):
        checkpoint.load_adapter(c, str(path))
    d = Tiny()
    lora.apply_lora(d, rank=8, alpha=16, targets=("head",))
    with pytest.raises(ValueError, match="keys do not match"):
        checkpoint.load_adapter(d, str(path))
    with pytest.raises(FileNotFoundError):
        checkpoint.load_adapter(d, str(tmp_path / "nope.safetensors"))


def test_targets_patterns_and_errors():
    m = Tiny()
    assert lora.apply_lora(m, targets="backbone.2, head") == ["backbone.2", "head"]
    assert lora.apply_lora(m, targets=("*.4",)) == ["backbone.4"]
    assert lora.apply_lora(m, targets=("backbone.",)) == ["backbone.0"]  # already wrapped ones are skipped
    with pytest.raises(ValueError, match="no nn.Linear"):
        lora.apply_lora(Tiny(), targets=("decoder.",))
    with pytest.raises(ValueError):
        lora.apply_lora(Tiny(), targets="")
    with pytest.raises(ValueError):
        lora.apply_lora(Tiny(), rank=0)


@pytest.mark.parametrize("qlora", [False, True])
def test_musictrocr_lora_checkpoint_round_trip(tmp_path, qlora):
    """The train.py / checkpoint.load_model path: (NF4 backbone,) LoRA on the backbone, only the adapters and
    the decoder learn, and a saved checkpoint reloads into identical outputs."""
    import model as M
    cfg = M.MusicTrOCRConfig(backbone="cnn_tiny", vocab_size=40, n_layer=1, n_head=2, d_model=32, d_ff=64,
                             max_seq_len=32, dropout=0.0, img_height=32, freeze_backbone=True)
    torch.manual_seed(0)
    m = M.MusicTrOCR(cfg)
    if qlora:
        assert quant.quantize_model_nf4(m.backbone, double_quant=True) == 13  # all but stem + depthwise
    kw = dict(rank=4, alpha=8.0, dropout=0.0, targets=["backbone."], rslora=False)
    names = lora.apply_lora(m, **kw)
    assert len(names) == 19 and all(n.startswith("backbone.") for n in names)  # every conv of cnn_tiny
    img, idx = torch.rand(2, 3, 32, 64), torch.randint(3, 40, (2, 7))
    tgt = torch.randint(3, 40, (2, 7))
    opt = m.configure_optimizers(0.0, 1e-2, (0.9, 0.99), "cpu")
    m.train()
    _, loss = m(img, idx, tgt)
    loss.backward()
    with_grad = {n for n, p in m.named_parameters() if p.grad is not None}
    assert {n for n in with_grad if n.startswith("backbone.")} == \
        {n for n, _ in m.named_parameters() if n.startswith("backbone.") and ".lora_" in n}
    assert "blocks.0.mlp.w_up.weight" in with_grad
    opt.step()  # moves lora_B off zero
    m.eval()
    ref = m(img, idx)[0]
    checkpoint.save_checkpoint(str(tmp_path / "ck"), m, dict(iter_num=1, best_val_loss=1.0, lora=kw,
                                                    quant=dict(backbone="nf4", double_quant=True) if qlora else None))
    m2, _ = checkpoint.load_model(str(tmp_path / "ck"))
    assert torch.equal(m2.eval()(img, idx)[0], ref)
    # export: merge (after dequantizing NF4) and unload gives a plain model with the same outputs
    quant.dequantize_model_nf4(m2)
    assert lora.merge_and_unload(m2) == 19 and not lora.lora_modules(m2)
    assert "backbone.stages.0.0.weight" in m2.state_dict()
    assert (m2(img, idx)[0] - ref).abs().max().item() < 1e-4


def test_adapter_command_line(tmp_path):
    """python -m training.checkpoint save_adapter / load_adapter: a LoRA run's adapters alone, and put back into
    the run's model as a new checkpoint; a run without LoRA and bad arguments are one line."""
    import subprocess

    import model as M
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    kw = dict(rank=4, alpha=8.0, dropout=0.0, targets=["backbone."], rslora=False)
    args = dict(backbone="cnn_tiny", vocab_size=40, n_layer=1, n_head=2, d_model=32, d_ff=64, max_seq_len=32,
                dropout=0.0, img_height=32)
    torch.manual_seed(0)
    m = M.build_model(args, kw)
    _randomize_B(m)
    run = tmp_path / "run"
    checkpoint.save_checkpoint(str(run / "ckpt_best"), m, dict(iter_num=1, best_val_loss=1.0, lora=kw, quant=None))
    cli = lambda *a: subprocess.run([sys.executable, "-m", "training.checkpoint", *map(str, a)], cwd=root, capture_output=True,
                                    text=True, timeout=120)
    r = cli("save_adapter", run, tmp_path / "a.safetensors")
    assert r.returncode == 0, r.stderr
    fresh = M.build_model(args, kw)  # new adapters (lora_B = 0): the saved ones must come back
    checkpoint.load_adapter(fresh, str(tmp_path / "a.safetensors"))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in lora.lora_state_dict(fresh).items())
    r = cli("load_adapter", run, tmp_path / "a.safetensors", tmp_path / "new")
    assert r.returncode == 0, r.stderr
    m2, meta = checkpoint.load_model(str(tmp_path / "new"))
    img, idx = torch.rand(1, 3, 32, 64), torch.randint(3, 40, (1, 5))
    assert torch.equal(m2.eval()(img, idx)[0], m.eval()(img, idx)[0]) and meta["lora"] == kw
    plain = tmp_path / "plain"
    checkpoint.save_checkpoint(str(plain), M.build_model(args), dict(iter_num=1, best_val_loss=1.0, lora=None, quant=None))
    for bad in (cli("save_adapter", plain, tmp_path / "b.safetensors"), cli("save_adapter"), cli("nope", run, run)):
        assert bad.returncode != 0 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
