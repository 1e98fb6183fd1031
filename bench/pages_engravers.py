"""
bench/pages_engravers.py: the page benchmark on pages verovio did not draw (issue 25). A4 pages of
test-split tunes drawn by LilyPond and by abcm2ps (bench/engraved_pages.py: title, composer, tempo mark,
bar numbers, lyrics on ~40% of pages, 3-8 systems), read as sample.py reads a page: staves.find_staves,
pages.Reader.read_page on the crops (read, first staff settled, sparse staves read again squeezed, joined,
meter settled).

    $ python -m bench.pages_engravers --n_pages=100 --out_dir=reader     # -> results/pages_engravers.md
    $ python -m bench.pages_engravers --n_pages=10 --report=/tmp/p.md    # staff finding only

Each page is scored three ways: clean; degraded (degrade_page: core.degrade's 'medium' scan preset on
the page, its strengths in units of a training line, see below); tilted by a uniform random angle in
+-rotate degrees. Measured per engraver and condition:
  staff recall / precision   found staff boxes against the SVG's staff lines, IoU >= 0.5, one to one
                             (the true boxes carried through the degradation's rotation and perspective
                             and the finder's deskew, so they sit where the found ones should)
  header                     meter, key and clef of the page's transcription (pages.Reader.read_page: the
                             first readable staff's, settled from the page) against the tune's label
  page SER, line SER         as bench/pages.py: joined page vs joined references; each matched staff vs
                             its system's reference
  s/page                     find_staves; transcription of the page's crops
With --abc_dir=DIR (and out_dir), each transcribed page's joined transcription and its joined reference
are written there as <engraver>_<condition>_<page>_{pred,ref}.abc (atomically), the inputs of
`python -m bench.musicxml_check --abc_dir=DIR` (MuseScore import check of their MusicXML exports).
Then the multi-page check (multipage_check): a LilyPond score of several tunes over >= 2 A4 pages as a
PDF (LilyPond's own) and the same pages as a multi-page TIFF, each read by sample.py's load_input and
the reader as one tune; seconds per page for finding + transcription, and sample.py run on each.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw

import sample
from bench import engraved_pages as G
from bench import pages as B
from core import degrade, metrics
from core.files import atomic_write
from inference import pages as pg
from inference import staves, tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# config
n_pages = 10             # pages per engraver
engravers = 'lilypond,abcm2ps'
out_dir = None           # a checkpoint dir (reader/): adds header accuracy, page and line SER
device = 'cpu'
batch_size = 8
rotate = 2.0             # the tilted condition: uniform angle in +-rotate degrees (0: skip)
preset = 'medium'        # core.degrade preset of the degraded condition ('' : skip)
multipage = True         # the PDF / TIFF check (needs out_dir)
write_misses = None      # a folder: every page where a true staff was missed or a false one found, boxes drawn
abc_dir = None           # a folder: each page's joined transcription and its reference as .abc (for bench/musicxml_check.py)
n_read = None            # transcribe only the first n_read pages of each set (None: all); staves are scored on all
report = 'results/pages_engravers.md'
machine = 'load not recorded'  # goes into the report
seed = 0
split = 'test'           # the tunes' split: 'val' for choices made on pages (tune.py's header checks), 'test' to report
respace = True           # False: staves are not read again squeezed (pages.Reader.respace), as before it
# -----------------------------------------------------------------------------

LINE_SPACES = 9.0  # a training line image is ~9 staff spaces high (staff, ledger reach, margin) = 64 model px


# -----------------------------------------------------------------------------
# conditions: the page image and the geometry that moved its staves

def rotate_points(pts, deg, shape_in, shape_out):
    """where PIL's Image.rotate(deg) (counter-clockwise, about the centre; expand or not) takes (x, y)
    points of an image of shape_in (H, W) on a canvas of shape_out."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    x = pts[:, 0] - shape_in[1] / 2
    y = pts[:, 1] - shape_in[0] / 2
    return np.stack([shape_out[1] / 2 + c * x + s * y, shape_out[0] / 2 - s * x + c * y], 1)


def homography(src, dst):
    """3x3 H with H @ (x, y, 1) ~ the dst point of each src point (4 pairs)."""
    A = []
    for (x, y), (u, v) in zip(src, dst):
        A += [[x, y, 1, 0, 0, 0, -u * x, -u * y, -u], [0, 0, 0, x, y, 1, -v * x, -v * y, -v]]
    return np.linalg.svd(np.array(A, np.float64))[2][-1].reshape(3, 3)


def degrade_page(img, rng, space, preset='medium'):
    """a clean page -> (scanned page, point map): core.degrade.scan's chain and preset, applied to a
    page. The strengths are in model pixels of a training line (unit = LINE_SPACES staff spaces / 64
    px), so a blur or a bleed is what it would be on a line cut from this page; rotation and
    perspective are the preset's (degrees; corners moved by up to a fraction of the page's height,
    a sheet not flat on the glass). point map: (N, 2) page points -> where they are in the result;
    fired: the effects applied, in order."""
    D, P = degrade, degrade.PRESETS[preset]
    a = np.asarray(img, dtype=np.uint8)
    unit = LINE_SPACES * space / D.REF_HEIGHT
    U = lambda r: rng.uniform(*r)
    geo, fired = [], []

    def on(k):
        if rng.random() < P[k][0]:
            fired.append(k)
            return True
        return False
    if on('bleed'):
        a = D.ink_bleed(a, U(P['bleed'][1]), unit)
    if on('fade'):
        a = D.fade(a, rng, U(P['fade'][1]), unit=unit)
    if on('paper'):
        a = D.paper(a, rng, U(P['paper'][1]), U(P['paper'][2]), unit)
    if on('binarize'):
        a = D.binarize(a, local=rng.random() < P['binarize'][1], unit=unit, darkness=rng.uniform(0.1, 0.5))
    if on('light'):
        a = D.light(a, rng, U(P['light'][1]))
    if on('rotate'):
        deg, shape = rng.uniform(-P['rotate'][1], P['rotate'][1]), a.shape
        a = D.rotate(a, deg)
        geo.append(lambda p, deg=deg, s0=shape, s1=a.shape: rotate_points(p, deg, s0, s1))
    if on('perspective'):  # core.degrade.perspective, with its corners kept for the truth
        H, W = a.shape
        d = rng.uniform(0, P['perspective'][1]) * H
        src = [(0, 0), (W, 0), (W, H), (0, H)]
        dst = [(x + (1 if x == 0 else -1) * rng.uniform(0, d), y + (1 if y == 0 else -1) * rng.uniform(0, d)) for x, y in src]
        out = D._img(a).transform((W, H), Image.Transform.PERSPECTIVE, D._perspective_coeffs(src, dst),
                                  Image.Resampling.BILINEAR, fillcolor=int(np.percentile(a, 90)))
        a = np.asarray(out)
        Hm = homography(src, dst)
        geo.append(lambda p, Hm=Hm: (lambda q: q[:, :2] / q[:, 2:])(np.c_[p, np.ones(len(p))] @ Hm.T))
    if on('blur'):
        a = D.blur(a, U(P['blur'][1]), unit)
    if on('noise'):
        a = D.noise(a, rng, U(P['noise'][1]), P['noise'][2])
    if on('jpeg'):
        a = D.jpeg(a, rng.integers(*P['jpeg'][1]))

    def move(p):
        for f in geo:
            p = f(p)
        return p
    return Image.fromarray(np.ascontiguousarray(a)), move, fired


def truth_boxes(truth, move, shape, angle):
    """the true staves' boxes where the finder reports them: each staff's five lines' end points moved
    by the condition's geometry, then by the finder's deskew (rotate by `angle` about the centre of
    the image of `shape`), boxed."""
    out = []
    for t in truth:
        x0, _, x1, _ = t['box']
        pts = np.array([(x, y) for y in t['lines'] for x in (x0, x1)], np.float64)
        q = rotate_points(move(pts), angle, shape, shape)
        out.append((q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()))
    return out


match_pairs = B.match_pairs  # bench/pages.py's one-to-one matcher, pairs kept (a miss is drawn)


def header_of(abc):
    """an ABC tune (or label) -> (meter, key, clef) from its header: K:'s first word, its clef= (treble
    when none), M: (None when absent)."""
    fields, _ = tune.split_abc(abc or '')
    k = fields.get('K', '').split()
    clef = next((w.split('=', 1)[1] for w in k if w.startswith('clef=')), 'treble')
    return fields.get('M'), (k[0] if k else None), clef


def header_hits(pred, ref):
    """-> {'meter', 'key', 'clef', 'meter+key'}: 1 where the prediction's header says what the reference's does."""
    (pm, pk, pc), (rm, rk, rc) = header_of(pred), header_of(ref)
    return {'meter': int(pm == rm), 'key': int(pk == rk), 'clef': int(pc == rc), 'meter+key': int(pm == rm and pk == rk)}


def invented(pred, ref):
    """-> 1 where the prediction has an inline [K:..] or [M:..] change the reference has not (the page shows none)."""
    changes = lambda abc: Counter(re.findall(r'\[[KM]:[^\]]*\]', abc or ''))
    return int(bool(changes(pred) - changes(ref)))


# -----------------------------------------------------------------------------

def draw_miss(im, page, truth, path):
    """the page as the finder saw it: found staves as staves.draw_staves draws them (red crops, blue lines), true boxes green."""
    canvas = (staves.draw_staves(page) if page else im).convert('RGB')
    d = ImageDraw.Draw(canvas)
    for b in truth:
        d.rectangle([int(v) for v in b], outline=(0, 170, 0), width=3)
    canvas.save(path)


def write_abc(folder, tag, i, pred, ref):
    """a page's joined transcription and reference -> folder/<tag>_<page>_pred.abc and _ref.abc, atomically
    (tag: engraver and condition, e.g. 'lilypond_clean')."""
    os.makedirs(folder, exist_ok=True)
    for kind, abc in (('pred', pred), ('ref', ref)):
        atomic_write(os.path.join(folder, f'{tag}_{i:03d}_{kind}.abc'), (abc or '') + '\n')


def evaluate(pages, images, reader, tag=''):
    """pages (build_pages) and, per page, (image, point map) -> dict of the condition's numbers."""
    n_true = n_found = n_match = 0
    t_find, t_read, hits, pp, pr, lp, lr = [], [], [], [], [], [], []
    missed = []
    for i, (p, (im, move, *_)) in enumerate(zip(pages, images)):
        t = time.perf_counter()
        try:
            page = staves.find_staves(im)
            found = page.staves
        except ValueError:  # no staff found: every true staff missed
            page, found = None, []
        t_find.append(time.perf_counter() - t)
        truth = truth_boxes(p['truth'], move, np.asarray(im).shape, page.angle if page else 0.0)
        pairs = match_pairs([s.box for s in found], truth)
        n_true, n_found, n_match = n_true + len(truth), n_found + len(found), n_match + len(pairs)
        missed += [i] if len(pairs) < len(truth) else []
        if write_misses and not len(pairs) == len(truth) == len(found):
            os.makedirs(write_misses, exist_ok=True)
            draw_miss(im, page, truth, os.path.join(write_misses, f'{tag}_{i:03d}.png'))
        if reader is None or (n_read is not None and len(pp) >= n_read):
            continue
        t = time.perf_counter()
        joined, abcs = reader.read_page([s.crop for s in found], respace)
        t_read.append(time.perf_counter() - t)
        ref = tune.join_lines(p['lines'], labels=True)[0]
        pp.append(joined)
        pr.append(ref)
        if abc_dir:
            write_abc(abc_dir, tag, i, joined, ref)
        hits.append(dict(header_hits(joined, ref), invented=invented(joined, ref)))
        refs = B.shown(p['lines'])  # a later staff's reference without the M: it does not show
        for i, j in pairs:
            lp.append(abcs[i] or '')
            lr.append(refs[j])
    out = dict(missed=missed, pages=len(pages), true=n_true, found=n_found, match=n_match, recall=n_match / max(1, n_true),
               precision=n_match / max(1, n_found), find_s=float(np.mean(t_find)), find_max=float(np.max(t_find)))
    if reader is not None:
        out.update(read_pages=len(pp), read_s=float(np.mean(t_read)), page=metrics.score(pp, pr), line=metrics.score(lp, lr),
                   header={k: float(np.mean([h[k] for h in hits])) for k in hits[0]})
    return out


def conditions(pages):
    """-> {condition: [(image, point map) per page]}: clean, degraded (preset), tilted (+-rotate)."""
    same = lambda p: p
    out = {'clean': [(p['image'], same) for p in pages]}
    if preset:
        rng = np.random.default_rng(seed + 1)
        out[f'degraded ({preset})'] = [degrade_page(p['image'], rng, p['style']['space'], preset) for p in pages]
    if rotate > 0:
        rng = np.random.default_rng(seed + 2)
        tilted = []
        for p in pages:
            a, shape = float(rng.uniform(-rotate, rotate)), np.asarray(p['image']).shape
            tilted.append((p['image'].rotate(a, resample=Image.Resampling.BILINEAR, fillcolor=255),
                           lambda q, a=a, s=shape: rotate_points(q, a, s, s)))
        out[f'tilted (+-{rotate:g} deg)'] = tilted
    return out


def multipage_check(reader, tmp, used):
    """a LilyPond PDF of >= 2 pages and the same pages as a multi-page TIFF, each read as sample.py reads
    it (load_input: pages rendered or read, staves found; the reader; join_lines) -> report lines."""
    P = B.load_prepare()
    # test tunes the page sets did not draw (titles in `used`), from the end of the list
    tunes = [t for t in B.test_tunes(P, limit=6 * n_pages + 80) if t[0] not in used][::-1]
    pdf = os.path.join(tmp, 'score.pdf')
    n, refs = G.multipage_pdf(pdf, tunes, seed)
    frames = [im for _, im in pg.read_pdf(pdf, sample.max_pixels)]
    tif = os.path.join(tmp, 'score.tif')
    frames[0].save(tif, save_all=True, append_images=frames[1:], compression='tiff_deflate')
    ref = tune.join_lines(refs, labels=True)[0]
    rows = ['| file | pages | staves found / true systems | s/page (find + transcribe) | page SER | `sample.py` exit, tunes, wall s |',
            '|---|---:|---:|---:|---:|---|']
    for path in (pdf, tif):
        t = time.perf_counter()
        job = sample.load_input(path, reader.img_height, reader.max_width)
        abc = reader.read_staves(job['xs'], respace)[0]
        secs = time.perf_counter() - t
        ser = metrics.score([abc], [ref])['ser']
        t = time.perf_counter()
        r = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out_dir}', f'--image={path}'], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t
        tunes_out = sum(1 for ln in r.stdout.splitlines() if ln.startswith('K:'))
        rows.append(f'| {os.path.basename(path)} | {len(job["pages"])} of {n} | {len(job["xs"])} / {len(refs)} | '
                    f'{secs / n:.2f} | {ser:.2%} | exit {r.returncode}, {tunes_out} tune, {wall:.1f} s |')
    return rows


def fmt(c, reader):
    """one table row of a condition's numbers."""
    row = f"| {c['name']} | {c['pages']} | {c['true']} | {c['found']} | {c['recall']:.2%} | {c['precision']:.2%} | {c['find_s']:.2f} |"
    if reader is not None:
        h = c['header']
        row += (f" {c['read_pages']} | {h['meter']:.0%} | {h['key']:.0%} | {h['clef']:.0%} | {h['meter+key']:.0%} | {c['page']['ser']:.2%} | "
                f"{c['line']['ser']:.2%} | {c['page']['ser'] / max(1e-9, c['line']['ser']):.2f} | {c['read_s']:.2f} | "
                f"{c['settled'][0]} / {c['settled'][1]} | {h['invented']:.0%} |")
    return row


def main():
    names = [e for e in engravers.split(',') if e]
    if not names or any(e not in ('lilypond', 'abcm2ps') for e in names):
        raise ValueError(f"--engravers: a comma-separated list of lilypond and abcm2ps, got {engravers!r}")
    if preset and preset not in degrade.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(degrade.PRESETS)}")
    if abc_dir and not out_dir:
        raise ValueError('--abc_dir writes transcriptions: it needs --out_dir (a reader checkpoint, e.g. reader)')
    t0 = time.time()
    reader = pg.Reader(out_dir, device=device, batch_size=batch_size) if out_dir else None
    head = '| engraver, condition | pages | true staves | found | recall | precision | find s/page |'
    if reader is not None:
        head += ' pages read | meter | key | clef | meter+key | page SER | line SER | page/line | read s/page | first staves read again / kept | pages with a change not drawn |'
    rows, built, effects, used = [head, '|---|' + '---:|' * (head.count('|') - 2)], {}, [], set()
    for eng in names:
        t = time.time()
        pages, rejected = G.build_pages(eng, n_pages, seed, split=split)
        if not pages:
            raise RuntimeError(f'no page could be drawn with {eng}')
        built[eng] = (len(pages), time.time() - t, sum(p['style']['lyrics'] for p in pages),
                      min(len(p['truth']) for p in pages), max(len(p['truth']) for p in pages),
                      ', '.join(f'{v} {k}' for k, v in rejected.most_common()) or 'none')
        print(f'{eng}: built {len(pages)} pages in {time.time() - t:.0f}s', file=sys.stderr)
        used |= {p['title'] for p in pages}
        staves.find_staves(pages[0]['image'])  # warm-up: imports
        for name, images in conditions(pages).items():
            was = list(reader.settled) if reader else None
            c = dict(evaluate(pages, images, reader, f'{eng}_{name.split()[0]}'), name=f'{eng}, {name}')
            if reader:
                c['settled'] = [a - b for a, b in zip(reader.settled, was)]
            rows.append(fmt(c, reader))
            print(rows[-1], file=sys.stderr)
            if len(images[0]) == 3:  # degraded: which effects the pages with a missed staff had
                count = lambda idx: {k: sum(k in images[i][2] for i in idx) for k in degrade.PRESETS[preset]}
                every, bad = count(range(len(pages))), count(c['missed'])
                effects.append(f"| {eng} | {len(c['missed'])} of {len(pages)} | " +
                               ', '.join(f'{k} {bad[k]}/{every[k]}' for k in every) + ' |')
    cmd = f'python -m bench.pages_engravers --n_pages={n_pages} --rotate={rotate:g} --preset={preset}' + \
          (f' --split={split}' if split != 'test' else '') + (f' --seed={seed}' if seed else '') + \
          (f' --out_dir={out_dir}' if out_dir else '') + (f' --n_read={n_read}' if n_read else '') + \
          ('' if respace else ' --respace=False') + ('' if multipage else ' --multipage=False') + f" --machine='{machine}'"
    lines = ['# Page benchmark: LilyPond and abcm2ps pages (issue 25)', '',
             f'Generated by one command: `{cmd}` (pages built and scored in {time.time() - t0:.0f} s; the multi-page check after).', '',
             f'Machine: {os.cpu_count()}-core CPU, {machine}. Timings are upper bounds when the machine was shared.', '',
             f'Pages: {split}-split music21 tunes (bench/pages.py test_tunes, canonical labels), drawn on A4 by each engraver '
             '(bench/engraved_pages.py) with a title, a composer, a tempo mark, bar numbers (every system or every 5 bars) '
             'and made-up lyrics on ~40% of pages; line breaks forced at planned measures; staff space 18/20/22 px.', '',
             '| engraver | pages | with lyrics | systems per page | build s | planned pages not kept (why) |',
             '|---|---:|---:|---|---:|---|']
    lines += [f'| {e} | {n} | {ly} | {lo}-{hi} | {s:.0f} | {rj} |' for e, (n, s, ly, lo, hi, rj) in built.items()]
    lines += ['', '## Staves, headers, SER', '',
              'Staves: IoU >= 0.5 against the staff lines of the engraver\'s SVG. Degraded: core.degrade\'s preset '
              'chain on the page (degrade_page: strengths per training line of 9 staff spaces; rotation <= 1.5 deg, '
              'perspective up to 2.5% of the page height). Tilted: rotated about the centre. Header: the page '
              'transcription\'s M:, K: key, K: clef against the label\'s, as sample.py reads a page (pages.Reader.read_page: '
              'the first staff read again where the next two staves outvote its clef and key and the model finds the new '
              'reading as likely, `first staves read again / kept`; every staff read sparser than a training line read again '
              'squeezed, its header forced (pages.Reader.respace' + ('' if respace else '; off in this run: --respace=False') + '); '
              'joined (tune.join_lines: a later staff\'s key or clef only where the next staff reads it too, its meter only '
              'where its bars add up to it); then tune.settle_meter: of the meters the model finds likely on the first staff, '
              'the one most bars add up to). `pages with a change not drawn`: an inline [K:] or [M:] the label has not. '
              'page/line: page SER / line SER (issue target <= 1.2; a later staff\'s reference has no M:, as it shows none). '
              'Transcription columns (`pages read` onwards) are over the first pages read of each set; staves over all.', ''] + rows
    if effects:
        lines += ['', 'Degraded pages with a missed staff, and the effects they had (pages with a missed staff that had '
                  'the effect / pages that had it):', '', '| engraver | pages with a miss | effects |', '|---|---:|---|'] + effects
    if reader is not None and multipage:
        with tempfile.TemporaryDirectory(prefix='nanoomr-mp-') as tmp:
            lines += ['', '## A score of several pages (PDF and multi-page TIFF)', '',
                      'One LilyPond book of test tunes (not those above) over >= 2 A4 pages: its PDF (LilyPond\'s), and the '
                      'same pages rendered by inference/pages.read_pdf saved as one deflate TIFF. Each read with sample.py\'s '
                      'load_input + the reader (read_staves: settle, respace, join) in this process (s/page: reading/rendering, finding and '
                      'transcription over the pages), then `python sample.py --image=<file>` run on it (wall time with '
                      'the model load).', ''] + multipage_check(reader, tmp, used)
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(report + '.tmp', report)
    print('\n'.join(lines))


if __name__ == '__main__':
    B.cli(main, globals())
