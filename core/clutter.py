"""
core/clutter.py: the text a real page puts around a staff, drawn onto a training line (issues 24, 25).

A staff cut from a page is not a clean excerpt: a tempo mark or the composer's name sits above the
first staff, a bar number above the clef, lyrics and dynamics below. The crop (inference/staves.py)
keeps only the rows the music's own ink reaches, but within those rows whatever text is there comes
along, often cut at the crop's edge. A reader that never saw text reads it as music: on LilyPond and
abcm2ps pages the first staff's tempo mark turned into grace notes and a wrong meter (the header was
right on 20-40% of pages, results/pages_engravers.md). The labels leave the text out, so the model
learns to look through it.

    add(arr, rng) -> a new uint8 (H', W') line: text above and/or below the staff, then the rows an
                     inference crop would keep (the music's rows; with some chance grown to take in
                     a short text band, as crops.ink_extent's attach does), scaled back to H rows

Positions and sizes are in staff spaces, measured on the image (staff_lines). Fonts: matplotlib's
DejaVu, STIX and Computer Modern (no download). Only numpy and PIL; ~1 ms a line.
"""
import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core import images

FONTS = ('DejaVuSerif.ttf', 'DejaVuSerif-Italic.ttf', 'DejaVuSerif-Bold.ttf', 'DejaVuSerif-BoldItalic.ttf',
         'DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'STIXGeneral.ttf', 'STIXGeneralItalic.ttf', 'STIXGeneralBol.ttf',
         'STIXGeneralBolIta.ttf', 'cmr10.ttf', 'cmti10.ttf')
TEMPI = ('Allegro', 'Allegretto', 'Andante', 'Andantino', 'Adagio', 'Moderato', 'Presto', 'Vivace', 'Lento',
         'Largo', 'Maestoso', 'Grazioso', 'Con moto', 'Tempo di valse', 'Slow', 'Lively', 'Briskly', 'Steady',
         'Slow air', 'With spirit', 'Moderately', 'Brightly', 'Reel', 'Jig', 'Hornpipe', 'March', 'Waltz')
NAMES = ('Trad.', 'Traditional', 'arr. J. Smith', "O'Neill", 'J. S. Bach', 'Anon.', 'Words and music', 'Irish',
         'Scottish', 'from the Ryan collection', 'Dance tune', 'Folk song', 'Chorale', 'Tenor', 'Violin I', 'Alto')
DYNAMICS = ('p', 'pp', 'mp', 'mf', 'f', 'ff', 'sf', 'fp', 'cresc.', 'dim.', 'rit.', 'a tempo', 'dolce', 'legato')
ONSETS, VOWELS = 'bcdfghjklmnprstvwy', 'aeiouy'


@functools.lru_cache(maxsize=256)
def _font(name, size):
    import matplotlib  # only for the path of its fonts
    return ImageFont.truetype(os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'fonts', 'ttf', name), size)


def staff_lines(a):
    """uint8 (H, W) line -> (top, bottom) rows of its five staff lines, or None when there are not five
    about equally spaced ones (the image is left as it is). A staff line darkens most of a row."""
    d = (255 - a.astype(np.float32)).mean(1) / 255  # (H,) darkness per row
    q = np.pad(d, 2, mode='edge')
    peak = d - 0.5 * (q[:-4] + q[4:])  # darker than the rows two above and below: a thin line, not a note band
    rows = np.nonzero(peak > 0.12)[0]
    if len(rows) < 5:
        return None
    groups = np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1)  # a blurred line spans 2-3 rows
    if len(groups) < 5:
        return None
    strength = [d[g].sum() for g in groups]
    keep = sorted(np.argsort(strength)[-5:])
    centres = np.array([np.average(groups[k], weights=d[groups[k]]) for k in keep])
    gaps = np.diff(centres)
    if gaps.min() < 2 or gaps.max() > 1.5 * gaps.min():
        return None
    return float(centres[0]), float(centres[-1])


def words(rng, n):
    """n made-up lyric syllables, some with a hyphen after them (the next one continues the word)."""
    out = []
    for _ in range(n):
        s = ''.join(rng.choice(list(ONSETS)) + rng.choice(list(VOWELS)) for _ in range(rng.integers(1, 3)))
        out.append(s + ('-' if rng.random() < 0.3 else ''))
    return out


def add(a, rng, img_height=None, max_width=None):
    """uint8 (H, W) clean line -> uint8 line with page text around its staff, H rows again (or img_height).
    rng: np.random.Generator; the same seed gives the same image. Unchanged when no staff is measured."""
    a = np.asarray(a, dtype=np.uint8)
    H, W = a.shape
    st = staff_lines(a)
    if st is None:
        return a
    top, bot = st
    sp = (bot - top) / 4
    U = lambda lo, hi: float(rng.uniform(lo, hi))
    pad = int(np.ceil(6 * sp))
    layer = Image.new('L', (W, H + 2 * pad), 255)  # the text, on a sheet of its own: ink over ink stays ink
    d = ImageDraw.Draw(layer)
    above, below = [], []  # (y0, y1, x0, x1) of what was drawn, canvas rows

    def text(s, x, y, size, font, anchor, where):
        f = _font(font, max(4, int(round(size))))
        x0, y0, x1, y1 = d.textbbox((x, y), s, font=f, anchor=anchor)
        d.text((x, y), s, fill=int(rng.integers(0, 60)), font=f, anchor=anchor)
        where.append((y0, y1, x0, x1))

    fonts = lambda: FONTS[rng.integers(len(FONTS))]
    t, b = pad + top, pad + bot  # the staff's top and bottom line on the canvas
    tempo, number, lyrics, dynamic = on = rng.random(4) < (0.5, 0.4, 0.35, 0.2)
    if not on.any():  # at least one: the caller's share is the share of lines with text
        tempo, number, lyrics, dynamic = np.arange(4) == rng.integers(4)
    if tempo:  # a tempo mark (with a metronome mark) or a name above the staff
        s = TEMPI[rng.integers(len(TEMPI))] if rng.random() < 0.7 else NAMES[rng.integers(len(NAMES))]
        x, y, size = U(0, 0.7) * W, t - U(0.5, 3.5) * sp, U(1.3, 2.6) * sp
        text(s, x, y, size, fonts(), 'ls', above)
        if rng.random() < 0.4:  # a metronome mark; the note from a font that has it (U+2669)
            text(f'(\u2669 = {rng.integers(40, 200)})', above[-1][3] + sp, y, size, 'DejaVuSans.ttf', 'ls', above)
    if number:  # a bar number above the clef or above a bar
        x = U(0, 0.05) * W if rng.random() < 0.6 else U(0.1, 0.95) * W
        text(str(rng.integers(2, 200)), x, t - U(0.3, 1.5) * sp, U(0.9, 1.6) * sp, fonts(), 'ls', above)
    if lyrics:  # a line of lyrics under the notes
        size, x, font = U(1.2, 2.0) * sp, U(0.02, 0.15) * W, fonts()
        y, step = b + U(1.5, 4.0) * sp, U(2.5, 5.0) * sp
        for w in words(rng, max(1, int((W - x) / step))):
            text(w, x, y, size, font, 'lt', below)
            x = max(x + step * U(0.8, 1.3), below[-1][3] + sp)  # words do not overlap
    if dynamic:  # a dynamic or an expression mark below the staff
        text(DYNAMICS[rng.integers(len(DYNAMICS))], U(0, 0.9) * W, b + U(1.0, 3.0) * sp, U(1.2, 2.0) * sp,
             FONTS[3] if rng.random() < 0.5 else fonts(), 'lt', below)
    # the crop an inference page gives: the music's rows (the original image); a short text band next to
    # them joins it (crops.ink_extent attach: covers < 1/4 of the width), and then is whole
    y0, y1 = pad, pad + H
    if above and rng.random() < 0.5 and sum(x1 - x0 for *_, x0, x1 in above) < W / 4:
        y0 = min(y0, int(min(r[0] for r in above) - 0.55 * sp))
    if below and rng.random() < 0.5 and sum(x1 - x0 for *_, x0, x1 in below) < W / 4:
        y1 = max(y1, int(max(r[1] for r in below) + 0.55 * sp))
    canvas = np.asarray(layer).copy()  # (H + 2 pad, W)
    canvas[pad:pad + H] = np.minimum(canvas[pad:pad + H], a)
    out = Image.fromarray(canvas).crop((0, max(0, y0), W, min(canvas.shape[0], y1)))
    return np.array(out) if out.size[1] == H and img_height in (None, H) else \
        images.preprocess(out, img_height or H, max_width or 4 * W)
