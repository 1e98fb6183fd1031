"""
inference/staves.py: find the staves on a page image and cut each one out the way the training images look.

    page (gray) --ink mask (local paper level; grain specks dropped)--> deskew (max projection-profile sharpness over angles in +-3 deg)
      --vertical run lengths--> line thickness t, staff space sp (the most common black run, and
        black + the most common white run between blacks; Fujinaga 1988, as oemer does)
      --horizontal runs >= 2 sp, summed per row--> candidate staff-line rows --> thin bands = lines
      --five lines, equally spaced at ~sp, overlapping in x--> staves
      --rows of line-like runs no staff explains (perspective tilts a staff off the page's angle)
        --that band's own angle, turned straight, searched again--> more staves (retilted_staves)
      --grow up/down from the outer lines through connected ink (stems, ledger lines, not text)--> crop
        (inference/crops.py: the rows, and page text painted out)

The training images (data/m21/prepare.py) are ONE line of music cropped to its ink plus a 6-19 px
white margin at a staff space of 18-27 px, i.e. a margin of ~0.55 staff spaces. A crop here is the
staff's ink (lines, and above/below only what is attached to it: ledger lines, stems, high/low notes)
plus 0.55 sp of white, so that after images.preprocess's resize it looks like a training image.

Only numpy and PIL: no OpenCV. Each Staff carries a `system` field: its own index here;
systems.find_systems groups the staves by braces/brackets/bar lines and sets it.

    $ python -m inference.staves page.png [out.png]      # prints the staves, writes the boxed page
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from core import images
from inference.crops import CROP_MARGIN, MAX_REACH, clean_crop, ink_extent

MAX_SKEW = 3.0          # degrees; deskew searches +-MAX_SKEW
# Staff lines are thinner than the gaps between them (t <= sp/2), except on a copy whose ink bled: lines
# 13 px thick at a 22-px staff space on a scanned val page. Thicker lines (up to 0.7 sp) are taken only on
# a page of ink and paper: at most this share of mid-grey pixels (64-191). The bled page has 3%, the
# photo-like and noise negatives of bench/scan_negatives 47% or more (2 of 20 photo-like ones made
# five-line 'staves' of their stripes), scanned val crops 18% (median) to 29%.
MAX_MID_GREY = 0.4


@dataclass
class Staff:
    box: tuple           # (x0, y0, x1, y1): the five lines' extent, in (deskewed) page pixels
    lines: tuple         # the five line centres, y, top to bottom
    space: float         # staff space (distance between lines), pixels
    crop_box: tuple      # (x0, y0, x1, y1) of the crop: the staff's ink plus a margin
    crop: object = field(repr=False, default=None)  # PIL 'L' image of crop_box (turned: see there)
    system: int = 0      # the system it belongs to (find_staves: its own; systems.find_systems sets it)
    index: int = 0       # 0-based, top to bottom
    turned: float = 0.0  # degrees this staff was turned beyond the page's angle (retilted_staves): its
                         # crop is its band turned straight, crop_box the page's box around where that lies


@dataclass
class Page:
    image: object        # the deskewed grayscale PIL image the coordinates refer to
    angle: float         # degrees the input was rotated by (counter-clockwise) to deskew it
    staves: list
    line_thickness: float
    space: float         # the page's staff space from run lengths (each Staff has its own too)
    ink_outside: int = 0 # ink pixels outside every crop (titles, text, what no staff claimed)
    ink_rows: tuple = (0, 0)  # first and last row holding ink


# -----------------------------------------------------------------------------
# pixels

def paper_grid(gray, block=64):
    """(ny, nx, 2) float32: the 50th and 90th percentiles of blocks of ~block x block px, taken on
    every 4th pixel (the 90th is paper unless ink covers 90% of the block)."""
    s = gray[::4, ::4]
    b = max(1, block // 4)
    ny, nx = -(-s.shape[0] // b), -(-s.shape[1] // b)
    pad = np.pad(s, ((0, ny * b - s.shape[0]), (0, nx * b - s.shape[1])), mode='edge')
    blocks = pad.reshape(ny, b, nx, b).transpose(0, 2, 1, 3).reshape(ny, nx, b * b)  # (ny, nx, b*b)
    return np.moveaxis(np.percentile(blocks, (50, 90), axis=2), 0, -1).astype(np.float32)


def ink_mask(gray):
    """uint8 (H, W) -> bool ink mask. The threshold is 78% of the paper's brightness (200 on white,
    as prepare.rasterize counts ink), so that antialiased 1-2 px staff lines stay whole and a grey
    scan still separates ink from paper. A clean, even page takes one threshold, as it always did.
    On a scan the paper is judged where it is: each 64 px block has its own paper level (uneven
    light, a greyer sheet; paper_grid, bilinearly interpolated). On grainy paper (the typical block's
    90th percentile minus its median, `spread`, >= 4 grey levels) a pixel is ink when its 3x3 mean is
    under the threshold (a blurred line in heavy grain, its own pixels speckled), or when it is under
    the threshold itself and its 3x3 mean is two thirds of the way from the grain's middle to it (a thin
    line keeps its shape; a lone speck, or two, goes). Without this, Gaussian grain of sigma 15 put 1
    paper pixel in 40 under the threshold, line_metrics' most common black run became a 1 px speck and
    no staff of the page was found (issue 25)."""
    gray = np.asarray(gray)
    grid = paper_grid(gray)
    spread = float(np.median(grid[..., 1] - grid[..., 0]))
    lo, hi = np.percentile(grid[..., 1], (5, 95))
    if lo >= 0.97 * hi and spread < 4:  # an even, clean page: one threshold for all of it
        return gray < max(1.0, 0.78 * float(np.percentile(gray[::4, ::4], 90)))
    H, W = gray.shape
    up = lambda f: np.asarray(Image.fromarray(np.clip(f + 0.5, 1, 255).astype(np.uint8))
                              .resize((W, H), Image.Resampling.BILINEAR))  # (ny, nx) -> (H, W) uint8
    thr = up(0.78 * grid[..., 1])
    if spread < 4:
        return gray < thr
    mean = np.asarray(Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).filter(ImageFilter.BoxBlur(1)))
    # a 3x3 mean under the threshold: a (blurred) line in heavy grain, its own pixels speckled; or a dark
    # pixel whose 3x3 mean is two thirds of the way from the grain's middle to the threshold: a thin line
    return (mean < thr) | ((gray < thr) & (mean < up((1 - 0.22 * 2 / 3) * (grid[..., 1] - spread))))


def skew_angle(ink, max_deg=MAX_SKEW, max_points=200_000):
    """Degrees by which the page's horizontal lines are tilted (y grows with x for a positive angle).
    For each candidate angle the ink is sheared back and projected on the y axis; staff lines make
    the sharpest profile (largest sum of squares) when they are horizontal (Postl 1986's criterion).
    A coarse 0.25 deg grid, then 0.02 deg around the best."""
    ys, xs = np.nonzero(ink)
    if len(ys) < 10:
        return 0.0
    step = max(1, len(ys) // max_points)
    ys, xs = ys[::step].astype(np.float64), xs[::step].astype(np.float64)
    xs -= ink.shape[1] / 2  # rotate about the centre, as PIL does

    def sharpness(deg):
        yy = np.round(ys - xs * np.tan(np.radians(deg))).astype(np.int64)
        h = np.bincount(yy - yy.min())
        return float(np.dot(h, h))

    coarse = np.arange(-max_deg, max_deg + 1e-9, 0.25)
    best = coarse[int(np.argmax([sharpness(a) for a in coarse]))]
    fine = np.arange(best - 0.24, best + 0.24 + 1e-9, 0.02)
    return float(fine[int(np.argmax([sharpness(a) for a in fine]))])


def _mode(values, lo=1):
    """most common value >= lo of a non-negative int array, or 0 if none."""
    values = values[values >= lo]
    return int(np.argmax(np.bincount(values))) if len(values) else 0


def line_metrics(ink, n_cols=300):
    """(line thickness, staff space) in pixels from vertical run lengths of ~n_cols columns: the most
    common black run is a staff line, the most common white run between two blacks is the gap
    between lines (Fujinaga 1988; oemer and most OMR systems start this way)."""
    cols = ink[:, ::max(1, ink.shape[1] // n_cols)].T.astype(np.int8)  # (C, H)
    d = np.diff(np.pad(cols, ((0, 0), (1, 1))), axis=1)                # (C, H+1): +1 starts, -1 ends
    r_s, s = np.nonzero(d == 1)
    r_e, e = np.nonzero(d == -1)  # same count and order as the starts: runs pair up
    if len(s) < 2:
        return 0, 0
    black = e - s
    same = r_s[1:] == r_s[:-1]    # white runs between two black runs of the same column
    white = (s[1:] - e[:-1])[same]
    t, g = _mode(black), _mode(white, lo=2)
    return t, t + g


def row_runs(ink, min_len):
    """Per row, the total length of horizontal black runs >= min_len, and each such run.
    -> (score (H,), rows, starts, ends)."""
    d = np.diff(np.pad(ink.astype(np.int8), ((0, 0), (1, 1))), axis=1)  # (H, W+1)
    r, s = np.nonzero(d == 1)
    _, e = np.nonzero(d == -1)
    keep = (e - s) >= min_len
    r, s, e = r[keep], s[keep], e[keep]
    score = np.bincount(r, weights=e - s, minlength=ink.shape[0])
    return score, r, s, e


# -----------------------------------------------------------------------------
# lines -> staves

def find_lines(ink, t, sp, runs=None):
    """Staff-line candidates: bands of rows whose long horizontal runs add up to >= 6 staff spaces
    (a clef, a key and a note), trimmed to the rows within 50% of the band's peak (a horizontal beam
    touching a line must not make it thick; two lines joined by beams split apart again), or 80% where
    that is still too thick (beams over half the width on the line), and at most
    max(3, 2.5 t) thick (dark blobs of a photo
    are not lines). runs: row_runs(ink, max(10, int(2 * sp))) when the caller has them.
    -> list of (y centre, x0, x1, strength = the peak row's long-run length)."""
    score, r, s, e = runs if runs is not None else row_runs(ink, max(10, int(2 * sp)))
    on = score >= 6 * sp
    lines = []
    y, H = 0, len(score)
    while y < H:
        if not on[y]:
            y += 1
            continue
        y2 = y
        while y2 + 1 < H and on[y2 + 1]:
            y2 += 1
        band = np.arange(y, y2 + 1)
        core = band[score[band] >= 0.5 * score[band].max()]
        # a band can hold two lines joined by beams or slurs between them: each run of core rows is one
        for grp in np.split(core, np.nonzero(np.diff(core) > 1)[0] + 1):
            if grp[-1] - grp[0] + 1 > max(3, 2.5 * t):
                # too thick: beams over more than half the width lie on the line (three groups of 16ths
                # on a dense page); the line is the rows that run (nearly) the whole width
                grp = grp[score[grp] >= 0.8 * score[grp].max()]
                grp = grp if len(grp) and grp[-1] - grp[0] + 1 <= max(3, 2.5 * t) else None
            if grp is not None:
                sel = (r >= grp[0]) & (r <= grp[-1])
                cy = float(np.dot(grp, score[grp]) / score[grp].sum())
                lines.append((cy, int(s[sel].min()), int(e[sel].max()), float(score[grp].max())))
        y = y2 + 1
    return lines


def group_staves(lines, sp):
    """Lines in a row spaced within 20% of each other (0.6-1.6 sp), whose x extents overlap by at
    least 80% of the longer (among several candidates at the right distance, the strongest). Such a chain can be longer than five when ledger lines of many notes
    line up above or below a staff; its five strongest consecutive lines are the staff (a ledger row
    is short pieces, a staff line runs the whole width). Greedy from the top; lines are used once."""
    out, i, n = [], 0, len(lines)
    while i < n:
        chain = [i]
        while len(chain) < 9:
            prev = lines[chain[-1]]
            d0 = lines[chain[1]][0] - lines[chain[0]][0] if len(chain) > 1 else None
            best = None
            for j in range(chain[-1] + 1, n):
                d = lines[j][0] - prev[0]
                if d > 1.6 * sp * 1.2:
                    break
                ok = (0.6 * sp <= d <= 1.6 * sp) if d0 is None else abs(d - d0) <= 0.2 * d0
                a, b = prev, lines[j]
                overlap = min(a[2], b[2]) - max(a[1], b[1])
                # the lines of one staff run equally far: a slanted beam's long runs between two lines,
                # or a row of ledger lines, is much shorter than its neighbours and is passed over
                if ok and overlap >= 0.8 * max(a[2] - a[1], b[2] - b[1]) and (best is None or b[3] > lines[best][3]):
                    best = j
            if best is None:
                break
            chain.append(best)
        if len(chain) >= 5:
            k = max(range(len(chain) - 4), key=lambda k: sum(lines[j][3] for j in chain[k:k + 5]))
            out.append([lines[j] for j in chain[k:k + 5]])
            i = chain[k + 4] + 1
        else:
            i += 1
    return out


def turn(pts, deg, shape):
    """where PIL's Image.rotate(deg) (counter-clockwise about the centre, same canvas) takes the (N, 2)
    (x, y) points of an image of shape (H, W); turn(., -deg, .) takes them back."""
    r = np.deg2rad(deg)
    c, s = np.cos(r), np.sin(r)
    x, y = pts[:, 0] - shape[1] / 2, pts[:, 1] - shape[0] / 2
    return np.stack([shape[1] / 2 + c * x + s * y, shape[0] / 2 - s * x + c * y], 1)


def unexplained_bands(score, boxes, sp):
    """Rows with staff-line-like runs (score >= 6 sp, as find_lines) more than a staff space away from
    every staff found, in clusters (gaps <= sp) at least 3 staff spaces tall: where a staff may have been
    missed. -> [(first row, last row, lo, hi)]: lo, hi the rows between the found staves around it."""
    on = score >= 6 * sp
    for x0, y0, x1, y1, _ in boxes:
        on[max(0, int(y0 - sp)):int(y1 + sp) + 1] = False
    rows = np.nonzero(on)[0]
    out = []
    for grp in np.split(rows, np.nonzero(np.diff(rows) > sp)[0] + 1) if len(rows) else []:
        if grp[-1] - grp[0] >= 3 * sp:
            lo = max([b[3] + 1 for b in boxes if b[3] < grp[0]], default=0)
            hi = min([b[1] - 1 for b in boxes if b[1] > grp[-1]], default=len(score) - 1)
            out.append((int(grp[0]), int(grp[-1]), lo, hi))
    return out


def retilted_staves(gray_im, ink, score, boxes, t, sp, max_skew):
    """The staves a sheet not flat on the glass hides from one deskew: under perspective, staff lines
    near the top and bottom of a page tilt differently from those in the middle (up to ~1-2 deg with
    core.degrade's medium preset), and a line 1 deg off crosses ~35 rows over a 2000 px staff, too
    thick a band for find_lines. Each band of rows where line-like runs are left unexplained
    (unexplained_bands) is measured for its own angle (skew_angle on the band), turned straight and
    searched again. -> [(page box (x0, y0, x1, y1, ys), frame)]: ys the line centres at the staff's
    middle; frame = (band image turned, its ink, angle, first row, box in the band)."""
    H, W = ink.shape
    out = []
    for c0, c1, lo, hi in unexplained_bands(score, boxes, sp):
        a = skew_angle(ink[max(lo, int(c0 - sp)):min(hi, int(c1 + sp)) + 1], max_skew)
        if abs(a) < 0.05:
            continue
        m = int(np.ceil(abs(np.tan(np.radians(a))) * W / 2))  # rows a turned line sweeps at the edges
        r0, r1 = max(lo, int(c0 - (MAX_REACH + 1) * sp) - m), min(hi, int(c1 + (MAX_REACH + 1) * sp) + m)
        band = gray_im.crop((0, r0, W, r1 + 1))
        paper = int(np.percentile(np.asarray(band)[::4, ::4], 90))
        R = band.rotate(a, resample=Image.Resampling.BILINEAR, fillcolor=paper)
        R_ink = ink_mask(np.asarray(R))
        for g in group_staves(find_lines(R_ink, t, sp), sp):
            ys = [l[0] for l in g]
            x0, x1 = int(np.median([l[1] for l in g])), int(np.median([l[2] for l in g]))
            ends = turn(np.array([(x, y) for y in ys for x in (x0, x1)], np.float64), -a, R_ink.shape) + (0, r0)
            mid = turn(np.array([((x0 + x1) / 2, y) for y in ys]), -a, R_ink.shape)[:, 1] + r0
            box = (max(0, int(ends[:, 0].min())), max(0, int(np.floor(ends[:, 1].min() - t / 2))),
                   min(W, int(np.ceil(ends[:, 0].max()))), min(H - 1, int(np.ceil(ends[:, 1].max() + t / 2))), list(mid))
            if not c0 - sp <= (box[1] + box[3]) / 2 <= c1 + sp:
                continue  # a staff of the margin, half seen: the band around it is someone else's
            if any(b[1] <= box[3] and box[1] <= b[3] and b[0] <= box[2] and box[0] <= b[2] for b in boxes + [o[0] for o in out]):
                continue
            rbox = (x0, max(0, int(np.floor(ys[0] - t / 2))), x1, min(R_ink.shape[0] - 1, int(np.ceil(ys[-1] + t / 2))))
            out.append((box, (R, R_ink, a, r0, rbox)))
    return out


def find_staves(image, max_skew=MAX_SKEW, crops=True):
    """PIL image (any mode) or uint8 (H, W) array of a page -> Page (deskewed image, angle, staves
    top to bottom, each with its box, five lines, staff space, crop box and crop).
    ValueError('no staff found') when there is none (a blank page, a photo, text only)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    gray_im = images.to_gray(image)
    gray = np.asarray(gray_im)
    if gray.size == 0 or gray.shape[0] < 8 or gray.shape[1] < 8:
        raise ValueError('no staff found')
    ink = ink_mask(gray)
    angle = skew_angle(ink, max_skew) if max_skew > 0 else 0.0
    if abs(angle) >= 0.05:
        # lines that fall to the right (y grows with x) are turned counter-clockwise, PIL's positive
        # the corners turned in are filled with the page's own paper (its commonest grey, 90th percentile):
        # a white strip beside a scan's grey paper made ink_mask's local threshold call that paper ink, a
        # band the first staff's crop then grew up through, to the title (val pages, tall crops)
        gray_im = gray_im.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=int(np.percentile(gray, 90)))
        gray = np.asarray(gray_im)
        ink = ink_mask(gray)
    else:
        angle = 0.0
    t, sp = line_metrics(ink)
    # lines thicker than sp/2 pass only on a bled copy; its grey share (a pass over the page) is counted only then
    if t < 1 or sp < 4 or (t > sp / 2 and not (
            t <= 0.7 * sp and np.mean((gray > 63) & (gray < 192)) <= MAX_MID_GREY)):
        raise ValueError('no staff found')
    runs = row_runs(ink, max(10, int(2 * sp)))
    groups = group_staves(find_lines(ink, t, sp, runs), sp)
    H, W = gray.shape
    boxes = []
    for g in groups:
        ys = [l[0] for l in g]
        x0, x1 = int(np.median([l[1] for l in g])), int(np.median([l[2] for l in g]))
        # a line on the image's first or last row (a crop cut at the staff, low notes at the edge) would
        # put the box's outer row outside the image: clamp it, the row grown from must exist
        boxes.append((x0, max(0, int(np.floor(ys[0] - t / 2))), x1, min(H - 1, int(np.ceil(ys[-1] + t / 2))), ys))
    found = [(b, None) for b in boxes]
    if max_skew > 0:
        found += retilted_staves(gray_im, ink, runs[0], boxes, t, sp, max_skew)
    if not found:
        raise ValueError('no staff found')
    found.sort(key=lambda f: f[0][1])
    staves = []
    for k, ((x0, y0, x1, y1, ys), frame) in enumerate(found):
        s = float(np.mean(np.diff(ys)))
        if frame is None:
            up = max(0, int(y0 - MAX_REACH * s), (found[k - 1][0][3] + y0) // 2 + 1 if k else 0)
            down = min(H - 1, int(y1 + MAX_REACH * s), (y1 + found[k + 1][0][1]) // 2 - 1 if k + 1 < len(found) else H - 1)
            top, bot = ink_extent(ink, (x0, y0, x1, y1), up, down)
            m = int(round(CROP_MARGIN * s))
            cb = (max(0, x0 - m), max(0, top - m), min(W, x1 + m), min(H, bot + m + 1))
            crop = clean_crop(gray_im, ink, (x0, y0, x1, y1), cb, s) if crops else None
        else:  # a staff found turned straight in its own band: cut from that band, boxed back on the page
            R, R_ink, a, r0, (rx0, ry0, rx1, ry1) = frame
            hR = R_ink.shape[0]
            top, bot = ink_extent(R_ink, (rx0, ry0, rx1, ry1), max(0, int(ry0 - MAX_REACH * s)), min(hR - 1, int(ry1 + MAX_REACH * s)))
            m = int(round(CROP_MARGIN * s))
            rcb = (max(0, rx0 - m), max(0, top - m), min(W, rx1 + m), min(hR, bot + m + 1))
            crop = clean_crop(R, R_ink, (rx0, ry0, rx1, ry1), rcb, s) if crops else None
            q = turn(np.array([(rcb[0], rcb[1]), (rcb[2], rcb[1]), (rcb[2], rcb[3]), (rcb[0], rcb[3])], np.float64), -a, R_ink.shape) + (0, r0)
            cb = (max(0, int(q[:, 0].min())), max(0, int(q[:, 1].min())), min(W, int(np.ceil(q[:, 0].max()))), min(H, int(np.ceil(q[:, 1].max()))))
        staves.append(Staff(box=(x0, y0, x1, y1), lines=tuple(round(float(y), 1) for y in ys), space=round(s, 2),
                            crop_box=cb, crop=crop, system=k, index=k, turned=round(frame[2], 2) if frame else 0.0))
    rows = np.nonzero(ink.any(1))[0]
    inside = np.zeros_like(ink)
    for st in staves:
        x0, y0, x1, y1 = st.crop_box
        inside[y0:y1, x0:x1] = True
    return Page(image=gray_im, angle=round(angle, 2), staves=staves, line_thickness=t, space=sp,
                ink_outside=int((ink & ~inside).sum()), ink_rows=(int(rows[0]), int(rows[-1])))


def is_single_line(page):
    """True if the image is already one cropped line of music (what sample.py used to be given):
    exactly one staff, all ink within its ledger-line reach (MAX_REACH staff spaces above and below
    its lines: no title or text further out) and not mostly empty paper (at most 3x the crop's
    height). Such an image goes to the model as it is, exactly as before pages existed. (Zero ink
    outside the crop would be too strict: grace notes and triplet numbers that touch nothing stay
    outside a crop, see ink_extent, and 11 of 145 real training images have some.)"""
    if len(page.staves) != 1:
        return False
    st = page.staves[0]
    reach = MAX_REACH * st.space
    return (page.ink_rows[0] >= st.box[1] - reach and page.ink_rows[1] <= st.box[3] + reach
            and page.image.size[1] <= 3 * (st.crop_box[3] - st.crop_box[1]))


LINE_HEIGHT = 64  # px: looks_like_line judges an image at about the height the model reads it


def _flatten(g):
    """float32 (H, W) gray -> the same with uneven lighting divided out: the paper level (90th
    percentile) of blocks about H/2 across, interpolated bilinearly, becomes 255. A block holds
    paper beside any staff, so a clean engraving is unchanged; a blob of a photo is smaller than a
    block and stays as dark as it was."""
    H, W = g.shape
    b = max(8, H // 2)
    ny, nx = -(-H // b), -(-W // b)
    grid = np.array([[np.percentile(g[i * b:(i + 1) * b, j * b:(j + 1) * b], 90) for j in range(nx)]
                     for i in range(ny)], dtype=np.float32)  # (ny, nx) paper level per block
    bg = np.asarray(Image.fromarray(grid, mode='F').resize((W, H), Image.Resampling.BILINEAR))
    return np.minimum(255.0, g * (255.0 / np.maximum(bg, 1.0)))


def looks_like_line(image):
    """The check for an image find_staves found no staff in, before sample.py reads it as one cropped
    line anyway (a low-resolution line, a scan too noisy or tilted for find_staves). A line has paper
    around a few rows that are dark across most of its width. A blank or uniform image has no
    contrast, a photo or noise no paper: False. Scans (issue 24) first get what the model's
    preprocessing does anyway and what they need: scaled to LINE_HEIGHT px (averages noise and
    JPEG blocks away), uneven light divided out (_flatten), and deskewed by the dark pixels' own
    angle (skew_angle), so that a staff tilted by 2 degrees still crosses rows end to end."""
    im = images.to_gray(image)
    if im.size[0] < 1 or im.size[1] < 1:
        return False
    if im.size[1] > LINE_HEIGHT:
        im = images.resize_to_height(im, LINE_HEIGHT, 64 * LINE_HEIGHT)
    g = _flatten(np.asarray(im, dtype=np.float32))
    paper, mid, lo = np.percentile(g, (90, 50, 1))
    # a line is mostly paper, so the median pixel is paper too: paper - mid is the sheet's own
    # spread (grain, noise; 0 on a clean engraving, where the old tolerances are unchanged)
    contrast, spread = paper - lo, paper - mid
    if contrast < 64 or contrast < 4 * spread:  # no ink clear of the sheet's spread: noise, a photo
        return False
    if (g >= paper - max(0.1 * contrast, 2 * spread)).mean() < 0.35:
        return False
    cut = paper - max(0.08 * contrast, 2 * spread)  # faint: a blurred staff line is a light gray
    dark = g < cut
    angle = skew_angle(dark)
    if abs(angle) >= 0.05:  # turned back the way find_staves deskews, corners as paper
        g = np.asarray(Image.fromarray(g, mode='F').rotate(angle, resample=Image.Resampling.BILINEAR,
                                                           fillcolor=float(paper)))
        dark = g < cut
    cols = np.nonzero(dark.any(0))[0]
    if len(cols) == 0:  # the ink of a sliver of an image can rotate away: nothing left to read
        return False
    rows = (dark[:, cols[0]:cols[-1] + 1].mean(1) >= 0.5).sum()  # rows crossed by (staff) lines
    return bool(1 <= rows <= 0.85 * g.shape[0])


def is_plain_line(image):
    """A quick check, run before find_staves, that an image is plainly one cropped line of music, the
    image a user most often gives sample.py: True only when find_staves would find exactly one staff
    in it and is_single_line would accept it, so sample.py can read it as it is without the full
    finder (its deskew search, ink growing, ...), ~20x dearer. False means 'not sure': find_staves decides.

    True when, in the ink's column range, exactly five bands of rows are dark across at least half of
    it (staff lines; ledger lines and beams cover much less), thin (at most a third of their gap),
    equally spaced (within 10%) at >= 4 px, level (any tilt that widens a line past a third of its
    gap fails), and the image is short enough for one staff: at most 14 staff spaces high, with every
    ink row within 5.5 staff spaces of the outer lines (is_single_line allows 15 and 6). Measured on
    data/m21/all's 3,503 test lines (three engravers), 1,752 of its scanned-looking test lines, the
    shipped samples and 245 crops of two LilyPond pages (staves with 0-12 staff spaces above, two
    staves, tilted staves, title regions): True for 96% of the clean lines and 29% of the scans, and
    never where sample.py's full check (find_staves + is_single_line, else looks_like_line) would
    not read a line; tests/test_staves.py keeps a small version of that."""
    gray = np.asarray(images.to_gray(image))
    H, W = gray.shape
    if H < 8 or W < 2 * H:  # a line is wide; anything else goes the long way
        return False
    ink = ink_mask(gray)
    cols = np.nonzero(ink.any(0))[0]
    if len(cols) < W // 2:
        return False
    frac = ink[:, cols[0]:cols[-1] + 1].mean(1)  # (H,) how much of the ink's width each row darkens
    strong = np.concatenate(([False], frac >= 0.5, [False])).astype(np.int8)
    starts, ends = np.nonzero(np.diff(strong) == 1)[0], np.nonzero(np.diff(strong) == -1)[0]  # rows [s, e)
    if len(starts) != 5:
        return False
    centres = (starts + ends - 1) / 2
    gaps = np.diff(centres)
    sp = float(gaps.mean())
    if sp < 4 or np.abs(gaps - sp).max() > 0.1 * sp or (ends - starts).max() > sp / 3:
        return False
    rows = np.nonzero(ink.any(1))[0]
    return bool(H <= 14 * sp and rows[0] >= centres[0] - 5.5 * sp and rows[-1] <= centres[-1] + 5.5 * sp)


def draw_staves(page):
    """RGB picture of the page with each staff boxed (red: the crop, blue: the five lines) and
    numbered from 1, as sample.py writes it to <stem>.staves.png."""
    im = page.image.convert('RGB')
    dr = ImageDraw.Draw(im)
    size = max(12, int(2 * page.space))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    w = max(1, int(page.space / 6))
    for st in page.staves:
        dr.rectangle(st.crop_box, outline=(220, 0, 0), width=w)
        for y in st.lines:
            dr.line((st.box[0], y, st.box[2], y), fill=(0, 90, 255), width=1)
        dr.text((max(0, st.crop_box[0] - 1.6 * size), st.box[1]), str(st.index + 1), fill=(220, 0, 0), font=font)
    return im


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit('usage: python -m inference.staves page.png [boxed.png]')
    try:
        with Image.open(argv[1]) as im:
            page = find_staves(im)
    except (OSError, ValueError) as e:
        sys.exit(f'error: {argv[1]}: {e}')
    print(f'{argv[1]}: {len(page.staves)} staves, deskewed by {page.angle} deg, staff space {page.space} px')
    for st in page.staves:
        print(f'  {st.index + 1}: box {st.box} crop {st.crop_box} space {st.space}')
    if len(argv) == 3:
        tmp = argv[2] + '.tmp.png'
        draw_staves(page).save(tmp)
        os.replace(tmp, argv[2])


if __name__ == '__main__':
    main(sys.argv)
