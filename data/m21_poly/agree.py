"""
data/m21_poly/agree.py: the agreement check of the polyphonic corpus. verovio's MEI of what it drew is
read back per staff and layer (pitches, durations, rests, chords, ties, bars) and compared with the
label, read two ways:
  - the label's MusicXML from abc2xml (the reference ABC reader), event for event;
  - the label text itself, by our own token count: bars, and notes/chords/rests per voice, so that a
    symbol abc2xml silently dropped is caught too.
Any difference raises ValueError('mismatch in ...'): the corpus builder skips the excerpt and counts it.
"""
import re
import xml.etree.ElementTree as ET
from fractions import Fraction

MEI = '{http://www.music-encoding.org/ns/mei}'
ACCID = {'s': 1, 'f': -1, 'n': 0, 'ss': 2, 'x': 2, 'ff': -2, 'ns': 1, 'nf': -1}


def _pitch_mei(n):
    acc = n.get('accid') or n.get('accid.ges')
    for a in n.iter(MEI + 'accid'):
        acc = a.get('accid') or a.get('accid.ges') or acc
    return (n.get('pname').upper(), int(n.get('oct')), ACCID.get(acc, 0) if acc else 0)


def mei_staves(mei):
    """verovio's MEI -> dict(head=[(clef, fifths, meter) per staff], staves={n: [voice, ...]}, measures, ties)
    where a voice = tuple of measures, a measure = tuple of events ('n', pitches, quarters) / ('r', quarters)."""
    root = ET.fromstring(mei)
    head = []
    for sd in root.iter(MEI + 'staffDef'):
        ppq = int(sd.get('ppq', '0') or 0)
        c, k, m = sd.find(MEI + 'clef'), sd.find(MEI + 'keySig'), sd.find(MEI + 'meterSig')
        sig = k.get('sig', '0') if k is not None else '0'
        fifths = 0 if sig in ('0', '') else int(sig[:-1]) * (1 if sig[-1] == 's' else -1)
        clef = (c.get('shape'), c.get('line'), c.get('dis') and int(c.get('dis')) * (1 if c.get('dis.place') == 'above' else -1)) \
            if c is not None else None
        meter = (m.get('sym') or f"{m.get('count')}/{m.get('unit')}") if m is not None else None
        head.append((int(sd.get('n')), clef, fifths, meter, ppq))
    ppq = {n: p for n, _, _, _, p in head}
    layers, n_measures, ties = {}, 0, 0
    for meas in root.iter(MEI + 'measure'):
        n_measures += 1
        ties += sum(1 for _ in meas.iter(MEI + 'tie'))
        for st in meas.findall(MEI + 'staff'):
            s = int(st.get('n'))
            for ly in st.findall(MEI + 'layer'):
                evs = []

                def walk(el):
                    for c in el:
                        tag = c.tag[len(MEI):]
                        q = Fraction(int(c.get('dur.ppq')), ppq[s]) if c.get('dur.ppq') and ppq[s] else c.get('dur')
                        if tag == 'rest':
                            evs.append(('r', q))
                        elif tag in ('mRest', 'multiRest'):
                            evs.append(('r', 'bar'))
                        elif tag in ('space', 'mSpace'):
                            evs.append(('s', q))
                        elif tag == 'chord':
                            evs.append(('n', tuple(sorted(_pitch_mei(x) for x in c.iter(MEI + 'note'))), q))
                        elif tag == 'note':
                            evs.append(('n', (_pitch_mei(c),), q))
                        else:
                            walk(c)
                walk(ly)
                layers.setdefault(s, {}).setdefault(int(ly.get('n')), []).append((n_measures, tuple(evs)))
    return dict(head=[h[1:4] for h in sorted(head)], staves=_voices(layers, n_measures), measures=n_measures, ties=ties)


def _voices(layers, n_measures):
    """{staff: {layer: [(measure number, events)]}} -> {staff: sorted voices}, a voice = one tuple per
    measure (a layer absent from a measure: empty). Layers are compared as a set: the two readers
    need not number them alike."""
    out = {}
    for s, lys in layers.items():
        vs = []
        for rows in lys.values():
            by = dict(rows)
            vs.append(tuple(by.get(i, ()) for i in range(1, n_measures + 1)))
        out[s] = sorted(vs, key=repr)
    return out


def musicxml_staves(xml):
    """abc2xml's MusicXML -> the same structure as mei_staves."""
    root = ET.fromstring(xml.encode() if isinstance(xml, str) else xml)
    head, layers, ties, base, n_measures = [], {}, 0, 0, 0
    for part in root.iter('part'):
        divs, n_staves = 1, 1
        for i, meas in enumerate(part.findall('measure'), 1):
            n_measures = max(n_measures, i)
            for el in meas:
                if el.tag == 'attributes':
                    divs = int(el.findtext('divisions') or divs)
                    n_staves = int(el.findtext('staves') or n_staves)
                    if i == 1:
                        k, t = el.find('key'), el.find('time')
                        clefs = {int(c.get('number', '1')): c for c in el.findall('clef')}
                        meter = None
                        if t is not None:
                            sym = t.get('symbol')
                            meter = {'common': 'common', 'cut': 'cut'}.get(sym) or f"{t.findtext('beats')}/{t.findtext('beat-type')}"
                        for s in range(1, n_staves + 1):
                            c = clefs.get(s)
                            oc = c.findtext('clef-octave-change') if c is not None else None
                            clef = (c.findtext('sign'), c.findtext('line'), int(oc) * 8 // abs(int(oc)) if oc and int(oc) else None) \
                                if c is not None else None
                            head.append((base + s, clef, int(k.findtext('fifths')) if k is not None else 0, meter))
                elif el.tag == 'note':
                    if el.find('grace') is not None:
                        continue
                    s = base + int(el.findtext('staff') or 1)
                    v = el.findtext('voice') or '1'
                    q = Fraction(int(el.findtext('duration') or 0), divs)
                    ties += sum(1 for t in el.iter('tied') if t.get('type') == 'start')
                    evs = layers.setdefault(s, {}).setdefault(v, {}).setdefault(i, [])
                    if el.find('rest') is not None:
                        evs.append(('r', 'bar' if el.find('rest').get('measure') == 'yes' else q))
                        continue
                    p = el.find('pitch')
                    pitch = (p.findtext('step'), int(p.findtext('octave')), int(float(p.findtext('alter') or 0)))
                    if el.find('chord') is not None and evs:
                        kind, ps, q0 = evs[-1]
                        evs[-1] = (kind, tuple(sorted(ps + (pitch,))), q0)
                    else:
                        evs.append(('n', (pitch,), q))
        base += n_staves
    layers = {s: {v: [(i, tuple(e)) for i, e in ms.items()] for v, ms in vs.items()} for s, vs in layers.items()}
    # ties in MEI are one <tie> per tied note pair, as MusicXML's tied-start per note
    return dict(head=[h[1:] for h in sorted(head)], staves=_voices(layers, n_measures), measures=n_measures, ties=ties)


_COUNT = re.compile(r'\[[^\]\[]*\]|[_^=]*[A-Ga-g][,\']*|[zZ]|(?P<bar>:*\|[\]|:]*)')


def label_counts(label):
    """the label text -> {voice: (bars, notes+chords+rests)}, counted without any ABC reader."""
    out = {}
    for line in label.splitlines():
        m = re.match(r'\[V:(\d+)\]\s*(.*)', line)
        if m:
            toks = list(_COUNT.finditer(m.group(2)))
            bars = sum(1 for t in toks if t.lastgroup == 'bar' and t.group() != '|:')
            out[int(m.group(1))] = (bars, sum(1 for t in toks if t.lastgroup != 'bar'))
    return out


def check_agreement(mei, xml, label, staves):
    """the engraving (MEI) against the label (its MusicXML and its text); staves = the label's voices per
    staff, e.g. [[1, 2], [3, 4]]. ValueError('mismatch in ...') at the first difference."""
    got, want = mei_staves(mei), musicxml_staves(xml)
    norm = lambda h: [(c and (c[0], c[1], c[2] or None), k, {'common': 'common', 'cut': 'cut'}.get(m, m)) for c, k, m in h]
    if norm(got['head']) != norm(want['head']):
        raise ValueError(f"mismatch in clef/key/meter: {got['head']} != {want['head']}")
    if got['measures'] != want['measures']:
        raise ValueError(f"mismatch in measure count: {got['measures']} != {want['measures']}")
    if sorted(got['staves']) != sorted(want['staves']) or len(got['staves']) != len(staves):
        raise ValueError(f"mismatch in staves: {sorted(got['staves'])} != {sorted(want['staves'])}")
    for s in got['staves']:
        g, w = [_bar_rests(v) for v in got['staves'][s]], [_bar_rests(v) for v in want['staves'][s]]
        if sorted(g, key=repr) != sorted(w, key=repr):
            raise ValueError(f'mismatch in staff {s}')
    if got['ties'] != want['ties']:
        raise ValueError(f"mismatch in ties: {got['ties']} != {want['ties']}")
    counts = label_counts(label)
    for s, voices in enumerate(staves, 1):
        lab = sorted(counts[v] for v in voices)
        eng = sorted((len(v), sum(len(m) for m in v)) for v in got['staves'].get(s, []))
        if lab != eng:
            raise ValueError(f'mismatch in staff {s} counts: label {lab} != engraving {eng}')


def _bar_rests(voice):
    """a whole-bar rest may be a sized rest in one reader and a measure rest in the other"""
    return tuple(tuple(('r', 'bar') if e[0] == 'r' and len(m) == 1 else e for e in m) for m in voice)
