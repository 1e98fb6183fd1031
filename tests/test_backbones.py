"""tests/test_backbones.py: the hand-written encoders of backbones.py.

What is checked, on CPU with small inputs (each backbone is built once per module):
- state-dict keys and shapes equal timm's (tests/timm_backbones.json, timm 1.0.31), and the
  parameter counts equal timm's, for all seven study backbones;
- output grid shape (B, out_dim, H/stride, W/stride) on odd sizes padded to pad_multiple;
- Swin's shifted-window mask equals the original construction, and pads are masked;
- ViT and DeiT are one architecture; the position table is untouched at 224 and resampled otherwise;
- pretrained loading: .safetensors/.pth round trip, one-line errors for mismatch / offline hub;
- gradient checkpointing gives the same outputs, gradients and BatchNorm statistics;
- outputs equal timm's forward_features within 1e-5: against references timm computed once
  (tests/data/timm_refs/, made by tests/make_timm_refs.py), and against timm itself where it is installed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import backbones as B
import make_timm_refs  # tests/: the timm reference outputs and their seeded weights

ROOT = Path(__file__).resolve().parent.parent
REF = json.loads((Path(__file__).parent / "timm_backbones.json").read_text())["backbones"]
STUDY = ["resnet50", "efficientnet_b0", "convnext_tiny", "vit_small", "deit_small", "swin_tiny",
         "mobilevit_small"]
ALL = STUDY + ["cnn_tiny", "cnn_line", "cnn_line_relu"]

torch.set_num_threads(1)  # small inputs: one thread is as fast, and immune to busy neighbours


@pytest.fixture(scope="module")
def build():
    """build(name) -> the backbone in eval mode, constructed once per test module."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = B.build_backbone(name).eval()
        return cache[name]
    return get


def padded(n, m):
    return -(-n // m) * m


# ---------------------------------------------------------------- timm compatibility

def test_reference_lists_the_study():
    assert sorted(REF) == sorted(STUDY)
    assert set(ALL) == set(B.BACKBONES)


@pytest.mark.parametrize("name", STUDY)
def test_state_dict_equals_timm(build, name):
    ours = {k: list(v.shape) for k, v in build(name).state_dict().items()}
    want = {k: list(v) for k, v in REF[name]["state_dict"].items()}
    assert sorted(set(want) - set(ours)) == []  # missing keys
    assert sorted(set(ours) - set(want)) == []  # extra keys
    assert {k: s for k, s in ours.items() if s != want[k]} == {}


@pytest.mark.parametrize("name, millions", [
    ("resnet50", 23.51), ("efficientnet_b0", 4.01), ("convnext_tiny", 27.82), ("vit_small", 21.67),
    ("deit_small", 21.67), ("swin_tiny", 27.52), ("mobilevit_small", 4.94)])
def test_param_count_equals_timm(build, name, millions):
    n = sum(p.numel() for p in build(name).parameters() if p.requires_grad)
    assert n == REF[name]["num_params"]
    assert round(n / 1e6, 2) == millions


def test_cnn_tiny_is_small(build):
    n = sum(p.numel() for p in build("cnn_tiny").parameters())
    assert 0.5e6 <= n <= 1.5e6


# ---------------------------------------------------------------- shapes at variable size

@pytest.mark.parametrize("name", ALL)
def test_output_grid_shape(build, name):
    m = build(name)
    assert isinstance(m.out_dim, int) and isinstance(m.stride, int) and isinstance(m.has_pos_embed, bool)
    assert m.pad_multiple % m.stride == 0
    # odd raw sizes (the width is never a multiple of 224), padded like model.py pads them
    for h, w in [(64, 300), (100, 410)]:
        H, W = padded(h, m.pad_multiple), padded(w, m.pad_multiple_w)
        with torch.no_grad():
            y = m(torch.randn(1, 3, H, W))
        assert y.shape == (1, m.out_dim, H // m.stride, W // m.stride_w), (name, H, W)
        assert torch.isfinite(y).all()


def test_reference_feature_shapes_at_224(build):
    for name in STUDY:
        m, ref = build(name), REF[name]["forward_features_shape_224"]
        with torch.no_grad():
            y = m(torch.randn(1, 3, 224, 224))
        if name in ("vit_small", "deit_small"):  # timm: (1, 197, C) tokens incl. CLS
            assert y.shape == (1, ref[2], 14, 14) and ref[1] == 1 + 14 * 14
        elif name == "swin_tiny":  # timm: NHWC
            assert y.shape == (1, ref[3], ref[1], ref[2])
        else:
            assert list(y.shape) == ref


def test_attributes(build):
    want = {"cnn_tiny": (256, 16, 16, False), "cnn_line": (128, 16, 16, False), "resnet50": (2048, 32, 32, False),
            "efficientnet_b0": (1280, 32, 32, False), "convnext_tiny": (768, 32, 32, False),
            "vit_small": (384, 16, 16, True), "deit_small": (384, 16, 16, True),
            "swin_tiny": (768, 32, 32, False), "mobilevit_small": (640, 32, 32, False)}
    for name, (c, s, p, pos) in want.items():
        cls = B.BACKBONES[name]
        assert (cls.out_dim, cls.stride, cls.pad_multiple, cls.has_pos_embed) == (c, s, p, pos), name
        m = build(name)
        assert (m.stride_w, m.pad_multiple_w) == ((8, 8) if name == "cnn_line" else (s, p)), name


def test_pretraining_normalization(build):
    assert build("vit_small").input_mean == (0.5, 0.5, 0.5)  # AugReg: [-1, 1] inputs
    assert build("deit_small").input_mean == B.IMAGENET_MEAN
    assert build("mobilevit_small").input_std == (1.0, 1.0, 1.0)  # Apple cvnets: raw [0, 1]
    assert build("resnet50").input_std == B.IMAGENET_STD


def test_unknown_name_lists_all():
    with pytest.raises(ValueError) as e:
        B.build_backbone("resnet18")
    msg = str(e.value)
    assert "\n" not in msg and "resnet18" in msg
    for name in ALL:
        assert name in msg


# ---------------------------------------------------------------- ViT / DeiT

def test_vit_and_deit_share_one_architecture(build):
    vit, deit = build("vit_small"), build("deit_small")
    assert type(vit) is type(deit)
    assert {k: v.shape for k, v in vit.state_dict().items()} == {k: v.shape for k, v in deit.state_dict().items()}
    other = B.build_backbone("deit_small").eval()
    other.load_state_dict(vit.state_dict())  # same weights => same function
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(vit(x), other(x))


def test_vit_pos_embed_resample(build):
    vit = build("vit_small")
    assert vit.resized_pos_embed(14, 14) is vit.pos_embed  # no resampling at the training grid
    pe = vit.resized_pos_embed(4, 20)
    assert pe.shape == (1, 1 + 4 * 20, 384)
    assert torch.equal(pe[:, 0], vit.pos_embed[:, 0])  # CLS entry kept
    # a constant table stays constant after bicubic resampling (weights sum to one)
    const = B.build_backbone("vit_small")
    with torch.no_grad():
        const.pos_embed.fill_(0.25)
    assert torch.allclose(const.resized_pos_embed(8, 40), torch.full((1, 321, 384), 0.25), atol=1e-5)


# ---------------------------------------------------------------- Swin windows and padding

def timm_style_shift_mask(H, W, ws, shift):
    """The original Swin / timm mask: 9 slice regions of the rolled map, -100 across regions."""
    img = torch.zeros(1, H, W, 1)
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, h, w, :] = cnt
            cnt += 1
    win = B.window_partition(img, ws, ws).squeeze(-1)  # (nW, N)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def test_swin_shift_mask_equals_original():
    for H, W in [(14, 14), (56, 56), (7, 21)]:
        ours = B.swin_attention_mask(H, W, 7, 7, 3, 3, H, W, torch.device("cpu"))
        assert torch.equal(ours, timm_style_shift_mask(H, W, 7, 3)), (H, W)


def test_swin_pad_is_masked():
    H, W, Hp, Wp = 9, 10, 14, 14  # 9 x 10 map padded to 2 x 2 windows of 7
    for shift in (0, 3):
        m = B.swin_attention_mask(H, W, 7, 7, shift, shift, Hp, Wp, torch.device("cpu"))
        real = torch.zeros(Hp, Wp, dtype=torch.bool)
        real[:H, :W] = True
        real = torch.roll(real, (-shift, -shift), (0, 1))
        real = B.window_partition(real[None, :, :, None].float(), 7, 7).squeeze(-1).bool()  # (nW, N)
        assert (m.transpose(1, 2)[~real] <= -1e4).all()  # every padded key is masked for every query
        diag = m.diagonal(dim1=1, dim2=2)
        assert (diag[real] == 0).all()  # a real token always sees itself


def test_swin_real_tokens_ignore_pad_content(monkeypatch):
    """Swin pads each block's map to whole windows. Filling that pad with noise instead of
    zeros must not change any real token: the mask hides padded keys completely."""
    torch.manual_seed(0)
    x = torch.randn(2, 9, 10, 96)  # 9 x 10 map -> padded to 14 x 14
    for shift in (0, 3):
        blk = B.SwinBlock(96, 3, shift=shift).eval()
        with torch.no_grad():
            ref = blk(x)
        zero_pad = torch.nn.functional.pad

        def noisy_pad(t, pad, *args, **kwargs):
            out = zero_pad(t, pad, *args, **kwargs)
            hole = zero_pad(torch.zeros_like(t), pad, value=1.0)  # 1 exactly on the pad
            return out + 100 * torch.randn_like(out) * hole
        monkeypatch.setattr(B.F, "pad", noisy_pad)
        with torch.no_grad():
            noisy = blk(x)
        monkeypatch.undo()
        assert not torch.equal(noisy_pad(x, (0, 0, 0, 4)), zero_pad(x, (0, 0, 0, 4)))  # the patch bites
        torch.testing.assert_close(noisy, ref, rtol=1e-5, atol=1e-5)


def test_swin_small_maps_clamp_window(build):
    """Maps smaller than the window (2-4 rows at H=64) use one window, no shift, like timm."""
    m = build("swin_tiny")
    with torch.no_grad():
        y = m(torch.randn(1, 3, 64, 32 * 13))  # stages: 16x104, 8x52, 4x26, 2x13
    assert y.shape == (1, 768, 2, 13)


# ---------------------------------------------------------------- pretrained loading

def test_pretrained_round_trip_safetensors_and_pth(tmp_path, build):
    from safetensors.torch import save_file
    torch.manual_seed(1)
    src = B.build_backbone("efficientnet_b0")
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    head = {"classifier.weight": torch.randn(10, 1280), "classifier.bias": torch.randn(10)}  # dropped
    save_file({**sd, **head}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    for path in ("w.safetensors", "w.pth"):
        got = B.build_backbone("efficientnet_b0", pretrained=str(tmp_path / path)).state_dict()
        assert got.keys() == sd.keys()
        assert all(torch.equal(got[k], sd[k]) for k in sd), path


def test_pretrained_missing_bn_counter_is_fine(tmp_path):
    from safetensors.torch import save_file
    sd = {k: v for k, v in B.build_backbone("cnn_tiny").state_dict().items() if "num_batches" not in k}
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = B.build_backbone("cnn_tiny", pretrained=str(tmp_path / "w.safetensors")).state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_pretrained_shape_mismatch_one_line(tmp_path):
    from safetensors.torch import save_file
    sd = dict(B.build_backbone("cnn_tiny").state_dict())
    key = "stages.1.0.weight"
    sd[key] = torch.zeros(5, 5, 3, 3)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError) as e:
        B.build_backbone("cnn_tiny", pretrained=str(tmp_path / "bad.safetensors"))
    assert "\n" not in str(e.value) and key in str(e.value) and "shape" in str(e.value)


def test_pretrained_wrong_family_names_first_key(tmp_path):
    from safetensors.torch import save_file
    save_file(dict(B.build_backbone("cnn_tiny").state_dict()), str(tmp_path / "tiny.safetensors"))
    with pytest.raises(ValueError) as e:
        B.build_backbone("mobilevit_small", pretrained=str(tmp_path / "tiny.safetensors"))
    assert "\n" not in str(e.value) and "key" in str(e.value)


def test_pretrained_from_nanoomr_checkpoint_and_corrupt_file(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(2)
    sd = B.build_backbone("cnn_tiny").state_dict()
    whole = {**{f"backbone.{k}": v for k, v in sd.items()}, "proj.weight": torch.zeros(4, 256)}
    save_file(whole, str(tmp_path / "model.safetensors"))  # as train.py saves a whole model
    got = B.build_backbone("cnn_tiny", pretrained=str(tmp_path / "model.safetensors")).state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError) as e:
        B.build_backbone("cnn_tiny", pretrained=str(tmp_path / "junk.safetensors"))
    assert "\n" not in str(e.value) and "junk.safetensors" in str(e.value)


def test_pretrained_missing_file():
    with pytest.raises(FileNotFoundError):
        B.build_backbone("cnn_tiny", pretrained="/nonexistent/weights.safetensors")


def test_pretrained_timm_offline_is_one_line(tmp_path):
    code = ("import backbones\n"
            "try:\n    backbones.build_backbone('resnet50', pretrained='timm')\n"
            "except RuntimeError as e:\n    print('RuntimeError:', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("RuntimeError:"), out.stdout + out.stderr
    assert "timm/resnet50" in lines[0] and "pretrained=None" in lines[0] and "local" in lines[0]


# ---------------------------------------------------------------- gradient checkpointing

@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_is_exact(build, name):
    model = build(name)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 64)  # batch 2 so BatchNorm has statistics to compute in train mode
    results = []
    for ckpt in (False, True):
        model.load_state_dict(start)  # same weights and BN statistics for both runs
        model.train().set_grad_checkpointing(ckpt)
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        y = model(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        results.append((y.detach(), xi.grad, grads, stats))
    model.load_state_dict(start)
    model.eval().set_grad_checkpointing(False)
    model.zero_grad(set_to_none=True)
    (y0, gx0, g0, s0), (y1, gx1, g1, s1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-5)
    assert all(torch.equal(s0[k], s1[k]) for k in s0)  # BN stats updated once, not twice
    if s0:
        assert any(not torch.equal(s0[k], start[k]) for k in s0)  # and they did update


# ---------------------------------------------------------------- equality with timm

TIMM = make_timm_refs.import_timm()  # None on most machines (CI): the committed references stand in for it


def close_to_timm(got, want, scale, what):
    """The README's parity: every value within 1e-5 of timm's, relative to the value or to the output's
    largest |value| (Swin's differently ordered float sums reach ~6e-7 of it; the others are bit-exact)."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale, msg=what)


@pytest.mark.parametrize("name", STUDY)
def test_matches_timm_reference_outputs(name):
    """Seeded weights (make_timm_refs.seeded_weights: no timm, no backbones.py init) => the features timm
    computed with them, stored in tests/data/timm_refs/ by tests/make_timm_refs.py: 512 sampled values
    and three checksums of the whole output, at 224 and at a wide size, within 1e-5. Where timm is
    installed, it is also run on the same weights and inputs, so a stale reference file shows too."""
    from safetensors.torch import load_file
    ref = load_file(str(Path(make_timm_refs.OUT) / f"{name}.safetensors"))
    torch.manual_seed(0)
    ours = B.build_backbone(name).eval()
    weights = make_timm_refs.seeded_weights(ours.state_dict())
    abs_sum = sum(float(w.double().abs().sum()) for w in weights.values())
    assert abs_sum == pytest.approx(float(ref["weights_abs_sum"]), rel=1e-9), "seeded weights drifted: regenerate"
    ours.load_state_dict(weights, strict=True)
    for H, W in make_timm_refs.SIZES[name]:
        tag, x = f"{H}x{W}", make_timm_refs.seeded_input(H, W)
        with torch.no_grad():
            y = ours(x)
        assert list(y.shape) == ref[f"shape_{tag}"].tolist(), tag
        want = ref[f"sum_{tag}"]
        close_to_timm(y.flatten()[ref[f"idx_{tag}"].long()], ref[f"val_{tag}"], float(want[2]), f"{name} {tag}")
        torch.testing.assert_close(make_timm_refs.checksums(y), want, rtol=1e-5, atol=0, msg=f"{name} {tag} checksums")
        if TIMM is not None:
            live = make_timm_refs.timm_features(TIMM, name, weights, x)
            close_to_timm(y, live, live.abs().max().item(), f"{name} {tag} live timm {TIMM.__version__}")


if TIMM is not None:  # defined only where timm is installed, so CI collects no skipped test
    @pytest.mark.parametrize("name", STUDY)
    def test_matches_timm_forward_features(name):
        """timm's own initialization (batch 2): the same weights => the same features as timm, at 224 and
        at a wide size (ViT: timm's dynamic_img_size; Swin: whole windows, where timm needs no pad)."""
        for H, W in [(224, 224), (224, 448) if name == "swin_tiny" else (64, 320)]:
            torch.manual_seed(0)
            kwargs = {"vit_small": dict(dynamic_img_size=True), "deit_small": dict(dynamic_img_size=True),
                      "swin_tiny": dict(img_size=(H, W))}.get(name, {})
            ref = TIMM.create_model(REF[name]["timm_name"], pretrained=False, num_classes=0, **kwargs).eval()
            with torch.no_grad():  # make layer scale, BN statistics and position tables non-trivial
                for k, t in ref.state_dict().items():
                    if k.endswith("gamma"):
                        t.uniform_(0.5, 1.0)
                    elif k.endswith("running_var"):
                        t.uniform_(0.5, 1.5)
                    elif k.endswith("running_mean"):
                        t.normal_(0, 0.1)
                    elif k.endswith(("pos_embed", "relative_position_bias_table")):
                        t.normal_(0, 0.5)
            ours = B.build_backbone(name).eval()
            ours.load_state_dict(ref.state_dict(), strict=True)
            x = torch.randn(2, 3, H, W)
            with torch.no_grad():
                want, got = ref.forward_features(x), ours(x)
            if name in ("vit_small", "deit_small"):  # tokens incl. CLS -> grid
                want = want[:, 1:].transpose(1, 2).reshape(2, 384, H // 16, W // 16)
            elif name == "swin_tiny":  # NHWC -> NCHW
                want = want.permute(0, 3, 1, 2)
            close_to_timm(got, want, want.abs().max().item(), f"{name} {H}x{W}")


# ---------------------------------------------------------------- CLI

def test_cli_bench_and_bad_name():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = lambda *a: subprocess.run([sys.executable, "backbones.py", *a], cwd=ROOT, capture_output=True,
                                    text=True, timeout=120, env=env)
    out = run("--bench", "--names", "cnn_tiny", "--height", "32", "--width", "64", "--iters", "1")
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| cnn_tiny")]
    assert len(row) == 1 and float(row[0].split("|")[4]) > 0
    bad = run("--bench", "--names", "resnet5")
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error: unknown backbone")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cnn_line_relu_is_cnn_line_with_relu():
    """The quick start's encoder: cnn_line's parameters, name for name, so one state dict loads into
    both; only the activation differs, which changes the features."""
    gelu, relu = B.build_backbone('cnn_line'), B.build_backbone('cnn_line_relu')
    assert {k: v.shape for k, v in gelu.state_dict().items()} == {k: v.shape for k, v in relu.state_dict().items()}
    relu.load_state_dict(gelu.state_dict())
    acts = {type(m).__name__ for m in relu.modules()} & {'GELU', 'ReLU'}
    assert acts == {'ReLU'}
    gelu.eval(), relu.eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        a, b = gelu(x), relu(x)
    assert a.shape == b.shape == (1, 128, 4, 16) and not torch.allclose(a, b)
