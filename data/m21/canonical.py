"""
data/m21/canonical.py: the label side of the m21 corpus. A music21 score becomes measures of plain
events, and those become the canonical ABC label (one way to write everything, see README.md);
check_agreement compares verovio's reading of the engraved label (data/engrave.py) with them.
"""
from fractions import Fraction

from engrave import MAJOR, compare_events, mei_events, midi_number

# -----------------------------------------------------------------------------
# music21 score -> measures of plain events (everything the label and the check need)

TYPE_UNITS = {'breve': Fraction(16), 'whole': Fraction(8), 'half': Fraction(4), 'quarter': Fraction(2),
              'eighth': Fraction(1), '16th': Fraction(1, 2), '32nd': Fraction(1, 4), '64th': Fraction(1, 8)}
SHARP_ORDER, FLAT_ORDER = 'FCGDAEB', 'BEADGCF'
CLEFS = {'TrebleClef': 'treble', 'BassClef': 'bass', 'AltoClef': 'alto', 'TenorClef': 'tenor'}

def key_alters(sharps):
    """key signature -> {step: alter} for the steps it alters."""
    if sharps >= 0:
        return {s: 1 for s in SHARP_ORDER[:sharps]}
    return {s: -1 for s in FLAT_ORDER[:-sharps]}

def _barline(bl, default='|'):
    if bl is None:
        return default
    if getattr(bl, 'direction', None) == 'end':
        return ':|'
    if getattr(bl, 'direction', None) == 'start':
        return '|:'
    return {'double': '||', 'final': '|]', 'light-heavy': '|]', 'heavy-light': '||'}.get(bl.type, '|')

def parse_abc(text):
    """one ABC tune -> music21 Score. music21 beams every part after parsing (most of its parse
    time); we never read its beams (the canonical writer derives beaming from the meter), so that step
    is switched off while we parse."""
    import music21
    make_beams = music21.stream.Stream.makeBeams
    music21.stream.Stream.makeBeams = lambda self, *a, **k: self
    try:
        return music21.converter.parse(text, format='abc')
    finally:
        music21.stream.Stream.makeBeams = make_beams

def score_to_measures(score):
    """music21 Score of one tune -> list of measure dicts; raises ValueError for what we do not support.

    measure = dict(ctx=(clef, sharps, meter), events=[...], left='|:'|'', right=bar, offset0=Fraction, ok=bool)
    event = dict(rest=bool, pitches=[(step, octave, alter)], type=str, dots=int, grace=bool, tuplet=int|0,
                 tie=bool (set later), start=Fraction offset in quarters from the bar start)
    """
    from music21 import harmony, stream
    parts = score.parts if hasattr(score, 'parts') and len(score.parts) else [score]
    if len(parts) != 1:
        raise ValueError('multi-voice')
    measures = list(parts[0].getElementsByClass(stream.Measure))
    if not measures:
        raise ValueError('no measures (music21 needs 2 plain bar lines)')
    clef, sharps, meter, out = 'treble', None, None, []
    for m in measures:
        if m.clef is not None:
            clef = CLEFS.get(type(m.clef).__name__, '?')
        if m.keySignature is not None:
            sharps = m.keySignature.sharps
            if getattr(m.keySignature, 'isNonTraditional', False):
                sharps = None
        if m.timeSignature is not None:
            ts = m.timeSignature
            meter = {'common': 'C', 'cut': 'C|'}.get(ts.symbol, ts.ratioString)
        ok = clef != '?' and sharps is not None and meter is not None and not m.voices
        events = []
        for n in m.notesAndRests:
            if isinstance(n, harmony.Harmony):
                continue  # chord symbols ("Em") are text: left out of label and image alike
            d = n.duration
            if d.type not in TYPE_UNITS or d.dots > 2:
                ok = False  # 'complex' durations (e.g. 5 eighths) would need ties we did not write
                break
            tup = 0
            if d.tuplets:
                t = d.tuplets[0]
                if len(d.tuplets) > 1 or (t.numberNotesActual, t.numberNotesNormal) != (3, 2):
                    ok = False
                    break
                tup = 3
            if n.isRest:
                pitches = []
            elif n.isChord:
                pitches = sorted(((p.step, p.octave, int(p.alter)) for p in n.pitches), key=lambda x: midi_number(x))
            else:
                pitches = [(n.pitch.step, n.pitch.octave, int(n.pitch.alter))]
            if any(o is None or not (1 <= o <= 7) or a not in ACC for (_, o, a) in pitches):
                ok = False  # far ledger lines, microtones, triple sharps
            if any(pp.alter != int(pp.alter) for pp in ([] if n.isRest else n.pitches)):
                ok = False
            events.append(dict(rest=n.isRest, pitches=pitches, type=d.type, dots=d.dots, grace=d.isGrace,
                               tuplet=tup, tie_start=n.tie is not None and n.tie.type in ('start', 'continue'),
                               start=Fraction(n.offset).limit_denominator(192),
                               qlen=Fraction(d.quarterLength).limit_denominator(192)))
        while events and events[-1]['grace']:
            events.pop()  # a grace note at the end of a bar has no main note to attach to: not written
        if ok and not _tuplets_ok(events):
            ok = False
        if not any(not e['grace'] for e in events):
            ok = False  # empty or grace-only measure
        out.append(dict(ctx=(clef, sharps, meter), events=events, ok=ok,
                        left='|:' if getattr(m.leftBarline, 'direction', None) == 'start' else '',
                        right=_barline(m.rightBarline),
                        offset0=Fraction(m.paddingLeft).limit_denominator(192)))
    return out

def _tuplets_ok(events):
    """we write triplets as ABC '(3' which covers the next 3 notes: each triplet must be exactly 3 events."""
    run = 0
    for e in events:
        if e['grace']:
            continue
        if e['tuplet']:
            run += 1
        elif run:
            if run % 3:
                return False
            run = 0
    return run % 3 == 0

# -----------------------------------------------------------------------------
# the canonical ABC writer: one way to write everything (the label format, see README.md)

def _dur(units):
    """length in eighths (L:1/8) -> ABC suffix: 1->'', 2->'2', 1/2->'/', 1/4->'/4', 3/2->'3/2'."""
    if units == 1:
        return ''
    if units.denominator == 1:
        return str(units.numerator)
    if units == Fraction(1, 2):
        return '/'
    return (str(units.numerator) if units.numerator != 1 else '') + '/' + str(units.denominator)

def _units(e):
    u = TYPE_UNITS[e['type']]
    return u * (2 - Fraction(1, 2 ** e['dots']))

def _pitch(step, octave, acc):
    name = step if octave <= 4 else step.lower()
    marks = ',' * max(0, 4 - octave) + "'" * max(0, octave - 5)
    return acc + name + marks

ACC = {-2: '__', -1: '_', 0: '=', 1: '^', 2: '^^'}
MEI_ACCID = {'': None, '__': 'ff', '_': 'f', '=': 'n', '^': 's', '^^': 'ss'}

def write_excerpt(measures):
    """list of consecutive measures (same ctx) -> canonical ABC: header lines + one line of music.

    Rules (deterministic, what the image shows):
    - header 'M:<meter>\\nL:1/8\\nK:<major key with that signature>[ clef=..]'; no X:, T:, C:.
    - accidentals printed only where the pitch differs from the key signature / earlier accidental in the
      same bar and octave (ABC semantics); courtesy accidentals are dropped.
    - beaming = spacing: eighths and shorter are joined when they lie in the same beat
      (dotted quarter in compound meters, quarter otherwise) and a triplet is its own group;
      everything else is separated by one space.
    - ties only between equal pitches; triplets as '(3'; grace notes '{..}' glued to their note inside
      a beam, followed by a space at the start of a group ('{g} dcB'); chords '[..]' low to high;
      bar lines '|', '||', '|]', '|:', ':|', ':||:' with spaces around.
    """
    clef, sharps, meter = measures[0]['ctx']
    head = f'M:{meter}\nL:1/8\nK:{MAJOR[sharps]}' + ('' if clef == 'treble' else f' clef={clef}')
    compound = '/' in meter and meter.split('/')[1] == '8' and int(meter.split('/')[0]) % 3 == 0
    beat = Fraction(3, 2) if compound else Fraction(1)
    body = []
    if measures[0]['left'] == '|:':
        body.append('|:')
    for mi, m in enumerate(measures):
        state = {}
        for st, alt in key_alters(sharps).items():
            for o in range(0, 9):
                state[(st, o)] = alt
        toks, prev_beam_group, pending_tuplet, tuplet_id, grace_buf = [], None, 0, 0, []
        events = m['events']
        for ei, e in enumerate(events):
            pitches_txt = []
            e['printed'] = []  # the accidentals the image must show, for check_agreement
            for (st, o, a) in e['pitches']:
                acc = '' if state.get((st, o), 0) == a else ACC[a]
                state[(st, o)] = a
                pitches_txt.append(_pitch(st, o, acc))
                e['printed'].append(MEI_ACCID[acc])
            # the length goes on each chord note, '[G3B3]': verovio ignores a length after the bracket
            d = _dur(_units(e))
            s = 'z' + d if e['rest'] else pitches_txt[0] + d if len(pitches_txt) == 1 else \
                '[' + ''.join(p + d for p in pitches_txt) + ']'
            if e['grace']:
                grace_buf.append(s)
                continue
            if e.get('tie'):
                s += '-'
            if e['tuplet']:
                if pending_tuplet == 0:
                    s = '(3' + s
                    pending_tuplet = 3
                    tuplet_id += 1
                pending_tuplet -= 1
            # beam group: join to previous token when both beamable and in the same beat
            start = e['start'] + m['offset0']
            end = start + e['qlen']
            g = (int(start // beat), tuplet_id if e['tuplet'] else 0)  # a triplet is its own beam group
            beamable = not e['rest'] and TYPE_UNITS[e['type']] <= 1 and end <= (g[0] + 1) * beat
            joined = bool(toks) and beamable and prev_beam_group == g
            if grace_buf:
                # inside a beam the grace group is glued to its note ('d{g}cB'); at the start of a group
                # it is followed by a space ('{g} dcB'): glued there, verovio would draw the grace as
                # a full-size first note of the beam
                s = '{' + ''.join(grace_buf) + '}' + ('' if joined else ' ') + s
                grace_buf = []
            if joined:
                toks[-1] += s
            else:
                toks.append(s)
            prev_beam_group = g if beamable else None
        bar = m['right']
        nxt = measures[mi + 1] if mi + 1 < len(measures) else None
        if nxt is not None and nxt['left'] == '|:':
            bar = ':||:' if bar == ':|' else '|:'  # verovio misreads '::' and drops the start of ':|:'
        m['bar_out'] = bar
        body.append(' '.join(toks))
        body.append(bar)
    return head + '\n' + ' '.join(body)

def mark_ties(measures):
    """keep a tie only if the next (non-grace) event has the same pitches; o'Neill uses '-' as a slur too."""
    flat = [e for m in measures for e in m['events'] if not e['grace']]
    for a, b in zip(flat, flat[1:] + [None]):
        a['tie'] = bool(a['tie_start'] and b is not None and not a['rest'] and b['pitches'] == a['pitches'])

# -----------------------------------------------------------------------------
# what the label says, in MEI terms: the other half of the agreement check

MEI_DUR = {'breve': 'breve', 'whole': '1', 'half': '2', 'quarter': '4', 'eighth': '8', '16th': '16', '32nd': '32', '64th': '64'}
MEI_BAR = {'|': 'single', '||': 'dbl', '|]': 'end', ':|': 'rptend', '|:': 'rptstart', ':||:': 'rptend'}
MEI_CLEF = {'treble': ('G', '2'), 'bass': ('F', '4'), 'alto': ('C', '3'), 'tenor': ('C', '4')}

def expected_events(measures):
    """what the label says, in the form we read back from verovio's MEI (call after write_excerpt)."""
    clef, sharps, meter = measures[0]['ctx']
    keysig = '0' if sharps == 0 else f'{abs(sharps)}{"s" if sharps > 0 else "f"}'
    msig = {'C': ('common', None, None), 'C|': ('cut', None, None)}.get(meter) or (None,) + tuple(meter.split('/'))
    out = [(MEI_CLEF[clef], keysig, msig)]
    for i, m in enumerate(measures):
        left = 'rptstart' if (m['left'] == '|:' if i == 0 else measures[i - 1]['bar_out'] == ':||:') else None
        evs = []
        for e in m['events']:
            dur = (MEI_DUR[e['type']], e['dots'], e['grace'], e['tuplet'])
            evs.append(('r',) + dur if e['rest'] else
                       ('n',) + dur + (tuple((s.lower(), o, w) for (s, o, _), w in zip(e['pitches'], e['printed'])),))
        evs.append(('bar', left, MEI_BAR[m['bar_out']]))
        out.append(evs)
    return out, sum(1 for m in measures for e in m['events'] if e.get('tie'))

def check_agreement(mei, measures):
    """raise ValueError if verovio's parse of the engraved label differs from the label: clef, key
    signature, meter, then per measure every note (letter, octave, written accidental, duration, dots,
    grace, triplet), rest, chord, the bar lines and the number of ties. Call after write_excerpt."""
    compare_events(mei_events(mei), expected_events(measures))
