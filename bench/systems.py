"""
bench/systems.py: the system benchmark. First pages of music21 corpus scores of several staves
(Bach chorales, string quartets, Monteverdi madrigals, voice and piano, piano) engraved by verovio
from their MusicXML as A4 pages (title, composer and part names shown), fonts cycling through
prepare.FONTS; staves.find_staves + systems.find_systems scored against verovio's own SVG.

    $ python -m bench.systems                      # 30 pages -> results/pages_systems.md
    $ python -m bench.systems --n_pages=10 --single_pages=0 --report=/tmp/s.md

Ground truth: every <g class="system"> of the SVG is a system, and the <g class="staff"> of its
first measure are its staves; its box is the extent of all its staff lines. A found system is right
when it has the true system's number of staves and its box (top staff's top line to bottom staff's
bottom line) overlaps the true one at IoU >= 0.5 (one to one, best first). Recall = right / true
systems, precision = right / found systems. Seconds per page: find_staves and find_systems.
"""

import os
import re
import sys
import time
import zipfile

import numpy as np
from PIL import Image

from bench import pages as B
from inference import staves, systems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVG_NS = '{http://www.w3.org/2000/svg}'

# -----------------------------------------------------------------------------
# config
n_pages = 30
rotate = 2.0             # also the same pages rotated by +-rotate degrees (alternating; 0: skip)
single_pages = 25        # also bench/pages.py's single-staff pages: every found system must be one staff (0: skip)
report = 'results/pages_systems.md'
machine = 'load not recorded'  # goes into the report: --machine=idle, or what else ran
# -----------------------------------------------------------------------------

# first pages of these, in this order (chorales 4 staves, quartets 4, madrigals 5, voice + piano 3, piano 2)
WORKS = (['bach/bwv66.6', 'bach/bwv269', 'bach/bwv347', 'bach/bwv153.1', 'bach/bwv86.6', 'bach/bwv267',
          'bach/bwv281', 'bach/bwv250', 'bach/bwv255', 'bach/bwv262', 'bach/bwv318', 'bach/bwv40.8'] +
         ['haydn/opus74no1/movement1', 'haydn/opus74no1/movement3', 'haydn/opus1no1/movement1',
          'mozart/k155/movement1', 'mozart/k156/movement1', 'mozart/k458/movement1',
          'beethoven/opus18no1/movement1', 'haydn/opus1no1/movement3'] +
         ['monteverdi/madrigal.3.1', 'monteverdi/madrigal.3.2', 'monteverdi/madrigal.4.1', 'monteverdi/madrigal.5.1',
          'monteverdi/madrigal.3.3'] +
         ['schubert/Lindenbaum', 'handel/rinaldo/Lascia_chio_pianga', 'verdi/laDonnaEMobile'] +
         ['joplin/maple_leaf_rag', 'cpebach/h186', 'bach/bwv7.7', 'bach/bwv10.7', 'bach/bwv101.7'])


def musicxml_of(work):
    """music21 corpus name -> MusicXML text (an .mxl is unzipped: its first score file)."""
    import music21
    found = music21.corpus.getWork(work)
    found = found if isinstance(found, list) else [found]  # 'opus18no1/movement1': .krn and .mxl
    path = next((str(f) for f in found if str(f).endswith(('.mxl', '.xml', '.musicxml'))), None)
    if path is None:
        raise ValueError(f'no MusicXML for {work} in the corpus')
    if path.endswith('.mxl'):
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith(('.xml', '.musicxml')) and not n.startswith('META-INF'))
            data = z.read(name)
    else:
        with open(path, 'rb') as f:
            data = f.read()
    # a few corpus files are UTF-16 (with a byte-order mark); verovio wants the text
    text = data.decode('utf-16') if data[:2] in (b'\xff\xfe', b'\xfe\xff') else data.decode('utf-8')
    return re.sub(r'^<\?xml[^>]*encoding=[^>]*\?>', '<?xml version="1.0" encoding="UTF-8"?>', text)


def build_pages(n):
    """-> [dict(work, font, unit, image, truth)] for the first n WORKS verovio can engrave."""
    fonts = B.load_prepare().FONTS
    out = []
    for work in WORKS:
        if len(out) >= n:
            break
        font, unit = fonts[len(out) % len(fonts)], 9 + len(out) % 3
        try:
            img, truth, _ = B.engrave_page(musicxml_of(work), font, unit=unit)
        except (ValueError, OSError, StopIteration, KeyError) as e:
            print(f'skipped {work}: {e}', file=sys.stderr)
            continue
        out.append(dict(work=work, font=font, unit=unit, image=img, truth=truth))
    return out


def score(found, truth):
    """found: [(n staves, box)], truth: svg_systems -> number right (same staff count, IoU >= 0.5, one to one)."""
    pairs = sorted(((B.iou(f[1], t['box']), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)
                    if f[0] == t['staves']), reverse=True)
    used_f, used_t = set(), set()
    for v, i, j in pairs:
        if v >= 0.5 and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    return len(used_f)


def main():
    t0 = time.time()
    pages = build_pages(n_pages)
    if not pages:
        raise RuntimeError('no page could be engraved')
    print(f'built {len(pages)} pages in {time.time() - t0:.1f}s', file=sys.stderr)
    staves.find_staves(pages[0]['image'])  # warm-up: the first call imports images.py
    rows, n_true, n_found, n_right, secs, n_staves = [], 0, 0, 0, [], 0
    for p in pages:
        t = time.perf_counter()
        page = staves.find_staves(p['image'])
        sy = systems.find_systems(page)
        secs.append(time.perf_counter() - t)
        n_staves += len(page.staves)
        found = [(len(s.staves), s.box) for s in sy]
        right = score(found, p['truth'])
        n_true, n_found, n_right = n_true + len(p['truth']), n_found + len(found), n_right + right
        rows.append(f"| {p['work']} | {p['font']} | {2 * p['unit']} | {' '.join(str(t['staves']) for t in p['truth'])} | "
                    f"{' '.join(str(f[0]) for f in found)} | {right}/{len(p['truth'])} | {secs[-1]:.2f} |")
    recall, precision = n_right / max(1, n_true), n_right / max(1, n_found)
    rot = []
    if rotate:
        r_found = r_right = 0
        rsecs = []
        for i, p in enumerate(pages):
            im = p['image'].rotate(rotate if i % 2 else -rotate, resample=Image.Resampling.BILINEAR, fillcolor=255)
            t = time.perf_counter()
            sy = systems.find_systems(staves.find_staves(im))
            rsecs.append(time.perf_counter() - t)
            # deskewed, the page is the upright one turned about its centre: counts are compared, boxes not
            r_found += len(sy)
            if len(sy) == len(p['truth']):
                r_right += sum(len(f.staves) == t['staves'] for f, t in zip(sy, p['truth']))
        rot = [f'| rotated +-{rotate} deg | {n_true} | {r_found} | {r_right} | {r_right / max(1, n_true):.2%} | '
               f'{r_right / max(1, r_found):.2%} | {np.mean(rsecs):.2f} / {max(rsecs):.2f} |']
    cmd = 'python -m bench.systems' + (f' --n_pages={n_pages}' if n_pages != 30 else '') + \
        (f' --rotate={rotate}' if rotate != 2.0 else '') + \
        (f' --single_pages={single_pages}' if single_pages != 25 else '')
    lines = ['# System benchmark', '',
             f'`{cmd}`, {len(pages)} first pages of music21 corpus scores engraved by verovio '
             f'{__import__("verovio").toolkit().getVersion()} from their MusicXML (A4, 2100 x 2970 px, titles and part '
             'names shown, staff space 18/20/22 px), fonts cycling through prepare.FONTS. '
             f'Machine: {os.cpu_count()}-core CPU, {machine}.', '',
             '| systems | true | found | right | recall | precision | s/page (mean / max) |',
             '|---|---:|---:|---:|---:|---:|---:|',
             f'| upright | {n_true} | {n_found} | {n_right} | {recall:.2%} | {precision:.2%} | {np.mean(secs):.2f} / {max(secs):.2f} |',
             ] + rot + [
             '', 'Right: the same number of staves as verovio\'s system and IoU >= 0.5 with its box (rotated pages: '
             'the same staff counts, system by system, on a page with the true number of systems). '
             'Seconds: staves.find_staves + systems.find_systems (the staff finder is most of it). '
             f'Staves: {sum(t["staves"] for p in pages for t in p["truth"])} true, {n_staves} found by staves.find_staves '
             '(a system with a staff the finder missed cannot be right).', '',
             '| score | font | staff space | staves per system (verovio) | found | right | s |',
             '|---|---|---:|---|---|---:|---:|'] + rows
    if single_pages:
        sp = B.build_pages(single_pages)
        ok = n_sys = n_one = 0
        for p in sp:
            sy = systems.find_systems(staves.find_staves(p['image']))
            n_sys, n_one = n_sys + len(sy), n_one + sum(len(s.staves) == 1 for s in sy)
            ok += len(sy) == len(p['truth']) and all(len(s.staves) == 1 for s in sy)
        lines[7 + len(rot):7 + len(rot)] = ['', f'Single-staff pages (`bench/pages.py`\'s {len(sp)} A4 pages of test-split tunes, one staff a system): '
                      f'{n_one} of {n_sys} found systems are one staff; {ok} of {len(sp)} pages have exactly their true '
                      'systems, one staff each.']
    print('\n'.join(lines[4:7 + len(rot)]))
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report + '.tmp', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(report + '.tmp', report)
    print(f'wrote {report}', file=sys.stderr)


if __name__ == '__main__':
    B.cli(main, globals())
