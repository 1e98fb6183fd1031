"""
data/m21_poly/voices.py: the label side of the polyphonic corpus. A MusicXML score becomes ABC with
xml2abc (abctoolkit, W. Vree: the converter LEGATO and PDMX-Synth use), that ABC becomes voices of
cleaned bars, and a window of bars becomes the canonical multi-voice label (rules in README.md):

    %%score [ 1 | 2 | 3 | 4 ]        staves and their voices, renumbered 1..n; '( 1 2 )' = one staff
    L:1/8
    M:4/4
    K:A                               the major key with the drawn signature
    V:1 treble                        one declaration per voice: its clef
    ...
    [V:1] cB | A2 B2 c2 e2 |          one line of bars per voice, every voice the same number of bars

label_to_musicxml (abc2xml, the same converter's other half) is what the image is engraved from.
"""
import contextlib
import io
import re
import warnings
import zipfile
from fractions import Fraction

from engrave import MAJOR  # data/engrave.py, shared with the one-line corpus

TONIC = {'C': 0, 'G': 1, 'D': 2, 'A': 3, 'E': 4, 'B': 5, 'F#': 6, 'C#': 7, 'F': -1, 'Bb': -2, 'Eb': -3, 'Ab': -4,
         'Db': -5, 'Gb': -6, 'Cb': -7, 'G#': 8, 'D#': 9, 'A#': 10, 'Fb': -8}
MODE_SHIFT = {'maj': 0, 'ion': 0, 'min': -3, 'm': -3, 'aeo': -3, 'dor': -2, 'phr': -4, 'lyd': 1, 'mix': -1, 'loc': -5}
CLEFS = ('treble', 'bass', 'alto', 'tenor', 'treble-8', 'bass-8', 'treble+8')


# -----------------------------------------------------------------------------
# MusicXML -> ABC (xml2abc, in this process: it is pure Python and fast, ~10 ms a chorale)

def read_musicxml(path):
    """a corpus file -> MusicXML bytes (.mxl unzipped; kern through music21's parser and writer)."""
    if path.endswith('.krn'):
        import music21
        from music21.musicxml.m21ToXml import GeneralObjectExporter
        return GeneralObjectExporter(music21.converter.parse(path)).parse()
    if path.endswith('.mxl'):
        z = zipfile.ZipFile(path)
        name = next(n for n in z.namelist() if not n.startswith('META') and n.lower().endswith(('.xml', '.musicxml')))
        return z.read(name)
    with open(path, 'rb') as f:
        return f.read()


def xml_to_abc(xml_bytes):
    """MusicXML (bytes) -> xml2abc's ABC text with L:1/8 for every voice, no broken rhythms ('>'),
    no MIDI directives. xml2abc keeps its output object in a module global, so this is not thread-safe
    (the corpus builder runs one piece per process)."""
    from abctoolkit import xml2abc as X
    o = type('Options', (), {})()
    for k, v in dict(u=False, m=0, c=0, d=8, n=0, b=0, o='', v=0, x=True, p=[], j=False, t=False, s=False,
                     v1=False, ped=False, stm=False, i=False).items():
        setattr(o, k, v)
    X.mkBroken = lambda vs: None  # 'd3/2d/' stays as written: one way to write a dotted pair
    X.abcOut = X.ABCoutput('piece.abc', '', 0, o)
    X.abcOut.outfile = buf = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()):
        X.Parser(o).parse(io.BytesIO(xml_bytes))  # parse() ends with abcOut.writeall(): the text is in buf
    return buf.getvalue()


def key_sharps(k):
    """an ABC key ('F#min', 'Dmix', 'Bb', 'C') -> sharps (+) / flats (-) of its signature."""
    m = re.match(r'([A-G][#b]?)\s*([A-Za-z]*)', k.strip())
    if not m or m.group(1) not in TONIC:
        raise ValueError(f'unsupported key {k!r}')
    mode = m.group(2).lower()[:3] or 'maj'
    if mode not in MODE_SHIFT and mode[:1] != 'm':
        raise ValueError(f'unsupported key {k!r}')
    s = TONIC[m.group(1)] + MODE_SHIFT.get(mode, -3)
    if not -7 <= s <= 7:
        raise ValueError(f'unsupported key {k!r}')
    return s


# -----------------------------------------------------------------------------
# xml2abc's ABC -> header + voices of cleaned bars

_TOKEN = re.compile(r"""
    (?P<field>\[[A-Za-z]:[^\]\n]*\])          # inline field [K:G] [M:3/4] [I:..]
  | (?P<bar>:*\|[\]|:]*\d*[\d,-]*|\[\|\]?|:{2,})  # bar lines, repeats; digits = a volta
  | (?P<volta>\[\d[\d,-]*)
  | (?P<deco>![^!\n]*!|\+[^+\s]*\+|"[^"\n]*")  # decorations, dynamics, annotations: not in the label
  | (?P<grace>\{[^}\n]*\})                      # grace notes: dropped from label and image alike
  | (?P<tuplet>\(\d(?::\d*)*)
  | (?P<slur>[()])
  | (?P<chord>\[[^\]\[\n]*\][\d/]*-?)
  | (?P<note>[_^=]*[A-Ga-g][,']*[\d/]*-?)
  | (?P<rest>[zxZX][\d/]*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.X)
_DROP = set('.~HLMOPSTuvy$') | {'-'}  # staccato, ornaments, spacers, line breaks; a lone tie after a slur


def meter_units(m):
    """M: value -> length of one bar in eighths (L:1/8), None for free meter."""
    m = m.strip()
    if m in ('C', 'C|'):
        return Fraction(8)
    mm = re.fullmatch(r'(\d+(?:\+\d+)*)/(\d+)', m)
    if not mm:
        return None
    return Fraction(sum(int(x) for x in mm.group(1).split('+')) * 8, int(mm.group(2)))


def parse_score(spec):
    """'%%score' value -> (staves, brace): staves = lists of voice numbers, '( 1 2 )' = one staff."""
    staves, cur = [], None
    for t in re.findall(r'\(|\)|\d+', spec):
        if t == '(':
            cur = []
        elif t == ')':
            staves.append(cur)
            cur = None
        elif cur is not None:
            cur.append(int(t))
        else:
            staves.append([int(t)])
    return staves, spec.strip().startswith('{')


def split_voices(abc):
    """xml2abc's output -> dict(meter, key, staves, brace, clefs {voice: clef}, voices {voice: [bar]}).
    bar = dict(music, bar, meter, key, reason): music = the bar's cleaned notes, one space between
    beam groups; bar = the bar line that closes it; meter/key in force at its start; reason = why it
    cannot be in a label (None when it can)."""
    head, body, cur = {}, {}, None
    clefs, score = {}, None
    for line in abc.splitlines():
        line = line.rstrip()
        if re.fullmatch(r'V:\s*\d+', line):
            cur = int(line[2:])
            body.setdefault(cur, [])
            continue
        if cur is None:  # the header
            if line.startswith('%%score'):
                score = line[len('%%score'):]
            elif re.match(r'V:\s*\d+', line):
                n, rest = re.match(r'V:\s*(\d+)\s*(.*)', line).groups()
                words = re.sub(r'\w+="[^"]*"', '', rest).split()
                clef = next((w.replace('clef=', '') for w in words if w.replace('clef=', '') in CLEFS), 'treble')
                clefs[int(n)] = clef
                if any(w.startswith(('perc', 'map=', 'tab')) for w in words):
                    clefs[int(n)] = 'perc'
            elif line[:2] in ('M:', 'K:', 'L:') and line[:2] not in head:
                head[line[:2]] = line[2:].strip()
            continue
        if line[:2] in ('w:', 'W:') or line.startswith('%'):
            continue
        if re.match(r'[A-Za-z]:', line):  # a field line inside a voice: K:/M: changes become inline fields
            line = f'[{line}]' if line[:2] in ('K:', 'M:', 'L:') else ''
        body[cur].append(re.sub(r'\s%.*$', '', line))
    if head.get('L:', '1/8') != '1/8':
        raise ValueError('unit length is not 1/8')
    voices = {}
    for n, lines in body.items():
        voices[n] = _bars(' '.join(lines), head.get('M:', 'none'), head.get('K:', 'C'))
    staves, brace = parse_score(score) if score else ([[n] for n in sorted(voices)], False)
    staves = [[v for v in st if v in voices] for st in staves]
    return dict(meter=head.get('M:', 'none'), key=head.get('K:', 'C'), staves=[s for s in staves if s], brace=brace,
                clefs=clefs, voices=voices)


def _bars(text, meter, key, clef=None):
    bars, music, reason = [], [], None
    start = (meter, key, clef)

    def close(bar):
        nonlocal music, reason, start
        bars.append(dict(music=re.sub(r'\s+', ' ', ''.join(music)).strip(), bar=bar, meter=start[0], key=start[1],
                         clef=start[2], reason=reason))
        music, reason, start = [], None, (meter, key, clef)

    for m in _TOKEN.finditer(text):
        kind, t = m.lastgroup, m.group()
        if kind == 'field':
            f, v = t[1], t[3:-1].strip()
            if f in 'KM':
                inside = bool(''.join(music).strip())  # a change inside a bar, not at its start
                if f == 'M':
                    meter = v
                else:
                    words = v.split()
                    clefs = [w.replace('clef=', '') for w in words if w.replace('clef=', '') in CLEFS]
                    keys = [w for w in words if '=' not in w and w not in CLEFS]
                    key = keys[0] if keys else key
                    clef = clefs[0] if clefs else clef
                if inside:
                    reason = reason or 'key/meter/clef change inside a bar'
                else:
                    start = (meter, key, clef)
            elif f == 'L' and v != '1/8':
                reason = reason or 'unit length change'
        elif kind == 'bar':
            if re.search(r'\d', t):  # '|1', ':|2': a volta starts in the next bar
                t = re.sub(r'[\d,-]+$', '', t) or '|'
                reason_next = 'volta'
            else:
                reason_next = None
            close(t)
            if reason_next:
                reason = reason_next
        elif kind == 'volta':
            reason = reason or 'volta'
        elif kind in ('deco', 'grace', 'slur'):
            continue
        elif kind == 'rest':
            if t[0] == 'Z':
                units = meter_units(meter)
                if t[1:] not in ('', '1') or units is None:
                    reason = reason or 'multi-measure rest'
                    continue
                t = 'z' + _len(units)
            elif t[0] in 'xX':
                t = 'z' + t[1:]  # an invisible rest becomes a drawn one: the image shows what the label says
            music.append(t)
        elif kind in ('note', 'chord', 'tuplet', 'space'):
            music.append(t)
        elif t in _DROP:
            continue
        else:
            reason = reason or f'unsupported symbol {t!r}'
    if ''.join(music).strip():
        close('|')
    return bars


def _len(units):
    """a length in eighths -> ABC suffix ('' for 1, '2', '3/2', '/')."""
    units = Fraction(units)
    if units == 1:
        return ''
    if units.denominator == 1:
        return str(units.numerator)
    return f'{units.numerator if units.numerator != 1 else ""}/{units.denominator}'


# -----------------------------------------------------------------------------
# a window of bars -> the canonical label

def label_of(piece, a, b, staves, clefs, brace=None, force_clefs=False):
    """bars a..b-1 of `piece` (split_voices) on `staves` (lists of the piece's voice numbers; the
    first staff's voice comes first) -> canonical label; brace: '{ }' round the staves (a grand staff),
    default: as the piece has it; force_clefs: `clefs` even where the piece changed clef before the
    window (a grand staff of four parts). ValueError when a bar cannot be written."""
    brace = piece['brace'] and len(staves) == 2 if brace is None else brace
    order = [v for st in staves for v in st]
    first = piece['voices'][order[0]]
    if b > max(len(piece['voices'][v]) for v in order) or a < 0:
        raise ValueError('window outside the piece')
    meter, key = first[a]['meter'], first[a]['key']
    units = meter_units(meter)
    lines = []
    for v in order:
        bars = piece['voices'][v][a:b]
        if len(bars) < b - a:  # a voice that ended early: padded with whole-bar rests
            if units is None:
                raise ValueError('voice ends early in free meter')
            pad = dict(music='z' + _len(units), bar='|', meter=meter, key=key, clef=bars[-1]['clef'] if bars else None, reason=None)
            bars = bars + [pad] * (b - a - len(bars))
        for bar in bars:
            if bar['reason']:
                raise ValueError(bar['reason'])
            if bar['meter'] != meter or key_sharps(bar['key']) != key_sharps(key):
                raise ValueError('key/meter change')
            if bar['clef'] != bars[0]['clef'] and not force_clefs:
                raise ValueError('clef change')
            if not bar['music']:
                raise ValueError('empty bar')
        # a repeat that starts at the window's first bar is written at its start; one that the
        # window cuts ('::' at its end) becomes an end repeat
        prev = piece['voices'][v][a - 1]['bar'] if a > 0 and a - 1 < len(piece['voices'][v]) else ''
        opener = '|: ' if prev.endswith(':') and prev != ':' else ''
        if force_clefs and (bars[0].get('clef') or piece['clefs'].get(v)) == 'treble-8' and clefs[_staff_of(staves, v)[0]] != 'treble-8':
            bars = [dict(bar, music=octave_down(bar['music'])) for bar in bars]
        body = ' '.join(f"{bar['music']} {_bar(bar['bar'], last=k == len(bars) - 1)}" for k, bar in enumerate(bars))
        lines.append(f'[V:{order.index(v) + 1}] {opener}{body}')
    num = {v: i + 1 for i, v in enumerate(order)}
    spec = ' | '.join(str(num[st[0]]) if len(st) == 1 else '( ' + ' '.join(str(num[v]) for v in st) + ' )' for st in staves)
    head = [f"%%score {'{' if brace else '['} {spec} {'}' if brace else ']'}",
            'L:1/8', f'M:{meter}', f'K:{MAJOR[key_sharps(key)]}']
    for st in staves:
        first_bar = piece['voices'][st[0]][a]
        for v in st:
            head.append(f"V:{num[v]} {clefs[st[0]] if force_clefs else first_bar.get('clef') or clefs[st[0]]}")
    return '\n'.join(head + lines)


_PITCH = re.compile(r"([_^=]*)([A-Ga-g])([,']*)")


def octave_down(music):
    """every pitch of a bar's music an octave lower (c -> C, C -> C,, c' -> c). xml2abc writes a
    treble-8 voice at its written pitch and lets the clef sound it an octave down; a kind-a label moves
    that voice onto a bass staff, so the pitches themselves must come down."""
    def down(m):
        acc, letter, marks = m.groups()
        if "'" in marks:
            return acc + letter + marks[:-1]
        return acc + (letter.upper() + marks if letter.islower() else letter + marks + ',')
    return _PITCH.sub(down, music)


def _bar(t, last):
    """bar lines in labels: '|', '||', '|]', '|:', ':|', and ':|' for a '::' the window ends on."""
    t = t.replace('[|', '||')
    if t.startswith(':') and t.endswith(':'):
        return ':|' if last else ':||:'
    if t.endswith(':') and last:
        return '|'
    return t if t in ('|', '||', '|]', '|:', ':|') else '|'


def _staff_of(staves, v):
    return next(st for st in staves if v in st)


def label_to_musicxml(label):
    """the label -> MusicXML text with abc2xml: what verovio engraves and what the agreement check
    reads as the label's meaning. ValueError if abc2xml produces nothing."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # abc2xml uses pyparsing's deprecated camelCase names
        from abctoolkit.abc2xml import fixDoctype, getXmlDocs
        docs = getXmlDocs('X:1\n' + label + '\n', 0, 1, False, False, False)
    if not docs:
        raise ValueError('abc2xml failed')
    return fixDoctype(docs[0])
