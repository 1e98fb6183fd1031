"""
inference/crops.py: cut one staff out of a page the way the training images look (inference/staves.py finds
the staves, this decides each crop's rows and what ink stays in it).

A training image is one line of music cropped to its own ink plus a small white margin: no titles, tempo
marks, bar numbers or lyrics. So a crop takes the rows the staff's ink reaches (stems, beams, ledger lines,
high and low notes: ink_extent grows through what is connected to the lines, then joins one narrow detached
island such as a grace note or a triplet number), and within those rows paints out text that is not music
(text_in_crop: detached ink in an island wider than TEXT_RUN staff spaces, e.g. a tempo mark level with a
high note). Only numpy and PIL.
"""

import numpy as np
from PIL import Image, ImageFilter, ImageOps

CROP_MARGIN = 0.55      # staff spaces of white around a crop (training: 6-19 px at 18-27 px per space)
MAX_REACH = 6.0         # staff spaces above/below the outer lines a crop may grow (ledger lines)
TEXT_RUN = 8.0          # staff spaces: an island of ink beside the staff this wide is text, not a grace group
LINE_BAND, TEXT_COVER = 2.5, 0.25  # detached ink covering > 1/4 of the width within 2.5 spaces of rows: text


def touching(prev, row):
    """bool (w,) ink of a row, and of the row next to it the ink kept -> the row's ink runs that touch it,
    8-connected (a pixel diagonally next counts too). Per row a 1-D run labelling: no connected-components library."""
    seed = prev.copy()
    seed[1:] |= prev[:-1]
    seed[:-1] |= prev[1:]
    labels = np.cumsum(np.diff(np.concatenate(([False], row)).astype(np.int8)) == 1) * row  # run ids, 0 = paper
    return np.isin(labels, np.unique(labels[seed & row])) & row


def ink_extent(ink, staff, up_limit, down_limit):
    """Rows [top, bottom] of the ink connected to a staff's lines: grown row by row outward from the
    outer lines, a row's ink run is kept if it touches (8-connected) ink kept in the row before. So
    stems, beams, ledger lines with their notes and slurs come along, while text that does not touch
    the music (titles, tempo marks, measure numbers, lyrics) stays out, as it is absent from every
    training image. Then nearby islands of ink that cover little of the width join (see attach). Stops at an empty row or at the limits (half way to the neighbouring staff, and
    MAX_REACH staff spaces). Per row this is a 1-D run labelling, so no connected-components library."""
    x0, x1 = staff[0], staff[2]

    def grow(y, stop, step):
        active = ink[y, x0:x1].copy()
        last = y
        while (y + step >= stop) if step < 0 else (y + step <= stop):
            y += step
            nxt = touching(active, ink[y, x0:x1])
            if not nxt.any():
                break
            active, last = nxt, y
        return last

    def attach(y, stop, step):
        """past the connected ink: the next band of rows with ink, at most a staff space away, joins
        when it covers little of the staff's width (a grace note above the staff, a triplet's 3);
        a band across the width is text (lyrics, a tempo line) and is left out. With this, every
        ink pixel of 299 real training images falls inside its crop (11 of 145 did not without)."""
        sp = (staff[3] - staff[1]) / 4
        k = max(1, int(sp / 2))
        rows = []
        yy, empty = y, 0
        while (yy + step >= stop) if step < 0 else (yy + step <= stop):
            yy += step
            if ink[yy, x0:x1].sum() >= 2:
                rows.append(yy)
            elif rows:
                break
            else:
                empty += 1
                if empty > sp:
                    return y
        if not rows:
            return y
        cols = ink[min(rows):max(rows) + 1, x0:x1].any(0)
        covered = np.convolve(cols, np.ones(2 * k + 1), mode='same') > 0  # within sp/2 of ink
        longest = max(b - a for a, b in island_runs(cols, sp))  # the widest island (a line's words joined)
        # one island deep only: a grace note or a triplet number sits next to the staff's own ink;
        # further out (a composer's name above a tempo mark) is page text. So is an island wider than
        # TEXT_RUN spaces: a tempo mark ('Adagio (q = 60)'), which abcm2ps puts within a space of the notes
        return y if covered.mean() > 0.25 or longest > TEXT_RUN * sp else rows[-1]

    top, bot = grow(staff[1], up_limit, -1), grow(staff[3], down_limit, +1)
    return attach(top, up_limit, -1), attach(bot, down_limit, +1)


def text_in_crop(ink, box, cb, sp):
    """bool (h, w) mask over crop box cb of the page text inside it: ink above the staff's top line or below
    its bottom line that is not connected to the staff (grown row by row as ink_extent grows) and lies in
    an island wider than TEXT_RUN spaces (a tempo mark level with a high note's ledger line) or in a band of
    rows where it covers more than TEXT_COVER of the width (a line of lyrics between low notes). Narrow
    detached ink (grace notes, triplet numbers, dots, bar numbers) stays: training images have it."""
    x0, y0, x1, y1 = cb
    sub = ink[y0:y1, x0:x1]  # (h, w)
    conn = np.zeros_like(sub)
    top, bot = max(0, box[1] - y0), min(sub.shape[0] - 1, box[3] - y0)
    conn[top:bot + 1] = sub[top:bot + 1]  # the staff band itself is music
    for rows, step in ((range(top - 1, -1, -1), 1), (range(bot + 1, sub.shape[0]), -1)):
        for y in rows:
            if not conn[y + step].any():
                break  # nothing connected further out
            conn[y] = touching(conn[y + step], sub[y])
    out = np.zeros_like(sub)
    h = max(2, int(round(LINE_BAND * sp)))
    for a, b in ((0, top), (bot + 1, sub.shape[0])):
        loose = sub[a:b] & ~conn[a:b]
        if not loose.any():
            continue
        for s0, s1 in island_runs(loose.any(0), sp):
            if s1 - s0 > TEXT_RUN * sp:
                out[a:b, s0:s1] = loose[:, s0:s1]
        # a line of text: lyrics, whose syllables are narrow islands far apart, but together in one band of
        # rows cover much of the width (a row of triplet numbers or detached notes covers far less)
        if len(loose) >= h:
            cover = [loose[y:y + h].any(0).mean() for y in range(len(loose) - h + 1)]
            y = int(np.argmax(cover))
            if cover[y] > TEXT_COVER:
                out[a + y:a + y + h] |= loose[y:y + h]
    return out


def island_runs(cols, sp):
    """bool (w,) columns holding ink -> [(start, end)] of its islands, gaps under two staff spaces closed (the
    space between the words of a tempo mark; triplet numbers and grace groups sit further apart)."""
    k = max(1, int(round(sp)))
    covered = np.convolve(cols, np.ones(2 * k + 1), mode='same') > 0
    edges = np.diff(np.concatenate(([0], covered.astype(np.int8), [0])))
    return list(zip(np.nonzero(edges > 0)[0], np.nonzero(edges < 0)[0]))


def clean_crop(gray_im, ink, box, cb, sp):
    """the crop of cb with its page text (text_in_crop) painted over, one pixel around it too (antialiasing),
    in the crop's paper grey (the median of its pixels off the ink), then its contrast stretched (1% of the
    pixels clipped at each end: a scan's grey paper white, faded ink black; a clean crop is unchanged).
    On 100 scanned LilyPond and abcm2ps val pages the stretch took staff SER 18.6 -> 17.8% and
    20.2 -> 19.2%; white paint on grey paper was a patch the reader took for music."""
    crop = gray_im.crop(cb)
    text = text_in_crop(ink, box, cb, sp)
    if text.any():
        text = np.asarray(Image.fromarray(text.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0
        a = np.array(crop)
        off = ~ink[cb[1]:cb[3], cb[0]:cb[2]]
        a[text] = int(np.median(a[off])) if off.any() else 255
        crop = Image.fromarray(a)
    return ImageOps.autocontrast(crop, cutoff=1)
