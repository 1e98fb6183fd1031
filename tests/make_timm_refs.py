"""
tests/make_timm_refs.py: the timm reference outputs that tests/test_backbones.py checks the hand-written
encoders against, so that timm parity is tested on machines without timm (CI).

For each of the seven study backbones: weights regenerated from a seed (below, numpy only, no timm, no
backbones.py init), loaded into timm's model, run on seeded inputs at two sizes; the file keeps 512
sampled output values with their flat indices and three checksums of the whole output, ~9 KB a backbone:

    tests/data/timm_refs/<name>.safetensors
        idx_<H>x<W>   (512,) int32    flat indices into the (1, C, h, w) NCHW output, sorted
        val_<H>x<W>   (512,) float32  timm's forward_features there (ViT/DeiT: CLS dropped, NCHW)
        sum_<H>x<W>   (3,) float64    mean |y|, root mean square of y, max |y|, over the whole output
        shape_<H>x<W> (4,) int64      the output's shape
        weights_abs_sum () float64    sum of |w| over the generated weights: says if the generator drifted

Regenerate (once per timm release; needs timm and a torchvision matching the installed torch):

    pip install --no-deps timm==1.0.31 torchvision==0.28.0   # torchvision 0.28 <-> torch 2.13
    python tests/make_timm_refs.py            # writes tests/data/timm_refs/*.safetensors
    python tests/make_timm_refs.py --check    # compares timm's outputs with the files, writes nothing

The generator uses numpy's legacy RandomState, whose streams numpy keeps fixed across versions, seeded
per tensor from its name, so a tensor's values do not depend on the order of the state dict.
"""

import json
import os
import sys
import types
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'data', 'timm_refs')
SEED = 26
N_SAMPLES = 512
STUDY = ["resnet50", "efficientnet_b0", "convnext_tiny", "vit_small", "deit_small", "swin_tiny", "mobilevit_small"]
# (H, W) per backbone: 224 (ViT/DeiT: the position table as trained) and a wide line (ViT/DeiT: resampled).
# Swin only at sizes whose maps are whole 7 x 7 windows at every stage: timm pads a ragged map without
# masking the pad, backbones.py masks it (tests/test_backbones.py::test_swin_pad_is_masked)
SIZES = {name: [(224, 224), (64, 320)] for name in STUDY}
SIZES['swin_tiny'] = [(224, 224), (224, 448)]


def timm_name(name):
    with open(os.path.join(HERE, 'timm_backbones.json')) as f:
        return json.load(f)['backbones'][name]['timm_name']


def seeded_weights(state_dict, seed=SEED):
    """{name: tensor} of the same shapes and dtypes, values from a per-name seeded RandomState: fan-in
    scaled weights (so activations stay O(1) through 12-50 layers), and non-trivial BatchNorm statistics,
    norm scales, layer scales and position tables. Integer buffers (num_batches_tracked) are kept."""
    out = {}
    for k, t in state_dict.items():
        if not t.is_floating_point():
            out[k] = t.clone()
            continue
        rs = np.random.RandomState((seed + zlib.crc32(k.encode())) % 2 ** 32)
        shape, last = tuple(t.shape), k.rsplit('.', 1)[-1]
        if last == 'running_var':
            a = rs.uniform(0.5, 1.5, shape)
        elif last == 'running_mean':
            a = rs.uniform(-0.2, 0.2, shape)
        elif last == 'gamma':  # ConvNeXt layer scale
            a = rs.uniform(0.5, 1.0, shape)
        elif last in ('pos_embed', 'cls_token', 'relative_position_bias_table'):
            a = rs.uniform(-0.8, 0.8, shape)
        elif t.ndim >= 2:  # Linear (out, in) / Conv2d (out, in/groups, kh, kw): variance 1/fan_in
            bound = (3.0 / (t.numel() // shape[0])) ** 0.5
            a = rs.uniform(-bound, bound, shape)
        elif last == 'weight':  # BatchNorm / LayerNorm scale
            a = rs.uniform(0.5, 1.5, shape)
        else:  # biases
            a = rs.uniform(-0.1, 0.1, shape)
        out[k] = torch.from_numpy(a.astype(np.float32))
    return out


def seeded_input(H, W, seed=SEED):
    """(1, 3, H, W) float32 in [-2, 2]: about the range of a normalized image."""
    return torch.from_numpy(np.random.RandomState(seed + H * 10007 + W).uniform(-2, 2, (1, 3, H, W)).astype(np.float32))


def sample_indices(n, seed=SEED):
    return np.sort(np.random.RandomState(seed).choice(n, size=min(N_SAMPLES, n), replace=False)).astype(np.int32)


def checksums(y):
    y = y.double()
    return torch.stack([y.abs().mean(), y.pow(2).mean().sqrt(), y.abs().max()])


def import_timm():
    """import timm, or None if it is not installed (or does not import: the committed references still
    stand). With a CUDA-built torchvision on a CPU-only torch, torchvision's C ops do not load and its
    meta registrations raise at import; timm never calls those ops (nms, roi_align), so they are skipped."""
    import importlib.util
    if importlib.util.find_spec('timm') is None:
        return None
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        for m in [m for m in sys.modules if m.startswith('torchvision')]:
            del sys.modules[m]
        sys.modules['torchvision._meta_registrations'] = types.ModuleType('torchvision._meta_registrations')
    try:
        import timm
    except (ImportError, RuntimeError):
        return None
    return timm


def timm_features(timm, name, weights, x):
    """timm's forward_features with `weights` on x (1, 3, H, W), as the NCHW grid backbones.py returns."""
    H, W = x.shape[2:]
    kwargs = {'vit_small': dict(dynamic_img_size=True), 'deit_small': dict(dynamic_img_size=True),
              'swin_tiny': dict(img_size=(H, W))}.get(name, {})
    m = timm.create_model(timm_name(name), pretrained=False, num_classes=0, **kwargs).eval()
    m.load_state_dict(weights, strict=True)
    with torch.no_grad():
        y = m.forward_features(x)
    if name in ('vit_small', 'deit_small'):  # (1, 1 + h*w, C) tokens incl. CLS -> (1, C, h, w)
        y = y[:, 1:].transpose(1, 2).reshape(1, y.shape[-1], H // 16, W // 16)
    elif name == 'swin_tiny':  # NHWC -> NCHW
        y = y.permute(0, 3, 1, 2)
    return y.contiguous()


def reference(timm, name):
    """{tensor name: tensor} of the reference file of one backbone."""
    sys.path.insert(0, os.path.dirname(HERE))
    import backbones
    torch.manual_seed(0)
    weights = seeded_weights(backbones.build_backbone(name).state_dict())  # names and shapes = timm's
    ref = {'weights_abs_sum': torch.tensor(sum(float(w.double().abs().sum()) for w in weights.values()),
                                           dtype=torch.float64)}
    for H, W in SIZES[name]:
        y = timm_features(timm, name, weights, seeded_input(H, W))
        idx = sample_indices(y.numel())
        tag = f'{H}x{W}'
        ref.update({f'idx_{tag}': torch.from_numpy(idx), f'val_{tag}': y.flatten()[torch.from_numpy(idx).long()],
                    f'sum_{tag}': checksums(y), f'shape_{tag}': torch.tensor(y.shape, dtype=torch.int64)})
    return ref


def main(argv):
    from safetensors.torch import load_file, save_file
    check = '--check' in argv
    timm = import_timm()
    if timm is None:
        sys.exit("error: timm is not installed: pip install --no-deps timm torchvision (matching torch)")
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    bad = 0
    for name in STUDY:
        ref = reference(timm, name)
        path = os.path.join(OUT, f'{name}.safetensors')
        if check:
            old = load_file(path)
            same = old.keys() == ref.keys() and all(torch.allclose(old[k].double(), ref[k].double(), rtol=1e-5, atol=1e-6)
                                                    for k in ref)
            bad += not same
            print(f"{name}: {'matches' if same else 'DIFFERS from'} {path}")
        else:
            tmp = path + '.tmp'
            save_file(ref, tmp, metadata={'timm': timm.__version__, 'torch': torch.__version__,
                                          'timm_name': timm_name(name), 'seed': str(SEED)})
            os.replace(tmp, path)  # atomic
            print(f"{name}: wrote {path} ({os.path.getsize(path)} bytes, timm {timm.__version__})")
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main(sys.argv[1:])
