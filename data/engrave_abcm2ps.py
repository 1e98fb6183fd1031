"""
data/engrave_abcm2ps.py: the abcm2ps engraver (Debian package `abcm2ps`) for the corpus builders. The canonical
ABC label is drawn by abcm2ps itself (it reads ABC, beaming included), as SVG, then rasterized by resvg:

    label + page options (%%notespacingfactor, %%maxshrink, %%stretchlast, ...) --abcm2ps -g--> SVG
    SVG --text rewritten for resvg, line widths varied--> resvg (STIX / DejaVu font files) --> grayscale

Two quirks make the rewrite necessary: resvg ignores the CSS `font:` shorthand abcm2ps writes for the
meter and triplet digits, and draws no text at all unless font files are given, so both would vanish.
check_svg is the agreement check: abcm2ps' SVG names every glyph it uses (<use xlink:href="#hd">), so
the note heads are read back with their staff positions (pitch letter and octave), rests by value,
accidentals, dots, ties, triplet digits, bar lines, clef, key signature and meter, and compared with
what the label says. Stem and beam shapes are not compared.
"""
import functools
import os
import re
import shutil
import subprocess

from inference.render import crop_to_ink, svg_to_gray  # the repo (on the builders' sys.path)


# abcm2ps' glyph names -> what they are
HEADS = {'HDD': 'breve', 'breve': 'breve', 'HD': 'whole', 'Hd': 'half', 'hd': 'filled'}  # 'filled': quarter and shorter
RESTS = {'r0': 'breve', 'r1': 'whole', 'r2': 'half', 'r4': 'quarter', 'r8': 'eighth', 'r16': '16th',
         'r32': '32nd', 'r64': '64th'}
ACCIDS = {'sh': '^', 'ft': '_', 'nt': '=', 'dsh': '^^', 'dft': '__'}
MEI_ACC = {'s': '^', 'f': '_', 'n': '=', 'ss': '^^', 'ff': '__'}  # canonical's 'printed' -> ABC
CLEF_IDS = {'treble': 'tclef', 'bass': 'bclef', 'alto': 'cclef', 'tenor': 'cclef'}
# the bottom staff line's pitch per clef, as a diatonic step number (7 * octave + letter index)
STEPS = 'CDEFGAB'
BOTTOM_LINE = {'treble': 7 * 4 + 2, 'bass': 7 * 2 + 4, 'alto': 7 * 3 + 3, 'tenor': 7 * 3 + 1}
# font files for the text abcm2ps writes (meter and triplet digits): matplotlib ships them
TEXT_FONTS = {'STIXGeneral': ('STIXGeneral', 'STIXGeneralBol', 'STIXGeneralItalic', 'STIXGeneralBolIta'),
              'DejaVu Serif': ('DejaVuSerif', 'DejaVuSerif-Bold', 'DejaVuSerif-Italic', 'DejaVuSerif-BoldItalic'),
              'DejaVu Sans': ('DejaVuSans', 'DejaVuSans-Bold', 'DejaVuSans-Oblique', 'DejaVuSans-BoldOblique')}


def available():
    return shutil.which('abcm2ps') is not None


@functools.lru_cache(maxsize=None)
def font_files():
    import matplotlib
    d = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')
    return [os.path.join(d, f + '.ttf') for names in TEXT_FONTS.values() for f in names]


def sample_layout(rng):
    """per-excerpt page options. space: staff space in pixels (the training range 18-27, as verovio's
    scale 100-150); justify: None (natural spacing) or the line's width as a multiple of its natural one,
    squeezed or stretched the way a justified system on a page is."""
    return dict(space=round(float(rng.uniform(18, 27)), 2), margin=int(rng.integers(6, 20)),
                notespacing=round(float(rng.uniform(1.2, 1.7)), 3),   # abcm2ps' default 1.41
                justify=None if rng.random() < 0.2 else round(float(rng.uniform(0.5, 1.0)), 3),
                maxshrink=round(float(rng.uniform(0.5, 1.0)), 3),   # default 0.65
                stemheight=round(float(rng.uniform(18.5, 23.5)), 2),  # default 21
                flatbeams=bool(rng.random() < 0.15), straightflags=bool(rng.random() < 0.2),
                staffline=round(float(rng.uniform(0.45, 0.9)), 2),  # line width: staff, stems, ledgers (default 0.7)
                text_font=list(TEXT_FONTS)[int(rng.integers(len(TEXT_FONTS)))])


def abc_for(label, layout, width_pt=None):
    """the label as an abcm2ps tune: X:, page options, the clef always stated (abcm2ps picks a bass clef
    for a low passage by itself), and one very wide page so that the line never breaks."""
    head, body = label.rsplit('\n', 1)
    if 'clef=' not in head.split('\nK:')[-1]:
        head += ' clef=treble'
    opts = ['%%pagewidth 500cm', '%%leftmargin 1cm', '%%rightmargin 1cm', '%%topspace 0', '%%musicspace 0',
            '%%graceslurs no', '%%measurenb -1', '%%stretchstaff no', f"%%notespacingfactor {layout['notespacing']}",
            f"%%stemheight {layout['stemheight']}", f"%%flatbeams {int(layout['flatbeams'])}",
            f"%%straightflags {int(layout['straightflags'])}"]
    # %%stretchlast: 0 leaves the line at its natural width, 1 stretches it to the staff width (measured
    # on abcm2ps 8.14: 0-0.5 leave a 3%-full line alone, 0.99 and 1 stretch it)
    if width_pt is None:
        opts.append('%%stretchlast 0')
    else:  # justified to a chosen width: %%staffwidth, stretched, or squeezed by at most maxshrink
        opts += [f'%%staffwidth {width_pt:.1f}pt', '%%stretchlast 1', f"%%maxshrink {layout['maxshrink']}"]
    return 'X:1\n' + '\n'.join(opts) + '\n' + head + '\n' + body + '\n'


def run_abcm2ps(abc):
    r = subprocess.run(['abcm2ps', '-g', '-q', '-O', '-', '-'], input=abc, capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or '<svg' not in r.stdout:
        raise ValueError(f'abcm2ps failed: {r.stderr.strip()[:100]}')
    if r.stdout.count('<svg') != 1:
        raise ValueError('abcm2ps wrote more than one page')
    return r.stdout


STAFF = r'<path d="m([0-9.]+) ([0-9.]+)\s+h([0-9.]+)((?:\s+M[0-9.]+ [0-9.]+\s+h[0-9.]+)*)\s*"\s+class="stroke"/>'


def staff_lines(svg):
    """-> (x0, length, [y of the 5 lines, bottom first]) of the one staff; ValueError if not one line."""
    staves = re.findall(STAFF, svg)
    if len(staves) != 1:
        raise ValueError(f'abcm2ps drew {len(staves)} staves, not one line')
    x0, y0, w, rest = staves[0]
    ys = [float(y0)] + [float(y) for y in re.findall(r'M[0-9.]+ ([0-9.]+)', rest)]
    if len(ys) != 5:
        raise ValueError('not a five-line staff')
    return float(x0), float(w), ys


def draw_svg(label, layout):
    """label -> abcm2ps' SVG, on one line, justified if the layout asks for it."""
    svg = run_abcm2ps(abc_for(label, layout))
    if layout.get('justify'):
        _, natural, _ = staff_lines(svg)
        try:
            justified = run_abcm2ps(abc_for(label, layout, natural * layout['justify']))
        except ValueError:  # 'Line too much shrunk', 'staffwidth too small': the natural width then
            return svg
        if len(re.findall(STAFF, justified)) == 1:
            return justified  # else abcm2ps broke the line rather than squeeze it that much: natural
    return svg


def for_resvg(svg, layout):
    """rewrite what resvg cannot read: `style="font:italic bold 12px serif"` -> presentation attributes
    naming a font family we give resvg the files of; the staff line width (the outer <g stroke-width>)."""
    fam = layout['text_font']

    def font(m):
        style, size = m.group(1), m.group(2)
        return (f'font-family="{fam}" font-size="{size}"' + (' font-weight="bold"' if 'bold' in style else '') +
                (' font-style="italic"' if 'italic' in style else ''))
    svg = re.sub(r'style="font:((?:(?:italic|bold|normal|oblique)\s+)*)([0-9.]+)px [^"]*"', font, svg)
    # the page is 5 m wide (so that the line never breaks): cut it to the staff, or resvg fills it all
    x0, w, _ = staff_lines(svg)
    m = re.search(r'width="([0-9.]+)px" height="([0-9.]+)px"', svg)
    if m is None:
        raise ValueError('abcm2ps SVG without a page size')
    width, height = x0 + w + 30, float(m.group(2))
    svg = svg.replace(m.group(0), f'width="{width:.2f}px" height="{height:.2f}px" viewBox="0 0 {width:.2f} {height:.2f}"', 1)
    return svg.replace('<g stroke-width="0.70">', f'<g stroke-width="{layout["staffline"]}">', 1)


def rasterize(svg, layout):
    """abcm2ps SVG -> grayscale PIL image at layout['space'] pixels per staff space, cropped to the ink
    plus layout['margin'] white pixels (as data/engrave.py's rasterize does for verovio)."""
    _, _, ys = staff_lines(svg)
    zoom = layout['space'] / ((ys[0] - ys[4]) / 4)
    img = svg_to_gray(for_resvg(svg, layout), skip_system_fonts=True, font_files=font_files(), zoom=zoom)
    return crop_to_ink(img, layout['margin'])

# -----------------------------------------------------------------------------
# the agreement check: what abcm2ps drew, read back from its SVG, against the label's measures


def svg_symbols(svg):
    """-> dict of what the SVG shows: heads [(x, staff step above the bottom line, kind)], grace heads,
    rests {value: n}, accidentals [(x, abc)], dots, ties, triplet digits, bars, clef, meter."""
    _, _, ys = staff_lines(svg)
    half = (ys[0] - ys[4]) / 8
    uses = [(float(x), float(y), ref) for x, y, ref in
            re.findall(r'<use x="([0-9.-]+)" y="([0-9.-]+)" xlink:href="#([A-Za-z0-9]+)"/>', svg)]
    out = dict(heads=[], grace=0, rests={}, accids=[], clef=None)
    for x, y, ref in uses:
        if ref in HEADS:
            out['heads'].append((x, round((ys[0] - y) / half), HEADS[ref]))
        elif ref == 'ghd':
            out['grace'] += 1
        elif ref in RESTS:
            out['rests'][RESTS[ref]] = out['rests'].get(RESTS[ref], 0) + 1
        elif ref in ('tclef', 'bclef', 'cclef'):
            out['clef'] = (ref, round((ys[0] - y) / half))
        else:
            m = re.fullmatch(r'(d?sh|ft|nt|dft)[0-9]+', ref)
            if m:
                out['accids'].append((x, ACCIDS[m.group(1)]))
    out['dots'] = len(re.findall(r'<circle class="fill" cx="[0-9.]+" cy="[0-9.]+" r="1.2"/>', svg))
    # a tie: two curves joined by a short vertical (its thickness at the end); a flag has no 'v'
    out['ties'] = len(re.findall(r'<path class="fill"\s+d="M[0-9.]+ [0-9.]+c[-0-9. ]+\s+v[-0-9.]+c[-0-9. ]+"/>', svg))
    out['triplets'] = len(re.findall(r'<text style="font:italic[^"]*"[^>]*>3</text>', svg))
    meter = re.search(r'<g style="font:bold[^"]*"\s+transform="translate\(([0-9.]+),[0-9.]+\)[^"]*">\s*'
                      r'<text[^>]*>([0-9]+)</text>\s*<text y="-?[0-9.]+"[^>]*>([0-9]+)</text>', svg)
    if meter:
        out['meter'], meter_x = f'{meter.group(3)}/{meter.group(2)}', float(meter.group(1))
    else:
        sig = [(x, ref) for x, y, ref in uses if ref in ('csig', 'ctsig')]
        out['meter'] = {'csig': 'C', 'ctsig': 'C|'}[sig[0][1]] if len(sig) == 1 else None
        meter_x = sig[0][0] if len(sig) == 1 else 0.0
    # accidentals left of the meter are the key signature's
    out['keysig'] = [a for x, a in out['accids'] if x < meter_x]
    out['accids'] = [(x, a) for x, a in out['accids'] if x >= meter_x]
    bars = re.findall(r'<path class="stroke" stroke-width="([0-9.]+)"\s+d="M([0-9.]+) [0-9.]+v-[0-9.]+"/>', svg)
    out['bars'] = len(bars)
    out['rdots'] = len(re.findall(r'xlink:href="#rdots"', svg))
    return out


def expected_symbols(measures):
    """what abcm2ps must draw for the label's measures (after canonical.write_excerpt set 'printed' and
    'bar_out'), in svg_symbols' terms."""
    clef, sharps, meter = measures[0]['ctx']
    exp = dict(heads=[], grace=0, rests={}, accids=[], dots=0, ties=0, triplets=0, meter=meter,
               clef=clef, keysig=['^' if sharps > 0 else '_'] * abs(sharps), bars=0, rdots=0)
    for m in measures:
        n_trip = 0
        for e in m['events']:
            exp['accids'] += [MEI_ACC[p] for p in e['printed'] if p]
            if e['grace']:
                exp['grace'] += len(e['pitches'])
                continue
            exp['dots'] += e['dots'] * max(1, len(e['pitches']))
            exp['ties'] += int(bool(e.get('tie'))) * len(e['pitches'])
            n_trip += bool(e['tuplet'])
            if e['rest']:
                exp['rests'][e['type']] = exp['rests'].get(e['type'], 0) + 1
                continue
            kind = {'breve': 'breve', 'whole': 'whole', 'half': 'half'}.get(e['type'], 'filled')
            exp['heads'].append(sorted(7 * o + STEPS.index(s) - BOTTOM_LINE[clef] for s, o, _ in e['pitches']) + [kind])
        exp['triplets'] += n_trip // 3
        bar = m['bar_out']
        # abcm2ps draws every bar line but '|' as two strokes: '||', '|]', ':|' and '|:' (thin and thick,
        # plus dots), and ':||:' as its %%dblrepbar ':][:' (two thick strokes between the dots)
        exp['bars'] += 1 if bar == '|' else 2
        exp['rdots'] += {':|': 1, '|:': 1, ':||:': 2}.get(bar, 0)
    if measures[0]['left'] == '|:':
        exp['bars'] += 2
        exp['rdots'] += 1
    return exp


def check_svg(svg, measures):
    """ValueError('mismatch in ...') unless abcm2ps' drawing shows what the label's measures say."""
    got, want = svg_symbols(svg), expected_symbols(measures)
    clef = want['clef']
    if got['clef'] is None or got['clef'][0] != CLEF_IDS[clef]:
        raise ValueError(f"mismatch in clef: {got['clef']} != {clef}")
    if clef in ('alto', 'tenor') and got['clef'][1] != {'alto': 4, 'tenor': 6}[clef]:
        raise ValueError('mismatch in clef line')
    for k in ('meter', 'grace', 'rests', 'dots', 'ties', 'triplets', 'rdots'):
        if got[k] != want[k]:
            raise ValueError(f'mismatch in {k}: {got[k]} != {want[k]}')
    if sorted(got['keysig']) != sorted(want['keysig']):
        raise ValueError(f"mismatch in key signature: {got['keysig']} != {want['keysig']}")
    if sorted(a for _, a in got['accids']) != sorted(want['accids']):
        raise ValueError(f"mismatch in accidentals: {sorted(a for _, a in got['accids'])} != {sorted(want['accids'])}")
    # note heads left to right, chord by chord: each chord takes as many heads as it has notes (a chord's
    # heads may sit either side of its stem, but never past the next chord's)
    heads = sorted(got['heads'])
    if len(heads) != sum(len(h) - 1 for h in want['heads']):
        raise ValueError(f"mismatch in note count: {len(heads)} != {sum(len(h) - 1 for h in want['heads'])}")
    i = 0
    for w in want['heads']:
        n = len(w) - 1
        g = heads[i:i + n]
        i += n
        if sorted(p for _, p, _ in g) != w[:-1] or any(k != w[-1] for _, _, k in g):
            raise ValueError(f'mismatch in note {i - n}: {[(p, k) for _, p, k in g]} != {w}')
    if got['bars'] != want['bars']:
        raise ValueError(f"mismatch in bar lines: {got['bars']} != {want['bars']}")
