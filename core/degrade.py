"""
core/degrade.py: make a clean engraving look printed, photocopied and scanned (issue 24).

Each effect is a function of a grayscale uint8 (H, W) array (ink dark, paper 255) and its strength;
scan() chains them with seeded random strengths drawn from a preset (light / medium / heavy):

    print      ink_bleed (ink spreads into the paper), fade (faint, patchy ink)
    paper      paper (a darker, grainy sheet with fibres)
    copy       binarize (a photocopier or a fax: two values; the copy is what gets scanned next)
    scan       light (uneven lighting: a gradient and a falloff), rotate (<= 2 deg, the canvas grows
               so no ink is cut off), perspective (a sheet not flat on the glass: corners moved by a
               fraction of the height), blur (Gaussian, the scanner's focus), noise (Gaussian grain
               plus dust specks)
    file       jpeg (the file a phone or scanner writes)

Spatial strengths are in pixels of the model's 64 px-high line (`unit` = H / 64 pixels of this
image each), so the same preset gives the same look after images.preprocess scales a 200 px-high
engraving or a 64 px cache image to the model's height.

Only numpy and PIL, measured against the libraries made for this (results/degrade.md, 2-core CPU, one
thread, 64 px-high lines): the medium pipeline costs 2.4 ms CPU per image; albumentations' (OpenCV)
nearest Compose 0.5 ms, but it has no paper, fading or binarization, and brings OpenCV and ten more
packages; augraphy's effects cost up to 430 ms each (BadPhotoCopy). Per training sample at
augment_scan=0.5 the loader pays +1.8 ms, a few % of a step: not worth a dependency.

    degrade.scan(arr, np.random.default_rng(seed), 'medium')  # -> a new uint8 (H', W') array
    python -m core.degrade in.png out.png [--preset=heavy] [--seed=0]            # one image
    python -m core.degrade --data_dir=data/m21/quick [--preset=medium] [--seed=0]  # the paired test_scan split
"""

import argparse
import io
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageFilter

from core import images
from core.files import atomic_dir, atomic_write

REF_HEIGHT = 64  # strengths are in pixels of a line this high (config/reader.py's img_height)


# -----------------------------------------------------------------------------
# helpers

def _img(a):
    return Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8), mode='L')


def _u8(x):
    """float array in [0, 255] (any dtype) -> uint8, rounded and clipped."""
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def smooth_field(shape, rng, cell):
    """(H, W) float32 noise in [0, 1], smooth over ~cell pixels: uniform values on a coarse grid,
    resized bicubically (PIL, cheap) and stretched back to [0, 1]."""
    H, W = shape
    gh, gw = max(2, round(H / cell) + 1), max(2, round(W / cell) + 1)
    coarse = _img(rng.integers(0, 256, (gh, gw)))
    f = np.asarray(coarse.resize((W, H), Image.Resampling.BICUBIC), dtype=np.float32)
    lo, hi = f.min(), f.max()
    return (f - lo) / max(1.0, hi - lo)


# -----------------------------------------------------------------------------
# the effects: uint8 (H, W) in, uint8 out

def ink_bleed(a, amount, unit=1.0):
    """Ink spreading into the paper: a grey dilation of the ink (PIL's MinFilter over ~0.7 model px)
    blended in by `amount` (0-1), softened a little, so strokes thicken and gaps close partly."""
    k = 2 * max(1, round(0.7 * unit)) + 1
    im = _img(a)
    grown = np.asarray(im.filter(ImageFilter.MinFilter(k)).filter(ImageFilter.GaussianBlur(0.5 * unit)), np.float32)
    return _u8(a + amount * (np.minimum(grown, a) - a.astype(np.float32)))


def fade(a, rng, amount, patchy=0.5, unit=1.0):
    """Faint ink: ink darkness (255 - a) scaled by 1 - amount, the more so where a smooth random
    field (patches ~30 model px across) is high, by `patchy` of the amount."""
    ink = 255.0 - a.astype(np.float32)
    field = smooth_field(a.shape, rng, 30 * unit)
    keep = 1.0 - amount * ((1 - patchy) + patchy * field)
    return _u8(255.0 - ink * keep)


def paper(a, rng, tone, grain, unit=1.0):
    """The sheet: paper darkened to 255 * (1 - tone), a fibre texture (smooth noise at two scales,
    ~12 and ~2 model px) of contrast `grain` (fraction of 255), ink multiplied in (ink on paper)."""
    H, W = a.shape
    tex = 0.6 * smooth_field((H, W), rng, 12 * unit) + 0.4 * smooth_field((H, W), rng, 2 * unit)
    sheet = 255.0 * (1.0 - tone) * (1.0 - grain * tex)
    return _u8(sheet * (a.astype(np.float32) / 255.0))


def light(a, rng, amount):
    """Uneven lighting: brightness falls linearly by up to `amount` across a random direction and a
    little more towards one random spot (a lamp, a book's gutter)."""
    H, W = a.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    th = rng.uniform(0, 2 * math.pi)
    g = (xx / W - 0.5) * math.cos(th) + (yy / H - 0.5) * math.sin(th)  # in [-0.5, 0.5] along th
    g = (g - g.min()) / max(1e-6, g.max() - g.min())
    cy, cx = rng.uniform(0, H), rng.uniform(0, W)
    r = np.sqrt(((yy - cy) / max(H, W)) ** 2 + ((xx - cx) / max(H, W)) ** 2)
    gain = 1.0 - amount * (0.7 * g + 0.3 * np.clip(r / 0.7, 0, 1))
    return _u8(a.astype(np.float32) * gain)


def rotate(a, deg, fill=None):
    """Rotate by `deg` degrees counter-clockwise (PIL's sense), bilinear, onto a canvas grown to hold
    the whole image (a line tilted by 2 deg still has all its notes), corners filled with paper."""
    fill = int(np.percentile(a, 90)) if fill is None else fill
    return np.asarray(_img(a).rotate(deg, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=fill))


def _perspective_coeffs(src, dst):
    """The 8 coefficients PIL's PERSPECTIVE transform wants: for each output point (x, y) in dst it
    samples the input at ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1)) = src."""
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(A, np.float64), np.array(b, np.float64)).tolist()


def perspective(a, rng, amount, fill=None):
    """A sheet not flat on the glass: each corner moved inwards at random by up to `amount` of the
    image height (both axes; inwards, so no note leaves the canvas), the image resampled bilinearly
    onto the same canvas, paper around it."""
    H, W = a.shape
    fill = int(np.percentile(a, 90)) if fill is None else fill
    d = amount * H
    src = [(0, 0), (W, 0), (W, H), (0, H)]
    dst = [(x + (1 if x == 0 else -1) * rng.uniform(0, d), y + (1 if y == 0 else -1) * rng.uniform(0, d)) for x, y in src]
    c = _perspective_coeffs(src, dst)
    out = _img(a).transform((W, H), Image.Transform.PERSPECTIVE, c, Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(out)


def blur(a, sigma, unit=1.0):
    """Gaussian blur of standard deviation `sigma` model px (PIL's GaussianBlur, radius = sigma)."""
    return np.asarray(_img(a).filter(ImageFilter.GaussianBlur(sigma * unit)))


def noise(a, rng, sigma, specks=0.0):
    """Sensor noise: Gaussian, `sigma` of 255, plus dust: a `specks` fraction of pixels set to dark
    or light grey at random."""
    x = a.astype(np.float32) + rng.standard_normal(a.shape, dtype=np.float32) * (255.0 * sigma)
    if specks > 0:
        n = int(specks * a.size)
        idx = rng.integers(0, a.size, n)
        x.ravel()[idx] = rng.choice(np.array([40.0, 220.0], np.float32), n)
    return _u8(x)


def box_mean(x, r):
    """Mean of x over the (2r+1) x (2r+1) window around each pixel (clipped at the borders), from an
    integral image: O(1) per pixel whatever r."""
    H, W = x.shape
    S = np.zeros((H + 1, W + 1), np.float64)
    S[1:, 1:] = x.cumsum(0).cumsum(1)
    y0, y1 = np.clip(np.arange(H) - r, 0, H), np.clip(np.arange(H) + r + 1, 0, H)
    x0, x1 = np.clip(np.arange(W) - r, 0, W), np.clip(np.arange(W) + r + 1, 0, W)
    tot = S[y1][:, x1] - S[y0][:, x1] - S[y1][:, x0] + S[y0][:, x0]
    return (tot / ((y1 - y0)[:, None] * (x1 - x0)[None, :])).astype(np.float32)


def binarize(a, local=False, unit=1.0, darkness=0.2, k=0.2):
    """Two values, 0 and 255 (a photocopier, a fax, a bilevel scan).
    Global: one threshold at `darkness` of the way from the paper (90th percentile) to the ink (1st
    percentile), the copier's knob: near 0 a dark copy (paper grain turns to specks), near 1 a
    light one (faint or thin lines break up).
    local=True: Sauvola and Pietikainen (2000), T = m (1 + k (s / 128 - 1)) with the mean m and
    standard deviation s of a ~16 model px window: flat paper stays white under uneven light, and
    thin grey lines on it stay ink."""
    x = a.astype(np.float32)
    if local:
        r = max(2, round(8 * unit))
        m = box_mean(x, r)
        s = np.sqrt(np.maximum(0.0, box_mean(x * x, r) - m * m))
        ink = x < m * (1.0 + k * (s / 128.0 - 1.0))
    else:
        paper, lo = np.percentile(x, 90), np.percentile(x, 1)
        ink = x < paper - darkness * (paper - lo)
    return np.where(ink, 0, 255).astype(np.uint8)


def jpeg(a, quality):
    """Encode as JPEG at `quality` (1-95) and decode again: 8x8 block and ringing artefacts."""
    buf = io.BytesIO()
    _img(a).save(buf, format='JPEG', quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert('L'))


# -----------------------------------------------------------------------------
# presets and the pipeline

# per effect: (probability it fires, strength range). Rotation in degrees; blur in model px; noise
# sigma, paper tone/grain, light, fade, bleed as fractions; perspective as a fraction of the height.
PRESETS = {
    'light': dict(bleed=(0.2, (0.1, 0.4)), fade=(0.2, (0.1, 0.25)), paper=(0.6, (0.0, 0.08), (0.02, 0.08)),
                  light=(0.3, (0.05, 0.15)), rotate=(0.5, 0.5), perspective=(0.2, 0.01),
                  blur=(0.5, (0.2, 0.5)), noise=(0.5, (0.005, 0.03), 0.0), binarize=(0.05, 0.5),
                  jpeg=(0.4, (60, 95))),
    'medium': dict(bleed=(0.3, (0.2, 0.6)), fade=(0.3, (0.15, 0.4)), paper=(0.8, (0.02, 0.15), (0.04, 0.14)),
                   light=(0.5, (0.1, 0.3)), rotate=(0.7, 1.5), perspective=(0.4, 0.025),
                   blur=(0.7, (0.3, 0.8)), noise=(0.7, (0.01, 0.06), 0.002), binarize=(0.15, 0.5),
                   jpeg=(0.6, (35, 85))),
    'heavy': dict(bleed=(0.4, (0.3, 0.9)), fade=(0.4, (0.2, 0.5)), paper=(0.9, (0.05, 0.25), (0.06, 0.2)),
                  light=(0.6, (0.15, 0.4)), rotate=(0.8, 2.0), perspective=(0.5, 0.04),
                  blur=(0.8, (0.4, 1.1)), noise=(0.8, (0.02, 0.1), 0.004), binarize=(0.25, 0.5),
                  jpeg=(0.7, (20, 70))),
}


def scan(a, rng, preset='medium', unit=None):
    """uint8 (H, W) clean engraving -> uint8 (H', W') 'printed and scanned' copy (H' >= H, W' >= W
    when it was rotated), effects in the physical order print -> sheet -> copy -> scanner -> file. Each
    effect fires with its preset probability at a strength drawn uniformly from its range. rng: a
    np.random.Generator; the same seed gives the same image. unit: pixels per model pixel
    (default H / 64, right for a line image)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown degradation preset {preset!r}; choose from {', '.join(PRESETS)}")
    a = np.asarray(a, dtype=np.uint8)
    if a.ndim != 2 or min(a.shape) < 2:
        raise ValueError(f"degrade.scan wants a 2-D grayscale image, got shape {a.shape}")
    P = PRESETS[preset]
    unit = a.shape[0] / REF_HEIGHT if unit is None else unit
    on = lambda k: rng.random() < P[k][0]
    U = lambda r: rng.uniform(*r)
    if on('bleed'):
        a = ink_bleed(a, U(P['bleed'][1]), unit)
    if on('fade'):
        a = fade(a, rng, U(P['fade'][1]), unit=unit)
    if on('paper'):
        a = paper(a, rng, U(P['paper'][1]), U(P['paper'][2]), unit)
    if on('binarize'):
        a = binarize(a, local=rng.random() < P['binarize'][1], unit=unit, darkness=rng.uniform(0.1, 0.5))
    if on('light'):
        a = light(a, rng, U(P['light'][1]))
    if on('rotate'):
        a = rotate(a, rng.uniform(-P['rotate'][1], P['rotate'][1]))
    if on('perspective'):
        a = perspective(a, rng, rng.uniform(0, P['perspective'][1]))
    if on('blur'):
        a = blur(a, U(P['blur'][1]), unit)
    if on('noise'):
        a = noise(a, rng, U(P['noise'][1]), P['noise'][2])
    if on('jpeg'):
        a = jpeg(a, rng.integers(*P['jpeg'][1]))
    return a if a.flags.writeable else a.copy()  # PIL's arrays are read-only; torch.from_numpy wants writable


def scan_line(arr, rng, preset, img_height, max_width):
    """a training line, (img_height, W) uint8, scanned with rng and scaled back to img_height (a rotation
    grows the canvas), as images.preprocess scales a tilted line a user crops."""
    out = scan(arr, rng, preset)
    return out if out.shape[0] == img_height else images.preprocess(Image.fromarray(out), img_height, max_width)


def scan_image(im, seed, preset='medium'):
    """PIL image (any mode) -> the degraded 'L' PIL image, with np.random.default_rng(seed)."""
    a = np.asarray(images.to_gray(im))  # transparency becomes white paper, as in training
    return _img(scan(a, np.random.default_rng(seed), preset))


def degrade_split(data_dir, split='test', preset='medium', seed=0, out_split=None):
    """Write a degraded copy of one split of a prepared corpus as a new split of it (default
    '<split>_scan', '<split>_scan_<preset>' for other presets): the same rows, labels and order, each
    image degraded at its own resolution with np.random.default_rng([seed, row]), so clean and scan
    SER are measured on the same excerpts and the copy is the same on every machine. The split folder
    is written next to the others and dataset_dict.json lists it (both replaced atomically);
    data.OMRDataset(data_dir, '<split>_scan') then reads it like any split. Returns the split name."""
    import datasets
    if preset not in PRESETS:
        raise ValueError(f"unknown degradation preset {preset!r}; choose from {', '.join(PRESETS)}")
    out_split = out_split or (f'{split}_scan' if preset == 'medium' else f'{split}_scan_{preset}')
    try:
        ds = datasets.load_from_disk(os.path.join(str(data_dir), split))
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"no prepared split {split!r} in {data_dir} ({str(e).splitlines()[0]})") from None
    ds = ds.cast_column('image', datasets.Image(decode=False))

    def one(row, idx):
        with Image.open(io.BytesIO(row['image']['bytes'])) as im:
            out = scan_image(im, [seed, idx], preset)
        buf = io.BytesIO()
        out.save(buf, format='PNG')
        return {'image': {'bytes': buf.getvalue(), 'path': None}}

    new = ds.map(one, with_indices=True, desc=f'degrading {split} ({preset})', load_from_cache_file=False)
    with atomic_dir(os.path.join(str(data_dir), out_split)) as tmp:
        new.cast_column('image', datasets.Image()).save_to_disk(tmp)
    dd_json = os.path.join(str(data_dir), 'dataset_dict.json')
    with open(dd_json) as f:
        dd = json.load(f)
    if out_split not in dd['splits']:
        dd['splits'].append(out_split)
        atomic_write(dd_json, json.dumps(dd).encode())
    return out_split


def main(argv):
    p = argparse.ArgumentParser(description='degrade one image (in.png out.png), or a corpus\'s test split (--data_dir)')
    p.add_argument('src', nargs='?')
    p.add_argument('dst', nargs='?')
    p.add_argument('--data_dir', default=None, help='write its test split printed and scanned as split test_scan')
    p.add_argument('--preset', default='medium', choices=list(PRESETS))
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.data_dir:
            name = degrade_split(args.data_dir, 'test', args.preset, args.seed)
            print(f"wrote split {name} of {args.data_dir} ({args.preset}, seed {args.seed})")
            return
        if not (args.src and args.dst):
            p.error('give in.png out.png, or --data_dir')
        with Image.open(args.src) as im:
            out = scan_image(im, args.seed, args.preset)
        tmp = args.dst + '.tmp.png'
        out.save(tmp, format='PNG')
        os.replace(tmp, args.dst)
    except (OSError, ValueError) as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main(sys.argv[1:])
