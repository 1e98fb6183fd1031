"""
bench/fuzz_staves.py: the staff finder never crashes. Random crops, paddings, scales, rotations,
inversions, noise and mode changes of real page and line images (tests/data/lily_page*.png, LilyPond;
reader/samples/*.png, verovio lines; with --verovio_page=1 also a verovio A4 page from bench/pages.py),
crops cut so that ink touches every edge, tiny (1x1, 3x500) and huge sizes, blank, uniform,
noise-only and striped images. Every case must give a staves.Page whose staves and systems have
crops inside the image, or a ValueError saying 'no staff found'; staves.is_single_line and
staves.looks_like_line must answer a bool. Anything else is a failure, printed with its seed.

    $ python -m bench.fuzz_staves --n=10000            # prints cases run / passed and the time
    $ python -m bench.fuzz_staves --n=10000 --verovio_page=1

tests/test_fuzz_staves.py runs a few hundred seeded cases of the same generator.
"""
import argparse
import glob
import os
import sys
import time
import traceback

import numpy as np
from PIL import Image, ImageFilter

from bench.pages import engrave_page
from core import images
from inference import staves, systems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sources(verovio_page=False, page_scale=1.0):
    """The real images the cases are made from: grayscale PIL images. page_scale < 1 shrinks the
    LilyPond pages (staff space ~17 px at 1.0) for a faster test."""
    out = []
    for p in sorted(glob.glob(os.path.join(ROOT, 'tests', 'data', 'lily_page*.png'))):
        im = images.to_gray(Image.open(p))
        out.append(im.resize((round(im.size[0] * page_scale), round(im.size[1] * page_scale)), Image.Resampling.BOX))
    # the reader's first 12 samples (verovio): the cases of a seed stay the ones the tests name
    out += [images.to_gray(Image.open(p)).copy() for p in sorted(glob.glob(os.path.join(ROOT, 'reader', 'samples', 'test_*.png')))]
    if verovio_page:
        with open(os.path.join(ROOT, 'reader', 'samples', 'test_0.abc')) as f:
            abc = f.read()
        music = [ln for ln in abc.splitlines() if ln and not ln[1:2] == ':']
        head = [ln for ln in abc.splitlines() if ln[1:2] == ':']
        tune = '\n'.join(['X:1', 'T:Fuzz', 'C:Nobody'] + head + music * 12)
        out.append(engrave_page(tune)[0])
    return out


def _ink_rows_cols(g):
    """rows and columns holding ink; half the time only the rows of staff lines (dark across half the
    width): a crop cut there puts a staff's outer line on the image's edge, as low notes do."""
    ink = g < 160
    lines = np.nonzero(ink.mean(1) > 0.5)[0]
    rows = lines if len(lines) and g.shape[0] % 2 else np.nonzero(ink.any(1))[0]
    return rows, np.nonzero(ink.any(0))[0]


def make_case(rng, srcs):
    """One random test image (PIL) and a short name of what was done to it."""
    kind = rng.random()
    if kind < 0.08:  # synthetic: no music at all, or degenerate sizes
        what = rng.integers(8)
        h, w = [(1, 1), (3, 500), (500, 3), (2, 2), (8, 8), (7, 9000), (40, 40), (300, 900)][rng.integers(8)]
        if what == 0:
            return Image.new('L', (w, h), 255), f'blank {w}x{h}'
        if what == 1:
            return Image.new('L', (w, h), int(rng.integers(256))), f'uniform {w}x{h}'
        if what == 2:
            return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)), f'noise {w}x{h}'
        if what == 3:  # binary noise: many short runs
            return Image.fromarray((rng.random((h, w)) < rng.random()).astype(np.uint8) * 255), f'bnoise {w}x{h}'
        if what == 4:  # stripes: many long lines at random spacing (not five equal ones, or maybe so)
            a = np.full((h, w), 255, np.uint8)
            a[::max(1, int(rng.integers(1, 12)))] = 0
            return Image.fromarray(a), f'stripes {w}x{h}'
        if what == 5:  # a grid
            a = np.full((h, w), 255, np.uint8)
            a[::max(1, int(rng.integers(2, 12)))] = 0
            a[:, ::max(1, int(rng.integers(2, 12)))] = 0
            return Image.fromarray(a), f'grid {w}x{h}'
        if what == 6:  # five perfect lines and nothing else, possibly on the edges
            a = np.full((max(h, 5), w), 255, np.uint8)
            sp = int(rng.integers(1, max(2, a.shape[0] // 5 + 1)))
            for k in range(5):
                a[min(a.shape[0] - 1, k * sp)] = 0
            return Image.fromarray(a), f'lines {w}x{a.shape[0]} sp {sp}'
        return Image.new('L', (w, h), 0), f'black {w}x{h}'
    src = srcs[int(rng.integers(len(srcs)))]
    im, ops = src, []
    g = np.asarray(im)
    # crop: random box, or one cut at an ink row/column so that ink touches that edge
    if rng.random() < 0.7:
        H, W = g.shape
        rows, cols = _ink_rows_cols(g)
        x0, y0, x1, y1 = 0, 0, W, H
        for edge in ('top', 'bottom', 'left', 'right'):
            if rng.random() < 0.5:
                continue
            if edge in ('top', 'bottom') and len(rows):
                y = int(rows[rng.integers(len(rows))]) + int(rng.integers(-1, 2))
                y0, y1 = (max(0, min(y, y1 - 1)), y1) if edge == 'top' else (y0, min(H, max(y + 1, y0 + 1)))
            elif edge in ('left', 'right') and len(cols):
                x = int(cols[rng.integers(len(cols))])
                x0, x1 = (min(x, x1 - 1), x1) if edge == 'left' else (x0, max(x + 1, x0 + 1))
        im = im.crop((x0, y0, x1, y1))
        ops.append(f'crop{(x0, y0, x1, y1)}')
    if rng.random() < 0.3:  # pad with white, black or grey
        p = [int(v) for v in rng.integers(0, 200, 4)]
        fill = int(rng.choice([255, 0, 128, int(rng.integers(256))]))
        canvas = Image.new('L', (im.size[0] + p[0] + p[2], im.size[1] + p[1] + p[3]), fill)
        canvas.paste(im, (p[0], p[1]))
        im = canvas
        ops.append(f'pad{p}/{fill}')
    if rng.random() < 0.4:  # scale: tiny to ~2.5x (huge: a few 6000+ px wide)
        s = float(np.exp(rng.uniform(np.log(0.02), np.log(2.5))))
        w, h = max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))
        if w * h <= 40_000_000:
            im = im.resize((w, h), Image.Resampling.BILINEAR)
            ops.append(f'scale{s:.3f}')
    if rng.random() < 0.3:  # rotation: small tilts mostly, sometimes any angle
        a = float(rng.uniform(-4, 4) if rng.random() < 0.7 else rng.uniform(-180, 180))
        im = im.rotate(a, resample=Image.Resampling.BILINEAR, expand=bool(rng.random() < 0.5),
                       fillcolor=int(rng.choice([255, 0])))
        ops.append(f'rot{a:.1f}')
    if rng.random() < 0.15:
        im = im.point(lambda v: 255 - v)
        ops.append('invert')
    if rng.random() < 0.15:
        a = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(5, 80), (im.size[1], im.size[0]))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        ops.append('noise')
    if rng.random() < 0.1:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 4))))
        ops.append('blur')
    if rng.random() < 0.1:  # other PIL modes: binary, RGB, RGBA with transparency, palette
        mode = str(rng.choice(['1', 'RGB', 'RGBA', 'P', 'LA']))
        im = im.convert(mode)
        if mode == 'RGBA' and rng.random() < 0.5:
            im.putalpha(Image.fromarray((rng.random((im.size[1], im.size[0])) < 0.5).astype(np.uint8) * 255))
        ops.append(mode)
    return im, ' '.join(ops) or 'as is'


def check(im):
    """Run the finder, the systems and the line checks on one image. None if all is well, else a
    one-line reason."""
    try:
        staves.looks_like_line(im)
        if not isinstance(staves.looks_like_line(im), bool):
            return 'looks_like_line did not answer a bool'
        try:
            page = staves.find_staves(im)
        except ValueError as e:
            return None if 'no staff found' in str(e) else f'ValueError: {e}'
        W, H = page.image.size
        if not isinstance(page, staves.Page) or not page.staves:
            return 'find_staves returned no staves without raising'
        for st in page.staves:
            x0, y0, x1, y1 = st.crop_box
            # a turned staff's crop is cut from its band turned straight, not from crop_box: its own size
            if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H) or (st.crop.size != (x1 - x0, y1 - y0) and not st.turned) \
                    or min(st.crop.size) < 1:
                return f'crop box {st.crop_box} outside the {W}x{H} image'
        for sy in systems.find_systems(page):
            x0, y0, x1, y1 = sy.crop_box
            if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
                return f'system crop box {sy.crop_box} outside the {W}x{H} image'
        if not isinstance(staves.is_single_line(page), bool):
            return 'is_single_line did not answer a bool'
        return None
    except Exception as e:  # the point of the exercise: report, never crash
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return f'{type(e).__name__}: {e} ({os.path.basename(tb.filename)}:{tb.lineno})'


def run(n, seed=0, verovio_page=False, verbose=True, page_scale=1.0):
    """n cases from seed -> (run, passed, failures [(case seed, what, reason)], seconds)."""
    srcs = sources(verovio_page, page_scale)
    fails, t0 = [], time.time()
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        im, what = make_case(rng, srcs)
        why = check(im)
        if why is not None:
            fails.append((i, what, why))
            if verbose:
                print(f'FAIL case {i} ({im.size[0]}x{im.size[1]} {im.mode}, {what}): {why}', file=sys.stderr)
        if verbose and (i + 1) % 1000 == 0:
            print(f'{i + 1} cases, {len(fails)} failed, {time.time() - t0:.0f} s', file=sys.stderr)
    return n, n - len(fails), fails, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n', type=int, default=10000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--verovio_page', type=int, default=0, help='1: add a verovio A4 page to the sources')
    a = ap.parse_args()
    n, ok, fails, sec = run(a.n, a.seed, bool(a.verovio_page))
    print(f'fuzz_staves: {n} cases run, {ok} passed, {len(fails)} failed, {sec:.1f} s ({sec / max(1, n) * 1000:.1f} ms/case)')
    sys.exit(1 if fails else 0)


if __name__ == '__main__':
    main()
