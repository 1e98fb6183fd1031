"""
bench/engraved_pages.py: A4 pages of test-split tunes drawn by LilyPond and abcm2ps, with their ground
truth, for bench/pages_engravers.py (issue 25). The tunes and labels are bench/pages.py's (music21
corpus tunes whose split is 'test', whole canonical ABC labels); what is new is the engraver:

    label --plan_systems--> systems of whole measures (3-8 a page; each line's events within a budget)
    abcm2ps:  label's measures, one ABC line per system (abcm2ps breaks where the body breaks), T: C: Q:,
              %%measurenb, w: lyrics on some pages --abcm2ps -v--> one SVG page --resvg--> gray image
    lilypond: label --music21 (a SystemLayout at each system's first measure)--> MusicXML, checked
              against the label (engrave_lilypond.check_musicxml) --musicxml2ly (breaks kept)-->
              \\break where the systems start; \\header title/composer, \\tempo, bar numbers, \\lyricsto
              on some pages; no other break allowed --lilypond (one call for a batch)--> SVG --resvg-->

Ground truth: the staff lines in the engraver's SVG (LilyPond: <line>s, abcm2ps: paths of 'm x y h w'
segments), found by svg_hlines (transforms followed) and grouped five by five (staves_of); a page is
kept only when it has exactly the planned systems on one page. Each system's reference is bench/pages.py's
label() of exactly its measures, so titles, composers, tempo marks, bar numbers and lyrics, drawn on
the page, are never in the reference.
"""

import collections
import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import numpy as np

from bench import pages as B
from inference.render import svg_to_gray

BARS = ('|', '||', '|]', ':|', '|:', ':||:')
TEMPI = (('Allegro', 120), ('Andante', 76), ('Moderato', 100), ('Vivace', 144), ('Adagio', 60), ('Allegretto', 108))
SYLLABLES = ('la', 'sing', 'the', 'morn', 'ing', 'bright', 'and', 'fair', 'my', 'love', 'is', 'gone', 'a', 'way',
             'o', 'ver', 'sea', 'home', 'to', 'green', 'hills', 'far', 'dear', 'heart')
MIN_SYSTEMS, MAX_SYSTEMS = 3, 8


# -----------------------------------------------------------------------------
# planning a page: which measures go on which system, and what is drawn around them

def measure_texts(label):
    """a canonical label -> (its 3 header lines, the body cut after every bar line: one string per
    measure, exactly the label's own text; a leading '|:' stays with the first measure)."""
    head, body = label.rsplit('\n', 1)
    out, cur = [], []
    for tok in body.split():
        cur.append(tok)
        if tok in BARS and not (tok == '|:' and len(cur) == 1 and not out):
            out.append(' '.join(cur))
            cur = []
    if cur:
        raise ValueError('label body does not end with a bar line')
    return head, out


def plan_systems(measures, rng, lyrics=False):
    """[(a, b)]: consecutive systems of whole measures, each holding at most a drawn budget of 16-28
    events (12-20 under lyrics: a syllable needs room) and 6 measures, so that both engravers fit it
    on an A4 line; at most MAX_SYSTEMS (a long tune is cut after them). None if the tune makes fewer
    than MIN_SYSTEMS."""
    lo, hi = (12, 21) if lyrics else (16, 29)
    budget, out, a, n = int(rng.integers(lo, hi)), [], 0, 0
    for i, m in enumerate(measures):
        k = len(m['events'])
        if i > a and (n + k > budget or i - a >= 6):
            out.append((a, i))
            a, n = i, 0
            budget = int(rng.integers(lo, hi))
        n += k
    out.append((a, len(measures)))
    out = out[:MAX_SYSTEMS]
    return out if len(out) >= MIN_SYSTEMS else None


def page_style(rng, meter):
    """what a page shows besides the music: a staff space in pixels (18, 20 or 22: the training range),
    a tempo mark, bar numbers at every system (0) or every 5 bars, lyrics on ~40% of pages, a text font."""
    word, bpm = TEMPI[int(rng.integers(len(TEMPI)))]
    compound = meter in ('6/8', '9/8', '12/8', '6/4')
    return dict(space=float(rng.choice([18.0, 20.0, 22.0])), tempo=word, bpm=bpm if not compound else bpm * 2 // 3,
                beat=('4.' if compound else '4'), barnum=int(rng.choice([0, 5])), lyrics=bool(rng.random() < 0.4),
                serif=('STIXGeneral', 'DejaVu Serif')[int(rng.integers(2))], seed=int(rng.integers(1 << 30)))


def lyric_words(n, seed, hyphen):
    """n syllables of made-up lyrics as text: words of one or two syllables, a two-syllable word's
    joined by `hyphen` (LilyPond ' -- ', ABC '-'); each syllable is set to one note."""
    rng = np.random.default_rng(seed)
    out, k = [], 0
    while k < n:
        two = k + 1 < n and rng.random() < 0.3
        w = [SYLLABLES[int(rng.integers(len(SYLLABLES)))] for _ in range(1 + two)]
        out.append(hyphen.join(w))
        k += len(w)
    return ' '.join(out)


def sung(measures, texts):
    """syllables a system's lyrics get: its notes (not rests, not grace notes), less the notes a tie
    continues (they hold the syllable before), so that the engraver never runs out of notes."""
    n = sum(1 for m in measures for e in m['events'] if not e['rest'] and not e['grace'])
    return max(0, n - sum(t.count('-') for t in texts))


# -----------------------------------------------------------------------------
# SVG -> staves (ground truth)

def _matrix(transform):
    """an SVG transform attribute (translate, scale, matrix; what the engravers write) -> 3x3 matrix."""
    M = np.eye(3)
    for name, args in re.findall(r'(\w+)\s*\(([^)]*)\)', transform or ''):
        v = [float(x) for x in re.split(r'[\s,]+', args.strip()) if x]
        T = np.eye(3)
        if name == 'translate':
            T[0, 2], T[1, 2] = v[0], (v[1] if len(v) > 1 else 0.0)
        elif name == 'scale':
            T[0, 0], T[1, 1] = v[0], (v[1] if len(v) > 1 else v[0])
        elif name == 'matrix':
            T[:2] = np.array(v).reshape(3, 2).T
        else:  # rotate/skew: not a horizontal line any more; such groups hold no staff
            T[0, 0] = np.nan
        M = M @ T
    return M


_SEG = re.compile(r'([Mm])\s*([-0-9.]+)[\s,]+([-0-9.]+)\s*[Hh]\s*([-0-9.]+)')


def svg_hlines(svg):
    """every horizontal straight line an SVG draws -> [(x0, x1, y)] in the root's user units: <line>s
    with y1 == y2 (LilyPond's staff lines) and paths made only of 'moveto + horizontal lineto'
    segments (abcm2ps' staves, 'm x y h w M x y h w ...'), their transforms followed; <defs> skipped."""
    out = []

    def walk(el, M):
        tag = el.tag.rsplit('}', 1)[-1]
        if tag == 'defs':
            return
        M = M @ _matrix(el.get('transform'))
        pts = []
        if tag == 'line' and abs(float(el.get('y1', 0)) - float(el.get('y2', 0))) < 1e-6:
            y = float(el.get('y1', 0))
            pts = [((float(el.get('x1', 0)), y), (float(el.get('x2', 0)), y))]
        elif tag == 'path':
            d = el.get('d', '')
            segs = _SEG.findall(d)
            if segs and re.fullmatch(r'\s*(?:[Mm]\s*[-0-9.]+[\s,]+[-0-9.]+\s*[hH]\s*[-0-9.]+\s*)+', d):
                cx = cy = 0.0
                for k, (cmd, x, y, w) in enumerate(segs):
                    x, y, w = float(x), float(y), float(w)
                    if cmd == 'm' and k:  # relative moveto (a path's first one is absolute)
                        x, y = cx + x, cy + y
                    pts.append(((x, y), (x + w, y)))  # 'h' relative; 'H' paths are not written by either
                    cx, cy = x + w, y
        for p, q in pts:
            a, b = M @ [p[0], p[1], 1.0], M @ [q[0], q[1], 1.0]
            if np.all(np.isfinite([a, b])) and abs(a[1] - b[1]) < 1e-6:
                out.append((min(a[0], b[0]), max(a[0], b[0]), a[1]))
        for c in el:
            walk(c, M)

    walk(ET.fromstring(svg), np.eye(3))
    return out


def staves_of(hlines, min_frac=0.05):
    """horizontal lines -> staves, top to bottom: dict(box=(x0, y0, x1, y1), lines=[5 y]). Lines at one
    y are merged; those shorter than min_frac of the longest (ledger lines, lyric hyphens; a last
    system of one measure is still ~10%) dropped; then five consecutive lines equally spaced (within 10%) and overlapping
    in x make a staff."""
    by_y = {}
    for x0, x1, y in hlines:
        k = round(y, 2)
        a, b = by_y.get(k, (x0, x1))
        by_y[k] = (min(a, x0), max(b, x1))
    if not by_y:
        return []
    longest = max(b - a for a, b in by_y.values())
    ys = sorted(y for y, (a, b) in by_y.items() if b - a >= min_frac * longest)
    out, i = [], 0
    while i + 4 < len(ys):
        g = ys[i:i + 5]
        d = np.diff(g)
        x0, x1 = max(by_y[y][0] for y in g), min(by_y[y][1] for y in g)
        if d.min() > 0 and d.max() - d.min() <= 0.1 * d.mean() and x1 > x0:
            out.append(dict(box=(min(by_y[y][0] for y in g), g[0], max(by_y[y][1] for y in g), g[-1]), lines=list(g)))
            i += 5
        else:
            i += 1
    return out


def in_px(svg):
    """the root's width and height in CSS px (mm and pt at 96 dpi; resvg_py refuses 'mm' sizes) -> (svg
    with them written as plain numbers, its width in user units: the viewBox's, else the width)."""
    head = svg[:svg.index('>', svg.index('<svg')) + 1]
    size = {}
    for k in ('width', 'height'):
        m = re.search(rf'\s{k}="([0-9.]+)\s*(px|mm|pt|)"', head)
        if m is None:
            raise ValueError(f'SVG without a {k}')
        size[k] = float(m.group(1)) * {'px': 1.0, '': 1.0, 'mm': 96 / 25.4, 'pt': 96 / 72}[m.group(2)]
        head = head.replace(m.group(0), f' {k}="{size[k]:.3f}"')
    vb = re.search(r'viewBox="([-0-9. ]+)"', head)
    return head + svg[len(head):], (float(vb.group(1).split()[2]) if vb else size['width'])


def render(svg, space_px, **fonts):
    """SVG page -> (gray PIL page at space_px pixels per staff space, truth staves in pixels)."""
    st = staves_of(svg_hlines(svg))
    if not st:
        raise ValueError('no staff in the SVG')
    sp = float(np.median([np.diff(s['lines']).mean() for s in st]))  # user units
    svg, units = in_px(svg)
    px = float(re.search(r'\swidth="([0-9.]+)"', svg).group(1))
    img = svg_to_gray(svg, skip_system_fonts=True, zoom=space_px / (sp * px / units), **fonts)
    k = img.size[0] / units  # pixels per user unit
    truth = [dict(box=tuple(v * k for v in s['box']), lines=[y * k for y in s['lines']]) for s in st]
    if any(t['box'][0] < 0 or t['box'][2] > img.size[0] or t['box'][3] > img.size[1] for t in truth):
        raise ValueError('a system runs off the page')  # LilyPond, told not to break, lets a full line stick out
    return img, truth, sp * k


# -----------------------------------------------------------------------------
# abcm2ps

def abcm2ps_page(title, composer, label, systems, style, measures):
    """the abcm2ps input of one page: A4, title, composer, tempo, bar numbers, one body line per system,
    a w: line of lyrics under each when the style has lyrics."""
    head, texts = measure_texts(label)
    head = head.split('\n')
    if 'clef=' not in head[2]:
        head[2] += ' clef=treble'  # abcm2ps would pick a bass clef for a low tune by itself
    beat = '3/8' if style['beat'] == '4.' else '1/4'
    out = ['%%pagewidth 21cm', '%%pageheight 29.7cm', '%%maxshrink 1', f"%%measurenb {style['barnum']}", '',
           'X:1', f'T:{title}', f'C:{composer}', f'Q:"{style["tempo"]}" {beat}={style["bpm"]}'] + head
    for k, (a, b) in enumerate(systems):
        out.append(' '.join(texts[a:b]))
        if style['lyrics']:
            out.append('w: ' + lyric_words(sung(measures[a:b], texts[a:b]), style['seed'] + k, '-'))
    return '\n'.join(out) + '\n'


def draw_abcm2ps(title, composer, label, systems, style, measures, E):
    """one page with abcm2ps -> (image, truth). E: data/engrave_abcm2ps.py. ValueError unless abcm2ps
    drew exactly one page with one staff per planned system."""
    r = subprocess.run(['abcm2ps', '-v', '-q', '-O', '-', '-'], input=abcm2ps_page(title, composer, label, systems,
                       style, measures), capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or r.stdout.count('<svg') != 1:
        raise ValueError(f'abcm2ps drew {r.stdout.count("<svg")} pages (exit {r.returncode}: {r.stderr.strip()[:80]})')
    fam = 'STIXGeneral'  # Times-like: abcm2ps spaces its text (tempo mark, lyrics) for Times' widths

    def font(m):  # resvg ignores the CSS font shorthand: presentation attributes instead (as E.for_resvg)
        return (f'font-family="{fam}" font-size="{m.group(2)}"' + (' font-weight="bold"' if 'bold' in m.group(1) else '')
                + (' font-style="italic"' if 'italic' in m.group(1) else ''))
    svg = re.sub(r'style="font:((?:(?:italic|bold|normal|oblique)\s+)*)([0-9.]+)px [^"]*"', font, r.stdout)
    img, truth, _ = render(svg, style['space'], font_files=E.font_files())
    if len(truth) != len(systems):
        raise ValueError(f'abcm2ps drew {len(truth)} staves for {len(systems)} systems')
    return img, truth


# -----------------------------------------------------------------------------
# LilyPond

def lily_music(label, systems, L):
    """label -> musicxml2ly's music of it with a \\break before each system but the first. The MusicXML
    is checked against the label first (L: data/engrave_lilypond.py)."""
    import lilypond
    from music21 import layout, stream
    score = L.label_score(label)
    part = score.parts[0] if score.parts else score
    ms = list(part.getElementsByClass(stream.Measure))
    for a, _ in systems[1:]:
        ms[a].insert(0, layout.SystemLayout(isNew=True))  # -> <print new-system="yes"/> -> \break
    xml = L.to_musicxml(score)
    L.check_musicxml(xml, label)
    with tempfile.TemporaryDirectory(prefix='nanoomr-pg-') as tmp:
        path = os.path.join(tmp, 'x.xml')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(xml)
        # page breaks and margins dropped, system breaks kept; '-o -' writes stdout and skips convert-ly
        r = subprocess.run([lilypond.executable('musicxml2ly'), '--no-stem-directions', '--npb', '--npm', '-o', '-', path],
                           capture_output=True, text=True, timeout=120)
    music = L.music_of(r.stdout)
    if music.count('\\break') != len(systems) - 1:
        raise ValueError('musicxml2ly lost a system break')
    if label.endswith(' |'):  # as engrave_lilypond.draw: the plain bar after an incomplete last measure
        music += ' \\bar "|"'
    if label.rsplit('\n', 1)[1].startswith('|:'):
        music = '\\bar ".|:" ' + music
    return music


def lily_score(title, composer, music, style, n_notes, piece=False):
    """one \\score: header, tempo, the music in a Voice, lyrics under it on some pages; bar numbers at
    every system or every 5 bars; no line break but the music's own."""
    lyr = ''
    if style['lyrics']:
        lyr = '\\new Lyrics \\lyricsto "m" { ' + lyric_words(n_notes, style['seed'], ' -- ') + ' }'
    bars = ('\\set Score.barNumberVisibility = #(every-nth-bar-number-visible 5) '
            '\\override Score.BarNumber.break-visibility = ##(#t #t #t)') if style['barnum'] == 5 else ''
    head = f'piece = "{lily_text(title)}"' if piece else ''
    return rf'''\score {{
  \header {{ {head} }}
  <<
    \new Staff \new Voice = "m" {{ \tempo "{style['tempo']}" {style['beat']} = {style['bpm']} {bars} {music} }}
    {lyr}
  >>
  \layout {{ \context {{ \Score \override NonMusicalPaperColumn.line-break-permission = ##f }} }}
}}
'''


def lily_text(s):
    return s.replace('\\', '').replace('"', "'")


def lily_book(scores, staff_size, suffix=None, header=''):
    sfx = f'\\bookOutputSuffix "{suffix}"' if suffix is not None else ''
    return rf'''\book {{
  {sfx}
  \header {{ tagline = ##f {header} }}
  \paper {{ #(set-paper-size "a4") print-page-number = ##f #(layout-set-staff-size {staff_size}) }}
  {''.join(scores)}
}}
'''


def run_lilypond(books, tmp, backend='svg'):
    """books (LilyPond source) -> lilypond's output files in tmp (p-<suffix>.svg, or p.pdf)."""
    import lilypond
    with open(os.path.join(tmp, 'all.ly'), 'w', encoding='utf-8') as f:
        f.write('\\version "2.24.0"\n' + ''.join(books))
    try:
        subprocess.run([lilypond.executable(), f'-dbackend={backend}', '-dno-point-and-click', '-s',
                        '-o', os.path.join(tmp, 'p'), os.path.join(tmp, 'all.ly')], capture_output=True, timeout=900)
    except subprocess.TimeoutExpired:  # what it wrote is kept; the pages it did not reach are 'drew nothing'
        pass


def check_lily_bars(svg, label, systems, staff_height):
    """engrave_lilypond.check_bars for a page: LilyPond's bar lines (rects as tall as a staff) against
    the label's, '|' one stroke and the others two; at a line break LilyPond draws '|:' as '|' at the
    line's end and '.|:' at the next one's start (one more), ':||:' as ':|.' and '.|:' (two more).
    ValueError('mismatch in bar lines ..') if musicxml2ly or LilyPond moved, added or dropped one."""
    got = sum(1 for h in re.findall(r'<rect x="0.0000" y="[-0-9.]+" width="[0-9.]+" height="([0-9.]+)" ry="0.0000"', svg)
              if abs(float(h) - staff_height) < 0.01)
    _, texts = measure_texts(label)
    bars = [t.split()[-1] for t in texts]
    want = sum(1 if b == '|' else 2 for b in bars) + (2 if texts[0].startswith('|:') else 0)
    want += sum({'|:': 1, ':||:': 2}.get(bars[b - 1], 0) for _, b in systems[:-1])
    if got != want:
        raise ValueError(f'mismatch in bar lines: {got} != {want}')


def draw_lilypond(jobs, L):
    """jobs: [(title, composer, label, systems, style, measures)] -> per job (image, truth) or the
    ValueError that rejected it. One lilypond call for all, at a staff size of 18-22 pt (LilyPond picks
    its font's optical size from it); a page whose lines stick out past the paper is drawn once more,
    5 pt smaller, as a user would."""
    out, music, size = [None] * len(jobs), {}, {}
    for k, (title, composer, label, systems, style, measures) in enumerate(jobs):
        try:
            music[k] = lily_music(label, systems, L)
            size[k] = 18 + style['seed'] % 5
        except ValueError as e:
            out[k] = e
        except Exception as e:  # music21 raises many kinds on what it cannot read
            out[k] = ValueError(f'music21: {type(e).__name__}')
    todo = list(music)
    for attempt in range(2):
        with tempfile.TemporaryDirectory(prefix='nanoomr-pg-') as tmp:
            run_lilypond([lily_book([lily_score(jobs[k][0], jobs[k][1], music[k], jobs[k][4],
                                                sung(jobs[k][5], measure_texts(jobs[k][2])[1]))], size[k], suffix=k,
                                    header=f'title = "{lily_text(jobs[k][0])}" composer = "{lily_text(jobs[k][1])}"')
                          for k in todo], tmp)
            again = []
            for k in todo:
                title, composer, label, systems, style, _ = jobs[k]
                try:
                    if any(os.path.exists(os.path.join(tmp, f'p-{k}-{x}.svg')) for x in ('2', 'page2')):
                        raise ValueError('LilyPond drew more than one page')
                    with open(os.path.join(tmp, f'p-{k}.svg'), encoding='utf-8') as f:
                        svg = f.read()
                    st = staves_of(svg_hlines(svg))
                    check_lily_bars(svg, label, systems, st[0]['lines'][4] - st[0]['lines'][0] if st else 0.0)
                    img, truth, _ = render(svg, style['space'], font_files=L.font_files(), serif_family=style['serif'],
                                           font_family=style['serif'])
                    if len(truth) != len(systems):
                        raise ValueError(f'LilyPond drew {len(truth)} staves for {len(systems)} systems')
                    out[k] = (img, truth)
                except OSError:
                    out[k] = ValueError('lilypond drew nothing')
                except ValueError as e:
                    out[k] = e
                    if 'off the page' in str(e):
                        again.append(k)
                        size[k] -= 5
        todo = again
    return out


# -----------------------------------------------------------------------------

def annotated(P, measures):
    """copies of the measures as write_excerpt leaves them ('printed' accidentals, 'bar_out'): what the
    abcm2ps agreement check compares its drawing with."""
    ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures]
    P.mark_ties(ex)
    P.write_excerpt(ex)
    return ex


def build_pages(engraver, n, seed=0, tunes=None, split='test'):
    """n pages drawn by `engraver` ('lilypond' or 'abcm2ps') from the test tunes in order (the same
    tunes, systems and styles for both engravers with the same seed) -> [dict(image, truth, lines,
    header, title, style)]: truth = staves in pixels, lines = reference ABC per system; and a Counter of
    why the other planned pages were not kept."""
    P = B.load_prepare()  # puts data/ and data/m21/ on sys.path: its engravers module holds both drawers
    E = P.engravers
    out, batch, rejected = [], [], collections.Counter()
    tunes = tunes if tunes is not None else B.test_tunes(P, limit=6 * n, split=split)
    for i, (title, composer, measures) in enumerate(tunes):
        if len(out) >= n:
            break
        plan = plan_page(P, measures, np.random.default_rng([seed, i]))
        if plan is None:
            continue
        rng, style, systems, measures, label = plan
        refs = [B.label(P, measures[a:b]) for a, b in systems]
        job = (title, composer, label, systems, style, measures)
        if engraver == 'abcm2ps':
            try:
                img, truth = draw_abcm2ps(*job, E.engrave_abcm2ps)
                # the agreement check of the corpus, per system: abcm2ps draws each system's label as written
                for ref, (a, b) in zip(refs, systems):
                    ex = annotated(P, measures[a:b])
                    E.engrave_abcm2ps.check_svg(E.engrave_abcm2ps.draw_svg(ref, E.engrave_abcm2ps.sample_layout(rng)), ex)
            except ValueError as e:
                rejected[reason(e)] += 1
                continue
            out.append(dict(image=img, truth=truth, lines=refs, header=label.split('\n')[:3], title=title, style=style))
        else:
            batch.append((job, refs))
            # a batch: what should fill the pages still wanted (~10% are rejected), at most 25 per lilypond call
            if len(batch) >= min(25, (n - len(out)) * 6 // 5 + 1) or i == len(tunes) - 1:
                for (job, refs), got in zip(batch, draw_lilypond([j for j, _ in batch], E.engrave_lilypond)):
                    if isinstance(got, ValueError):
                        rejected[reason(got)] += 1
                    elif len(out) < n:
                        out.append(dict(image=got[0], truth=got[1], lines=refs, header=job[2].split('\n')[:3],
                                        title=job[0], style=job[4]))
                batch = []
    return out, rejected


def plan_page(P, measures, rng):
    """a tune's page: its style, its systems (measure ranges), the measures they use and their label
    -> (rng, style, systems, measures, label), or None when no plan fits."""
    style = page_style(rng, measures[0]['ctx'][2])
    systems = plan_systems(measures, rng, style['lyrics'])
    if systems is None:
        return None
    measures = measures[:systems[-1][1]]
    return rng, style, systems, measures, B.label(P, measures)


def reason(e):
    """a rejection's kind, for the report: its message without the numbers."""
    msg = str(e).split(' (exit')[0]
    return re.sub(r"(?<![a-z])[-0-9.]+(?![a-z])", 'N', msg.split(':')[0] if msg.startswith('mismatch') else msg)[:60]


def multipage_pdf(path, tunes, seed=0, min_pages=2):
    """one LilyPond score of several test tunes (a \\score each, its title as the piece name) on A4
    pages, written by LilyPond as the PDF `path`; tunes are added until it has >= min_pages pages.
    -> (pages, reference ABC per system in page order)."""
    import pypdfium2 as pdfium
    P = B.load_prepare()
    L = P.engravers.engrave_lilypond
    scores, refs = [], []
    for i, (title, composer, measures) in enumerate(tunes):
        plan = plan_page(P, measures, np.random.default_rng([seed, 7, i]))
        if plan is None:
            continue
        _, style, systems, measures, label = plan
        try:
            music = lily_music(label, systems, L)
        except Exception:  # a tune music21 or musicxml2ly cannot take: the next one
            continue
        scores.append(lily_score(title, composer, music, style, sung(measures, measure_texts(label)[1]), piece=True))
        refs += [B.label(P, measures[a:b]) for a, b in systems]
        if len(refs) < 8 * min_pages:  # ~8-10 systems fill an A4 page at staff size 20
            continue
        with tempfile.TemporaryDirectory(prefix='nanoomr-pg-') as tmp:
            run_lilypond([lily_book(scores, 20, header='title = "Tunes of the test split" composer = "Traditional"')],
                         tmp, backend='ps')  # LilyPond's default backend: PostScript turned into PDF
            out = os.path.join(tmp, 'p.pdf')
            if not os.path.exists(out):
                raise ValueError('lilypond wrote no PDF')
            pdf = pdfium.PdfDocument(out)
            n = len(pdf)
            pdf.close()
            if n >= min_pages:
                _copy(out, path)
                return n, refs
    raise ValueError(f'the tunes did not fill {min_pages} pages')


def _copy(src, dst):
    with open(src, 'rb') as f, open(dst + '.tmp', 'wb') as g:
        g.write(f.read())
    os.replace(dst + '.tmp', dst)
