"""
inference/systems.py: group the staves staves.py found into systems, and cut a crop per system.

Two staves one above the other are one system when ink runs through the gap between them at the
left end of the staves, where every engraver (verovio, LilyPond, MuseScore) joins the staves of a
system: the system's opening bar line, a bracket (choir, strings) or a brace (piano, a grand staff).
One column of ink, within a few staff spaces left of the staves' start, covering >= 90% of the gap's
rows (from the upper staff's bottom line to the lower staff's top line) is that join. Between two
systems the left end of the gap holds nothing, or text (an instrument's short name, a measure number)
far shorter than the gap. Bar lines drawn through the gaps further right (a chorale's '[ 1 | 2 ]'
groups) are not needed: the opening line is always there for a system of two or more staves.

    Page (staves.find_staves) --find_systems--> [System(staves=[indices], box, crop_box, crop)]

A system's crop is the rows from its top staff's crop to its bottom staff's crop (staves.py's crops:
the staves' ink plus 0.55 sp of white), and the columns from the join's leftmost ink (a brace, a
bracket) to the staves' right end, plus the same margin: the whole system as one training image of a
multi-voice corpus is cropped (its ink plus a margin). A one-staff system's crop is its staff's crop,
exactly, so a page of single staves reads the same staff by staff or system by system.

    $ python -m inference.systems page.png [boxed.png]   # prints the systems, writes the page with them boxed
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from inference import staves as S

REACH_LEFT = 4.0   # staff spaces left of the staves' start searched for a brace/bracket/bar line
REACH_RIGHT = 0.5  # ... and right of it (the opening bar line sits on the lines' start)
COVER = 0.9        # share of the gap's rows one column must cover to join two staves


@dataclass
class System:
    staves: list         # indices into page.staves, top to bottom
    box: tuple           # (x0, y0, x1, y1): from the top staff's top line to the bottom staff's bottom line
    crop_box: tuple      # (x0, y0, x1, y1) of the crop
    crop: object = field(repr=False, default=None)  # PIL 'L' image of crop_box
    index: int = 0


def join(ink, a, b, t):
    """Staff a above staff b (staves.Staff) -> the x of the leftmost join column's ink if one column
    near their left end is inked over >= COVER of the gap between them, else None."""
    sp = (a.space + b.space) / 2
    if abs(a.box[0] - b.box[0]) > 2 * sp or abs(a.box[2] - b.box[2]) > 2 * sp:
        return None  # staves of one system start and end together
    g0, g1 = int(np.ceil(a.lines[-1] + t)), int(np.floor(b.lines[0] - t))
    if g1 - g0 < 2:
        return None
    x = min(a.box[0], b.box[0])
    w0, w1 = max(0, int(x - REACH_LEFT * sp)), min(ink.shape[1], int(x + REACH_RIGHT * sp) + 1)
    gap = ink[g0:g1 + 1, w0:w1]
    gap = gap | np.pad(gap[:, 1:], ((0, 0), (0, 1)))  # a column and its right neighbour: a tilt of a pixel
    cover = gap.mean(0)
    if cover.max() < COVER:
        return None
    # the join's leftmost ink (a brace's bulge, a bracket's serif): columns inked over a third of the gap
    # (text between staves covers far less)
    return w0 + int(np.nonzero(cover >= 0.33)[0][0])


def find_systems(page, crops=True):
    """Page -> list of System, top to bottom; also sets each Staff's .system to its system's index."""
    ink = S.ink_mask(np.asarray(page.image))
    t = max(1, page.line_thickness)
    groups, lefts = [[0]] if page.staves else [], [None] if page.staves else []
    for k in range(1, len(page.staves)):
        x = join(ink, page.staves[k - 1], page.staves[k], t)
        if x is None:
            groups.append([k])
            lefts.append(None)
        else:
            groups[-1].append(k)
            lefts[-1] = x if lefts[-1] is None else min(lefts[-1], x)
    H, W = ink.shape
    out = []
    for n, (g, left) in enumerate(zip(groups, lefts)):
        sts = [page.staves[k] for k in g]
        for st in sts:
            st.system = n
        box = (min(s.box[0] for s in sts), sts[0].box[1], max(s.box[2] for s in sts), sts[-1].box[3])
        cb = (min(s.crop_box[0] for s in sts), sts[0].crop_box[1], max(s.crop_box[2] for s in sts), sts[-1].crop_box[3])
        if left is not None:  # the brace/bracket belongs to the system's picture
            m = int(round(S.CROP_MARGIN * np.mean([s.space for s in sts])))
            cb = (max(0, min(cb[0], left - m)), cb[1], cb[2], cb[3])
        crop = (page.image.crop(cb) if len(sts) > 1 else sts[0].crop) if crops else None
        out.append(System(staves=list(g), box=box, crop_box=cb, crop=crop, index=n))
    return out


def draw_systems(page, systems):
    """staves.draw_staves's picture, plus each system of two or more staves boxed in green."""
    im = S.draw_staves(page)
    dr = ImageDraw.Draw(im)
    w = max(2, int(page.space / 4))
    for sy in systems:
        if len(sy.staves) > 1:
            x0, y0, x1, y1 = sy.crop_box
            dr.rectangle((x0 - w, y0 - w, x1 + w, y1 + w), outline=(0, 160, 0), width=w)
    return im


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit('usage: python -m inference.systems page.png [boxed.png]')
    try:
        with Image.open(argv[1]) as im:
            page = S.find_staves(im)
    except (OSError, ValueError) as e:
        sys.exit(f'error: {argv[1]}: {e}')
    systems = find_systems(page)
    print(f'{argv[1]}: {len(page.staves)} staves in {len(systems)} systems')
    for sy in systems:
        print(f'  {sy.index + 1}: staves {[k + 1 for k in sy.staves]} crop {sy.crop_box}')
    if len(argv) == 3:
        tmp = argv[2] + '.tmp.png'
        draw_systems(page, systems).save(tmp)
        os.replace(tmp, argv[2])


if __name__ == '__main__':
    main(sys.argv)
