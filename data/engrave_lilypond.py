"""
data/engrave_lilypond.py: the LilyPond engraver (pip `lilypond`, which ships the binaries) for the corpus builders:

    canonical ABC label --music21--> score, beams set from the label --> MusicXML
    MusicXML --re-read by music21--> must rewrite to the very label (check_musicxml: the agreement check)
    MusicXML --musicxml2ly--> LilyPond music --our page settings, many excerpts in one call--> lilypond SVG
    SVG --its bar lines counted--> must be the label's (check_bars)
    SVG --resvg--> grayscale image at a chosen staff space, cropped to the ink plus a white margin

abc2ly is not used: it misplaces bar lines after broken rhythms. music21 ignores ABC's beaming, so the
beams are set from the label, whose spacing between notes is its beaming (data/m21/README.md).
Starting lilypond costs ~0.15 CPU-s and musicxml2ly ~0.3, so draw() engraves a batch of excerpts, each in
its own \\book, in one lilypond call, and musicxml2ly runs as a server that stays up.
"""
import atexit
import functools
import multiprocessing.util
import os
import re
import select
import subprocess
import tempfile

from canonical import mark_ties, parse_abc, score_to_measures, write_excerpt  # data/m21/ (on the builders' sys.path)
from inference.render import crop_to_ink, svg_to_gray  # the repo (on the builders' sys.path)

BEAM_LEVELS = {'eighth': 1, '16th': 2, '32nd': 3, '64th': 4}
# text LilyPond writes as <text> (triplet digits): resvg gets these files for 'serif'
TEXT_FONTS = ('DejaVuSerif', 'DejaVuSerif-Italic', 'STIXGeneral', 'STIXGeneralItalic')


def available():
    try:
        import lilypond
        return os.path.isfile(lilypond.executable()) and os.path.isfile(lilypond.executable('musicxml2ly'))
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def font_files():
    import matplotlib
    d = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')
    return [os.path.join(d, f + '.ttf') for f in TEXT_FONTS]


def sample_layout(rng):
    """per-excerpt page options: LilyPond's staff size (it picks its font's optical size from it, so the
    glyphs' weight and proportions change), horizontal spacing, line and beam thickness; then the staff
    space in pixels of the image (the training range 18-27) and the white margin."""
    return dict(space=round(float(rng.uniform(18, 27)), 2), margin=int(rng.integers(6, 20)),
                staff_size=int(rng.integers(14, 27)),
                spacing_increment=round(float(rng.uniform(0.9, 1.6)), 3),   # LilyPond's default 1.2
                shortest_space=round(float(rng.uniform(1.4, 2.6)), 3),      # default 2.0
                staff_thickness=round(float(rng.uniform(0.8, 1.5)), 2),     # x the default line width
                beam_thickness=round(float(rng.uniform(0.4, 0.55)), 3),     # staff spaces, default 0.48
                serif=('DejaVu Serif', 'STIXGeneral')[int(rng.integers(2))])

# -----------------------------------------------------------------------------
# label -> MusicXML, and the agreement check


def beam_groups(label):
    """the label's beaming: for each non-grace note, chord or rest of the music line in order, the index
    of the space-separated group it is written in (groups of one are not beamed)."""
    out = []
    for k, tok in enumerate(label.rsplit('\n', 1)[1].split()):
        if set(tok) <= set('|:]['):
            continue  # a bar line
        tok = re.sub(r'\{[^}]*\}|\(3|-', '', tok)
        out += [k] * len(re.findall(r"\[[^\]]*\]|[=^_]*[A-Ga-gz][,']*[0-9/]*", tok))
    return out


def _set_beams(notes):
    """music21 beams for one beam group (a list of notes of an eighth or shorter): the primary beam over
    all of them, each further level over the runs of notes that have it, a lone note's as a partial beam
    (right at the group's start, else left)."""
    from music21 import beam
    levels = [BEAM_LEVELS[n.duration.type] for n in notes]
    for n in notes:
        n.beams = beam.Beams()
    for lv in range(1, max(levels) + 1):
        i = 0
        while i < len(notes):
            if levels[i] < lv:
                i += 1
                continue
            j = i
            while j + 1 < len(notes) and levels[j + 1] >= lv:
                j += 1
            if j == i:
                notes[i].beams.append(beam.Beam('partial', direction='right' if i == 0 else 'left'))
            else:
                for k in range(i, j + 1):
                    notes[k].beams.append(beam.Beam('start' if k == i else 'stop' if k == j else 'continue'))
            i = j + 1
        for n in notes:  # level = number, whatever Beams.append numbered them
            for b_i, b in enumerate(n.beams.beamsList):
                b.number = b_i + 1


BARS = ('|', '||', '|]', ':|', '|:', ':||:')


def read_label(label):
    """a canonical label -> music21 score (canonical.parse_abc), its bar lines set from the label:
    music21's ABC reader finds no measures in a line without two plain bar lines, and turns a closing
    ':|' into a final bar, so it reads the line with plain bars and the label's own are put back."""
    from music21 import bar, clef, stream
    head, body = label.rsplit('\n', 1)
    toks = body.split()
    lead = bool(toks) and toks[0] == '|:'
    toks = toks[1:] if lead else toks
    bars = [t for t in toks if t in BARS]
    score = parse_abc('X:1\n' + head + '\n' + ' '.join('|' if t in BARS else t for t in toks))
    part = score.parts[0] if score.parts else score
    measures = list(part.getElementsByClass(stream.Measure))
    if len(measures) != len(bars):
        raise ValueError(f'mismatch in measures music21 read: {len(measures)} != {len(bars)}')
    for i, (m, t) in enumerate(zip(measures, bars)):
        m.rightBarline = {'||': bar.Barline('double'), '|]': bar.Barline('final'), ':|': bar.Repeat(direction='end'),
                          ':||:': bar.Repeat(direction='end')}.get(t)
        if t in ('|:', ':||:') and i + 1 < len(measures):
            measures[i + 1].leftBarline = bar.Repeat(direction='start')
    if lead:
        measures[0].leftBarline = bar.Repeat(direction='start')
    # the label's clef (none: treble), set here: music21 picks one by range and ignores clef=alto/tenor
    m = re.search(r'clef=(\w+)', head.rsplit('\n', 1)[-1])
    name = m.group(1) if m else 'treble'
    if name not in ('treble', 'bass', 'alto', 'tenor'):
        raise ValueError(f'unknown clef {name!r} in the label')
    if measures:
        measures[0].clef = {'treble': clef.TrebleClef, 'bass': clef.BassClef, 'alto': clef.AltoClef,
                            'tenor': clef.TenorClef}[name]()
    return score


def label_score(label):
    """the label read by music21 (read_label), with the label's beams, no stem directions (LilyPond
    chooses), and the first measure marked implicit when it is a pickup (LilyPond's \\partial)."""
    from music21 import stream
    score = read_label(label)
    part = score.parts[0] if score.parts else score
    events = [n for n in part.recurse().notesAndRests if not n.duration.isGrace]
    groups = beam_groups(label)
    if len(groups) != len(events):
        raise ValueError(f'mismatch in events music21 read: {len(events)} != {len(groups)}')
    beamable = lambda n: not n.isRest and n.duration.type in BEAM_LEVELS
    for k in sorted(set(groups)):
        g = [n for n, gk in zip(events, groups) if gk == k]
        if len(g) > 1:
            if not all(beamable(n) for n in g):
                raise ValueError('mismatch in beams: a group with a rest or a long note')
            _set_beams(g)
    for n in part.recurse().notes:
        n.stemDirection = None
    measures = list(part.getElementsByClass(stream.Measure))
    if measures and measures[0].paddingLeft > 0:
        measures[0].showNumber = stream.enums.ShowNumber.NEVER  # -> <measure implicit="yes">
    for s in [score, part] + measures:
        s.streamStatus.beams = True  # music21 must not re-beam on export
    return score


def to_musicxml(score):
    """music21 score -> MusicXML text, with no title, composer or software credit (musicxml2ly would
    print them) and no stem directions."""
    from music21.musicxml.m21ToXml import GeneralObjectExporter
    xml = GeneralObjectExporter(score).parse().decode('utf-8')
    xml = re.sub(r'<(work|movement-title|identification|credit)\b.*?</\1>\s*', '', xml, flags=re.S)
    return re.sub(r'\s*<stem>[a-z]+</stem>', '', xml)


def check_musicxml(xml, label):
    """the agreement check: the MusicXML LilyPond is given, read back by music21 and written as a
    canonical label, must be the label itself (clef, key, meter, every note, rest, accidental, duration,
    grace, triplet, tie and bar line), and its beams must be the label's groups. ValueError('mismatch ..')"""
    import music21
    score = music21.converter.parse(xml, format='musicxml', forceSource=True)
    for r in list(score.recurse().getElementsByClass('Rest')):
        if r.style.hideObjectOnPrint:  # music21's reader fills a short measure with hidden rests: not in the file
            r.activeSite.remove(r)
    measures = score_to_measures(score)
    if not all(m['ok'] for m in measures):
        raise ValueError('mismatch: a measure music21 cannot label')
    mark_ties(measures)
    again = write_excerpt(measures)
    if again != label:
        raise ValueError(f'mismatch in the MusicXML: {again!r} != {label!r}')
    part = score.parts[0] if score.parts else score
    events = [n for n in part.recurse().notesAndRests if not n.duration.isGrace]
    got, k = [], 0
    for n in events:  # group index from the primary beam: a new group unless it continues or stops one
        b = n.beams.getByNumber(1) if getattr(n, 'beams', None) and len(n.beams) else None
        if b is None or b.type in ('start', 'partial'):
            k += 1
        got.append(k)
    want = beam_groups(label)
    same = lambda g: [sum(1 for x in g if x == v) for v in dict.fromkeys(g)]
    if same(got) != same(want):
        raise ValueError(f'mismatch in beams: {same(got)} != {same(want)}')

# -----------------------------------------------------------------------------
# MusicXML -> LilyPond music (musicxml2ly) -> SVG (lilypond, batched)

# musicxml2ly, run in the Python that ships with LilyPond as a server that stays up (one per process that
# draws): its start-up (0.35 s of imports) would otherwise be paid per call. It reads a line of tab-separated
# MusicXML paths, writes each one's .ly beside it, and answers 'done'. Output '-' (stdout, swapped for the
# file) also skips musicxml2ly's convert-ly pass. The server ends when its stdin closes.
SERVER_M2L = r'''
import os, runpy, sys
# lilylib (imported by musicxml2ly) detaches sys.stdin/stdout: the protocol uses copies of the descriptors
script, inp, proto = sys.argv[1], os.fdopen(os.dup(0), 'r'), os.fdopen(os.dup(1), 'w')
for line in inp:
    for xml in line.rstrip('\n').split('\t'):
        sys.stdout = open(xml[:-4] + '.ly', 'w', encoding='utf-8')
        try:
            mod = runpy.run_path(script, run_name='musicxml2ly_batch')
            sys.argv = ['musicxml2ly', '--no-stem-directions', '--no-page-layout', '-o', '-', xml]
            mod['main']()
        except BaseException:
            pass
        finally:
            sys.stdout.close()
    proto.write('done\n')
    proto.flush()
'''
_servers = {}  # os.getpid() -> the server: a forked worker starts its own rather than share its parent's pipes


def musicxml2ly(xml_paths, timeout=300):
    """MusicXML files -> the LilyPond file musicxml2ly writes beside each ('x.xml' -> 'x.ly'); a file it
    could not convert is simply not written (draw() reports it)."""
    import lilypond
    root = os.path.dirname(os.path.dirname(lilypond.executable()))
    py = os.path.join(root, 'libexec', 'python3.10')
    script = os.path.join(root, 'libexec', 'musicxml2ly')
    if not os.path.isfile(py):  # another packaging of lilypond: the plain wrapper, one call per file
        for x in xml_paths:
            subprocess.run([lilypond.executable('musicxml2ly'), '--no-stem-directions', '--no-page-layout',
                            '-o', x[:-4] + '.ly', x], capture_output=True, timeout=timeout)
        return
    p = _servers.get(os.getpid())
    if p is None or p.poll() is not None:
        p = _servers[os.getpid()] = subprocess.Popen([py, '-c', SERVER_M2L, script], stdin=subprocess.PIPE,
                                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # stop it when this process ends, and wait for it, so that its CPU time counts as this process's
        # children's (builder.cpu_seconds); a forked pool worker runs multiprocessing's finalizers, not atexit
        atexit.register(_stop_server)
        multiprocessing.util.Finalize(None, _stop_server, exitpriority=10)
    try:
        p.stdin.write('\t'.join(xml_paths) + '\n')
        p.stdin.flush()
        if not select.select([p.stdout], [], [], timeout)[0] or p.stdout.readline() != 'done\n':
            raise OSError('musicxml2ly server stopped')
    except OSError:  # hung or died: the next call starts a fresh one
        p.kill()
        p.wait()
        _servers.pop(os.getpid(), None)


def _stop_server():
    p = _servers.pop(os.getpid(), None)
    if p is not None:
        try:
            p.stdin.close()
            p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            p.kill()


def server_cpu_seconds():
    """CPU seconds the musicxml2ly servers of this process have used so far (os.times() does not count
    a child that has not exited)."""
    total = 0.0
    for p in _servers.values():
        try:
            with open(f'/proc/{p.pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def music_of(ly):
    """musicxml2ly's file -> its one voice's music expression ('\\relative ... { ... }'), balanced braces."""
    m = re.search(r'^[A-Za-z]+ = *\n?(\\relative [^{]*)\{', ly, re.M)
    if m is None:
        raise ValueError('musicxml2ly wrote no voice')
    i, depth = m.end(), 1
    while depth and i < len(ly):
        depth += {'{': 1, '}': -1}.get(ly[i], 0)
        i += 1
    if depth:
        raise ValueError('musicxml2ly wrote unbalanced braces')
    return m.group(1) + '{' + ly[m.end():i]


def book(k, music, layout):
    """one excerpt as a LilyPond \\book of its own: one line (no breaks, ragged right), no header,
    title, tagline or bar numbers, our staff size, spacing and line widths."""
    lay = layout
    return rf'''\book {{
  \bookOutputSuffix "{k}"
  \paper {{ indent = 0 ragged-right = ##t ragged-last = ##t line-width = 400\cm paper-width = 420\cm
           paper-height = 40\cm print-page-number = ##f tagline = ##f
           oddHeaderMarkup = ##f evenHeaderMarkup = ##f oddFooterMarkup = ##f evenFooterMarkup = ##f }}
  \header {{ tagline = ##f }}
  \score {{
    \new Staff \with {{ \override StaffSymbol.thickness = #{lay['staff_thickness']} }} {{
      \override Score.NonMusicalPaperColumn.line-break-permission = ##f
      \override Score.BarNumber.break-visibility = ##(#f #f #f)
      \override Score.SpacingSpanner.spacing-increment = #{lay['spacing_increment']}
      \override Score.SpacingSpanner.shortest-duration-space = #{lay['shortest_space']}
      \override Beam.beam-thickness = #{lay['beam_thickness']}
      {music}
    }}
    \layout {{ #(layout-set-staff-size {lay['staff_size']}) }}
  }}
}}
'''


STAFF_LINE = re.compile(r'<g transform="translate\(([-0-9.]+), ([-0-9.]+)\)">\s*<line [^>]*x1="([-0-9.]+)" y1="0" x2="([-0-9.]+)" y2="0"/>')
REACH = 10  # staff spaces kept above and below the staff: four ledger lines, a stem and a beam or digit


def staff_box(svg):
    """-> (x0, x1, y_top, y_bottom) of the one staff LilyPond drew, in SVG units; ValueError if it drew
    several lines of music (a break) or none."""
    lines = [(float(x) + float(a), float(x) + float(b), float(y)) for x, y, a, b in STAFF_LINE.findall(svg)
             if float(b) - float(a) > 5]  # ledger lines are short
    ys = sorted({round(y, 3) for _, _, y in lines})
    if len(ys) != 5:
        raise ValueError(f'LilyPond drew {len(ys)} staff lines, not one five-line staff')
    return min(l[0] for l in lines), max(l[1] for l in lines), ys[0], ys[-1]


def check_bars(svg, label):
    """the part of the agreement check made on LilyPond's own drawing: its bar lines (rectangles as
    tall as the staff) against the label's, '|' one stroke, every other bar line two (thin and thick,
    or two thick ones for ':||:'). ValueError('mismatch in bar lines ..') if musicxml2ly or LilyPond
    moved, added or dropped one (e.g. a measure shorter than the meter in mid-line)."""
    _, _, top, bottom = staff_box(svg)
    got = sum(1 for h in re.findall(r'<rect x="0.0000" y="[-0-9.]+" width="[0-9.]+" height="([0-9.]+)" ry="0.0000"', svg)
              if abs(float(h) - (bottom - top)) < 0.01)
    want = sum(1 if t == '|' else 2 for t in label.rsplit('\n', 1)[1].split() if t in BARS)
    if got != want:
        raise ValueError(f'mismatch in bar lines: {got} != {want}')


def rasterize(svg, layout):
    """LilyPond's SVG page -> grayscale PIL image at layout['space'] pixels per staff space, cropped to
    the ink plus layout['margin'] white pixels (as data/engrave.py's rasterize does for verovio). Only a
    band around the staff is rendered: the page itself is 4 m wide so that the line never breaks."""
    x0, x1, top, bottom = staff_box(svg)
    sp = (bottom - top) / 4
    vb = (x0 - 2 * sp, top - REACH * sp, x1 - x0 + 4 * sp, bottom - top + 2 * REACH * sp)
    m = re.search(r'width="[0-9.]+mm" height="[0-9.]+mm" viewBox="[-0-9. ]+"', svg)
    if m is None:
        raise ValueError('LilyPond SVG without a viewBox')
    svg = svg.replace(m.group(0), 'width="{2:.4f}" height="{3:.4f}" viewBox="{0:.4f} {1:.4f} {2:.4f} {3:.4f}"'.format(*vb), 1)
    img = svg_to_gray(svg, skip_system_fonts=True, zoom=layout['space'] / sp, font_files=font_files(),
                      serif_family=layout['serif'], font_family=layout['serif'])
    return crop_to_ink(img, layout['margin'])


def draw(labels, layouts, svg_only=False):
    """engrave a batch of labels, one lilypond call -> list with, per label, a PIL image (svg_only:
    LilyPond's SVG) or the ValueError that skipped it (agreement check, musicxml2ly or lilypond failure)."""
    import lilypond
    out = [None] * len(labels)
    with tempfile.TemporaryDirectory(prefix='nanoomr-ly-') as tmp:
        xmls = {}
        for k, label in enumerate(labels):
            try:
                xml = to_musicxml(label_score(label))
                check_musicxml(xml, label)
            except ValueError as e:
                out[k] = e
                continue
            except Exception as e:  # music21 raises many exception types on what it cannot read
                out[k] = ValueError(f'music21: {type(e).__name__}')
                continue
            xmls[k] = os.path.join(tmp, f'x{k}.xml')
            with open(xmls[k], 'w', encoding='utf-8') as f:
                f.write(xml)
        if not xmls:
            return out
        musicxml2ly(list(xmls.values()))
        books = []
        for k, path in xmls.items():
            try:
                with open(path[:-4] + '.ly', encoding='utf-8') as f:
                    music = music_of(f.read())
                if labels[k].endswith(' |'):  # LilyPond leaves out the plain bar after an incomplete last measure
                    music += ' \\bar "|"'
                if labels[k].rsplit('\n', 1)[1].startswith('|:'):  # and a start repeat at the very start
                    music = '\\bar ".|:" ' + music
                books.append(book(k, music, layouts[k]))
            except (OSError, ValueError) as e:
                out[k] = ValueError(f'musicxml2ly: {e}')
        with open(os.path.join(tmp, 'all.ly'), 'w', encoding='utf-8') as f:
            f.write('\\version "2.24.0"\n' + ''.join(books))
        subprocess.run([lilypond.executable(), '-dbackend=svg', '-dno-point-and-click', '-s',
                        '-o', os.path.join(tmp, 'p'), os.path.join(tmp, 'all.ly')], capture_output=True, timeout=600)
        for k in xmls:
            if out[k] is not None:
                continue
            path = os.path.join(tmp, f'p-{k}.svg')
            try:
                with open(path, encoding='utf-8') as f:
                    svg = f.read()
                check_bars(svg, labels[k])
                out[k] = svg if svg_only else rasterize(svg, layouts[k])
            except OSError:
                out[k] = ValueError('lilypond drew nothing')
            except ValueError as e:
                out[k] = e
    return out
