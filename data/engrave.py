"""
data/engrave.py: engraving for the corpus builders in data/*/prepare.py. Canonical ABC -> an SVG and
verovio's MEI (what it understood) with verovio; the MEI read back as measures of events, so that a
builder can prove the image shows what its label says (compare_events); the SVG rasterized to a
grayscale image cropped to the ink. For the held-out-font study, mix_glyphs turns an engraving's
font into a chimera of several (train images only).
"""
import functools
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from inference.render import crop_to_ink, svg_to_gray, verovio_toolkit

MEI_NS = '{http://www.music-encoding.org/ns/mei}'
# key signature (sharps > 0, flats < 0) -> the major key that has it: how every label writes K:
MAJOR = {-7: 'Cb', -6: 'Gb', -5: 'Db', -4: 'Ab', -3: 'Eb', -2: 'Bb', -1: 'F', 0: 'C', 1: 'G', 2: 'D', 3: 'A', 4: 'E',
         5: 'B', 6: 'F#', 7: 'C#'}


def midi_number(p):
    """(step, octave, alter) -> MIDI note number: the order chord notes are written and compared in."""
    step, octave, alter = p
    return 12 * (octave + 1) + 'C D EF G A B'.index(step) + alter


def engrave(abc, font, layout):
    """canonical ABC, or MusicXML (text starting with '<'), -> (svg, mei) with verovio, forced onto a
    single system, no header/footer text. The multi-voice corpus passes MusicXML: verovio's ABC reader
    handles one voice only."""
    tk = verovio_toolkit({'font': font, 'scale': layout['scale'], 'spacingLinear': layout['spacingLinear'],
                   'spacingNonLinear': layout['spacingNonLinear'], 'breaks': 'none', 'pageWidth': 60000,
                   'adjustPageWidth': True, 'adjustPageHeight': True, 'header': 'none', 'footer': 'none',
                   'pageMarginLeft': 20, 'pageMarginRight': 20, 'pageMarginTop': 20, 'pageMarginBottom': 20})
    if not tk.loadData(abc if abc.lstrip().startswith('<') else 'X:1\n' + abc + '\n'):
        raise ValueError('verovio load failed')
    svg = tk.renderToSVG(1)
    if tk.getPageCount() != 1 or svg.count('class="system"') != 1:
        raise ValueError('not one system')
    return svg, tk.getMEI()

@functools.lru_cache(maxsize=None)
def font_glyphs(font):
    """SMuFL code point ('E0A4') -> the <path .../> verovio draws it with in `font`: its own glyph files,
    in font units (1000 per em, one staff space = 250), so any font's path fits another's <use> transform."""
    import verovio
    folder = os.path.join(os.path.dirname(verovio.__file__), 'data', font)
    out = {}
    for name in os.listdir(folder):
        if name.endswith('.xml'):
            with open(os.path.join(folder, name), encoding='utf-8') as f:
                m = re.search(r'<g id="[0-9A-F]+">(.*)</g>', f.read(), re.S)
            if m:
                out[name[:-4]] = m.group(1).strip()
    return out

GLYPH_DEF = re.compile(r'(<g id="([0-9A-F]{4})-[^"]*">)(.*?)(</g>)', re.S)

# Text fonts matplotlib ships, as donors of the glyphs a text font also has: time-signature digits, the
# common-time C and the three accidentals. The four engraved SMuFL fonts draw these alike (one design
# family); text faces (sans, serif, mono, italic, bold, Computer Modern) give the shapes variety.
TEXT_DONORS = ('DejaVuSans', 'DejaVuSans-Bold', 'DejaVuSans-Oblique', 'DejaVuSansMono', 'DejaVuSerif',
               'DejaVuSerif-Bold', 'DejaVuSerif-Italic', 'STIXGeneral', 'STIXGeneralBol', 'STIXGeneralItalic',
               'cmr10', 'cmss10', 'cmtt10', 'cmb10', 'cmti10')
TEXT_CHARS = {f'E08{d}': str(d) for d in range(10)} | {'E08A': 'C', 'E260': '\u266d', 'E261': '\u266e', 'E262': '\u266f'}
# the box a SMuFL glyph fills, (y bottom, height, width) in font units, Leipzig's metrics: digits 2 staff
# spaces tall centred on their line, an accidental centred on its note's line or space (a flat's bowl)
TEXT_BOX = {c: (-250, 500, 390) for c in TEXT_CHARS} | {'E08A': (-249, 500, 414), 'E260': (-175, 644, 198),
                                                       'E261': (-351, 702, 157), 'E262': (-339, 694, 197)}

@functools.lru_cache(maxsize=None)
def text_glyphs(font):
    """matplotlib text font name -> {SMuFL code point: (segments, width)}: the character's outline as
    [(SVG command, (n, 2) points)], scaled to height 1 with its ink box's bottom-left at (0, 0), y up
    (SMuFL's axes), and its width at that height. Characters the font lacks are left out."""
    import matplotlib
    from matplotlib import ft2font
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath
    fname = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf', font + '.ttf')
    ft, out = ft2font.FT2Font(fname), {}
    for code, ch in TEXT_CHARS.items():
        if not ft.get_char_index(ord(ch)):
            continue
        path = TextPath((0, 0), ch, size=1, prop=FontProperties(fname=fname))
        ink = path.vertices[path.codes != path.CLOSEPOLY]  # a CLOSEPOLY's vertex is a dummy
        lo, hi = ink.min(0), ink.max(0)
        h = hi[1] - lo[1]
        cmd = {path.MOVETO: 'M', path.LINETO: 'L', path.CURVE3: 'Q', path.CURVE4: 'C', path.CLOSEPOLY: 'Z'}
        segs = [(cmd[kind], np.zeros((0, 2)) if kind == path.CLOSEPOLY else (verts.reshape(-1, 2) - lo) / h)
                for verts, kind in path.iter_segments()]
        out[code] = (segs, (hi[0] - lo[0]) / h)
    return out

def text_glyph(code, font, rng):
    """a text font's drawing of SMuFL glyph `code`, fitted to the glyph's box, then drawn up to 1.8x
    (digits) or 1.3x (accidentals) that height about the box's centre and at most 1.3x its aspect ratio:
    SMuFL's norm is one design, and hand-written faces draw these larger. -> svg <path/>, or None.
    The coordinates are scaled in the path itself, not by a transform, so that mix_glyphs' outline
    (a stroke) keeps its width."""
    got = text_glyphs(font).get(code)
    if got is None:
        return None
    segs, w = got
    y, h, w_ref = TEXT_BOX[code]
    h1 = h * rng.uniform(1.0, 1.3 if code in ('E260', 'E261', 'E262') else 1.8)  # accidental, or digit / C
    sx = min(h1, 1.3 * w_ref * (h1 / h) / max(w, 1e-3))  # x scale: the height's, squeezed if too wide
    scale, shift = np.array([sx, -h1]), np.array([0.0, -(y + h / 2 - h1 / 2)])  # SVG's y axis points down
    d = ''.join(cmd + ' '.join(f'{v:.0f}' for v in (pts * scale + shift).ravel()) for cmd, pts in segs)
    return f'<path d="{d}" />'

def mix_glyphs(svg, rng, donors, p, jitter=0.0, text_donors=()):
    """a 'chimeric font': each glyph verovio drew (note heads, clefs, accidentals, rests, flags, digits)
    swapped, with probability p, for the same SMuFL glyph from a random donor font; with text_donors
    (names in TEXT_DONORS), a digit or accidental may instead come from a text font (text_glyph). With
    jitter > 0, every glyph is also reshaped by a random affine map about its anchor (x and y scale up to
    +-12% * jitter, shear and rotation up to 0.15 and 6 degrees * jitter) and drawn bolder (an outline
    of up to 0.12 staff spaces * jitter). A glyph's anchor sits on its staff position (a note head's on
    its line or space), so the pitch it shows does not move. Every <use> of a glyph points at its one
    definition in <defs>, so a change applies to every copy in the image alike, as a real font would;
    positions and spacing stay the engraving font's. Glyphs a donor lacks stay as they are. -> svg."""
    def swap(m):
        body, code = m.group(3), m.group(2)
        if donors and rng.random() < p:
            # without text donors the draws are those of the study's first corpora, which stay reproducible
            k = int(rng.integers(len(donors) + (len(text_donors) if code in TEXT_CHARS else 0)))
            body = (font_glyphs(donors[k]).get(code) if k < len(donors) else
                    text_glyph(code, text_donors[k - len(donors)], rng)) or body
        if jitter > 0:
            sx, sy = 1 + jitter * rng.uniform(-0.12, 0.12, size=2)
            sh, rot = jitter * rng.uniform(-0.15, 0.15), np.radians(jitter * rng.uniform(-6, 6))
            c, s = np.cos(rot), np.sin(rot)  # rotation @ shear @ scale, as an SVG matrix(a b c d e f)
            a, b, cc, d = c * sx, s * sx, (c * sh - s) * sy, (s * sh + c) * sy
            w = jitter * rng.uniform(0, 30)  # font units: a staff space is 250
            body = (f'<g transform="matrix({a:.4f} {b:.4f} {cc:.4f} {d:.4f} 0 0)" stroke="#000" '
                    f'stroke-width="{w:.1f}" stroke-linejoin="round">{body}</g>')
        return m.group(1) + body + m.group(4)
    head, sep, rest = svg.partition('</defs>')
    return GLYPH_DEF.sub(swap, head) + sep + rest if sep else svg

def mei_events(mei):
    """verovio's own parse of what it drew -> per measure list of events, and the number of ties."""
    root = ET.fromstring(mei)
    sd, clef, msig = root.find(f'.//{MEI_NS}scoreDef'), root.find(f'.//{MEI_NS}clef'), root.find(f'.//{MEI_NS}meterSig')
    head = ((clef.get('shape'), clef.get('line')) if clef is not None else None, sd.get('keysig', '0'),
            (msig.get('sym'), msig.get('count'), msig.get('unit')) if msig is not None else None)
    out, ties = [head], 0
    for meas in root.iter(MEI_NS + 'measure'):
        evs = []
        def walk(el, tup, in_chord):
            for c in el:
                tag = c.tag[len(MEI_NS):]
                t = tup or (3 if tag == 'tuplet' and c.get('num') == '3' else 0)
                if tag == 'rest':
                    evs.append(('r', c.get('dur'), int(c.get('dots', 0)), False, t))
                elif tag in ('mRest', 'multiRest', 'space', 'mSpace'):
                    evs.append(('?', tag))
                elif tag == 'chord' or (tag == 'note' and not in_chord):
                    notes = [c] if tag == 'note' else list(c.iter(MEI_NS + 'note'))
                    ps = []
                    for n in notes:  # the WRITTEN accidental only: what is drawn (accid.ges is playback)
                        acc = n.get('accid')
                        for a in n.iter(MEI_NS + 'accid'):
                            acc = a.get('accid') or acc
                        ps.append((n.get('pname'), int(n.get('oct')), acc))
                    ps.sort(key=lambda p: midi_number((p[0].upper(), p[1], 0)))
                    grace = c.get('grace') is not None  # a grace note inside a triplet bracket is no triplet note
                    evs.append(('n', c.get('dur'), int(c.get('dots', 0)), grace, 0 if grace else t, tuple(ps)))
                else:
                    if tag == 'beam':  # a beam that starts with a grace note draws it full size: wrong
                        ns = list(c.iter(MEI_NS + 'note'))
                        if ns and ns[0].get('grace') and any(not n.get('grace') for n in ns):
                            evs.append(('grace starts a beam',))
                    walk(c, t, in_chord)
        walk(meas, 0, False)
        evs.append(('bar', meas.get('left'), meas.get('right')))
        ties += sum(1 for _ in meas.iter(MEI_NS + 'tie'))
        out.append(evs)
    return out, ties

def compare_events(got, want):
    """mei_events(...) of the engraving against what the label says, in the same form: (head, measure,
    measure, ...) and the number of ties. ValueError ('mismatch in ...') at the first difference."""
    got, got_ties = got
    want, want_ties = want
    if got[0] != want[0]:
        raise ValueError(f'mismatch in clef/key/meter: {got[0]} != {want[0]}')
    if len(got) != len(want):
        raise ValueError(f'mismatch in measure count: {len(got) - 1} != {len(want) - 1}')
    for i, (g, w) in enumerate(zip(got[1:], want[1:])):
        if g != w:
            raise ValueError(f'mismatch in measure {i}: {g} != {w}')
    if got_ties != want_ties:
        raise ValueError(f'mismatch in ties: {got_ties} != {want_ties}')

def rasterize(svg, margin=10):
    """SVG -> grayscale PIL image, black on white, cropped to the ink plus `margin` white pixels."""
    return crop_to_ink(svg_to_gray(svg, skip_system_fonts=True), margin)
