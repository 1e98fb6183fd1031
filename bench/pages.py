"""
bench/pages.py: the page benchmark. Whole test-split tunes engraved by verovio as A4 pages (title
and composer shown, 3-10 staves, all five fonts); staff finding scored against the staff lines in
verovio's own SVG, and, given a checkpoint, page SER against line SER.

    $ python -m bench.pages                                  # staff detection only -> results/pages.md
    $ python -m bench.pages --out_dir=/work/main/reader      # + transcription: page SER, line SER, s/page
    $ python -m bench.pages --n_pages=50 --write_pages=pages/ # also keep the page PNGs and truth

Pages: music21 corpus tunes whose split is 'test' (data/m21/prepare.py split_of, so no page tune was
seen in training), turned into prepare.py's canonical ABC (whole tunes whose every measure it
supports, one clef/key/meter), with their T: line and a C: line (the collection's name when the tune
has no composer) put back, engraved by verovio with automatic line breaks on an A4 page at scale 100
(staff space 18, 20 or 22 px in turn, inside the training range 18-27; spacingLinear 0.25-0.45);
fonts cycle through prepare.FONTS. Only tunes that fill 3-10 systems of one page are used.

Ground truth: every <g class="staff"> of the SVG has its five lines as direct <path> children; a
staff's box is the lines' x extent (all measures of the system) by the first/last line's y. A found
staff matches a true one at IoU >= 0.5 of these boxes (one to one, best first).

References for SER: a system's reference is write_excerpt of exactly the measures verovio put in it
(counted in the SVG), and the page reference joins them with inference/tune.py join_lines, as the page output is
joined; page SER = metrics.score(joined prediction, page reference), line SER = metrics.score over staves
(found staff i against true system i, when the counts agree).
"""

import importlib.util
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from core import metrics
from inference import pages as pg
from inference import staves, tune
from inference.render import svg_to_gray, text_fonts, verovio_toolkit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVG_NS = '{http://www.w3.org/2000/svg}'

# -----------------------------------------------------------------------------
# config
n_pages = 25             # pages to build (5 per font)
out_dir = None           # a checkpoint dir / train.py out_dir: adds page and line SER
device = 'cpu'
batch_size = 8
beam_size = 1
max_new_tokens = None    # None: the model's max_seq_len
report = 'results/pages.md'
write_pages = None       # a folder: keep the page PNGs and their ground truth
machine = 'load not recorded'  # goes into the report: --machine=idle, or what else ran
seed = 0
rotate = 3.0             # also score the pages tilted by a random angle in +-rotate degrees (0: skip)
split = 'test'           # the tunes' split: 'val' for choices made on pages, 'test' to report
respace = True           # False: staves are not read again squeezed (pages.Reader.respace), as before it
# -----------------------------------------------------------------------------


def load_prepare():
    """data/m21/prepare.py as a module (data/ is not a package)."""
    spec = importlib.util.spec_from_file_location('m21_prepare', os.path.join(ROOT, 'data', 'm21', 'prepare.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the composer line of a page whose tune names none: its collection
COLLECTIONS = {'oneills1850': "O'Neill's Music of Ireland", 'ryansMammoth': "Ryan's Mammoth Collection",
               'airdsAirs': "Aird's Airs", 'essenFolksong': 'Essen Folksong Collection', 'miscFolk': 'Traditional',
               'nottingham-dataset': 'Nottingham Music Database'}


def engrave_page(data, font='Leipzig', scale=100, page=1, unit=9, spacing=0.25):
    """an ABC tune (with X:, T:, C:) or a MusicXML score -> (grayscale PIL page, truth, n_pages) with
    verovio on A4 (2100 x 2970 units; at scale 100 the PNG is 2100 x 2970 px, staff space 2 * unit px:
    18 at verovio's default unit 9). spacing: verovio's spacingLinear (more space per note, more
    systems; 0.25 is verovio's default). truth: svg_systems of the page."""
    tk = verovio_toolkit({'font': font, 'pageWidth': 2100, 'pageHeight': 2970, 'scale': scale, 'breaks': 'auto',
                          'header': 'auto', 'footer': 'auto', 'unit': unit, 'spacingLinear': spacing})
    if not tk.loadData(data) or tk.getPageCount() < page:
        raise ValueError('verovio could not engrave the page')
    svg = tk.renderToSVG(page)
    img = svg_to_gray(svg, **text_fonts())
    return img, svg_systems(svg, img.size[0]), tk.getPageCount()


def svg_systems(svg, width_px):
    """the true systems of a verovio page SVG, top to bottom: one dict per system with staves (how
    many), box (x0, y0, x1, y1) of all its staff lines in pixels, lines (the y of its top staff's five
    lines) and measures (how many it holds). A page of one-staff systems gives its staves."""
    root = ET.fromstring(svg)
    inner = next(e for e in root.iter(SVG_NS + 'svg') if 'viewBox' in e.attrib)
    k = width_px / float(inner.get('viewBox').split()[2])  # pixels per SVG unit
    margin = next(e for e in root.iter(SVG_NS + 'g') if e.get('class') == 'page-margin')
    tx, ty = map(float, re.findall(r'-?[\d.]+', margin.get('transform'))[:2])
    out = []
    for system in margin.iter(SVG_NS + 'g'):
        if system.get('class') != 'system':
            continue
        n, xs, ys, top, n_meas = None, [], [], None, 0
        for meas in system.iter(SVG_NS + 'g'):
            if meas.get('class') != 'measure':
                continue
            n_meas += 1
            sts = [s for s in meas if s.get('class') == 'staff']
            n = len(sts) if n is None else n
            for st in sts:
                for p in st.findall(SVG_NS + 'path')[:5]:
                    x0, y0, x1, _ = map(float, re.findall(r'-?[\d.]+', p.get('d'))[:4])
                    xs += [x0, x1]
                    ys.append(y0)
                if top is None:
                    top = ys[-5:]
        if n:
            X = lambda x: (x + tx) * k
            Y = lambda y: (y + ty) * k
            out.append(dict(staves=n, box=(X(min(xs)), Y(min(ys)), X(max(xs)), Y(max(ys))), lines=[Y(y) for y in top],
                            measures=n_meas))
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_pairs(found, truth, thr=0.5):
    """one-to-one (found index, true index) pairs at IoU >= thr (greedy, best pairs first)."""
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, used_t, out = set(), set(), []
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            out.append((i, j))
    return sorted(out)


def match(found, truth, thr=0.5):
    """number of one-to-one matches at IoU >= thr (match_pairs)."""
    return len(match_pairs(found, truth, thr))


# -----------------------------------------------------------------------------
# building the pages

def test_tunes(P, limit=None, split='test'):
    """(title, composer, measures) of test-split (or `split`) music21 tunes that prepare.py's canonical writer
    supports whole (every measure ok, one clef/key/meter), in corpus order."""
    out = []
    for src, rel, idx, text in P.list_tunes(P.ABC_SOURCES):
        if P.split_of(rel, idx) != split:
            continue
        try:
            measures = P.score_to_measures(P.parse_abc(text))
        except Exception:  # music21 raises many kinds on odd ABC; those tunes are not used
            continue
        if len(measures) < 8 or not all(m['ok'] for m in measures) or len({m['ctx'] for m in measures}) != 1:
            continue
        title = (re.findall(r'(?m)^T:\s*(.+)$', text) or [f'{src} {idx}'])[0].strip()
        composer = (re.findall(r'(?m)^C:\s*(.+)$', text) or [COLLECTIONS.get(src, src)])[0].strip()
        out.append((title, composer, measures))
        if limit and len(out) >= limit:
            break
    return out


def label(P, measures):
    """canonical ABC of these measures (copies: write_excerpt annotates its input)."""
    ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures]
    P.mark_ties(ex)
    return P.write_excerpt(ex)


def build_pages(n, seed=0, split='test'):
    """-> list of dict(image, truth, font, title, lines=[reference ABC per system]) of `split`'s tunes."""
    P = load_prepare()
    pages, fonts, rng = [], P.FONTS, np.random.default_rng(seed)
    for title, composer, measures in test_tunes(P, limit=4 * n, split=split):
        if len(pages) >= n:
            break
        font = fonts[len(pages) % len(fonts)]
        abc = label(P, measures)
        head, body = abc.split('\n', 3)[:3], abc.split('\n', 3)[3]
        text = f'X:1\nT:{title}\nC:{composer}\n' + '\n'.join(head) + '\n' + body + '\n'
        # staff space 18, 20 or 22 px (verovio unit 9-11) and looser or tighter spacing: 3-10 staves
        unit, spacing = 9 + len(pages) % 3, round(float(rng.uniform(0.25, 0.45)), 3)
        try:
            img, truth, n_pg = engrave_page(text, font, unit=unit, spacing=spacing)
        except (ValueError, StopIteration):
            continue
        if n_pg != 1 or not 3 <= len(truth) <= 10 or sum(t['measures'] for t in truth) != len(measures):
            continue
        refs, a = [], 0
        for t in truth:
            refs.append(label(P, measures[a:a + t['measures']]))
            a += t['measures']
        pages.append(dict(image=img, truth=truth, font=font, title=title, lines=refs, unit=unit))
    return pages


# -----------------------------------------------------------------------------

def main():
    t0 = time.time()
    pages = build_pages(n_pages, seed, split)
    if not pages:
        raise RuntimeError('no test tune could be engraved as a page')
    print(f'built {len(pages)} pages in {time.time() - t0:.1f}s', file=sys.stderr)
    if write_pages:
        os.makedirs(write_pages, exist_ok=True)
        for i, p in enumerate(pages):
            p['image'].save(os.path.join(write_pages, f'page_{i:03d}.png'))
            with open(os.path.join(write_pages, f'page_{i:03d}.json'), 'w') as f:
                json.dump(dict(font=p['font'], title=p['title'], truth=p['truth'], lines=p['lines']), f, indent=1)
    staves.find_staves(pages[0]['image'])  # warm-up: the first call imports images.py (and torch)

    def detect(images):
        """-> (table rows, recall, precision, seconds per page list, Pages)"""
        n_true = n_found = n_match = 0
        secs, per_font, found_pages = [], {}, []
        for p, im in zip(pages, images):
            t = time.perf_counter()
            page = staves.find_staves(im)
            secs.append(time.perf_counter() - t)
            found = [s.box for s in page.staves]
            m = match(found, [t['box'] for t in p['truth']])
            n_true += len(p['truth'])
            n_found += len(found)
            n_match += m
            f = per_font.setdefault(p['font'], [0, 0, 0])
            f[0] += len(p['truth']); f[1] += len(found); f[2] += m
            found_pages.append(page)
        recall, precision = n_match / max(1, n_true), n_match / max(1, n_found)
        rows = [f'| all | {len(pages)} | {n_true} | {n_found} | {recall:.2%} | {precision:.2%} | {np.mean(secs):.3f} | {max(secs):.3f} |']
        for font, (a, b, c) in per_font.items():
            rows.append(f'| {font} | {sum(p["font"] == font for p in pages)} | {a} | {b} | {c / max(1, a):.2%} | '
                        f'{c / max(1, b):.2%} | | |')
        return rows, found_pages

    head = ['| font | pages | true staves | found | recall | precision | s/page (mean) | s/page (max) |',
            '|---|---:|---:|---:|---:|---:|---:|---:|']
    rows, found_pages = detect([p['image'] for p in pages])
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-rotate, rotate, len(pages)) if rotate > 0 else []
    rot_rows = None
    if rotate > 0:  # the same pages tilted; rotated about the centre, deskewing puts the staves back
        rot_rows, _ = detect([p['image'].rotate(float(a), resample=Image.Resampling.BILINEAR, fillcolor=255)
                              for p, a in zip(pages, angles)])
    lines = ['# Page benchmark', '',
             f'`python -m bench.pages --n_pages={n_pages} --rotate={rotate}{" --out_dir=" + out_dir if out_dir else ""}` '
             f'on a {os.cpu_count()}-core CPU, {machine}. {len(pages)} A4 pages of whole '
             f'test-split tunes (titles and composers shown, {min(len(p["truth"]) for p in pages)}-'
             f'{max(len(p["truth"]) for p in pages)} staves each), verovio 6.4.1, 2100 x 2970 px, staff space 18/20/22 px (verovio unit 9/10/11), spacingLinear 0.25-0.45.', '',
             "## Staff detection (IoU >= 0.5 with the staff lines in verovio's SVG)", '',
             'Upright pages:', ''] + head + rows
    if rot_rows:
        lines += ['', f'The same pages rotated by a uniform random angle in +-{rotate} deg (seed {seed}):', ''] + head + rot_rows
    lines += ['', 'Seconds per page: staves.find_staves alone (deskew search, lines, staves, crops), numpy only.']
    print('\n'.join(lines[8:]))
    if out_dir:
        lines += ['', transcription_report(pages, found_pages)]
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(report + '.tmp', report)
    print(f'wrote {report}', file=sys.stderr)


def shown(lines):
    """Reference ABC per staff of a page -> as the staves show it: a later staff's M: left out where it
    is the one before (an engraver draws a meter once, where it changes; the page-like labels the reader
    learned from, data/m21/prepare.py --no_meter_share, have none)."""
    out, meter = [], None
    for ln in lines:
        m = tune.split_abc(ln)[0].get('M')
        out.append(re.sub(r'(?m)^M:.*\n', '', ln, count=1) if out and m == meter else ln)
        meter = m
    return out


def transcription_report(pages, found_pages):
    """page SER and line SER with the checkpoint in out_dir; seconds per page for transcription."""
    reader = pg.Reader(out_dir, device=device, batch_size=batch_size, beam_size=beam_size, max_new_tokens=max_new_tokens)
    preds_page, refs_page, preds_line, refs_line, secs = [], [], [], [], []
    for p, page in zip(pages, found_pages):
        t = time.perf_counter()
        joined, abcs = reader.read_page([s.crop for s in page.staves], respace)
        secs.append(time.perf_counter() - t)
        preds_page.append(joined)
        refs_page.append(tune.join_lines(p['lines'], labels=True)[0])
        if len(abcs) == len(p['lines']):
            preds_line += [a or '' for a in abcs]
            refs_line += shown(p['lines'])
    sp, sl = metrics.score(preds_page, refs_page), metrics.score(preds_line, refs_line) if refs_line else None
    out = ['## Transcription', '', f'Checkpoint `{out_dir}`, {"greedy" if beam_size == 1 else f"beam {beam_size}"}, read as sample.py reads a page '
           f'(pages.Reader.read_page{"" if respace else "; --respace=False: no staff read again squeezed"}).', '',
           '| level | n | SER | CER |', '|---|---:|---:|---:|',
           f'| page (joined tune vs reference tune) | {sp["n"]} | {sp["ser"]:.2%} | {sp["cer"]:.2%} |']
    if sl:
        out.append(f'| line (found staff vs its true system) | {sl["n"]} | {sl["ser"]:.2%} | {sl["cer"]:.2%} |')
    out += ['', f'Transcription: {sum(secs) / len(secs):.2f} s per page on average (model only, finding excluded).']
    print('\n'.join(out))
    return '\n'.join(out)


def cli(main, config):
    """The page benchmarks' entry point (this file's and bench/systems.py's): --key=value overrides of
    the module's config globals (nanoGPT's configurator), then main(); an error is one line, exit 1."""
    config['config_keys'] = [k for k, v in config.items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))]
    exec(open(os.path.join(ROOT, 'configurator.py')).read(), config)
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        sys.exit(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


if __name__ == '__main__':
    cli(main, globals())
